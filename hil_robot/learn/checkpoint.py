"""Atomic learner checkpoints: everything needed to resume exactly, without pickle.

Layout under ``<run_dir>/checkpoints/``::

    step_000001234/
        state.safetensors   every tensor of the learner state (model, optimisers, targets, RNG)
        state.json          the rest: structure, step, weight version, replay position, config
        policy/             (weighted BC) the VLA in ``policies.checkpoint`` format, for serving
    LATEST                  name of the newest complete checkpoint (replaced atomically)
    published.json          highest weight version ever published (written on every publish)

A checkpoint directory is written under a temporary name, fsynced, renamed, and only then
``LATEST`` is switched (``os.replace``), so a crash at any instant leaves the previous
checkpoint intact. Nested state (optimiser ``state_dict``s with int keys, tuples, floats) is
stored as tensors in safetensors plus a JSON skeleton that keeps key and container types.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

LATEST = "LATEST"
PUBLISHED = "published.json"
KEEP = 2


class CheckpointError(RuntimeError):
    """A learner checkpoint that cannot be read; the message names the file and what to do."""


# ----------------------------------------------------------------------------- nested state <-> (tensors, json)


def flatten_state(obj: Any, tensors: dict[str, torch.Tensor] | None = None, path: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Nested dict/list/tuple of tensors, numpy arrays and scalars -> (JSON skeleton, tensors)."""
    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        key = path or "_"
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}, tensors
    if isinstance(obj, np.ndarray):
        key = path or "_"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": key}, tensors
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"state key {k!r} at {path or '/'} must be str or int")
            items.append([k, flatten_state(v, tensors, f"{path}/{k}")[0]])
        return {"__dict__": items}, tensors
    if isinstance(obj, (list, tuple)):
        items = [flatten_state(v, tensors, f"{path}/{i}")[0] for i, v in enumerate(obj)]
        return ({"__tuple__": items} if isinstance(obj, tuple) else items), tensors
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item(), tensors
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj, tensors
    raise TypeError(f"cannot checkpoint {type(obj).__name__} at {path or '/'}")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__ndarray__" in skeleton:
            return tensors[skeleton["__ndarray__"]].numpy()
        if "__dict__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        raise CheckpointError(f"unknown checkpoint node {sorted(skeleton)}")
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


# ----------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# ----------------------------------------------------------------------------- write / read


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def save(run_dir: str | Path, state: dict[str, Any], meta: dict[str, Any],
         extra_writer: Callable[[Path], None] | None = None) -> Path:
    """Write ``state`` (nested tensors) + ``meta`` (JSON: step, version, ...) atomically.

    extra_writer(tmp_dir) may add files (e.g. the serving policy) before the directory goes live.
    Returns the final checkpoint directory.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    step = int(meta["step"])
    name = f"step_{step:09d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    skeleton, tensors = flatten_state(state)
    save_file(tensors, str(tmp / "state.safetensors"))
    doc = {"format": "hil_robot.learner/1", "saved_at_s": time.time(), **meta, "state": skeleton}
    with open(tmp / "state.json", "w") as f:
        json.dump(doc, f)
    if extra_writer is not None:
        extra_writer(tmp)
    for p in tmp.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    final = root / name
    if final.exists():  # same step saved twice (e.g. final save right after a periodic one)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    _write_atomic(root / LATEST, name + "\n")
    _prune(root, keep=KEEP, current=name)
    return final


def _prune(root: Path, keep: int, current: str) -> None:
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in done[:-keep]:
        if p.name != current:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp-*"):  # leftovers of a crash mid-write
        if not p.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(p, ignore_errors=True)


def latest(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory, or None when the run has none."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise CheckpointError(f"{pointer} names {path.name}, which is incomplete; delete {pointer} to start fresh")
    return path


def load(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """-> (state, meta) from a checkpoint directory written by ``save``."""
    path = Path(path)
    try:
        with open(path / "state.json") as f:
            doc = json.load(f)
        tensors = load_file(str(path / "state.safetensors"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read learner checkpoint {path}: {e}; remove it (and LATEST) to start fresh") from None
    skeleton = doc.pop("state")
    return unflatten_state(skeleton, tensors), doc


def record_published(run_dir: str | Path, version: int, step: int, *, kind: str = "full", nbytes: int = 0) -> None:
    """Remember the highest version published, so a resumed learner never re-uses a version number
    that subscribers have already seen (they reject non-increasing versions); also what it was
    (``kind`` full|delta and its size in bytes)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    _write_atomic(root / PUBLISHED, json.dumps({"version": int(version), "step": int(step), "time_s": time.time(),
                                                "kind": kind, "bytes": int(nbytes)}))


def published_version(run_dir: str | Path) -> int:
    path = Path(run_dir) / "checkpoints" / PUBLISHED
    if not path.is_file():
        return 0
    try:
        return int(json.loads(path.read_text())["version"])
    except (ValueError, KeyError):
        return 0
