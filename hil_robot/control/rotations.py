"""Small vectorised rotation helpers (quaternions ``[w, x, y, z]``, axis-angle in radians).

All functions take arrays with a leading batch shape ``[..., 4]`` / ``[..., 3]`` and compute in
float64, so the safety filter can run one command or 10^5 of them through the same code.
"""

from __future__ import annotations

import numpy as np


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """[..., 4] -> unit quaternions (zero-norm inputs become NaN, so callers see them as invalid)."""
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 1e-12, q / np.where(n > 0, n, 1.0), np.nan)


def quat_conj(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a ⊗ b, [..., 4]."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Unit quaternion [..., 4] -> axis-angle [..., 3] with angle in [0, pi]."""
    q = quat_normalize(q)
    q = np.where(q[..., :1] < 0, -q, q)  # shortest rotation
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., :1])
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(s > 1e-12, angle / np.where(s > 0, s, 1.0), 2.0)  # small-angle limit: 2
    return v * scale


def rotvec_to_quat(r: np.ndarray) -> np.ndarray:
    """Axis-angle [..., 3] -> unit quaternion [..., 4]."""
    r = np.asarray(r, dtype=np.float64)
    angle = np.linalg.norm(r, axis=-1, keepdims=True)
    half = 0.5 * angle
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(angle > 1e-12, np.sin(half) / np.where(angle > 0, angle, 1.0), 0.5)
    return np.concatenate([np.cos(half), r * k], axis=-1)


def quat_angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation angle (rad) between two orientations, [...]."""
    d = np.abs(np.sum(quat_normalize(a) * quat_normalize(b), axis=-1))
    return 2.0 * np.arccos(np.clip(d, 0.0, 1.0))


def relative_rotvec(q_target: np.ndarray, q_current: np.ndarray) -> np.ndarray:
    """Base-frame axis-angle increment that turns ``q_current`` into ``q_target`` [..., 3]
    (R_target = R_delta · R_current, so q_delta = q_target ⊗ conj(q_current))."""
    return quat_to_rotvec(quat_mul(quat_normalize(q_target), quat_conj(quat_normalize(q_current))))
