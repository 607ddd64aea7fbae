"""The episode store: a folder of crash-safe episode files (DESIGN §3, docs/data.md).

    <root>/store.json              format marker + image codec
    <root>/episodes/NNNNNN_<id>.hep  finalised episodes (immutable; appear atomically by rename)
    <root>/incoming/NNNNNN_<id>.hep  the episode being written (flock held by its writer)
    <root>/quarantine/               files that could not be recovered, with a .reason.txt

One writer per store (``.writer.lock``); any number of readers, in any process, without locks:
readers list ``episodes/`` and read immutable files. A crashed writer's file in ``incoming/`` is
recovered (up to its last complete flush) or quarantined by the next ``EpisodeStore`` that opens
the folder writable; a live writer's file is recognised by its flock and left alone.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from hil_robot.data import codec as codecs
from hil_robot.data import format as fmt
from hil_robot.data.episode import Episode, assemble, read_episode_file, segment_summary
from hil_robot.data.format import EpisodeCorruptError, StoreError
from hil_robot.data.writer import EpisodeWriter, fsync_dir
from hil_robot.types import EpisodeMeta

log = logging.getLogger(__name__)

STORE_FORMAT = "hil_robot.episode_store"
STORE_VERSION = 1
_NAME_RE = re.compile(r"^(\d{6,})_(.+)\.hep$")
_SAFE_RE = re.compile(r"[^A-Za-z0-9_.-]+")


class EpisodeStore:
    """A folder of episodes. ``EpisodeStore(path)`` creates it if needed and recovers crashed writes.

    image_codec: lz4 | zstd | jpeg | png | raw (used when this store writes; each file names its
        own). lz4/zstd (lossless) suit rendered frames, jpeg noisy real cameras; see codec.py.
    flush_interval_s: the most a SIGKILLed writer can lose (default 0.5 s, must be <= 1 s).
    read_only: never recover, create or write (for a second process that only samples).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        image_codec: str = codecs.DEFAULT_CODEC,
        jpeg_quality: int = 95,
        flush_interval_s: float = 0.5,
        max_buffered_steps: int = 256,
        fsync: bool = True,
        read_only: bool = False,
        create: bool = True,
    ):
        if image_codec not in codecs.CODECS:
            raise StoreError(f"unknown image codec {image_codec!r}; choose one of {', '.join(codecs.CODECS)}")
        if not 0 < flush_interval_s <= 1.0:
            raise StoreError(f"flush_interval_s={flush_interval_s} must be in (0, 1] (crash loss bound)")
        self.root = Path(path)
        self.image_codec = image_codec
        self.jpeg_quality = int(jpeg_quality)
        self.flush_interval_s = float(flush_interval_s)
        self.max_buffered_steps = int(max_buffered_steps)
        self.fsync = bool(fsync)
        self.read_only = read_only
        self.episodes_dir = self.root / "episodes"
        self.incoming_dir = self.root / "incoming"
        self.quarantine_dir = self.root / "quarantine"
        self.errors: dict[str, str] = {}  # file name -> why it was skipped
        self._cache: dict[str, tuple[tuple[int, int], EpisodeMeta, int]] = {}  # name -> ((size, mtime), meta, index)
        self._writers: list[EpisodeWriter] = []
        self._writer_lock_file: Any = None
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self._open_root(create)
        if not read_only:
            self.recover()
        self.refresh()

    # ------------------------------------------------------------------ opening

    def _open_root(self, create: bool) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"{self.root} is a file, not an episode store folder; pass a folder (new or a store)")
        marker = self.root / "store.json"
        if marker.is_file():
            try:
                info = json.loads(marker.read_text())
            except (OSError, ValueError) as e:
                raise StoreError(f"{marker} is unreadable ({e}); restore it or recreate the store") from None
            if info.get("format") != STORE_FORMAT:
                raise StoreError(f"{self.root} is not an episode store (store.json format={info.get('format')!r})")
            if int(info.get("version", 0)) > STORE_VERSION:
                raise StoreError(f"{self.root} was written by a newer hil_robot (store version {info['version']}); upgrade")
        elif self.read_only or not create:
            raise StoreError(f"no episode store at {self.root} (missing store.json); record into it first")
        else:
            if self.root.exists() and any(p.name not in {"episodes", "incoming", "quarantine"} for p in self.root.iterdir()):
                raise StoreError(f"{self.root} exists and is not an episode store; choose an empty or new folder")
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps({"format": STORE_FORMAT, "version": STORE_VERSION, "created_s": time.time()}))
            os.replace(tmp, marker)
        if not self.read_only:
            for d in (self.episodes_dir, self.incoming_dir, self.quarantine_dir):
                d.mkdir(exist_ok=True)

    # ------------------------------------------------------------------ listing

    def refresh(self) -> list[EpisodeMeta]:
        """Re-list ``episodes/``; returns the metadata of episodes that appeared since last time."""
        new: list[EpisodeMeta] = []
        seen: set[str] = set()
        try:
            names = sorted(os.listdir(self.episodes_dir))
        except FileNotFoundError:
            names = []
        for name in names:
            if name.startswith("."):
                continue
            seen.add(name)
            path = self.episodes_dir / name
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            cached = self._cache.get(name)
            if cached and cached[0] == key:
                continue
            m = _NAME_RE.match(name)
            if not m:
                self._error(name, f"foreign file {path} in episodes/ (not NNNNNN_<id>.hep); move it elsewhere")
                continue
            try:
                with open(path, "rb") as f:
                    meta_dict = fmt.read_trailer_meta(f, st.st_size)
                if meta_dict is None:
                    raise EpisodeCorruptError("no valid trailer/metadata (truncated or overwritten file)")
                meta = EpisodeMeta.from_dict(meta_dict)
            except Exception as e:  # noqa: BLE001 - any failure here means this one file is unusable
                self._error(name, f"episode file {path} is corrupt: {e}; the rest of the store is fine — move this file to quarantine/")
                continue
            self.errors.pop(name, None)
            self._cache[name] = (key, meta, int(m.group(1)))
            new.append(meta)
        for name in list(self._cache):
            if name not in seen:
                del self._cache[name]
        return new

    def _error(self, name: str, message: str) -> None:
        if self.errors.get(name) != message:
            log.error("episode store %s: %s", self.root, message)
        self.errors[name] = message

    def episodes(self) -> list[EpisodeMeta]:
        """Metadata of every readable finalised episode, in recording order (as of the last refresh)."""
        return [meta for _, meta, _ in sorted(self._cache.values(), key=lambda v: v[2])]

    def entries(self) -> list[tuple[int, EpisodeMeta, Path]]:
        """(index, meta, path) for every readable finalised episode, in recording order."""
        out = [(idx, meta, self.episodes_dir / name) for name, (_, meta, idx) in self._cache.items()]
        return sorted(out, key=lambda e: e[0])

    def __len__(self) -> int:
        return len(self._cache)

    def __iter__(self) -> Iterator[Episode]:
        for idx, _, _ in self.entries():
            yield self.read_episode(idx)

    def total_steps(self) -> int:
        return sum(m.num_steps for m in self.episodes())

    def _find(self, key: int | str) -> Path:
        for idx, meta, path in self.entries():
            if key == idx or key == meta.episode_id:
                return path
        for name, msg in self.errors.items():
            m = _NAME_RE.match(name)
            if m and (str(key) == m.group(2) or key == int(m.group(1))):
                raise EpisodeCorruptError(msg)
        raise KeyError(f"no episode {key!r} in {self.root} (has {len(self)} episodes; indices {[e[0] for e in self.entries()][:10]}...)")

    def read_episode(self, key: int | str) -> Episode:
        """Read a finalised episode by index or id (raises EpisodeCorruptError naming it if damaged)."""
        return read_episode_file(self._find(key))

    def in_progress(self) -> list[str]:
        """File names in incoming/ (episodes being written, or crashed ones not yet recovered)."""
        try:
            return sorted(n for n in os.listdir(self.incoming_dir) if n.endswith(".hep"))
        except FileNotFoundError:
            return []

    # ------------------------------------------------------------------ writing

    def open_episode(self, episode_id: str, **header: Any) -> EpisodeWriter:
        """Start writing an episode. header: task, instruction, robot, operator, seed, extra (defaults
        for the metadata written at the end). One writer process per store."""
        if self.read_only:
            raise StoreError(f"store {self.root} was opened read_only; open it without read_only to record")
        if not episode_id:
            raise StoreError("episode_id must be a non-empty string")
        self._acquire_writer_lock()
        if any(not w.closed for w in self._writers):
            open_ids = [w.episode_id for w in self._writers if not w.closed]
            raise StoreError(f"episode {open_ids[0]!r} is still open in {self.root}; finalise it before starting {episode_id!r}")
        if any(m.episode_id == episode_id for m in self.episodes()):
            raise StoreError(f"episode id {episode_id!r} already exists in {self.root}; ids must be unique")
        index = self._next_index()
        safe = _SAFE_RE.sub("-", episode_id)[:80]
        path = self.incoming_dir / f"{index:06d}_{safe}.hep"
        full_header = {
            "episode_id": episode_id, "index": index, "image_codec": self.image_codec,
            "start_time_s": time.time(), "pid": os.getpid(), **header,
        }
        writer = EpisodeWriter(self, episode_id, index, path, full_header)
        self._writers.append(writer)
        self._start_flusher()
        return writer

    def _next_index(self) -> int:
        indices = [-1]
        for d in (self.episodes_dir, self.incoming_dir, self.quarantine_dir):
            for name in os.listdir(d):
                m = re.match(r"^(\d{6,})_", name)
                if m:
                    indices.append(int(m.group(1)))
        return max(indices) + 1

    def _acquire_writer_lock(self) -> None:
        if self._writer_lock_file is not None:
            return
        f = open(self.root / ".writer.lock", "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            who = f.read().strip() or "another process"
            f.close()
            raise StoreError(
                f"store {self.root} is being written by {who}; one writer per store — record into another folder"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        self._writer_lock_file = f

    def _start_flusher(self) -> None:
        if self._flusher is None or not self._flusher.is_alive():
            self._stop.clear()
            self._flusher = threading.Thread(target=self._flush_loop, name="episode-store-flusher", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        period = self.flush_interval_s / 8
        while not self._stop.wait(period):
            for w in list(self._writers):
                try:
                    w.flush_if_due()
                except Exception:  # noqa: BLE001 - keep flushing other writers; the error is logged
                    log.exception("background flush of episode %r failed", w.episode_id)

    def _writer_closed(self, writer: EpisodeWriter) -> None:
        if writer in self._writers:
            self._writers.remove(writer)
        self.refresh()

    def close(self) -> None:
        """Flush open writers and release them (an unfinished episode stays in incoming/ and is
        recovered as a partial episode by the next open), then stop the flusher."""
        for w in list(self._writers):
            w.release()
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=2.0)
        if self._writer_lock_file is not None:
            self._writer_lock_file.close()
            self._writer_lock_file = None

    def __enter__(self) -> "EpisodeStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ recovery

    def recover(self) -> list[str]:
        """Recover or quarantine files in incoming/ whose writer is gone. Returns log lines."""
        lines = []
        for name in os.listdir(self.incoming_dir):  # leftovers of a writer killed while creating a file
            if name.startswith(".") and name.endswith(".hep.tmp"):
                try:
                    f = open(self.incoming_dir / name, "rb")
                except FileNotFoundError:  # its live writer renamed it meanwhile: nothing to recover
                    continue
                with f:
                    try:
                        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                    (self.incoming_dir / name).unlink(missing_ok=True)
        for name in self.in_progress():
            path = self.incoming_dir / name
            try:
                f = open(path, "r+b")
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer owns it
                if not path.exists():  # recovered by someone else meanwhile
                    continue
                lines.append(self._recover_file(path, f))
            finally:
                f.close()
        return lines

    def _recover_file(self, path: Path, f: Any) -> str:
        size = os.fstat(f.fileno()).st_size
        scan = fmt.scan_chunks(f, size)
        if scan.finalised:  # the writer died between the final fsync and the rename: finish the rename
            os.rename(path, self.episodes_dir / path.name)
            fsync_dir(self.episodes_dir)
            line = f"completed the finalisation of {path.name} (its writer died just before moving it to episodes/)"
            log.warning("episode store %s: %s", self.root, line)
            return line
        try:
            header = next(fmt.iter_payloads(scan, fmt.HEADER))
            steps = list(fmt.iter_payloads(scan, fmt.STEPS))
            columns, _, _ = assemble(header, steps, list(fmt.iter_payloads(scan, fmt.RELABEL)))
            n = len(columns.get("step", ()))
        except Exception as e:  # noqa: BLE001
            header, n, scan.problem = {}, 0, scan.problem or f"unreadable chunks ({e})"
        if n == 0:
            target = self.quarantine_dir / path.name
            os.rename(path, target)
            reason = f"no complete flush of any step ({scan.problem or 'empty episode'})"
            (self.quarantine_dir / (path.name + ".reason.txt")).write_text(reason + "\n")
            line = f"quarantined partial episode {path.name}: {reason}; moved to {target}"
            log.warning("episode store %s: %s", self.root, line)
            return line
        dropped = size - scan.good_bytes
        f.truncate(scan.good_bytes)
        seg = np.asarray(columns["segment"], np.int8)
        counts, takeovers = segment_summary(seg)
        versions = sorted({int(v) for v in columns["policy_version"] if v >= 0})
        last_ts = float(columns["timestamp_s"][-1])
        meta = EpisodeMeta(
            episode_id=header["episode_id"], task=str(header.get("task", "")),
            instruction=str(header.get("instruction") or columns["instruction"][-1]),
            robot=str(header.get("robot", "sim")), operator=str(header.get("operator", "")), success=False,
            num_steps=n, segment_counts=counts, num_interventions=takeovers,
            start_time_s=float(header.get("start_time_s", 0.0)), end_time_s=time.time(), seed=header.get("seed"),
            policy_versions=versions,
            extra={**header.get("extra", {}), "recovered": True, "dropped_tail_bytes": int(dropped),
                   "last_step_timestamp_s": last_ts},
        )
        f.seek(scan.good_bytes)
        tail = fmt.encode_chunk(fmt.META, meta.to_dict()) + fmt.encode_trailer(scan.good_bytes)
        f.write(tail)
        f.flush()
        os.fsync(f.fileno())
        os.rename(path, self.episodes_dir / path.name)
        fsync_dir(self.episodes_dir)
        line = (
            f"recovered partial episode {meta.episode_id!r} ({path.name}): {n} steps up to its last complete flush"
            f" (dropped {dropped} bytes of incomplete tail)"
        )
        log.warning("episode store %s: %s", self.root, line)
        return line
