"""Columnar in-memory form of one episode, built from the chunks of an episode file.

Column names (each of length N = number of steps)::

    step int64, action_executed float32[N,7], action_policy float32[N,7], source int8 (0 policy,
    1 human), segment int8 (index into types.SEGMENT_ORDER), instruction list[str],
    policy_version int64, reward float64, critic_progress float64, done/truncated/success bool,
    timestamp_s float64, obs_timestamp_s float64, operator_id/device_id/language_correction
    list[str], safety_flags list[list[str]], policy_noise float32[N,K] (only when some step carries the
    served chunk's initial noise, NaN rows where none),
    obs/<key> for every non-image observation entry (arrays stacked [N, ...], strings list[str])

Images stay encoded (one blob per frame) in ``images[camera]`` until ``frames(camera)`` decodes them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from hil_robot.data import codec as codecs
from hil_robot.data import format as fmt
from hil_robot.data.format import EpisodeCorruptError
from hil_robot.types import IMAGE_PREFIX, SEGMENT_INDEX, SEGMENT_ORDER, EpisodeMeta, Segment, Source, StepRecord

SOURCES = (Source.POLICY, Source.HUMAN)
SOURCE_INDEX = {s: i for i, s in enumerate(SOURCES)}
STRING_COLUMNS = ("instruction", "operator_id", "device_id", "language_correction")
ARRAY_COLUMNS = {
    "step": np.int64, "source": np.int8, "segment": np.int8, "policy_version": np.int64, "reward": np.float64,
    "critic_progress": np.float64, "done": np.bool_, "truncated": np.bool_, "success": np.bool_,
    "timestamp_s": np.float64, "obs_timestamp_s": np.float64,
}


def steps_to_columns(records: list[StepRecord], encode) -> dict[str, Any]:
    """StepRecords -> one STEPS chunk payload (columnar; images via ``encode(img) -> bytes``)."""
    cols: dict[str, Any] = {
        "step": np.array([r.step for r in records], np.int64),
        "action_executed": np.stack([r.action_executed for r in records]).astype(np.float32),
        "action_policy": np.stack([r.action_policy for r in records]).astype(np.float32),
        "source": np.array([SOURCE_INDEX[r.source] for r in records], np.int8),
        "segment": np.array([SEGMENT_INDEX[r.segment] for r in records], np.int8),
        "policy_version": np.array([r.policy_version for r in records], np.int64),
        "reward": np.array([r.reward for r in records], np.float64),
        "critic_progress": np.array([r.critic_progress for r in records], np.float64),
        "done": np.array([r.done for r in records], np.bool_),
        "truncated": np.array([r.truncated for r in records], np.bool_),
        "success": np.array([r.success for r in records], np.bool_),
        "timestamp_s": np.array([r.timestamp_s for r in records], np.float64),
        "obs_timestamp_s": np.array([r.obs_timestamp_s for r in records], np.float64),
        "safety_flags": [list(r.safety_flags) for r in records],
    }
    for name in STRING_COLUMNS:
        cols[name] = [getattr(r, name) for r in records]
    noise = noise_column(records)
    if noise is not None:
        cols["policy_noise"] = noise
    cols.update(obs_to_columns([r.observation for r in records], encode))
    return cols


def noise_column(records: list[StepRecord]) -> np.ndarray | None:
    """The chunks' initial noise as float32 [N, K], NaN rows for steps without one; None if no step has any."""
    widths = {r.policy_noise.size for r in records if r.policy_noise is not None}
    if not widths:
        return None
    if len(widths) > 1:
        raise ValueError(f"policy_noise changes size within the episode ({sorted(widths)}); one policy per episode")
    out = np.full((len(records), widths.pop()), np.nan, np.float32)
    for i, r in enumerate(records):
        if r.policy_noise is not None:
            out[i] = r.policy_noise
    return out


