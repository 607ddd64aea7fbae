"""Policy settings: which policy, where its checkpoint is, how its chunks are executed."""

from __future__ import annotations

import dataclasses

from hil_robot.config._build import choice, positive

POLICIES = ("vla", "rl", "expert", "noisy_expert", "random", "remote", "openpi", "groot", "lerobot")


ACTION_SPACES = ("ee_delta", "ee_pose_abs", "joint_pos_abs", "joint_vel")
ROTATION_WIDTH = {"quat_wxyz": 4, "quat_xyzw": 4, "rotvec": 3, "euler_xyz": 3}


@dataclasses.dataclass
class PolicyConfig:
    name: str = "vla"
    checkpoint: str = ""  # directory with model.safetensors + config.json; "" = fresh weights
    action_horizon: int = 10  # H: actions per chunk
    n_action_steps: int = 5  # actions executed from each chunk before the next one is used
    temporal_ensembling: bool = False
    head: str = "l1"  # l1 (ACT-style chunk regression) | flow (pi0-style flow matching)
    size: str = "cpu"  # cpu | small | gpu: preset model width (small: thinner early convs, for 64x64 sim images)
    noise_std: float = 0.0  # noisy_expert only
    pretrained_backbone: str = ""  # local .safetensors with vision backbone weights (no hub downloads)
    backbone: str = ""  # "" = the size preset's (cpu: conv, gpu: resnet18) | conv | resnet18
    flow_steps: int = 10  # Euler steps when head=flow
    augment_shift_px: int = 4  # DrQ random-shift padding while training (0 = off)
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    arch: str = "native"  # vla only: native (policies.vla_model) | vlm (SmolVLM/Idefics3 + action expert, policies.vla_vlm)
    vlm_path: str = ""  # arch=vlm: local save_pretrained directory of a SmolVLM/Idefics3 ("" = tiny random init)
    dtype: str = "fp32"  # arch=vlm: VLM weights fp32 | bf16 (GPU); the action expert stays fp32
    rl_explore: bool = True  # rl only: sample from the SAC actor (exploration while deploying); false = its mean
    # foreign VLA servers (openpi, groot; docs/byo_vla.md): obs-key mapping (syntax: hil_robot/obs_mapping.py)
    obs_map: dict[str, str] = dataclasses.field(default_factory=dict)  # backend key -> our obs source
    server_url: str = ""  # openpi: ws://host:8000 ; groot: tcp://host:5555
    api_key: str = ""  # openpi "Authorization: Api-Key ..." header / groot api_token ("" = none)
    server_timeout_s: float = 10.0  # per request to a foreign VLA server (first calls may compile kernels)
    action_key: str = "actions"  # openpi: reply key of the chunk; groot: comma-separated action.<part> keys, concatenated
    native_action_dim: int = 0  # columns the backend's chunk must have (0 = the action space's own width; more = padding, ignored)
    # the backend's NATIVE action space; the controller converts each row at the tick it runs
    # (hil_robot/control/action_space.py, docs/byo_vla.md "Action spaces")
    action_space: str = "ee_delta"  # ee_delta | ee_pose_abs | joint_pos_abs | joint_vel
    action_rotation: str = "quat_wxyz"  # ee_pose_abs orientation: quat_wxyz | quat_xyzw | rotvec | euler_xyz
    action_gripper: str = "signed"  # signed (-1 open..+1 closed) | close_1 ([0,1], 1 closed) | open_1 ([0,1], 1 open) | width_m
    gripper_max_width_m: float = 0.08  # action_gripper=width_m: the fully open width
    action_pos_scale_m: float = 0.0  # ee_delta: metres per native unit of dx..dz (0 = ours: normalised)
    action_rot_scale_rad: float = 0.0  # ee_delta: radians per native unit of drx..drz (0 = ours: normalised)
    joint_vel_dt_s: float = 0.0  # joint_vel: seconds one velocity row is integrated over (0 = the control period)
    groot_protocol: str = "n1.6"  # n1.6: {observation, options} -> [action, info] | n1.5: flat obs -> action dict
    # lerobot (policies/lerobot_backend.py; checkpoint = a LeRobot save_pretrained directory)
    lerobot_type: str = "act"  # the checkpoint's LeRobot policy type: act | smolvla | pi0 | pi05
    python: str = ""  # interpreter of the policy server for policy=lerobot ("" = .venv-lerobot/bin/python, make lerobot-env)

    def __post_init__(self) -> None:
        choice("policy.name", self.name, POLICIES)
        choice("policy.head", self.head, ("l1", "flow"))
        choice("policy.size", self.size, ("cpu", "small", "gpu"))
        choice("policy.backbone", self.backbone, ("", "conv", "resnet18"))
        positive("policy.flow_steps", self.flow_steps)
        choice("policy.arch", self.arch, ("native", "vlm"))
        choice("policy.dtype", self.dtype, ("fp32", "bf16", "float32", "bfloat16"))
        positive("policy.server_timeout_s", self.server_timeout_s)
        positive("policy.native_action_dim", self.native_action_dim, allow_zero=True)
        choice("policy.lerobot_type", self.lerobot_type, ("act", "smolvla", "pi0", "pi05"))
        choice("policy.groot_protocol", self.groot_protocol, ("n1.6", "n1.5"))
        choice("policy.action_space", self.action_space, ACTION_SPACES)
        choice("policy.action_rotation", self.action_rotation, tuple(ROTATION_WIDTH))
        choice("policy.action_gripper", self.action_gripper, ("signed", "close_1", "open_1", "width_m"))
        for k in ("gripper_max_width_m",):
            positive(f"policy.{k}", getattr(self, k))
        for k in ("action_pos_scale_m", "action_rot_scale_rad", "joint_vel_dt_s"):
            positive(f"policy.{k}", getattr(self, k), allow_zero=True)
        if self.native_action_dim and self.native_action_dim < self.action_width:
            from hil_robot.config._build import ConfigError

            raise ConfigError(
                f"policy.native_action_dim={self.native_action_dim} is narrower than policy.action_space="
                f"{self.action_space} needs ({self.action_width} columns: {self.action_layout}); fix either"
            )
        positive("policy.augment_shift_px", self.augment_shift_px, allow_zero=True)
        positive("policy.noise_std", self.noise_std, allow_zero=True)
        if not (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:")):
            from hil_robot.config._build import ConfigError

            raise ConfigError(f"policy.device={self.device!r}; choose cpu, cuda, cuda:N or auto")
        positive("policy.action_horizon", self.action_horizon)
        positive("policy.n_action_steps", self.n_action_steps)
        if self.n_action_steps > self.action_horizon:
            from hil_robot.config._build import ConfigError

            raise ConfigError(
                f"policy.n_action_steps={self.n_action_steps} must be <= policy.action_horizon={self.action_horizon}"
            )

    @property
    def action_width(self) -> int:
        """Columns a native row of ``action_space`` uses (wider chunks: the rest is ignored)."""
        if self.action_space == "ee_pose_abs":
            return 3 + ROTATION_WIDTH[self.action_rotation] + 1
        return 8 if self.action_space in ("joint_pos_abs", "joint_vel") else 7

    @property
    def action_layout(self) -> str:
        return {
            "ee_delta": "dx dy dz drx dry drz gripper",
            "ee_pose_abs": f"x y z {self.action_rotation} gripper",
            "joint_pos_abs": "q1..q7 gripper",
            "joint_vel": "qd1..qd7 gripper",
        }[self.action_space]
