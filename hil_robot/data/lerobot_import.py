"""Import a LeRobotDataset v3.0 folder into an episode store.

Reads meta/info.json (must say codebase_version v3.0), meta/episodes/*/*.parquet, then per
episode the data parquet file and per-camera mp4 file its ``data/...`` and ``videos/<key>/...``
chunk/file indices name through info.json's ``data_path``/``video_path`` templates (OpenCV
decode; the episode's frames are cut out of the shared file by its from/to timestamps). One data
file and one video file per camera are held in memory at a time. hil_robot's extra columns (segment, source,
action_policy, ...) and ``hil.meta`` are restored when present; a dataset from elsewhere imports
as ``demo`` episodes driven by a ``human`` source.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.parquet as pq

from hil_robot.data.lerobot_v3 import CODEBASE_VERSION
from hil_robot.data.store import EpisodeStore
from hil_robot.types import SEGMENT_ORDER, STATE_DIM, EpisodeMeta, Segment, StepRecord


def _read_parquets(folder: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(folder.glob("chunk-*/file-*.parquet")):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def _decode_video(path: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path}")
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[:, :, ::-1])
    cap.release()
    return np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)


def import_lerobot(src: str | os.PathLike, store: EpisodeStore | str | os.PathLike) -> list[EpisodeMeta]:
    """Append every episode of the LeRobot v3.0 dataset at ``src`` to ``store``; returns their metadata."""
    src = Path(src)
    info_path = src / "meta/info.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"{src} is not a LeRobot dataset (no meta/info.json)")
    info = json.loads(info_path.read_text())
    if info.get("codebase_version") != CODEBASE_VERSION:
        raise ValueError(f"{src} is LeRobotDataset {info.get('codebase_version')}; only {CODEBASE_VERSION} can be imported (convert it first)")
    fps = float(info["fps"])
    features = info["features"]
    video_keys = [k for k, ft in features.items() if ft["dtype"] == "video"]
    episodes = sorted(_read_parquets(src / "meta/episodes"), key=lambda r: r["episode_index"])
    data_file: dict[str, Any] = {"path": None, "rows": []}  # the one data file held in memory
    videos: dict[str, tuple[Path, np.ndarray]] = {}  # video key -> (file, decoded frames): one file per key
    store = store if isinstance(store, EpisodeStore) else EpisodeStore(store)
    out: list[EpisodeMeta] = []
    for ep_row in episodes:
        rows = _episode_frames(src, info, ep_row, data_file)
        images: dict[str, np.ndarray] = {}
        for vk in video_keys:
            vpath = src / info["video_path"].format(video_key=vk, chunk_index=int(ep_row[f"videos/{vk}/chunk_index"]),
                                                   file_index=int(ep_row[f"videos/{vk}/file_index"]))
            if vk not in videos or videos[vk][0] != vpath:
                videos[vk] = (vpath, _decode_video(vpath))
            start = int(round(float(ep_row[f"videos/{vk}/from_timestamp"]) * fps))
            clip = videos[vk][1][start:start + len(rows)]
            if len(clip) != len(rows):
                raise ValueError(f"video {vpath} holds {len(clip)} frames of episode {ep_row['episode_index']} from "
                                 f"{ep_row[f'videos/{vk}/from_timestamp']} s; its data has {len(rows)} frames")
            images[vk.removeprefix("observation.images.")] = clip
        meta = EpisodeMeta.from_dict(json.loads(ep_row["hil.meta"])) if ep_row.get("hil.meta") else None
        eid = meta.episode_id if meta else f"lerobot-{src.name}-{int(ep_row['episode_index']):06d}"
        tasks = ep_row.get("tasks") or [""]
        writer = store.open_episode(eid, task=meta.task if meta else tasks[0], robot=info.get("robot_type") or "unknown")
        for t, row in enumerate(rows):
            writer.add(_step_record(eid, t, row, images, tasks[0], t == len(rows) - 1))
        final = _final_observation(ep_row, images, tasks[0])
        if final is not None:
            writer.set_final_observation(final)
        if meta is not None:
            m = meta.to_dict()
            out.append(writer.finalize(m["success"], **{k: m[k] for k in ("task", "instruction", "robot", "operator", "seed",
                                                                        "start_time_s", "end_time_s", "extra")}))
        else:
            out.append(writer.finalize(bool(rows and rows[-1].get("next.done")), extra={"imported_from": str(src)}))
    return out


def _episode_frames(src: Path, info: dict[str, Any], ep_row: dict[str, Any], data_file: dict[str, Any]) -> list[dict[str, Any]]:
    """The episode's frame rows, read from the data file its ``data/chunk_index``/``data/file_index`` name."""
    a, b, ei = int(ep_row["dataset_from_index"]), int(ep_row["dataset_to_index"]), int(ep_row["episode_index"])
    path = src / info["data_path"].format(chunk_index=int(ep_row["data/chunk_index"]), file_index=int(ep_row["data/file_index"]))
    if data_file["path"] != path:
        if not path.is_file():
            raise FileNotFoundError(f"episode {ei} points at {path}, which is missing; the dataset is incomplete")
        data_file["path"], data_file["rows"] = path, pq.read_table(path).to_pylist()
        data_file["first"] = {int(r["index"]): i for i, r in enumerate(data_file["rows"])}
    i = data_file["first"].get(a)
    rows = data_file["rows"][i:i + (b - a)] if i is not None else []
    if len(rows) != b - a or any(int(r["episode_index"]) != ei for r in rows):
        raise ValueError(f"{path} does not hold frames {a}..{b - 1} of episode {ei} (dataset_from/to_index); "
                         "the episode metadata and the data files disagree")
    return rows


