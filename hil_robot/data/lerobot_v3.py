"""Export an episode store to the LeRobotDataset v3.0 layout (codebase_version "v3.0").

    <out>/meta/info.json                              schema, fps, path templates, file size limits, totals
    <out>/meta/stats.json                             min/max/mean/std/count/q01..q99 per feature
    <out>/meta/tasks.parquet                          task string (pandas index) -> task_index
    <out>/meta/episodes/chunk-XXX/file-YYY.parquet    one row per episode: length, data/video placement, stats/*
    <out>/data/chunk-XXX/file-YYY.parquet             one row per frame, whole episodes, <= data_files_size_in_mb
    <out>/videos/observation.images.<cam>/chunk-XXX/file-YYY.mp4   episodes back to back, <= video_files_size_in_mb

Files roll over per episode (see ``FileRoller``); ``chunks_size`` files per chunk folder.

Standard features: ``observation.state`` (15), ``observation.environment_state`` (the sim's
``task_state``), ``observation.images.<cam>`` (video), ``action`` (executed), ``next.reward``,
``next.done``, ``timestamp``, ``frame_index``, ``episode_index``, ``index``, ``task_index``.
hil_robot extras (kept as ordinary columns): ``next.truncated``, ``action_policy``, ``segment``
(index into SEGMENT_ORDER, names listed in info.json), ``source`` (0 policy, 1 human),
``is_intervention``, ``policy_version``, ``critic_progress``, ``success``, ``step_timestamp_s``,
``obs_timestamp_s``, ``instruction``, ``language_correction``, ``operator_id``, ``device_id``,
``safety_flags``. Episode rows also carry ``hil.meta`` (EpisodeMeta as JSON) and the final
observation (``final_observation.*``) so ``import_lerobot`` restores a store losslessly except for
the (lossy, mp4v) video frames. Video codec: MPEG-4 Part 2 via OpenCV (the codec this machine's
OpenCV can write); LeRobot's pyav/torchcodec decoders read it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hil_robot.data.episode import Episode
from hil_robot.data.store import EpisodeStore
from hil_robot.types import ACTION_NAMES, INTERVENTION_SEGMENTS, SEGMENT_INDEX, SEGMENT_ORDER, STATE_LAYOUT

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 500
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
STRING_EXTRAS = ("instruction", "language_correction", "operator_id", "device_id", "safety_flags")


def state_names() -> list[str]:
    names: list[str] = []
    for key, (a, b) in STATE_LAYOUT.items():
        names += [f"{key}.{i}" for i in range(b - a)] if b - a > 1 else [key]
    return names


def video_key(camera: str) -> str:
    return f"observation.images.{camera}"


def _features(ep: Episode, fps: int) -> dict[str, dict[str, Any]]:
    f: dict[str, dict[str, Any]] = {}
    for cam in ep.cameras:
        h, w, c = ep.image_shapes[cam]
        f[video_key(cam)] = {
            "dtype": "video", "shape": [h, w, c], "names": ["height", "width", "channels"],
            "info": {"video.height": h, "video.width": w, "video.codec": "mpeg4", "video.pix_fmt": "yuv420p",
                     "video.is_depth_map": False, "video.fps": fps, "video.channels": c, "has_audio": False},
        }
    f["observation.state"] = {"dtype": "float32", "shape": [len(state_names())], "names": state_names()}
    if "obs/task_state" in ep.columns:
        k = int(np.shape(ep.columns["obs/task_state"])[1])
        f["observation.environment_state"] = {"dtype": "float32", "shape": [k], "names": [f"task_state.{i}" for i in range(k)]}
    f["action"] = {"dtype": "float32", "shape": [7], "names": list(ACTION_NAMES)}
    f["action_policy"] = {"dtype": "float32", "shape": [7], "names": list(ACTION_NAMES)}
    f["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    f["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    f["next.truncated"] = {"dtype": "bool", "shape": [1], "names": None}
    f["segment"] = {"dtype": "int64", "shape": [1], "names": [s.value for s in SEGMENT_ORDER]}
    f["source"] = {"dtype": "int64", "shape": [1], "names": ["policy", "human"]}
    f["is_intervention"] = {"dtype": "bool", "shape": [1], "names": None}
    f["policy_version"] = {"dtype": "int64", "shape": [1], "names": None}
    f["critic_progress"] = {"dtype": "float32", "shape": [1], "names": None}
    f["success"] = {"dtype": "bool", "shape": [1], "names": None}
    f["step_timestamp_s"] = {"dtype": "float64", "shape": [1], "names": None}
    f["obs_timestamp_s"] = {"dtype": "float64", "shape": [1], "names": None}
    for name in STRING_EXTRAS:
        f[name] = {"dtype": "string", "shape": [1], "names": None}
    f["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    f["frame_index"] = {"dtype": "int64", "shape": [1], "names": None}
    f["episode_index"] = {"dtype": "int64", "shape": [1], "names": None}
    f["index"] = {"dtype": "int64", "shape": [1], "names": None}
    f["task_index"] = {"dtype": "int64", "shape": [1], "names": None}
    return f


def _arrow_type(ft: dict[str, Any]) -> pa.DataType:
    base = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_(), "string": pa.string()}[ft["dtype"]]
    return base if list(ft["shape"]) == [1] else pa.list_(base, int(ft["shape"][0]))


def _episode_frame_columns(ep: Episode, ep_index: int, start: int, fps: int, task_ids: dict[str, int]) -> dict[str, Any]:
    c, n = ep.columns, len(ep)
    seg = np.asarray(c["segment"], np.int64)
    inter = np.isin(seg, [SEGMENT_INDEX[s] for s in INTERVENTION_SEGMENTS])
    last = np.arange(n) == n - 1
    cols: dict[str, Any] = {
        "observation.state": np.asarray(c["obs/state"], np.float32),
        "action": np.asarray(c["action_executed"], np.float32),
        "action_policy": np.asarray(c["action_policy"], np.float32),
        "next.reward": np.asarray(c["reward"], np.float32),
        "next.done": last & bool(c["done"][-1]),
        "next.truncated": last & (not bool(c["done"][-1])),
        "segment": seg, "source": np.asarray(c["source"], np.int64), "is_intervention": inter,
        "policy_version": np.asarray(c["policy_version"], np.int64),
        "critic_progress": np.asarray(c["critic_progress"], np.float32),
        "success": np.asarray(c["success"], bool),
        "step_timestamp_s": np.asarray(c["timestamp_s"], np.float64),
        "obs_timestamp_s": np.asarray(c["obs_timestamp_s"], np.float64),
        "instruction": list(c["instruction"]), "language_correction": list(c["language_correction"]),
        "operator_id": list(c["operator_id"]), "device_id": list(c["device_id"]),
        "safety_flags": [",".join(f) for f in c["safety_flags"]],
        "timestamp": (np.arange(n) / fps).astype(np.float32),
        "frame_index": np.arange(n, dtype=np.int64),
        "episode_index": np.full(n, ep_index, np.int64),
        "index": np.arange(start, start + n, dtype=np.int64),
        "task_index": np.array([task_ids[t] for t in c["instruction"]], np.int64),
    }
    if "obs/task_state" in c:
        cols["observation.environment_state"] = np.asarray(c["obs/task_state"], np.float32)
    return cols


def _to_arrow(values: Any, typ: pa.DataType) -> pa.Array:
    if isinstance(typ, pa.FixedSizeListType):
        arr = np.ascontiguousarray(values)
        flat = pa.array(arr.reshape(-1), type=typ.value_type)
        return pa.FixedSizeListArray.from_arrays(flat, typ.list_size)
    return pa.array(values if not isinstance(values, np.ndarray) else values, type=typ)


def _stats(x: np.ndarray) -> dict[str, list]:
    """x: [N, D] -> LeRobot stats (each a list of D values, count a 1-list)."""
    x = np.asarray(x, np.float64)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    for q in QUANTILES:
        out[f"q{int(round(q * 100)):02d}"] = np.quantile(x, q, axis=0)
    return {k: v.tolist() for k, v in out.items()}


def _image_stats(frames: np.ndarray) -> dict[str, list]:
    """frames: uint8 [N, H, W, 3] -> per-channel stats in [0, 1], shaped [3, 1, 1] like LeRobot."""
    sub = frames[:: max(1, len(frames) // 200)].astype(np.float64) / 255.0
    px = sub.reshape(-1, 3)
    s = _stats(px)
    return {k: (np.asarray(v).reshape(3, 1, 1).tolist() if k != "count" else [len(frames)]) for k, v in s.items()}


def _tasks_table(tasks: list[str]) -> pa.Table:
    """tasks.parquet as pandas would write ``DataFrame({"task_index": ...}, index=tasks)``."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "__index_level_0__": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["__index_level_0__"], "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


