"""Policy settings: which policy, where its checkpoint is, how its chunks are executed."""

from __future__ import annotations

import dataclasses

from hil_robot.config._build import choice, positive

POLICIES = ("vla", "rl", "expert", "noisy_expert", "random", "remote", "openpi", "groot", "lerobot")


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
    rl_explore: bool = True  # rl only: sample from the SAC actor (exploration while deploying); false = its mean
    # foreign VLA servers (openpi, groot; docs/byo_vla.md): obs-key mapping (syntax: hil_robot/obs_mapping.py)
    obs_map: dict[str, str] = dataclasses.field(default_factory=dict)  # backend key -> our obs source
    server_url: str = ""  # openpi: ws://host:8000 ; groot: tcp://host:5555
    api_key: str = ""  # openpi "Authorization: Api-Key ..." header / groot api_token ("" = none)
    server_timeout_s: float = 10.0  # per request to a foreign VLA server (first calls may compile kernels)
    action_key: str = "actions"  # openpi: reply key of the chunk; groot: comma-separated action.<part> keys, concatenated
    native_action_dim: int = 0  # columns the backend's chunk must have (0 = accept any)
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
        positive("policy.server_timeout_s", self.server_timeout_s)
        positive("policy.native_action_dim", self.native_action_dim, allow_zero=True)
        choice("policy.lerobot_type", self.lerobot_type, ("act", "smolvla", "pi0", "pi05"))
        choice("policy.groot_protocol", self.groot_protocol, ("n1.6", "n1.5"))
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
