"""Action-space adapters: a backend's NATIVE action row -> our normalised EE delta (numpy, no torch).

Foreign policies (openpi, LeRobot, GR00T, ...) return chunks ``[H, Dn]`` in the action space they
were trained in. ``policy.action_space`` names it; the chunk executor keeps the native rows and
converts each one at the tick it executes, from that tick's robot state, into our command
``[dx, dy, dz, drx, dry, drz, g]`` (``hil_robot.types``). The always-on safety filter then runs on
it as on every other command, so the workspace box, the step limits and NaN -> hold hold for every
space.

Spaces (row layout; columns past the space's width are padding and ignored, e.g. pi0's 32):

``ee_delta``       ``[dx, dy, dz, drx, dry, drz, g]``: ours when ``policy.action_pos_scale_m`` and
                   ``action_rot_scale_rad`` are 0 (already normalised: passed through untouched);
                   otherwise metres / radians per native unit (rotation: a base-frame rotation vector).
``ee_pose_abs``    ``[x, y, z, <rotation>, g]``: an absolute TCP target in the base frame;
                   ``policy.action_rotation``: ``quat_wxyz`` | ``quat_xyzw`` | ``rotvec`` | ``euler_xyz``
                   (extrinsic x-y-z = roll, pitch, yaw: R = Rz Ry Rx).
``joint_pos_abs``  ``[q1..q7, g]``: absolute joint targets (rad), clipped into the joint limits, then
                   forward kinematics (``robot.kinematics``) -> TCP target -> as ``ee_pose_abs``.
``joint_vel``      ``[qd1..qd7, g]``: joint velocities (rad/s) integrated over ``policy.joint_vel_dt_s``
                   (0: one control period) from the measured joints -> joint target -> as above.

Absolute targets become a delta from the measured TCP pose: the translation is shortened (direction
kept) to ``robot.safety.max_step_m`` and the rotation to ``max_step_rad``, then both are scaled
into the normalised range, again keeping their direction. A target far away is therefore approached
at the step limit (or at the action range ``robot.max_delta_pos_m`` per component, if that is
smaller), and the safety filter clips the resulting target to the workspace box. There is no
pose-jump guard for policy targets: consecutive chunks may plan far apart, and the step limits
already bound every tick's motion.

Gripper (``policy.action_gripper``): ``signed`` (ours: -1 open .. +1 closed), ``close_1`` ([0, 1],
1 = closed), ``open_1`` ([0, 1], 1 = open), ``width_m`` (opening width in metres, fully open =
``policy.gripper_max_width_m``). Out-of-range values are clipped by the safety filter.

``check_chunk`` is the executor's gate for every reply: a missing key, a non-numeric payload, a
wrong shape, a non-finite value or a zero-length quaternion raises ``BadChunkError`` (its ``kind``
names which; the message names the key, the shape found and the shape expected).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hil_robot import rotations
from hil_robot.config.policy import PolicyConfig
from hil_robot.config.robot import RobotConfig
from hil_robot.kinematics import DHArm, arm_model
from hil_robot.types import ACTION_DIM, STATE_DIM, STATE_LAYOUT, ContractError

BAD_CHUNK_KINDS = ("missing", "non_numeric", "shape", "non_finite", "bad_rotation")
_EE_POS = slice(*STATE_LAYOUT["ee_pos"])
_EE_QUAT = slice(*STATE_LAYOUT["ee_quat"])
_JOINTS = slice(*STATE_LAYOUT["joints"])


class BadChunkError(ContractError):
    """A policy reply the executor cannot use; ``kind`` is one of ``BAD_CHUNK_KINDS``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ActionAdapter:
    """Converts native rows of one action space into normalised EE deltas (see the module doc).

    ``to_delta(row, state)`` is the per-tick call; ``to_deltas(rows, states)`` the same batched
    over N (tests push many commands through it). Both return float64 (NaN rows stay NaN: the
    safety filter holds on them)."""

    def __init__(self, policy: PolicyConfig | None = None, robot: RobotConfig | None = None, period_s: float | None = None) -> None:
        policy = policy or PolicyConfig()
        robot = robot or RobotConfig()
        self.space = policy.action_space
        self.rotation = policy.action_rotation
        self.gripper = policy.action_gripper
        self.width = policy.action_width
        self.native_dim = policy.native_action_dim or self.width
        self.layout = policy.action_layout
        self.period_s = float(period_s if period_s is not None else 1.0 / robot.control_hz)
        self.pos_scale_m = float(robot.max_delta_pos_m)
        self.rot_scale_rad = float(robot.max_delta_rot_rad)
        self.max_step_m = float(robot.safety.max_step_m)
        self.max_step_rad = float(robot.safety.max_step_rad)
        self.gripper_max_width_m = float(policy.gripper_max_width_m)
        self.joint_vel_dt_s = float(policy.joint_vel_dt_s) or self.period_s
        # ee_delta with other metric scales: native unit -> our normalised unit
        self.delta_pos_k = policy.action_pos_scale_m / self.pos_scale_m if policy.action_pos_scale_m else 1.0
        self.delta_rot_k = policy.action_rot_scale_rad / self.rot_scale_rad if policy.action_rot_scale_rad else 1.0
        self.arm: DHArm | None = None
        if self.space in ("joint_pos_abs", "joint_vel"):
            if not robot.kinematics:
                raise ContractError(
                    f"policy.action_space={self.space} needs the arm's forward kinematics; robot.kinematics is empty "
                    "(set it, e.g. robot.kinematics=panda)"
                )
            self.arm = arm_model(robot.kinematics)
        # ours, already normalised: rows pass through untouched (no per-tick cost)
        self.identity = (
            self.space == "ee_delta" and self.gripper == "signed" and self.delta_pos_k == 1.0 and self.delta_rot_k == 1.0
            and self.native_dim == ACTION_DIM
        )

    def describe(self) -> dict[str, Any]:
        """What the episode metadata records about the policy's native actions."""
        return {"space": self.space, "rotation": self.rotation if self.space == "ee_pose_abs" else "",
                "gripper": self.gripper, "native_dim": self.native_dim, "layout": self.layout,
                "delta_scale": [self.delta_pos_k * self.pos_scale_m, self.delta_rot_k * self.rot_scale_rad]
                if self.space == "ee_delta" else [], "joint_vel_dt_s": self.joint_vel_dt_s if self.space == "joint_vel" else 0.0}

    # ------------------------------------------------------------------ the gate for every reply
    def check_chunk(self, actions: Any, key: str = "actions") -> np.ndarray:
        """A reply's chunk -> float32[H, native_dim], or ``BadChunkError`` naming key and shape."""
        want = f"float[H, {self.native_dim}] ({self.space}: {self.layout})"
        if actions is None:
            raise BadChunkError("missing", f"policy reply has no {key!r}; expected {want}")
        try:
            arr = np.asarray(actions)
        except (ValueError, TypeError) as e:  # ragged nested lists and the like
            raise BadChunkError("non_numeric", f"policy reply {key!r} is not an array ({e}); expected {want}") from None
        if arr.dtype.kind not in "fiu":
            raise BadChunkError(
                "non_numeric", f"policy reply {key!r} has dtype {arr.dtype} shape {arr.shape}; expected {want}"
            )
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] != self.native_dim:
            raise BadChunkError(
                "shape",
                f"policy reply {key!r} has shape {arr.shape}; expected {want} — set policy.action_space / "
                "policy.native_action_dim to what the backend returns",
            )
        arr = arr.astype(np.float32, copy=False)
        used = arr[:, : self.width]
        finite = np.isfinite(used)
        if not finite.all():
            r, c = np.argwhere(~finite)[0]
            raise BadChunkError(
                "non_finite", f"policy reply {key!r} shape {arr.shape} has {int((~finite).sum())} non-finite values "
                f"(first {key}[{r}, {c}] = {used[r, c]}); the robot holds"
            )
        if self.space == "ee_pose_abs" and self.rotation.startswith("quat"):
            n = np.linalg.norm(used[:, 3:7].astype(np.float64), axis=1)
            if (n < 1e-6).any():
                r = int(np.argmax(n < 1e-6))
                raise BadChunkError("bad_rotation", f"policy reply {key!r} shape {arr.shape}: row {r} has a zero-length quaternion")
        return arr

    # ------------------------------------------------------------------ conversion
    def to_delta(self, row: np.ndarray, state: np.ndarray) -> np.ndarray:
        """One native row [>= width] + the robot state float[15] -> normalised delta float64[7]."""
        if self.identity:
            return np.asarray(row[:ACTION_DIM], dtype=np.float64)
        return np.array(self._delta_one(row, state))

    def _delta_one(self, row: Any, state: Any) -> list[float]:
        """``to_deltas`` for one row in plain Python floats (the per-tick path: a few small numpy
        calls cost more than this whole chain); a property test keeps the two identical."""
        r = [float(x) for x in row[: self.width]]
        if not all(math.isfinite(x) for x in r):
            return [math.nan] * ACTION_DIM
        g = r[-1]
        if self.gripper == "close_1":
            g = 2.0 * g - 1.0
        elif self.gripper == "open_1":
            g = 1.0 - 2.0 * g
        elif self.gripper == "width_m":
            g = 1.0 - 2.0 * g / self.gripper_max_width_m
        if self.space == "ee_delta":
            kp, kr = self.delta_pos_k, self.delta_rot_k
            return [r[0] * kp, r[1] * kp, r[2] * kp, r[3] * kr, r[4] * kr, r[5] * kr, g]
        st = [float(x) for x in state]
        if self.space == "ee_pose_abs":
            pos = r[0:3]
            rot = r[3:-1]
            if self.rotation == "quat_wxyz":
                quat = rot
            elif self.rotation == "quat_xyzw":
                quat = [rot[3], rot[0], rot[1], rot[2]]
            elif self.rotation == "rotvec":
                quat = _quat_from_rotvec(rot)
            else:  # euler_xyz extrinsic: Rz(yaw) Ry(pitch) Rx(roll)
                qx = _quat_from_rotvec([rot[0], 0.0, 0.0])
                qy = _quat_from_rotvec([0.0, rot[1], 0.0])
                qz = _quat_from_rotvec([0.0, 0.0, rot[2]])
                quat = _qmul(qz, _qmul(qy, qx))
        else:
            assert self.arm is not None
            if self.space == "joint_pos_abs":
                q = r[0:7]
            else:
                dt = self.joint_vel_dt_s
                q = [st[8 + i] + r[i] * dt for i in range(7)]
            q = [min(hi, max(lo, x)) for x, (lo, hi) in zip(q, self.arm.joint_limits_rad)]
            pos, quat = _fk_one(self.arm, q)
        out = self._toward_one(pos, quat, st[0:3], st[3:7]) + [g]
        return out if all(math.isfinite(x) for x in out) else [math.nan] * ACTION_DIM

    def _toward_one(self, pos: list[float], quat: list[float], ee: list[float], ee_quat: list[float]) -> list[float]:
        d = [pos[i] - ee[i] for i in range(3)]
        n = math.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
        k = min(1.0, self.max_step_m / max(n, 1e-300)) / self.pos_scale_m
        d = [x * k for x in d]
        m = max(1.0, abs(d[0]), abs(d[1]), abs(d[2]))
        d = [x / m for x in d]
        e = _relative_rotvec(quat, ee_quat)
        a = math.sqrt(e[0] * e[0] + e[1] * e[1] + e[2] * e[2])
        k = min(1.0, self.max_step_rad / max(a, 1e-300)) / self.rot_scale_rad
        e = [x * k for x in e]
        m = max(1.0, abs(e[0]), abs(e[1]), abs(e[2]))
        return d + [x / m for x in e]

    def to_deltas(self, rows: np.ndarray, states: np.ndarray) -> np.ndarray:
        """Native rows [N, >= width] with the states they execute from [N, 15] -> float64[N, 7]."""
        rows = np.asarray(rows, dtype=np.float64)[:, : self.width]
        if self.identity:
            return rows.copy()
        states = np.asarray(states, dtype=np.float64).reshape(-1, STATE_DIM)
        out = np.empty((rows.shape[0], ACTION_DIM))
        with np.errstate(invalid="ignore", over="ignore"):
            if self.space == "ee_delta":
                out[:, :3] = rows[:, :3] * self.delta_pos_k
                out[:, 3:6] = rows[:, 3:6] * self.delta_rot_k
            else:
                pos, quat = self._targets(rows, states)
                out[:, :6] = self._toward(pos, quat, states)
            out[:, 6] = self._gripper(rows[:, self.width - 1])
        # a non-finite native value never becomes a finite command (joint clipping would turn inf
        # into a limit): the whole row is NaN, which the safety filter holds on
        out[~np.isfinite(rows).all(axis=1)] = np.nan
        return out

    def _targets(self, rows: np.ndarray, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Absolute TCP targets (pos [N, 3], quat wxyz [N, 4]) the rows ask for."""
        if self.space == "ee_pose_abs":
            rot = rows[:, 3 : self.width - 1]
            if self.rotation == "quat_wxyz":
                quat = rot
            elif self.rotation == "quat_xyzw":
                quat = rot[:, [3, 0, 1, 2]]
            elif self.rotation == "rotvec":
                quat = rotations.quat_from_rotvec(rot)
            else:  # euler_xyz, extrinsic: x first, then y, then z
                qx = rotations.quat_from_rotvec(rot[:, 0:1] * np.array([1.0, 0.0, 0.0]))
                qy = rotations.quat_from_rotvec(rot[:, 1:2] * np.array([0.0, 1.0, 0.0]))
                qz = rotations.quat_from_rotvec(rot[:, 2:3] * np.array([0.0, 0.0, 1.0]))
                quat = rotations.quat_mul(qz, rotations.quat_mul(qy, qx))
            return rows[:, :3], quat
        assert self.arm is not None
        if self.space == "joint_pos_abs":
            q = rows[:, :7]
        else:  # joint_vel: integrate from the measured joints
            q = states[:, _JOINTS] + rows[:, :7] * self.joint_vel_dt_s
        return self.arm.fk(self.arm.clip_joints(q))

    def _toward(self, pos: np.ndarray, quat: np.ndarray, states: np.ndarray) -> np.ndarray:
        """Normalised [N, 6] motion from the measured TCP pose toward the targets, at most one step."""
        with np.errstate(invalid="ignore", divide="ignore"):
            dpos = pos - states[:, _EE_POS]
            n = np.linalg.norm(dpos, axis=1, keepdims=True)
            dpos *= np.minimum(1.0, self.max_step_m / np.maximum(n, 1e-300))
            dpos /= self.pos_scale_m
            dpos /= np.maximum(1.0, np.abs(dpos).max(axis=1, keepdims=True))
            drot = rotations.relative_rotvec(quat, states[:, _EE_QUAT])
            a = np.linalg.norm(drot, axis=1, keepdims=True)
            drot *= np.minimum(1.0, self.max_step_rad / np.maximum(a, 1e-300))
            drot /= self.rot_scale_rad
            drot /= np.maximum(1.0, np.abs(drot).max(axis=1, keepdims=True))
        out = np.concatenate([dpos, drot], axis=1)
        out[~np.isfinite(out).all(axis=1)] = np.nan  # any bad part: the whole command holds
        return out

    def _gripper(self, g: np.ndarray) -> np.ndarray:
        if self.gripper == "signed":
            return g
        if self.gripper == "close_1":
            return 2.0 * g - 1.0
        if self.gripper == "open_1":
            return 1.0 - 2.0 * g
        return 1.0 - 2.0 * g / self.gripper_max_width_m  # width_m


# ----------------------------------------------------------------------------- plain-float helpers
# (the same conventions as hil_robot.rotations: wxyz, Hamilton product, w >= 0 for the shortest rotation)


def _qmul(a: list[float], b: list[float]) -> list[float]:
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return [aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw]


def _quat_from_rotvec(v: list[float]) -> list[float]:
    x, y, z = v
    angle = math.sqrt(x * x + y * y + z * z)
    if angle < 1e-12:
        return [1.0, 0.5 * x, 0.5 * y, 0.5 * z]
    k = math.sin(0.5 * angle) / angle
    return [math.cos(0.5 * angle), x * k, y * k, z * k]


def _unit(q: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in q))
    if not (n > 1e-12 and math.isfinite(n)):
        return [math.nan] * 4
    n = n if q[0] >= 0 else -n
    return [x / n for x in q]


def _relative_rotvec(q_target: list[float], q_current: list[float]) -> list[float]:
    """World-frame rotation vector turning ``q_current`` into ``q_target`` (angle in [0, pi])."""
    t, c = _unit(q_target), _unit(q_current)
    w, x, y, z = _unit(_qmul(t, [c[0], -c[1], -c[2], -c[3]]))
    s = math.sqrt(x * x + y * y + z * z)
    if not s > 1e-12:
        return [2.0 * x, 2.0 * y, 2.0 * z]
    k = 2.0 * math.atan2(s, w) / s
    return [x * k, y * k, z * k]


def _fk_one(arm: DHArm, q: list[float]) -> tuple[list[float], list[float]]:
    """``DHArm.fk`` for one joint vector in plain floats: TCP position and quaternion (wxyz)."""
    R = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]  # row-major
    p = [0.0, 0.0, 0.0]
    for (a, d, alpha), theta in zip(arm.dh, q):
        ca, sa, ct, st = math.cos(alpha), math.sin(alpha), math.cos(theta), math.sin(theta)
        Ri = (ct, -st, 0.0, st * ca, ct * ca, -sa, st * sa, ct * sa, ca)
        pi = (a, -sa * d, ca * d)
        p = [p[i] + R[3 * i] * pi[0] + R[3 * i + 1] * pi[1] + R[3 * i + 2] * pi[2] for i in range(3)]
        R = [R[3 * i] * Ri[j] + R[3 * i + 1] * Ri[3 + j] + R[3 * i + 2] * Ri[6 + j] for i in range(3) for j in range(3)]
    c, s = math.cos(arm.hand_yaw_rad), math.sin(arm.hand_yaw_rad)
    dz = arm.flange_d_m + arm.tcp_offset_m
    p = [p[i] + R[3 * i + 2] * dz for i in range(3)]
    R = [R[3 * i] * c + R[3 * i + 1] * s if j == 0 else (-R[3 * i] * s + R[3 * i + 1] * c if j == 1 else R[3 * i + 2])
         for i in range(3) for j in range(3)]
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = R
    cand = (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22)
    pick = max(range(4), key=lambda i: cand[i])
    t = math.sqrt(max(cand[pick], 1e-300))
    k = 0.5 / t
    d21, d02, d10 = m21 - m12, m02 - m20, m10 - m01
    s21, s02, s10 = m21 + m12, m02 + m20, m10 + m01
    h = 0.5 * t
    quat = ([h, d21 * k, d02 * k, d10 * k], [d21 * k, h, s10 * k, s02 * k],
            [d02 * k, s10 * k, h, s21 * k], [d10 * k, s02 * k, s21 * k, h])[pick]
    return p, _unit(quat)
