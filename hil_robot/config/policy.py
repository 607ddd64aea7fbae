"""Policy settings: which policy, where its checkpoint is, how its chunks are executed."""

from __future__ import annotations

import dataclasses

from hil_robot.config._build import choice, positive

POLICIES = ("vla", "rl", "expert", "noisy_expert", "random", "remote")


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

    def __post_init__(self) -> None:
        choice("policy.name", self.name, POLICIES)
        choice("policy.head", self.head, ("l1", "flow"))
        choice("policy.size", self.size, ("cpu", "small", "gpu"))
        choice("policy.backbone", self.backbone, ("", "conv", "resnet18"))
        positive("policy.flow_steps", self.flow_steps)
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