class FileRoller:
    """Places whole episodes into size-bounded files, numbered like LeRobot v3.

    An episode goes into the current file unless that file already holds an episode and
    ``used + size_bytes >= limit_bytes`` (LeRobot's rule; an episode is never split, so a single
    episode larger than the limit gets a file of its own). File indices run 0..chunks_size-1 inside
    a chunk folder, then the next chunk starts at file 0.
    """

    def __init__(self, limit_bytes: float, chunks_size: int) -> None:
        self.limit_bytes, self.chunks_size = float(limit_bytes), int(chunks_size)
        self.chunk_index = self.file_index = 0
        self.used_bytes, self.episodes_in_file = 0, 0

    def place(self, size_bytes: int) -> tuple[int, int, bool]:
        """-> (chunk_index, file_index, starts_a_new_file) for an episode of ``size_bytes``."""
        new_file = self.episodes_in_file == 0
        if self.episodes_in_file and self.used_bytes + size_bytes >= self.limit_bytes:
            if self.file_index >= self.chunks_size - 1:
                self.chunk_index, self.file_index = self.chunk_index + 1, 0
            else:
                self.file_index += 1
            self.used_bytes, self.episodes_in_file, new_file = 0, 0, True
        self.used_bytes += int(size_bytes)
        self.episodes_in_file += 1
        return self.chunk_index, self.file_index, new_file


