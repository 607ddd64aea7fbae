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
                "gripper": self.gripper, "native_dim": self.native_dim, "layout": self.layout}

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
        return self.to_deltas(np.asarray(row)[None], np.asarray(state)[None])[0]

    def to_deltas(self, rows: np.ndarray, states: np.ndarray) -> np.ndarray:
        """Native rows [N, >= width] with the states they execute from [N, 15] -> float64[N, 7]."""
        rows = np.asarray(rows, dtype=np.float64)[:, : self.width]
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

