"""Progress-critic settings for online use (dense reward, value, termination) and serving."""

from __future__ import annotations

import dataclasses

from hil_robot.config._build import ConfigError, in_range, positive


@dataclasses.dataclass
class CriticConfig:
    kind: str = "small"  # small: the conv critic (critic.checkpoint) | vlm: policies.critic_vlm (critic.vlm_path)
    checkpoint: str = ""  # progress-critic checkpoint directory (hil-robot train-critic out=...)
    vlm_path: str = ""  # local directory of a VLM critic (or, for train-critic, a bare SmolVLM/Idefics3 to start from)
    dtype: str = "float32"  # VLM critic weights: float32 | bfloat16 (GPU hosts)
    endpoint: str = ""  # tcp://host:port of a served critic (remote backend); "" = run it in-process
    done_threshold: float = 0.9  # the episode ends when P(done) exceeds this (VLAC)
    done_patience: int = 1  # ... for this many consecutive ticks
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (local backend)
    timeout_s: float = 2.0  # remote backend request timeout
    min_demo_spearman: float = 0.8  # demos whose value/time rank correlation is lower are filtered out

    def __post_init__(self) -> None:
        in_range("critic.done_threshold", self.done_threshold, 0.0, 1.0)
        in_range("critic.min_demo_spearman", self.min_demo_spearman, -1.0, 1.0)
        positive("critic.done_patience", self.done_patience)
        positive("critic.timeout_s", self.timeout_s)
        if self.endpoint and not self.endpoint.startswith(("tcp://", "ipc://", "inproc://")):
            raise ConfigError(f"critic.endpoint={self.endpoint!r} must look like tcp://host:port")
        if self.kind not in ("small", "vlm"):
            raise ConfigError(f"critic.kind={self.kind!r}; choose small or vlm")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"critic.dtype={self.dtype!r}; choose float32 or bfloat16")
        if not (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:")):
            raise ConfigError(f"critic.device={self.device!r}; choose cpu, cuda, cuda:N or auto")
