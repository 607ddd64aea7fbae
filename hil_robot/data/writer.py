"""Append-only writer for one open episode (crash-safe; see docs/data.md).

Steps are buffered in memory and written as one CRC-checked chunk per flush. The store's flusher
thread encodes and writes the buffer once its oldest step is half a ``flush_interval_s`` old, off
the controller's thread (``add`` only appends); ``add`` itself flushes as a backstop when the
oldest step reaches the full interval or the buffer holds ``max_buffered_steps``. A writer killed
with SIGKILL therefore loses at most the steps of the last flush interval; everything before is a
valid prefix of the file. fsync follows each flush (power-loss safety) in the same thread.

Finalising appends the final observation, the META chunk and a trailer, fsyncs, then renames the
file from ``incoming/`` to ``episodes/`` and fsyncs the directory: readers either see a complete
episode or none.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from hil_robot.data import codec as codecs
from hil_robot.data import format as fmt
from hil_robot.data.episode import STRING_COLUMNS, obs_to_columns, segment_summary, steps_to_columns
from hil_robot.types import IMAGE_PREFIX, SEGMENT_INDEX, ContractError, EpisodeMeta, Segment, StepRecord

if TYPE_CHECKING:
    from hil_robot.data.store import EpisodeStore

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EpisodeWriter:
    """Writes one episode into ``incoming/`` and moves it to ``episodes/`` on ``finalize``."""

    def __init__(self, store: "EpisodeStore", episode_id: str, index: int, path: Path, header: dict[str, Any]):
        self.store = store
        self.episode_id = episode_id
        self.index = index
        self.path = path
        self.header = header
        self._encode = codecs.encoder(store.image_codec, store.jpeg_quality)
        self._lock = threading.Lock()  # guards the buffer and labels (held only briefly)
        self._io_lock = threading.Lock()  # serialises encoding + writing of flushes, in order
        self._pending: list[StepRecord] = []
        self._pending_relabels: list[dict[str, Any]] = []
        self._oldest_pending_s = 0.0
        self._segments: list[int] = []  # final labels of every step so far (for the metadata)
        self._policy_versions: set[int] = set()
        self._final_obs: dict[str, Any] | None = None
        self._last_step: StepRecord | None = None
        self._obs_layout: dict[str, Any] | None = None  # key -> shape (or str) fixed by the first step
        self.closed = False
        self.bytes_written = 0
        # created under a hidden name, locked, then renamed: a recovering process only ever sees
        # incoming/*.hep files whose flock is already held by this (live) writer
        tmp = path.with_name("." + path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # O_EXCL: never clobber
        self._file = os.fdopen(fd, "wb", buffering=0)
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._write(fmt.FILE_MAGIC + fmt.encode_chunk(fmt.HEADER, header))
        os.rename(tmp, path)

    # ------------------------------------------------------------------ appending

    def add(self, step: StepRecord) -> None:
        if not isinstance(step, StepRecord):
            raise ContractError(f"add() takes a StepRecord, got {type(step).__name__}")
        with self._lock:
            self._check_open()
            expected = len(self._segments)
            if step.episode_id != self.episode_id:
                raise ContractError(
                    f"step for episode {step.episode_id!r} sent to the writer of {self.episode_id!r}; end the episode first"
                )
            if step.step != expected:
                raise ContractError(f"episode {self.episode_id!r}: expected step {expected}, got {step.step} (steps must be consecutive from 0)")
            _check_fields(step)
            self._check_observation(step)
            if not self._pending:
                self._oldest_pending_s = time.monotonic()
            self._pending.append(step)
            self._segments.append(SEGMENT_INDEX[step.segment])
            if step.policy_version >= 0:
                self._policy_versions.add(int(step.policy_version))
            self._last_step = step
            # normally the store's flusher thread writes the buffer (at half the interval), off
            # this thread; this is the backstop that keeps the loss bound if that thread starves
            if self._due(self.store.flush_interval_s):
                self._flush_locked()

    def _check_observation(self, step: StepRecord) -> None:
        """Refuse (at add time, losing nothing) observations the flush could not encode or a reader
        could not decode."""
        layout = _obs_layout(step.observation, f"step {step.step}")
        if self._obs_layout is None:
            self._obs_layout = layout
        elif layout != self._obs_layout:
            diff = sorted(k for k in set(layout) | set(self._obs_layout) if layout.get(k) != self._obs_layout.get(k))
            raise ContractError(f"episode {self.episode_id!r} step {step.step}: observation keys/shapes changed for {diff}; "
                                "keep them fixed within an episode")

    def relabel(self, steps: Iterable[int], segment: Segment | str) -> None:
        """Change the segment of already added steps (e.g. autonomous -> pre_intervention).

        Steps still in the buffer are changed in place; flushed ones get a RELABEL chunk that
        readers apply on load (the file stays append-only)."""
        seg = Segment.parse(segment)
        with self._lock:
            self._check_open()
            first_pending = len(self._segments) - len(self._pending)
            flushed = []
            for s in steps:
                if not 0 <= s < len(self._segments):
                    raise ContractError(f"cannot relabel step {s}: episode {self.episode_id!r} has {len(self._segments)} steps")
                self._segments[s] = SEGMENT_INDEX[seg]
                if s < first_pending:
                    flushed.append(int(s))  # buffered steps take the label from _segments at flush
            if flushed:
                if not self._pending and not self._pending_relabels:
                    self._oldest_pending_s = time.monotonic()
                self._pending_relabels.append({"steps": flushed, "segment": seg.value})

    def set_final_observation(self, obs: dict[str, Any] | None) -> None:
        """The observation after the last step, so replay can bootstrap through a time limit (None: none)."""
        self._final_obs = None if obs is None else dict(obs)

    def _due(self, age_s: float) -> bool:
        if len(self._pending) >= self.store.max_buffered_steps:
            return True
        return bool(self._pending or self._pending_relabels) and time.monotonic() - self._oldest_pending_s >= age_s

    def flush_if_due(self) -> None:
        """Called by the store's flusher thread: encode + write the buffer without blocking add()."""
        with self._lock:
            if self.closed or not self._due(self.store.flush_interval_s / 2):
                return
            batch = self._take_batch_locked()
            self._io_lock.acquire()  # taken before releasing _lock: flushes reach the file in order
        try:
            self._write_batch(*batch)
        finally:
            self._io_lock.release()

    def flush(self) -> None:
        with self._lock:
            if not self.closed:
                self._flush_locked()

    def _flush_locked(self) -> None:
        batch = self._take_batch_locked()
        with self._io_lock:
            self._write_batch(*batch)

    def _take_batch_locked(self) -> tuple[list[StepRecord], np.ndarray, list[dict[str, Any]]]:
        pending, relabels = self._pending, self._pending_relabels
        segments = np.array(self._segments[len(self._segments) - len(pending):], np.int8)
        self._pending, self._pending_relabels = [], []
        return pending, segments, relabels

    def _write_batch(self, pending: list[StepRecord], segments: np.ndarray, relabels: list[dict[str, Any]]) -> None:
        data = b""
        if pending:
            cols = steps_to_columns(pending, self._encode)
            cols["segment"] = segments
            data += fmt.encode_chunk(fmt.STEPS, cols)
        for rl in relabels:
            data += fmt.encode_chunk(fmt.RELABEL, rl)
        if data:
            self._write(data)
            if self.store.fsync:
                os.fsync(self._file.fileno())

    def _write(self, data: bytes) -> None:
        # one write() per flush: a crash leaves at most one incomplete chunk at the end
        view = memoryview(data)
        while view:
            n = self._file.write(view)
            view = view[n:]
        self.bytes_written += len(data)

    def _check_open(self) -> None:
        if self.closed:
            raise fmt.StoreError(f"episode {self.episode_id!r} is already finalised or aborted")

    @property
    def num_steps(self) -> int:
        return len(self._segments)

    @property
    def segments(self) -> list[int]:
        return list(self._segments)

    # ------------------------------------------------------------------ finishing

    def finalize(self, success: bool, **meta: Any) -> EpisodeMeta:
        """Flush, append final observation + metadata + trailer, fsync, rename into episodes/."""
        with self._lock:
            self._check_open()
            if not self._segments:
                raise fmt.StoreError(f"episode {self.episode_id!r} has no steps; nothing to finalise (call abort())")
            self._flush_locked()
            tail = b""
            if self._final_obs is not None:
                if _obs_layout(self._final_obs, "the final observation") != self._obs_layout:
                    raise ContractError(f"episode {self.episode_id!r}: the final observation's keys/shapes differ from "
                                        "the steps'; send the observation after the last action, as the steps have")
                cols = obs_to_columns([self._final_obs], self._encode)
                tail += fmt.encode_chunk(fmt.FINAL_OBS, cols)
            em = self._build_meta(success, meta)
            meta_offset = self.bytes_written + len(tail)
            tail += fmt.encode_chunk(fmt.META, em.to_dict()) + fmt.encode_trailer(meta_offset)
            self._write(tail)
            os.fsync(self._file.fileno())
            final_path = self.store.episodes_dir / self.path.name
            os.rename(self.path, final_path)
            fsync_dir(self.store.episodes_dir)
            self._close_file()
            self.path = final_path
            return em

    def _build_meta(self, success: bool, meta: dict[str, Any]) -> EpisodeMeta:
        h = self.header
        counts, takeovers = segment_summary(np.array(self._segments, np.int8))
        known = {"task", "instruction", "robot", "operator", "seed", "extra", "start_time_s", "end_time_s"}
        extra = dict(h.get("extra", {}))
        extra.update(meta.pop("extra", {}) or {})
        for key in list(meta):
            if key not in known:
                extra[key] = meta.pop(key)
        last = self._last_step
        return EpisodeMeta(
            episode_id=self.episode_id,
            task=str(meta.get("task", h.get("task", ""))),
            instruction=str(meta.get("instruction", h.get("instruction") or (last.instruction if last else ""))),
            robot=str(meta.get("robot", h.get("robot", "sim"))),
            operator=str(meta.get("operator", h.get("operator", ""))),
            success=bool(success),
            num_steps=len(self._segments),
            segment_counts=counts,
            num_interventions=takeovers,
            start_time_s=float(meta.get("start_time_s", h.get("start_time_s", 0.0))),
            end_time_s=float(meta.get("end_time_s", time.time())),
            seed=meta.get("seed", h.get("seed")),
            policy_versions=sorted(self._policy_versions),
            extra=_plain(extra),
        )

    def abort(self) -> None:
        """Drop this episode: the file moves to quarantine/ (nothing is deleted)."""
        with self._lock:
            if self.closed:
                return
            self._flush_locked()
            target = self.store.quarantine_dir / (self.path.name + ".aborted")
            os.rename(self.path, target)
            self._close_file()
            log.info("episode %r aborted; its steps are kept in %s", self.episode_id, target)

    def release(self) -> None:
        """Flush and close without finalising: the file stays in incoming/ for recovery."""
        with self._lock:
            if self.closed:
                return
            self._flush_locked()
            self._close_file()

    def _close_file(self) -> None:
        self.closed = True
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        finally:
            self._file.close()
        self.store._writer_closed(self)


