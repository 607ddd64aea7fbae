"""Normalisation statistics for proprioception and actions, computed from data.

They live as buffers inside the model (``norm.*``), so they are saved in the checkpoint, travel
with weights on the weight bus and are restored on load: serving always matches training.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

MIN_STD = 1e-2  # near-constant dims (e.g. an unused gripper) are not blown up


class Normalizer(nn.Module):
    """z-score for state [.., S] and actions [.., D]; identity until ``set_stats`` is called."""

    def __init__(self, state_dim: int, action_dim: int) -> None:
        super().__init__()
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))
        self.register_buffer("action_mean", torch.zeros(action_dim))
        self.register_buffer("action_std", torch.ones(action_dim))
        self.register_buffer("count", torch.zeros(1))  # samples the stats came from (0 = identity)

    def set_stats(self, stats: Mapping[str, Any]) -> None:
        for name in ("state_mean", "state_std", "action_mean", "action_std"):
            value = torch.as_tensor(np.asarray(stats[name], dtype=np.float32))
            buf = getattr(self, name)
            if value.shape != buf.shape:
                raise ValueError(f"norm stats {name} has shape {tuple(value.shape)}, expected {tuple(buf.shape)}")
            if not torch.isfinite(value).all():
                raise ValueError(f"norm stats {name} contains NaN/Inf")
            if name.endswith("_std") and (value <= 0).any():
                raise ValueError(f"norm stats {name} must be > 0")
            buf.copy_(value)
        self.count.fill_(float(stats.get("count", 1)))

    def stats(self) -> dict[str, Any]:
        return {
            "state_mean": self.state_mean.tolist(),
            "state_std": self.state_std.tolist(),
            "action_mean": self.action_mean.tolist(),
            "action_std": self.action_std.tolist(),
            "count": int(self.count[0].item()),
        }

    def norm_state(self, state: torch.Tensor) -> torch.Tensor:
        return (state - self.state_mean) / self.state_std

    def norm_action(self, action: torch.Tensor) -> torch.Tensor:
        return (action - self.action_mean) / self.action_std

    def unnorm_action(self, action: torch.Tensor) -> torch.Tensor:
        return action * self.action_std + self.action_mean


def compute_stats(state: np.ndarray, actions: np.ndarray) -> dict[str, Any]:
    """state float [N, S], actions float [N, D] (or [N, T, D]: padded steps must be removed first)
    -> {"state_mean", "state_std", "action_mean", "action_std", "count"} as float32 arrays."""
    state = np.asarray(state, dtype=np.float64).reshape(-1, np.shape(state)[-1])
    actions = np.asarray(actions, dtype=np.float64).reshape(-1, np.shape(actions)[-1])
    for name, arr in (("state", state), ("actions", actions)):
        if arr.shape[0] == 0:
            raise ValueError(f"cannot compute normalisation stats from zero {name} samples")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN/Inf; drop those samples before computing stats")
    return {
        "state_mean": state.mean(0).astype(np.float32),
        "state_std": np.maximum(state.std(0), MIN_STD).astype(np.float32),
        "action_mean": actions.mean(0).astype(np.float32),
        "action_std": np.maximum(actions.std(0), MIN_STD).astype(np.float32),
        "count": int(state.shape[0]),
    }


def stats_from_batch(batch: Mapping[str, Any]) -> dict[str, Any]:
    """Stats from a replay batch (``obs/state``, ``actions`` + ``action_is_pad`` or ``action``)."""
    state = np.asarray(batch["obs/state"])
    if "actions" in batch:
        acts = np.asarray(batch["actions"])
        pad = np.asarray(batch.get("action_is_pad", np.zeros(acts.shape[:2], bool)), dtype=bool)
        acts = acts[~pad]
    else:
        acts = np.asarray(batch["action"])
    return compute_stats(state, acts)