def obs_to_columns(observations: list[dict[str, Any]], encode) -> dict[str, Any]:
    """Observation dicts -> {"obs/<key>": stacked, "images/<cam>": [blobs], "obs_kinds": {...}}."""
    cols: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    keys = list(observations[0])
    for key in keys:
        values = []
        for o in observations:
            if key not in o:
                raise ValueError(f"observation key {key!r} missing in some steps; keep the keys fixed within an episode")
            values.append(o[key])
        if key.startswith(IMAGE_PREFIX):
            cols[key] = [encode(np.asarray(v)) for v in values]
            kinds[key] = "image:" + "x".join(map(str, np.asarray(values[0]).shape))
        elif isinstance(values[0], str):
            cols["obs/" + key] = list(values)
            kinds[key] = "str"
        else:
            cols["obs/" + key] = np.stack([np.asarray(v) for v in values])
            kinds[key] = "array"
    cols["obs_kinds"] = kinds
    return cols


def _concat(parts: list[Any]) -> Any:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()
    out: list[Any] = []
    for p in parts:
        out.extend(p)
    return out


@dataclasses.dataclass
class Episode:
    """One episode read from a store (all N steps, labels final, images still encoded)."""

    meta: EpisodeMeta
    index: int  # position in its store (file name prefix), stable for the store's life
    header: dict[str, Any]
    columns: dict[str, Any]  # see module docstring
    images: dict[str, list[bytes]]  # camera -> N blobs
    image_shapes: dict[str, tuple[int, int, int]]
    codec: str
    final_obs: dict[str, Any] | None = None  # {"obs/<key>": value [no N axis], "images/<cam>": blob}
    recovered: bool = False  # rebuilt from a crashed writer's last complete flush

    def __len__(self) -> int:
        return len(self.columns["step"])

    @property
    def cameras(self) -> list[str]:
        return sorted(self.images)

    @property
    def segments(self) -> list[Segment]:
        return [SEGMENT_ORDER[i] for i in self.columns["segment"]]

    def frames(self, camera: str) -> np.ndarray:
        """Decoded images of one camera: uint8 [N, H, W, 3]."""
        return codecs.decode_frames(self.images[camera], self.codec, self.image_shapes[camera])

    def final_frame(self, camera: str) -> np.ndarray | None:
        if self.final_obs is None:
            return None
        return codecs.decode_frame(self.final_obs[IMAGE_PREFIX + camera], self.codec, self.image_shapes[camera])

    def observation(self, i: int) -> dict[str, Any]:
        obs: dict[str, Any] = {}
        for key, kind in self.header_obs_kinds.items():
            if kind.startswith("image:"):
                cam = key[len(IMAGE_PREFIX):]
                obs[key] = codecs.decode_frame(self.images[cam][i], self.codec, self.image_shapes[cam])
            else:
                obs[key] = self.columns["obs/" + key][i]
        if "timestamp_s" in obs:
            obs["timestamp_s"] = float(obs["timestamp_s"])
        return obs

    @property
    def header_obs_kinds(self) -> dict[str, str]:
        return self.columns.get("obs_kinds", {})

    def step_record(self, i: int) -> StepRecord:
        c = self.columns
        return StepRecord(
            episode_id=self.meta.episode_id, step=int(c["step"][i]), observation=self.observation(i),
            action_executed=c["action_executed"][i], action_policy=c["action_policy"][i],
            source=SOURCES[int(c["source"][i])], segment=SEGMENT_ORDER[int(c["segment"][i])],
            instruction=c["instruction"][i], policy_version=int(c["policy_version"][i]), reward=float(c["reward"][i]),
            critic_progress=float(c["critic_progress"][i]), done=bool(c["done"][i]), truncated=bool(c["truncated"][i]),
            success=bool(c["success"][i]), timestamp_s=float(c["timestamp_s"][i]),
            obs_timestamp_s=float(c["obs_timestamp_s"][i]), operator_id=c["operator_id"][i], device_id=c["device_id"][i],
            safety_flags=tuple(c["safety_flags"][i]), language_correction=c["language_correction"][i],
            policy_noise=self.noise(i),
        )

    def noise(self, i: int) -> np.ndarray | None:
        """Step i's recorded chunk noise float32 [K], or None."""
        col = self.columns.get("policy_noise")
        if col is None or not np.isfinite(col[i]).all():
            return None
        return np.asarray(col[i], np.float32)