def _step_record(eid: str, t: int, row: dict[str, Any], images: dict[str, np.ndarray], task: str, last: bool) -> StepRecord:
    instruction = row.get("instruction") or task
    state = np.zeros(STATE_DIM, np.float32)
    s = np.asarray(row.get("observation.state", state), np.float32)
    state[: min(len(s), STATE_DIM)] = s[:STATE_DIM]
    obs: dict[str, Any] = {f"images/{cam}": frames[t] for cam, frames in images.items()}
    obs.update(state=state, prompt=instruction, timestamp_s=float(row.get("obs_timestamp_s", row["timestamp"])))
    if row.get("observation.environment_state") is not None:
        obs["task_state"] = np.asarray(row["observation.environment_state"], np.float32)
    has_ours = "segment" in row
    segment = SEGMENT_ORDER[int(row["segment"])] if has_ours else Segment.DEMO
    action = np.asarray(row["action"], np.float32)
    return StepRecord(
        episode_id=eid, step=t, observation=obs, action_executed=action,
        action_policy=np.asarray(row["action_policy"], np.float32) if has_ours else np.full(7, np.nan, np.float32),
        source=("policy", "human")[int(row["source"])] if has_ours else "human", segment=segment, instruction=instruction,
        policy_version=int(row.get("policy_version", -1)), reward=float(row.get("next.reward", 0.0)),
        critic_progress=float(row.get("critic_progress", float("nan"))), done=bool(row.get("next.done", False)),
        truncated=bool(row.get("next.truncated", last and not row.get("next.done", False))),
        success=bool(row.get("success", False)), timestamp_s=float(row.get("step_timestamp_s", row["timestamp"])),
        obs_timestamp_s=float(row.get("obs_timestamp_s", row["timestamp"])), operator_id=row.get("operator_id") or "",
        device_id=row.get("device_id") or "", safety_flags=tuple(f for f in (row.get("safety_flags") or "").split(",") if f),
        language_correction=row.get("language_correction") or "",
    )


def _final_observation(ep_row: dict[str, Any], images: dict[str, np.ndarray], task: str) -> dict[str, Any] | None:
    if ep_row.get("final_observation.state") is None:
        return None
    obs: dict[str, Any] = {"state": np.asarray(ep_row["final_observation.state"], np.float32), "prompt": task, "timestamp_s": 0.0}
    if ep_row.get("final_observation.environment_state") is not None:
        obs["task_state"] = np.asarray(ep_row["final_observation.environment_state"], np.float32)
    for cam in images:
        blob = ep_row.get(f"final_observation.images.{cam}")
        if blob is None:
            return None
        obs[f"images/{cam}"] = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    return obs
