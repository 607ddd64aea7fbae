"""Robot and safety settings (DESIGN §6). Units are in the field names."""

from __future__ import annotations

import dataclasses

from hil_robot.config._build import ConfigError, choice, in_range, positive


@dataclasses.dataclass
class SafetyConfig:
    workspace_min_m: tuple[float, float, float] = (0.25, -0.35, 0.0)  # EE box, base frame
    workspace_max_m: tuple[float, float, float] = (0.75, 0.35, 0.55)
    max_step_m: float = 0.03  # per-tick translation limit
    max_step_rad: float = 0.25  # per-tick rotation limit
    gripper_max_rate_per_s: float = 10.0  # normalised gripper units [-1,1] per second
    watchdog_hold_s: float = 0.1  # no fresh command for this long -> hold
    watchdog_stop_s: float = 1.0  # ... and for this long -> stop
    pose_jump_m: float = 0.05  # absolute targets further than this from the last -> rejected
    pose_jump_deg: float = 35.0

    def __post_init__(self) -> None:
        for i, (lo, hi) in enumerate(zip(self.workspace_min_m, self.workspace_max_m)):
            if not lo < hi:
                raise ConfigError(f"robot.safety.workspace_min_m[{i}]={lo} must be < workspace_max_m[{i}]={hi}")
        for k in ("max_step_m", "max_step_rad", "gripper_max_rate_per_s", "watchdog_hold_s", "pose_jump_m", "pose_jump_deg"):
            positive(f"robot.safety.{k}", getattr(self, k))
        if self.watchdog_stop_s < self.watchdog_hold_s:
            raise ConfigError("robot.safety.watchdog_stop_s must be >= watchdog_hold_s")


@dataclasses.dataclass
class RobotConfig:
    name: str = "sim_panda"
    kind: str = "sim"  # sim | ros
    control_hz: float = 10.0
    max_delta_pos_m: float = 0.02  # metres per tick at action = 1
    max_delta_rot_rad: float = 0.15  # radians per tick at action = 1
    kinematics: str = "panda"  # arm model for joint-space policy actions (hil_robot/kinematics.py); "" = none
    safety: SafetyConfig = dataclasses.field(default_factory=SafetyConfig)

    def __post_init__(self) -> None:
        choice("robot.kind", self.kind, ("sim", "ros"))
        in_range("robot.control_hz", self.control_hz, 1.0, 100.0)
        positive("robot.max_delta_pos_m", self.max_delta_pos_m)
        positive("robot.max_delta_rot_rad", self.max_delta_rot_rad)
        from hil_robot.kinematics import ARMS

        choice("robot.kinematics", self.kinematics, ("", *sorted(ARMS)))