def _parquet_size(table: pa.Table) -> int:
    """Bytes ``table`` takes as a snappy parquet file (written to memory)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue().size


def _mp4_writer(path: Path, fps: int, shape: tuple[int, ...]) -> cv2.VideoWriter:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = int(shape[0]), int(shape[1])
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4 video to {path}")
    return writer


def _write_frames(writer: cv2.VideoWriter, frames: np.ndarray) -> None:
    for f in frames:
        writer.write(np.ascontiguousarray(f[:, :, ::-1]))


class _DataFiles:
    """data/chunk-XXX/file-YYY.parquet, one row group per episode, rolled at the size limit."""

    def __init__(self, out: Path, schema: pa.Schema, limit_bytes: float, chunks_size: int) -> None:
        self.out, self.schema, self.roller = out, schema, FileRoller(limit_bytes, chunks_size)
        self.writer: pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> tuple[int, int]:
        chunk, file, new = self.roller.place(_parquet_size(table))
        if new:
            self.close()
            path = self.out / DATA_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(path, self.schema, compression="snappy")
        assert self.writer is not None
        self.writer.write_table(table)
        return chunk, file

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class _VideoFiles:
    """videos/<key>/chunk-XXX/file-YYY.mp4 for one camera, rolled at the size limit.

    An episode's encoded size is measured by encoding it alone into a scratch file first (OpenCV
    cannot append to or concatenate mp4 files), then its frames go into the chosen file; its
    from/to timestamps are seconds from that file's start.
    """

    def __init__(self, out: Path, key: str, fps: int, limit_bytes: float, chunks_size: int, scratch: Path) -> None:
        self.out, self.key, self.fps, self.scratch = out, key, fps, scratch
        self.roller = FileRoller(limit_bytes, chunks_size)
        self.writer: cv2.VideoWriter | None = None
        self.frames_in_file = 0

    def write(self, frames: np.ndarray) -> dict[str, Any]:
        """frames: uint8 [N, H, W, 3] RGB -> this episode's ``videos/<key>/...`` metadata."""
        probe = _mp4_writer(self.scratch, self.fps, frames.shape[1:])
        _write_frames(probe, frames)
        probe.release()
        size = self.scratch.stat().st_size
        self.scratch.unlink()
        chunk, file, new = self.roller.place(size)
        if new:
            self.close()
            self.writer = _mp4_writer(self.out / VIDEO_PATH.format(video_key=self.key, chunk_index=chunk, file_index=file),
                                      self.fps, frames.shape[1:])
            self.frames_in_file = 0
        assert self.writer is not None
        _write_frames(self.writer, frames)
        start = self.frames_in_file
        self.frames_in_file += len(frames)
        return {f"videos/{self.key}/chunk_index": chunk, f"videos/{self.key}/file_index": file,
                f"videos/{self.key}/from_timestamp": start / self.fps,
                f"videos/{self.key}/to_timestamp": self.frames_in_file / self.fps}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