def _obs_layout(obs: Any, where: str) -> dict[str, Any]:
    """key -> (shape, dtype kind) or str, after checking the observation can be stored and read back."""
    if not isinstance(obs, dict) or not all(isinstance(k, str) for k in obs):
        raise ContractError(f"observation of {where} must be a dict with string keys")
    layout: dict[str, Any] = {}
    for key, value in obs.items():
        if isinstance(value, str):
            if key.startswith(IMAGE_PREFIX):
                raise ContractError(f"observation {key!r} of {where} is a string; images are uint8 [H, W, 3]")
            layout[key] = str
            continue
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError) as e:  # e.g. ragged nested lists
            raise ContractError(f"observation {key!r} of {where} is not an array: {e}") from None
        if arr.dtype.hasobject or arr.dtype.kind not in "biuf":
            raise ContractError(f"observation {key!r} of {where} is {type(value).__name__} {arr.dtype}; "
                                "store numbers, numeric arrays or strings only")
        if key.startswith(IMAGE_PREFIX) and (arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3
                                             or arr.shape[0] == 0 or arr.shape[1] == 0):
            raise ContractError(f"observation {key!r} of {where} is {arr.dtype} {list(arr.shape)}; "
                                "images must be uint8 [H, W, 3]")
        layout[key] = (arr.shape, arr.dtype.kind)
    return layout


