"""Assemble observations from separate topics (no ROS objects here, so it is unit-testable).

Two modes:

* ``exact`` — every part of one observation carries the same header stamp (the sim driver stamps
  joints, pose, images, task state and status of one physics step identically). An observation is
  complete when all its parts with that stamp have arrived; the newest complete one wins.
* ``latest`` — independent real drivers: take the newest sample of each part; complete when all
  exist and their stamps lie within ``max_skew_s``; the observation's stamp is the oldest part's,
  so staleness checks stay honest.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Iterable

import numpy as np

from hil_robot.types import STATE_DIM


class ObservationAssembler:
    def __init__(self, parts: Iterable[str], mode: str = "exact", max_skew_s: float = 0.1, keep: int = 16,
                 newest_only: bool = True) -> None:
        """newest_only: exact mode delivers only observations newer than the last one (a controller);
        False delivers every stamp that completes, in any order, once (a recorder wants them all)."""
        if mode not in ("exact", "latest"):
            raise ValueError(f"sync mode {mode!r}: use exact (sim) or latest (independent real drivers)")
        self.parts = frozenset(parts)
        self.mode = mode
        self.max_skew_ns = int(max_skew_s * 1e9)
        self.keep = keep
        self._pending: collections.OrderedDict[int, dict[str, Any]] = collections.OrderedDict()
        self._latest: dict[str, tuple[int, Any]] = {}
        self._lock = threading.Lock()
        self.last_complete_ns = -1
        self.completed = 0
        self.newest_only = newest_only
        self._delivered: collections.deque[int] = collections.deque(maxlen=4 * keep)
        self.dropped = 0  # exact mode: stamps evicted before all their parts arrived

    def add(self, part: str, stamp_ns: int, value: Any) -> tuple[int, dict[str, Any]] | None:
        """Feed one part; returns (stamp_ns, {part: value}) when this completes a newer observation."""
        if part not in self.parts:
            return None
        with self._lock:
            if self.mode == "latest":
                self._latest[part] = (stamp_ns, value)
                if len(self._latest) < len(self.parts):
                    return None
                stamps = [s for s, _ in self._latest.values()]
                if max(stamps) - min(stamps) > self.max_skew_ns:
                    return None
                stamp = min(stamps)
                self.last_complete_ns = stamp
                self.completed += 1
                return stamp, {k: v for k, (_, v) in self._latest.items()}
            if (stamp_ns <= self.last_complete_ns if self.newest_only else stamp_ns in self._delivered):
                return None  # a republished or late part of an observation we already delivered
            entry = self._pending.setdefault(stamp_ns, {})
            entry[part] = value
            if len(entry) == len(self.parts):
                for old in [s for s in self._pending if (s <= stamp_ns if self.newest_only else s == stamp_ns)]:
                    if old != stamp_ns:
                        self.dropped += 1
                    del self._pending[old]
                self._delivered.append(stamp_ns)
                self.last_complete_ns = max(self.last_complete_ns, stamp_ns)
                self.completed += 1
                return stamp_ns, entry
            while len(self._pending) > self.keep:
                self._pending.popitem(last=False)
                self.dropped += 1
            return None


def observation_from_parts(parts: dict[str, Any], timestamp_s: float, prompt: str = "") -> dict[str, Any]:
    """Parts (``state_joints`` float[8] = 7 joints + gripper opening, ``pose`` (pos, quat),
    ``images/<cam>``, optional ``task_state`` and ``status``) -> an observation dict (types.py)."""
    from hil_robot.types import STATE_LAYOUT

    state = np.zeros(STATE_DIM, dtype=np.float32)
    pos, quat = parts["pose"]
    joints = np.asarray(parts["joints"], dtype=np.float64)
    state[slice(*STATE_LAYOUT["ee_pos"])] = pos
    state[slice(*STATE_LAYOUT["ee_quat"])] = quat
    state[slice(*STATE_LAYOUT["joints"])] = joints[:7]
    state[slice(*STATE_LAYOUT["gripper"])] = joints[7]
    # same key order as sim.SimRobot.observe: images, state, task_state, prompt, timestamp_s
    obs: dict[str, Any] = {k: v for k, v in parts.items() if k.startswith("images/")}
    obs["state"] = state
    if "task_state" in parts and np.asarray(parts["task_state"]).size:
        obs["task_state"] = np.asarray(parts["task_state"], dtype=np.float32)
    status = parts.get("status") or {}
    obs["prompt"] = status.get("prompt", prompt) if isinstance(status, dict) else prompt
    obs["timestamp_s"] = float(timestamp_s)
    return obs
