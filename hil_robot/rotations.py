"""Rotation helpers for the whole project (numpy only, no MuJoCo, no torch).

Conventions, everywhere:

* quaternions are ``[w, x, y, z]`` (scalar first, MuJoCo's order), Hamilton product;
* rotation vectors are axis * angle in radians (``rotvec``);
* ``quat_mul(a, b)`` applies ``b`` first, then ``a``; a world-frame increment ``dq`` is applied as
  ``quat_mul(dq, q)``;
* every function takes a single quaternion ``[4]`` / vector ``[3]`` or a batch ``[..., 4]`` /
  ``[..., 3]`` and computes in float64 (single ones take a scalar fast path: the sim expert and the
  operators call these every tick);
* ``quat_normalize`` returns unit quaternions with ``w >= 0`` (one sign per orientation) and NaN
  for inputs with no direction (zero or non-finite norm), so batched callers can mask invalid rows.
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-12


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a ⊗ b`` (apply b first, then a), [..., 4]."""
    a, b = _f64(a), _f64(b)
    if a.ndim == 1 and b.ndim == 1:
        aw, ax, ay, az = a.tolist()
        bw, bx, by, bz = b.tolist()
        return np.array([
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ])
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], axis=-1)


def quat_conj(q: np.ndarray) -> np.ndarray:
    """Conjugate (the inverse of a unit quaternion), [..., 4]."""
    return _f64(q) * np.array([1.0, -1.0, -1.0, -1.0])


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternion(s) with ``w >= 0`` [..., 4]; NaN where the input has no direction."""
    q = _f64(q)
    if q.ndim == 1:
        n = math.sqrt(float(q @ q))
        if not (n > _EPS and math.isfinite(n)):
            return np.full(4, np.nan)
        return q / (n if q[0] >= 0 else -n)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    ok = (n > _EPS) & np.isfinite(n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = q / np.where(ok, n, 1.0)
    out = np.where(out[..., :1] < 0, -out, out)
    return np.where(ok, out, np.nan)


def quat_from_rotvec(v: np.ndarray) -> np.ndarray:
    """Rotation vector [..., 3] (rad) -> unit quaternion [..., 4]."""
    v = _f64(v)
    if v.ndim == 1:
        x, y, z = v.tolist()
        angle = math.sqrt(x * x + y * y + z * z)
        if angle < _EPS:  # first-order limit (unit to within angle^2)
            return np.array([1.0, 0.5 * x, 0.5 * y, 0.5 * z])
        s = math.sin(0.5 * angle) / angle
        return np.array([math.cos(0.5 * angle), x * s, y * s, z * s])
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    half = 0.5 * angle
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(angle > _EPS, np.sin(half) / np.where(angle > 0, angle, 1.0), 0.5)
    return np.concatenate([np.cos(half), v * k], axis=-1)


def quat_to_rotvec(q: np.ndarray) -> np.ndarray:
    """Quaternion [..., 4] (normalised here) -> rotation vector [..., 3], angle in [0, pi] (shortest)."""
    q = quat_normalize(q)  # w >= 0: the shortest rotation
    if q.ndim == 1:
        w, x, y, z = q.tolist()
        s = math.sqrt(x * x + y * y + z * z)
        if not s > _EPS:  # small angle (or NaN input, which stays NaN)
            return 2.0 * q[1:]
        return q[1:] * (2.0 * math.atan2(s, w) / s)
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., :1])
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(s > _EPS, angle / np.where(s > 0, s, 1.0), 2.0)  # small-angle limit: 2
    return v * scale


def relative_rotvec(q_target: np.ndarray, q_current: np.ndarray) -> np.ndarray:
    """World-frame rotation vector [..., 3] that turns ``q_current`` into ``q_target``
    (R_target = R(e) R_current, i.e. e = rotvec(q_target ⊗ conj(q_current)))."""
    return quat_to_rotvec(quat_mul(quat_normalize(q_target), quat_conj(quat_normalize(q_current))))


def quat_angle_rad(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Smallest rotation angle (rad, in [0, pi]) between two orientations; [...] (float for single)."""
    d = np.abs(np.sum(quat_normalize(a) * quat_normalize(b), axis=-1))
    out = 2.0 * np.arccos(np.clip(d, 0.0, 1.0))
    return float(out) if np.ndim(out) == 0 else out


def quat_from_yaw(yaw_rad: float) -> np.ndarray:
    """Rotation about world z by ``yaw_rad`` [4]."""
    return np.array([math.cos(0.5 * yaw_rad), 0.0, 0.0, math.sin(0.5 * yaw_rad)])


def yaw_of(q: np.ndarray) -> float:
    """Heading of the body x axis about world z (rad) of one quaternion [4]."""
    w, x, y, z = _f64(q).tolist()
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def z_axis(q: np.ndarray) -> np.ndarray:
    """Body z axis in the world frame [3] of one quaternion [4]."""
    w, x, y, z = _f64(q).tolist()
    return np.array([2.0 * (x * z + w * y), 2.0 * (y * z - w * x), 1.0 - 2.0 * (x * x + y * y)])


def wrap_angle(a: float, period: float = 2.0 * math.pi) -> float:
    """Wrap to [-period/2, period/2)."""
    return (a + 0.5 * period) % period - 0.5 * period


def rot_z(deg: float) -> np.ndarray:
    """3x3 rotation matrix about z by ``deg`` degrees."""
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# OpenXR / WebXR tracking space: x right, y up, z towards the user. Robot base: x forward (away from
# an operator standing behind the robot), y left, z up. R_base<-xr:
XR_TO_BASE = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
