"""Pre-intervention windows estimated from the data (``learner.pre_intervention=estimated``).

The fixed rule labels the last K autonomous steps before each takeover ``pre_intervention`` (DESIGN
§3, Sirius), and a good K depends on how long the operator waits before acting: a person who
watches a stall for 4 s before taking over needs a larger K than one who acts after 1.5 s, and the
operator's trigger is not something a real cell knows. The estimate reads the robot's own
trajectory instead: walking back from the takeover, the window is the stretch over which the
end effector stopped making progress, i.e. stayed inside a box of half-width ``stall_m`` with the
gripper opening unchanged (within ``opening_eps``), plus, where a progress critic scored the steps
(``critic_progress`` finite), the stretch since its value last rose by more than ``critic_eps``.
The longer of the two is taken, clipped to [min_k, max_k]. Torch-free: the recorder runs it online
(``hil_robot/data/recorder.py``) at every takeover.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

OPENING_INDEX = 7  # state layout: ee_pos[0:3], ee_quat[3:7], gripper opening [7], joints [8:15]
SMOOTH_STEPS = 3  # positions are averaged over this many steps first (command noise is not motion)


def motion_stall_steps(ee_pos: np.ndarray, opening: np.ndarray, stall_m: float, opening_eps: float = 0.1) -> int:
    """Autonomous steps at the end of a run-up during which the EE made no progress.

    ee_pos: float [N, 3], opening: float [N]: the run-up's observations, oldest first, the last row
    the takeover step's observation (where the robot stood when the operator took over). Returns
    how many of the first N - 1 rows (the autonomous steps) lie in the stalled stretch: the longest
    suffix whose positions (a 3-step moving average) fit a box of half-width ``stall_m`` on every
    axis and whose gripper opening varied by at most ``opening_eps``.
    """
    n = len(ee_pos)
    if n < 2:
        return 0
    ee_pos = smooth(np.asarray(ee_pos, np.float64))  # a jittering, stuck policy is still stuck
    lo, hi = ee_pos[-1].copy(), ee_pos[-1].copy()
    olo = ohi = float(opening[-1])
    count = 0
    for i in range(n - 2, -1, -1):
        p = ee_pos[i]
        np.minimum(lo, p, out=lo)
        np.maximum(hi, p, out=hi)
        o = float(opening[i])
        olo, ohi = min(olo, o), max(ohi, o)
        if float((hi - lo).max()) > 2.0 * stall_m or ohi - olo > opening_eps:
            break
        count += 1
    return count


def smooth(x: np.ndarray, width: int = SMOOTH_STEPS) -> np.ndarray:
    """Centred moving average along axis 0 (shorter at the ends), [N, D] -> [N, D]."""
    if len(x) < 2 or width <= 1:
        return x
    half = width // 2
    c = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
    idx = np.arange(len(x))
    lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, len(x))
    return (c[hi] - c[lo]) / (hi - lo)[:, None]


def critic_stall_steps(critic_progress: Sequence[float], critic_eps: float = 0.01) -> int:
    """Autonomous steps at the end of a run-up since the critic's value (V <- V + (1 - V) * delta,
    DESIGN §4) last rose by more than ``critic_eps``; 0 when any step lacks a critic score."""
    deltas = np.asarray(critic_progress, np.float64)
    if deltas.size == 0 or not np.all(np.isfinite(deltas)):
        return 0
    v, best, since = 0.0, 0.0, 0
    for d in deltas:
        v = v + (1.0 - v) * float(d)
        if v > best + critic_eps:
            best, since = v, 0
        else:
            since += 1
    return since


def estimate_window(states: np.ndarray, critic_progress: Sequence[float] | None = None, *, stall_m: float = 0.01,
                    min_k: int = 3, max_k: int = 60, opening_eps: float = 0.1) -> int:
    """Pre-intervention window K for one takeover.

    states: float [N, >= 8] observation states of the autonomous run-up (oldest first) followed by
    the takeover step's state; critic_progress: the run-up's per-step critic deltas (N - 1), or
    None. Returns K in [min(min_k, N - 1), min(max_k, N - 1)].
    """
    states = np.asarray(states, np.float64)
    if states.ndim != 2 or states.shape[1] <= OPENING_INDEX:
        raise ValueError(f"states must be [N, >= {OPENING_INDEX + 1}] observation states, got shape {states.shape}")
    available = len(states) - 1
    k = motion_stall_steps(states[:, :3], states[:, OPENING_INDEX], stall_m, opening_eps)
    if critic_progress is not None:
        k = max(k, critic_stall_steps(critic_progress))
    return int(max(0, min(max(k, min_k), max_k, available)))


def window_stats(windows: Sequence[int]) -> dict[str, float]:
    """Summary of a run's estimated windows (for logs and episode metadata)."""
    if not windows:
        return {"count": 0, "mean": math.nan, "max": math.nan}
    w = np.asarray(windows, np.float64)
    return {"count": int(w.size), "mean": float(w.mean()), "max": float(w.max())}
