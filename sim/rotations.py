"""Small quaternion helpers (``[w, x, y, z]``, MuJoCo order) on numpy arrays.

Kept in plain numpy so the expert and operator can use them without a MuJoCo model.
"""

from __future__ import annotations

import math

import numpy as np


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a*b (apply b first, then a)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def quat_conj(q: np.ndarray) -> np.ndarray:
    return np.array([q[0], -q[1], -q[2], -q[3]])


def quat_normalize(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    n = math.sqrt(float(q @ q))
    if n < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    q = q / n
    return q if q[0] >= 0 else -q


def quat_from_rotvec(v: np.ndarray) -> np.ndarray:
    """Axis-angle vector (rad) -> unit quaternion."""
    angle = math.sqrt(float(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]))
    if angle < 1e-12:
        return np.array([1.0, 0.5 * v[0], 0.5 * v[1], 0.5 * v[2]])
    s = math.sin(0.5 * angle) / angle
    return np.array([math.cos(0.5 * angle), v[0] * s, v[1] * s, v[2] * s])


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Unit quaternion -> axis-angle vector (rad), angle in [0, pi]."""
    w = q[0]
    xyz = np.asarray(q[1:4], dtype=np.float64)
    if w < 0:
        w, xyz = -w, -xyz
    s = math.sqrt(float(xyz @ xyz))
    if s < 1e-12:
        return 2.0 * xyz
    angle = 2.0 * math.atan2(s, w)
    return xyz * (angle / s)


def rot_error(q_target: np.ndarray, q_current: np.ndarray) -> np.ndarray:
    """World-frame rotation vector that takes ``q_current`` to ``q_target`` (target = R(e) * current)."""
    return quat_to_rotvec(quat_mul(q_target, quat_conj(q_current)))


def quat_from_yaw(yaw_rad: float) -> np.ndarray:
    return np.array([math.cos(0.5 * yaw_rad), 0.0, 0.0, math.sin(0.5 * yaw_rad)])


def yaw_of(q: np.ndarray) -> float:
    """Heading of the body x axis about world z (rad)."""
    w, x, y, z = q
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def z_axis(q: np.ndarray) -> np.ndarray:
    """Body z axis in the world frame."""
    w, x, y, z = q
    return np.array([2.0 * (x * z + w * y), 2.0 * (y * z - w * x), 1.0 - 2.0 * (x * x + y * y)])


def wrap_angle(a: float, period: float = 2.0 * math.pi) -> float:
    """Wrap to [-period/2, period/2)."""
    return (a + 0.5 * period) % period - 0.5 * period
