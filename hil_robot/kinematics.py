"""Forward kinematics of the arm on the robot side (numpy only: no MuJoCo, no torch).

The joint-space action adapters (``hil_robot.control.action_space``: ``joint_pos_abs``,
``joint_vel``) turn a joint target into the end-effector pose it reaches, so it can go through the
same workspace box and step limits as every other command. The robot config names the model
(``robot.kinematics``); a model is a modified-DH chain (Craig convention) plus a fixed flange -> TCP
transform and the joint limits:

    T_{i-1,i} = RotX(alpha_{i-1}) * TransX(a_{i-1}) * RotZ(theta_i) * TransZ(d_i)

``panda`` is the published Franka Panda table; the sim arm (``sim/panda.py``) is built from the
same numbers, and a test checks this module against MuJoCo's TCP pose. Poses are in the robot base
frame, quaternions ``[w, x, y, z]`` (``hil_robot.types`` conventions).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class DHArm:
    """A serial arm: ``dh`` rows (a_{i-1} m, d_i m, alpha_{i-1} rad) per joint; after the last joint
    the flange sits ``flange_d_m`` along z, the hand is turned by ``hand_yaw_rad`` about it and the
    TCP lies ``tcp_offset_m`` further along z."""

    name: str
    dh: tuple[tuple[float, float, float], ...]
    flange_d_m: float
    hand_yaw_rad: float
    tcp_offset_m: float
    joint_limits_rad: tuple[tuple[float, float], ...]

    @property
    def dof(self) -> int:
        return len(self.dh)

    def clip_joints(self, q: np.ndarray) -> np.ndarray:
        """Joint angles [..., dof] clipped into the joint limits (NaN stays NaN)."""
        lim = np.asarray(self.joint_limits_rad, dtype=np.float64)
        return np.clip(np.asarray(q, dtype=np.float64), lim[:, 0], lim[:, 1])

    def fk_matrix(self, q: np.ndarray) -> np.ndarray:
        """TCP pose as 4x4 homogeneous matrices [..., 4, 4] at joint angles ``q`` [..., dof]."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape[-1] != self.dof:
            raise ValueError(f"{self.name} forward kinematics needs {self.dof} joint angles, got shape {q.shape}")
        batch = q.shape[:-1]
        T = np.broadcast_to(np.eye(4), batch + (4, 4)).copy()
        for i, (a, d, alpha) in enumerate(self.dh):
            ca, sa = math.cos(alpha), math.sin(alpha)
            ct, st = np.cos(q[..., i]), np.sin(q[..., i])
            Ti = np.zeros(batch + (4, 4))
            Ti[..., 0, 0], Ti[..., 0, 1], Ti[..., 0, 3] = ct, -st, a
            Ti[..., 1, 0], Ti[..., 1, 1], Ti[..., 1, 2], Ti[..., 1, 3] = st * ca, ct * ca, -sa, -sa * d
            Ti[..., 2, 0], Ti[..., 2, 1], Ti[..., 2, 2], Ti[..., 2, 3] = st * sa, ct * sa, ca, ca * d
            Ti[..., 3, 3] = 1.0
            T = T @ Ti
        c, s = math.cos(self.hand_yaw_rad), math.sin(self.hand_yaw_rad)
        tool = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, self.flange_d_m + self.tcp_offset_m], [0, 0, 0, 1]])
        return T @ tool

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position [..., 3] (m) and quaternion [..., 4] (wxyz, w >= 0) at ``q`` [..., dof]."""
        T = self.fk_matrix(q)
        return T[..., :3, 3], matrix_to_quat(T[..., :3, :3])


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrices [..., 3, 3] -> unit quaternions [..., 4] (wxyz, w >= 0); NaN in, NaN out.

    Shepperd's method: the largest of the four candidate components is computed from the diagonal
    (well conditioned), the others from the off-diagonal sums and differences."""
    R = np.asarray(R, dtype=np.float64)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    cand = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], axis=-1)
    with np.errstate(invalid="ignore"):
        pick = np.argmax(np.nan_to_num(cand, nan=-1.0), axis=-1)
    t = np.sqrt(np.maximum(np.take_along_axis(cand, pick[..., None], axis=-1)[..., 0], 1e-300))
    s = 0.5 / t
    d21, d02, d10 = R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]
    s21, s02, s10 = R[..., 2, 1] + R[..., 1, 2], R[..., 0, 2] + R[..., 2, 0], R[..., 1, 0] + R[..., 0, 1]
    half = 0.5 * t
    q = np.stack([
        np.choose(pick, [half, d21 * s, d02 * s, d10 * s]),
        np.choose(pick, [d21 * s, half, s10 * s, s02 * s]),
        np.choose(pick, [d02 * s, s10 * s, half, s21 * s]),
        np.choose(pick, [d10 * s, s02 * s, s21 * s, half]),
    ], axis=-1)
    q = np.where(q[..., :1] < 0, -q, q)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


# Franka Panda (Franka's published modified-DH table; the same numbers build the sim arm).
PANDA = DHArm(
    name="panda",
    dh=(
        (0.0, 0.333, 0.0),
        (0.0, 0.0, -math.pi / 2),
        (0.0, 0.316, math.pi / 2),
        (0.0825, 0.0, math.pi / 2),
        (-0.0825, 0.384, -math.pi / 2),
        (0.0, 0.0, math.pi / 2),
        (0.088, 0.0, math.pi / 2),
    ),
    flange_d_m=0.107,
    hand_yaw_rad=-math.pi / 4,
    tcp_offset_m=0.1034,
    joint_limits_rad=(
        (-2.8973, 2.8973),
        (-1.7628, 1.7628),
        (-2.8973, 2.8973),
        (-3.0718, -0.0698),
        (-2.8973, 2.8973),
        (-0.0175, 3.7525),
        (-2.8973, 2.8973),
    ),
)

ARMS: dict[str, DHArm] = {"panda": PANDA}


def arm_model(name: str) -> DHArm:
    """The kinematic model ``robot.kinematics`` names."""
    try:
        return ARMS[name]
    except KeyError:
        raise ValueError(f"no kinematic model {name!r}; known: {', '.join(sorted(ARMS))}") from None