def check_step_record(step: StepRecord) -> None:
    """What ``EpisodeWriter.add`` refuses regardless of the episode's state (fields, observation)."""
    if not isinstance(step, StepRecord):
        raise ContractError(f"add() takes a StepRecord, got {type(step).__name__}")
    _check_fields(step)
    _obs_layout(step.observation, f"step {step.step}")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _check_fields(step: StepRecord) -> None:
    """Refuse (at add time, losing nothing) a record whose scalar fields the flush could not store
    as their columns, or whose values would poison training (non-finite executed actions or rewards).
    ``action_policy`` and ``critic_progress`` may be NaN (no policy output / not evaluated)."""
    where = f"episode {step.episode_id!r:.80} step {step.step!r:.20}"
    if not isinstance(step.episode_id, str) or not step.episode_id:
        raise ContractError(f"{where}: episode_id must be a non-empty string")
    if not _is_int(step.step):
        raise ContractError(f"{where}: step must be an integer")
    if not _is_int(step.policy_version) or not -1 <= step.policy_version < 2**62:
        raise ContractError(f"{where}: policy_version must be an integer >= -1, got {step.policy_version!r:.40}")
    for name in ("reward", "critic_progress", "timestamp_s", "obs_timestamp_s"):
        v = getattr(step, name)
        if not _is_real(v):
            raise ContractError(f"{where}: {name} must be a number, got {type(v).__name__}")
        if name != "critic_progress" and not math.isfinite(float(v)):
            raise ContractError(f"{where}: {name} is {v}; record finite values only")
    for name in ("done", "truncated", "success"):
        if not isinstance(getattr(step, name), (bool, np.bool_)):
            raise ContractError(f"{where}: {name} must be a bool, got {type(getattr(step, name)).__name__}")
    for name in STRING_COLUMNS:
        if not isinstance(getattr(step, name), str):
            raise ContractError(f"{where}: {name} must be a string, got {type(getattr(step, name)).__name__}")
    if not all(isinstance(f, str) for f in step.safety_flags):
        raise ContractError(f"{where}: safety_flags must be strings")
    if not np.isfinite(step.action_executed).all():
        raise ContractError(f"{where}: action_executed has NaN/Inf; the safety filter holds instead of sending those")


def _plain(obj: Any) -> Any:
    """Metadata extras as msgpack/JSON-friendly values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)