def _write_episode_rows(out: Path, rows: list[dict[str, Any]], limit_bytes: float, chunks_size: int) -> None:
    """meta/episodes/chunk-XXX/file-YYY.parquet, rolled like the data files (LeRobot uses the data limit)."""
    schema = pa.Table.from_pylist(rows).schema  # one schema for every file (columns that are None somewhere)
    roller = FileRoller(limit_bytes, chunks_size)
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for row in rows:
        chunk, file, _ = roller.place(pa.Table.from_pylist([row], schema=schema).nbytes)
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = chunk, file
        groups.setdefault((chunk, file), []).append(row)
    for (chunk, file), group in groups.items():
        path = out / EPISODES_PATH.format(chunk_index=chunk, file_index=file)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(group, schema=schema), path, compression="snappy")


def _episode_row(ep: Episode, ei: int, start: int, tasks: list[str], cols: dict[str, Any]) -> dict[str, Any]:
    """The episode's metadata row minus file placement: length, dataset indices, stats/*, hil extras."""
    n = len(ep)
    row: dict[str, Any] = {
        "episode_index": ei, "tasks": sorted(set(ep.columns["instruction"]), key=tasks.index), "length": n,
        "data/chunk_index": 0, "data/file_index": 0, "dataset_from_index": start, "dataset_to_index": start + n,
    }
    for cam in ep.cameras:  # placeholders (column order); the writers fill in the file placement
        vk = video_key(cam)
        row.update({f"videos/{vk}/chunk_index": 0, f"videos/{vk}/file_index": 0,
                    f"videos/{vk}/from_timestamp": 0.0, f"videos/{vk}/to_timestamp": 0.0})
    row["meta/episodes/chunk_index"] = row["meta/episodes/file_index"] = 0
    for k in ("observation.state", "observation.environment_state", "action", "next.reward"):
        if k in cols:
            for stat, v in _stats(np.asarray(cols[k]).reshape(n, -1)).items():
                row[f"stats/{k}/{stat}"] = v
    row["hil.episode_id"] = ep.meta.episode_id
    row["hil.success"] = bool(ep.meta.success)
    row["hil.meta"] = json.dumps(ep.meta.to_dict())
    fo = ep.final_obs
    row["final_observation.state"] = None if fo is None else np.asarray(fo["obs/state"], np.float32).tolist()
    row["final_observation.environment_state"] = (
        None if fo is None or "obs/task_state" not in fo else np.asarray(fo["obs/task_state"], np.float32).tolist()
    )
    for cam in ep.cameras:
        ff = ep.final_frame(cam)
        row[f"final_observation.images.{cam}"] = None if ff is None else cv2.imencode(".png", ff[:, :, ::-1])[1].tobytes()
    return row


def _check_limits(chunks_size: int, data_mb: float, video_mb: float) -> None:
    for name, value in (("chunks_size", chunks_size), ("data_files_size_in_mb", data_mb), ("video_files_size_in_mb", video_mb)):
        if not value > 0:
            raise ValueError(f"{name}={value!r} must be > 0 (LeRobot v3 defaults: chunks_size {CHUNKS_SIZE}, "
                             f"data_files_size_in_mb {DATA_FILES_SIZE_IN_MB}, video_files_size_in_mb {VIDEO_FILES_SIZE_IN_MB})")
    if int(chunks_size) != chunks_size:
        raise ValueError(f"chunks_size={chunks_size!r} must be a whole number of files per chunk folder")


