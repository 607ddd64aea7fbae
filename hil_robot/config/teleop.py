"""Operator settings: which device, and how the simulated operator behaves."""

from __future__ import annotations

import dataclasses

from hil_robot.config._build import ConfigError, choice, in_range, positive

PERTURB_KINDS = ("push", "drop")  # simulated operator perturbations
DEVICES = ("sim_operator", "keyboard", "spacemouse", "gamepad", "openxr", "webxr", "none")


@dataclasses.dataclass
class SimOperatorConfig:
    stall_steps: int = 15  # no task progress for this many ticks -> take over
    reaction_delay_steps: int = 2  # ticks between deciding and acting, like a person
    action_noise_std: float = 0.05  # noise on the operator's normalised commands
    max_interventions_per_episode: int = 3  # intervention budget
    trigger_on_failure_risk: bool = True  # take over when failure is imminent (e.g. object pushed off)
    progress_eps: float = 0.01  # task progress must grow by more than this to count as progress
    # > 0: also take over ('slow') when the best progress grew by less than this over the last
    # stall_steps ticks — a crawl setting a new best every few ticks never stalls (0 = off)
    stall_min_gain: float = 0.0
    recovery_tol_m: float = 0.015  # recovery ends when the TCP is this close to the familiar pose
    max_recovery_steps: int = 25  # ... or after this many ticks
    max_correction_steps: int = 40  # correction hands back after this many ticks even if the sub-task is not done
    # --- deliberate perturbations (segment 'perturbation'; off while perturb_prob = 0)
    perturb_prob: float = 0.0  # chance per episode that the operator disturbs the scene once
    perturb_window: tuple[int, int] = (5, 40)  # the event starts at a step drawn from [lo, hi] ("drop": first held step from there)
    perturb_steps: int = 4  # ticks the operator drives during one perturbation
    perturb_kinds: tuple[str, ...] = ("push", "drop")  # push: shove the EE off course; drop: open the jaw while holding
    perturb_push_scale: float = 1.0  # normalised translation command of a push (1 = max_delta_pos_m per tick)

    def __post_init__(self) -> None:
        positive("teleop.sim_operator.stall_steps", self.stall_steps)
        in_range("teleop.sim_operator.stall_min_gain", self.stall_min_gain, 0.0, 1.0)
        positive("teleop.sim_operator.max_interventions_per_episode", self.max_interventions_per_episode, allow_zero=True)
        positive("teleop.sim_operator.recovery_tol_m", self.recovery_tol_m)
        positive("teleop.sim_operator.max_recovery_steps", self.max_recovery_steps)
        positive("teleop.sim_operator.max_correction_steps", self.max_correction_steps)
        positive("teleop.sim_operator.reaction_delay_steps", self.reaction_delay_steps, allow_zero=True)
        positive("teleop.sim_operator.action_noise_std", self.action_noise_std, allow_zero=True)
        in_range("teleop.sim_operator.perturb_prob", self.perturb_prob, 0.0, 1.0)
        lo, hi = self.perturb_window
        positive("teleop.sim_operator.perturb_window[0]", lo, allow_zero=True)
        if hi < lo:
            raise ConfigError(f"teleop.sim_operator.perturb_window={list(self.perturb_window)!r} must be [lo, hi] with lo <= hi")
        positive("teleop.sim_operator.perturb_steps", self.perturb_steps)
        if not self.perturb_kinds:
            raise ConfigError("teleop.sim_operator.perturb_kinds is empty; choose from: push, drop")
        for kind in self.perturb_kinds:
            choice("teleop.sim_operator.perturb_kinds[]", kind, PERTURB_KINDS)
        in_range("teleop.sim_operator.perturb_push_scale", self.perturb_push_scale, 0.0, 1.0)


@dataclasses.dataclass
class TeleopConfig:
    device: str = "sim_operator"
    translation_scale: float = 1.0  # VR/SpaceMouse motion -> robot motion
    rotation_scale: float = 1.0
    deadzone: float = 0.05
    http_port: int = 8443  # operator screen / WebXR page (HTTPS + WSS on the same port)
    sim_operator: SimOperatorConfig = dataclasses.field(default_factory=SimOperatorConfig)
    # --- arbitration
    dof_mask: tuple[bool, bool, bool, bool, bool, bool, bool] = (True,) * 7  # DoFs the operator owns in takeover
    auto_takeover: bool = True  # grabbing the device (clutch / motion) while autonomous starts a takeover
    demo: bool = False  # whole episode teleoperated (segment 'demo'); no policy to hand back to
    # --- twist devices (SpaceMouse, keyboard, gamepad)
    dominant_axis: bool = False  # keep only the strongest axis
    silence_s: float = 0.05  # no report for this long -> zero motion
    spacemouse_path: str = ""  # hidraw path; "" = first 3Dconnexion device found
    gamepad_path: str = "/dev/input/js0"
    key_hold_s: float = 0.12  # a key counts as held this long after its last (auto-repeat) byte
    # --- VR (OpenXR and WebXR share the pose mapping)
    hand: str = "right"  # controller that drives the arm
    operator_yaw_deg: float = 0.0  # operator's heading about base z (0 = standing behind the robot, facing +x)
    jump_guard_m: float = 0.05  # controller samples further apart than this are ignored
    jump_guard_deg: float = 35.0
    openxr_headless: bool = True  # use XR_MND_headless when the runtime offers it
    webxr_require_tracked: bool = True  # inferred controller positions (emulatedPosition) count as lost tracking
    # --- web (WebXR page + operator screen)
    http_host: str = "127.0.0.1"  # 0.0.0.0 to let a headset on the LAN connect
    cert_dir: str = "~/.cache/hil_robot/teleop_cert"  # self-signed certificate made on first run
    http_token: str = ""  # websocket session token; "" = a random one per run (in the printed URLs)
    screen_fps: float = 10.0  # camera frames pushed to the operator screen

    def __post_init__(self) -> None:
        choice("teleop.device", self.device, DEVICES)
        positive("teleop.translation_scale", self.translation_scale)
        positive("teleop.rotation_scale", self.rotation_scale)
        in_range("teleop.deadzone", self.deadzone, 0.0, 0.9)
        in_range("teleop.http_port", self.http_port, 0, 65535)
        if len(self.dof_mask) != 7:
            raise ConfigError(f"teleop.dof_mask must have 7 booleans [dx,dy,dz,drx,dry,drz,gripper], got {len(self.dof_mask)}")
        positive("teleop.silence_s", self.silence_s)
        positive("teleop.key_hold_s", self.key_hold_s)
        choice("teleop.hand", self.hand, ("left", "right"))
        positive("teleop.jump_guard_m", self.jump_guard_m)
        in_range("teleop.jump_guard_deg", self.jump_guard_deg, 1.0, 180.0)
        positive("teleop.screen_fps", self.screen_fps)
