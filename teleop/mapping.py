"""Controller pose -> robot end-effector target, shared by the OpenXR and WebXR paths.

Clutch (deadman) = hold the grip. On engage the mapper latches the robot's EE pose and the
controller pose; while held the robot target is the latched EE pose moved by the controller's
motion since the latch (scaled, rotated into the robot base frame); on release the target holds.
A sample further than ``jump_m`` / ``jump_deg`` from the previous one is ignored with a warning
(the mapping re-anchors there, so a tracking glitch never moves the arm); lost tracking holds.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from hil_robot.rotations import (
    XR_TO_BASE, quat_angle_rad, quat_conj, quat_from_rotvec, quat_mul, quat_normalize, quat_to_rotvec, rot_z,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class MappedPose:
    """target: float64[7] EE pose ``[x, y, z, qw, qx, qy, qz]`` in the base frame (None until the
    first robot pose is known). engaged: the operator is driving. event: what happened this sample:
    idle | engage | track | release | hold | jump | tracking_lost."""

    target: np.ndarray | None
    engaged: bool
    event: str


class PoseMapper:
    def __init__(
        self,
        *,
        translation_scale: float = 1.0,
        rotation_scale: float = 1.0,
        operator_yaw_deg: float = 0.0,
        jump_m: float = 0.05,
        jump_deg: float = 35.0,
        xr_to_base: np.ndarray = XR_TO_BASE,
    ) -> None:
        self.translation_scale = translation_scale
        self.rotation_scale = rotation_scale
        self.frame = rot_z(operator_yaw_deg) @ np.asarray(xr_to_base, dtype=np.float64)  # R_base<-xr
        self.jump_m = jump_m
        self.jump_rad = math.radians(jump_deg)
        self.jumps = 0
        self.tracking_losses = 0
        self.reset()

    def reset(self) -> None:
        self.engaged = False
        self._ctrl_anchor: np.ndarray | None = None
        self._robot_anchor: np.ndarray | None = None
        self._prev_ctrl: np.ndarray | None = None
        self.target: np.ndarray | None = None

    def update(
        self, controller_pose: np.ndarray | None, *, clutch: bool, tracking_valid: bool, robot_pose: np.ndarray
    ) -> MappedPose:
        """controller_pose: float[7] in XR tracking space; robot_pose: float[7] current EE in base frame."""
        robot_pose = np.asarray(robot_pose, dtype=np.float64)
        if not clutch:
            was = self.engaged
            self.engaged = False
            self._ctrl_anchor = self._prev_ctrl = None
            if self.target is None:
                return MappedPose(None, False, "idle")
            return MappedPose(self.target.copy(), False, "release" if was else "hold")
        if controller_pose is None or not tracking_valid or not np.all(np.isfinite(controller_pose)):
            if self.engaged:
                log.warning("controller tracking lost: holding the arm until tracking returns")
                self.tracking_losses += 1
            self.engaged = False  # re-latch when tracking returns, so nothing jumps
            self._ctrl_anchor = self._prev_ctrl = None
            if self.target is None:
                self.target = robot_pose.copy()
            return MappedPose(self.target.copy(), False, "tracking_lost")
        ctrl = np.asarray(controller_pose, dtype=np.float64).copy()
        ctrl[3:] = quat_normalize(ctrl[3:])
        if not np.isfinite(ctrl[3]):  # zero-norm quaternion (the shared quat_normalize gives NaN)
            raise ValueError(f"controller quaternion {controller_pose[3:]} has no direction (zero norm)")
        if not self.engaged:
            self.engaged = True
            self._ctrl_anchor = ctrl
            # latch the robot where it is commanded to be now (held target, else its measured pose)
            self._robot_anchor = (self.target if self.target is not None else robot_pose).copy()
            self._prev_ctrl = ctrl
            self.target = self._robot_anchor.copy()
            return MappedPose(self.target.copy(), True, "engage")
        assert self._prev_ctrl is not None and self._robot_anchor is not None and self._ctrl_anchor is not None
        step_m = float(np.linalg.norm(ctrl[:3] - self._prev_ctrl[:3]))
        step_rad = quat_angle_rad(ctrl[3:], self._prev_ctrl[3:])
        if step_m > self.jump_m or step_rad > self.jump_rad:
            self.jumps += 1
            log.warning(
                "controller pose jumped %.3f m / %.1f deg between samples (limits %.3f m / %.1f deg): ignored",
                step_m, math.degrees(step_rad), self.jump_m, math.degrees(self.jump_rad),
            )
            # re-anchor at the new sample: the arm stays put and later motion continues from here
            self._ctrl_anchor = ctrl
            self._robot_anchor = self.target.copy() if self.target is not None else robot_pose.copy()
            self._prev_ctrl = ctrl
            return MappedPose(self.target.copy() if self.target is not None else None, True, "jump")
        self._prev_ctrl = ctrl
        self.target = self._relative_target(ctrl)
        return MappedPose(self.target.copy(), True, "track")

    def _relative_target(self, ctrl: np.ndarray) -> np.ndarray:
        assert self._ctrl_anchor is not None and self._robot_anchor is not None
        dp = self.frame @ (ctrl[:3] - self._ctrl_anchor[:3]) * self.translation_scale
        dq_xr = quat_mul(ctrl[3:], quat_conj(self._ctrl_anchor[3:]))  # rotation since the latch, XR frame
        rotvec = self.frame @ quat_to_rotvec(dq_xr) * self.rotation_scale
        q = quat_mul(quat_from_rotvec(rotvec), self._robot_anchor[3:])
        return np.concatenate([self._robot_anchor[:3] + dp, quat_normalize(q)])


def pose_to_action(
    target: np.ndarray, current: np.ndarray, *, max_delta_pos_m: float, max_delta_rot_rad: float
) -> np.ndarray:
    """The normalised 6-D EE delta float32[6] that moves ``current`` towards ``target`` in one tick
    (clipped to [-1, 1]; the safety filter applies the real limits)."""
    dp = (np.asarray(target[:3]) - np.asarray(current[:3])) / max_delta_pos_m
    dr = quat_to_rotvec(quat_mul(np.asarray(target[3:7], dtype=np.float64), quat_conj(quat_normalize(current[3:7]))))
    return np.clip(np.concatenate([dp, dr / max_delta_rot_rad]), -1.0, 1.0).astype(np.float32)