def export_lerobot(store: EpisodeStore | str | os.PathLike, out: str | os.PathLike, fps: int | None = None,
                   overwrite: bool = False, *, chunks_size: int = CHUNKS_SIZE,
                   data_files_size_in_mb: float = DATA_FILES_SIZE_IN_MB,
                   video_files_size_in_mb: float = VIDEO_FILES_SIZE_IN_MB) -> dict[str, Any]:
    """Write ``store`` as a LeRobotDataset v3.0 folder at ``out``; returns info.json's content.

    Data, episode-metadata and video files hold whole episodes and roll over to the next file once
    the next episode would take them to ``data_files_size_in_mb`` / ``video_files_size_in_mb``
    (MiB, as LeRobot counts); each chunk folder holds ``chunks_size`` files.
    """
    _check_limits(chunks_size, data_files_size_in_mb, video_files_size_in_mb)
    store = store if isinstance(store, EpisodeStore) else EpisodeStore(store, read_only=True)
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists; choose a new folder or pass overwrite=True")
        shutil.rmtree(out)
    entries = store.entries()
    if not entries:
        raise ValueError(f"store {store.root} has no finalised episodes to export")
    episodes = [store.read_episode(idx) for idx, _, _ in entries]
    first = episodes[0]
    if fps is None:
        dt = np.diff(np.asarray(first.columns["timestamp_s"]))
        dt = dt[dt > 0]
        fps = int(round(1.0 / float(np.median(dt)))) if len(dt) else 10
    fps = max(1, int(fps))
    features = _features(first, fps)
    tasks: list[str] = []
    for ep in episodes:
        for t in ep.columns["instruction"]:
            if t not in tasks:
                tasks.append(t)
    task_ids = {t: i for i, t in enumerate(tasks)}
    data_cols = [k for k, ft in features.items() if ft["dtype"] != "video"]
    schema = pa.schema([(k, _arrow_type(features[k])) for k in data_cols])
    mib = 1024 ** 2
    out.mkdir(parents=True)
    scratch = out / ".export-scratch"
    scratch.mkdir()
    data_files = _DataFiles(out, schema, data_files_size_in_mb * mib, int(chunks_size))
    videos = {cam: _VideoFiles(out, video_key(cam), fps, video_files_size_in_mb * mib, int(chunks_size), scratch / f"{cam}.mp4")
              for cam in first.cameras}
    ep_rows: list[dict[str, Any]] = []
    all_numeric: dict[str, list[np.ndarray]] = {}
    image_samples: dict[str, list[np.ndarray]] = {cam: [] for cam in first.cameras}
    start = 0
    try:
        for ei, ep in enumerate(episodes):
            if ep.cameras != first.cameras:
                raise ValueError(f"episode {ep.meta.episode_id!r} has cameras {ep.cameras}, the first one {first.cameras}")
            cols = _episode_frame_columns(ep, ei, start, fps, task_ids)
            n = len(ep)
            row = _episode_row(ep, ei, start, tasks, cols)
            table = pa.table({k: _to_arrow(cols[k], schema.field(k).type) for k in data_cols}, schema=schema)
            chunk, file = data_files.write(table)
            row["data/chunk_index"], row["data/file_index"] = chunk, file
            for cam in ep.cameras:
                frames = ep.frames(cam)
                row.update(videos[cam].write(frames))
                image_samples[cam].append(frames[:: max(1, n // 20)])
            for k in ("observation.state", "observation.environment_state", "action", "next.reward"):
                if k in cols:
                    all_numeric.setdefault(k, []).append(np.asarray(cols[k]).reshape(n, -1))
            ep_rows.append(row)
            start += n
    finally:
        data_files.close()
        for v in videos.values():
            v.close()
        shutil.rmtree(scratch, ignore_errors=True)
    _write_episode_rows(out, ep_rows, data_files_size_in_mb * mib, int(chunks_size))
    pq.write_table(_tasks_table(tasks), out / "meta/tasks.parquet")
    stats = {k: _stats(np.concatenate(v)) for k, v in all_numeric.items()}
    for cam, samples in image_samples.items():
        stats[video_key(cam)] = _image_stats(np.concatenate(samples))
    (out / "meta/stats.json").write_text(json.dumps(stats, indent=4))
    info = {
        "codebase_version": CODEBASE_VERSION, "robot_type": first.meta.robot or None, "total_episodes": len(episodes),
        "total_frames": start, "total_tasks": len(tasks), "chunks_size": int(chunks_size),
        "data_files_size_in_mb": data_files_size_in_mb, "video_files_size_in_mb": video_files_size_in_mb, "fps": fps,
        "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH, "features": features,
    }
    (out / "meta/info.json").write_text(json.dumps(info, indent=4))
    return info