def assemble(header: dict[str, Any], step_chunks: list[dict[str, Any]], relabels: list[dict[str, Any]]) -> tuple[dict, dict, dict]:
    """Concatenate STEPS chunks and apply RELABEL overlays -> (columns, images, image_shapes)."""
    columns: dict[str, Any] = {}
    images: dict[str, list[bytes]] = {}
    shapes: dict[str, tuple[int, int, int]] = {}
    if step_chunks:
        kinds = step_chunks[0]["obs_kinds"]
        for ch in step_chunks:
            if ch["obs_kinds"] != kinds:
                raise ValueError("observation keys or image shapes change within the episode")
        noise_widths = {np.shape(ch["policy_noise"])[1] for ch in step_chunks if "policy_noise" in ch}
        if len(noise_widths) > 1:
            raise ValueError(f"policy_noise changes size within the episode ({sorted(noise_widths)})")
        if noise_widths:  # optional column: chunks written while no step had noise get NaN rows
            k = noise_widths.pop()
            step_chunks = [ch if "policy_noise" in ch else {**ch, "policy_noise": np.full((len(ch["step"]), k), np.nan, np.float32)}
                           for ch in step_chunks]
        for key in step_chunks[0]:
            if key == "obs_kinds":
                continue
            parts = [ch[key] for ch in step_chunks]
            if key.startswith(IMAGE_PREFIX):
                images[key[len(IMAGE_PREFIX):]] = _concat(parts)
            else:
                columns[key] = _concat(parts)
        columns["obs_kinds"] = kinds
        for key, kind in kinds.items():
            if kind.startswith("image:"):
                shapes[key[len(IMAGE_PREFIX):]] = tuple(int(x) for x in kind[6:].split("x"))  # type: ignore[assignment]
        steps = columns["step"]
        if not np.array_equal(steps, np.arange(len(steps))):
            raise ValueError("step indices are not 0..N-1 in order")
        seg = np.array(columns["segment"], np.int8)
        for rl in relabels:
            idx = np.asarray(rl["steps"], np.int64)
            idx = idx[(idx >= 0) & (idx < len(seg))]
            seg[idx] = SEGMENT_INDEX[Segment.parse(rl["segment"])]
        columns["segment"] = seg
    return columns, images, shapes


def segment_summary(segments: np.ndarray) -> tuple[dict[str, int], int]:
    """int8 segment codes -> ({segment name: count}, number of takeovers)."""
    counts = {s.value: int(np.sum(segments == i)) for i, s in enumerate(SEGMENT_ORDER)}
    inter = np.isin(segments, [SEGMENT_INDEX[Segment.RECOVERY], SEGMENT_INDEX[Segment.CORRECTION]])
    starts = int(inter[0]) + int(np.sum(inter[1:] & ~inter[:-1])) if len(inter) else 0
    return {k: v for k, v in counts.items() if v}, starts


def read_episode_file(path: Path) -> Episode:
    """Read and check a finalised episode file (every chunk's CRC)."""
    name = path.name
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            scan = fmt.scan_chunks(f, size)
    except OSError as e:
        raise EpisodeCorruptError(f"episode {name}: cannot read ({e})") from None
    if not scan.finalised:
        raise EpisodeCorruptError(f"episode {name} is corrupt: {scan.problem or 'no trailer'}; move it to quarantine/")
    try:
        header = next(fmt.iter_payloads(scan, fmt.HEADER))
        meta = EpisodeMeta.from_dict(next(fmt.iter_payloads(scan, fmt.META)))
        columns, images, shapes = assemble(
            header, list(fmt.iter_payloads(scan, fmt.STEPS)), list(fmt.iter_payloads(scan, fmt.RELABEL))
        )
        final = next(fmt.iter_payloads(scan, fmt.FINAL_OBS), None)
        final_obs = None
        if final is not None:
            final_obs = {k: (v[0] if isinstance(v, (list, np.ndarray)) else v) for k, v in final.items() if k != "obs_kinds"}
    except Exception as e:  # noqa: BLE001
        raise EpisodeCorruptError(f"episode {name} is corrupt: {e}") from None
    if len(columns.get("step", ())) != meta.num_steps:
        raise EpisodeCorruptError(f"episode {name}: metadata says {meta.num_steps} steps, file has {len(columns.get('step', ()))}")
    return Episode(
        meta=meta, index=int(header.get("index", -1)), header=header, columns=columns, images=images,
        image_shapes=shapes, codec=str(header["image_codec"]), final_obs=final_obs,
        recovered=bool(meta.extra.get("recovered", False)),
    )
