"""Operator settings: which device, and how the simulated operator behaves."""

from __future__ import annotations

import dataclasses

from hil_robot.config._build import choice, in_range, positive

DEVICES = ("sim_operator", "keyboard", "spacemouse", "gamepad", "openxr", "webxr", "none")


@dataclasses.dataclass
class SimOperatorConfig:
    stall_steps: int = 15  # no task progress for this many ticks -> take over
    reaction_delay_steps: int = 2  # ticks between deciding and acting, like a person
    action_noise_std: float = 0.05  # noise on the operator's normalised commands
    max_interventions_per_episode: int = 3  # intervention budget
    trigger_on_failure_risk: bool = True  # take over when failure is imminent (e.g. object pushed off)

    def __post_init__(self) -> None:
        positive("teleop.sim_operator.stall_steps", self.stall_steps)
        positive("teleop.sim_operator.reaction_delay_steps", self.reaction_delay_steps, allow_zero=True)
        positive("teleop.sim_operator.action_noise_std", self.action_noise_std, allow_zero=True)


@dataclasses.dataclass
class TeleopConfig:
    device: str = "sim_operator"
    translation_scale: float = 1.0  # VR/SpaceMouse motion -> robot motion
    rotation_scale: float = 1.0
    deadzone: float = 0.05
    http_port: int = 8443  # operator screen / WebXR page (HTTPS)
    sim_operator: SimOperatorConfig = dataclasses.field(default_factory=SimOperatorConfig)

    def __post_init__(self) -> None:
        choice("teleop.device", self.device, DEVICES)
        positive("teleop.translation_scale", self.translation_scale)
        positive("teleop.rotation_scale", self.rotation_scale)
        in_range("teleop.deadzone", self.deadzone, 0.0, 0.9)
