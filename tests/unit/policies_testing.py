"""Shared helpers for the policies/critic unit tests (tiny models, fake observations and batches)."""

from __future__ import annotations

import numpy as np
import torch

from policies.vla import VLAPolicy
from policies.vla_model import VLAModel, VLAModelConfig

TINY = dict(cameras=("front", "wrist"), image_hw=(64, 64), action_horizon=4, vision_channels=(8, 16, 16, 32),
            d_model=32, n_heads=2, enc_layers=1, dec_layers=1, dropout=0.0, flow_steps=4)


def tiny_policy(head: str = "l1", **kw) -> VLAPolicy:
    torch.manual_seed(0)
    return VLAPolicy(VLAModel(VLAModelConfig(head=head, **{**TINY, **kw})))


def make_obs(rng: np.random.Generator, hw: int = 64, prompt: str = "pick up the red cube") -> dict:
    return {"images/front": rng.integers(0, 255, (hw, hw, 3), dtype=np.uint8),
            "images/wrist": rng.integers(0, 255, (hw, hw, 3), dtype=np.uint8),
            "state": rng.normal(size=15).astype(np.float32), "prompt": prompt, "timestamp_s": 1.0}


def replay_batch(rng: np.random.Generator, b: int = 8, t: int = 4) -> dict:
    """A replay dict shaped like hil_robot.data's ``sample`` output; actions depend on the state."""
    state = rng.normal(size=(b, 15)).astype(np.float32)
    base = np.tanh(state[:, :7])
    actions = np.clip(base[:, None, :] * np.linspace(1.0, 0.5, t)[None, :, None], -1, 1).astype(np.float32)
    pad = np.zeros((b, t), bool)
    pad[0, -1] = True
    return {
        "obs/images/front": rng.integers(0, 255, (b, 64, 64, 3), dtype=np.uint8),
        "obs/images/wrist": rng.integers(0, 255, (b, 64, 64, 3), dtype=np.uint8),
        "obs/state": state, "next_obs/state": state + 0.01,
        "next_obs/images/front": rng.integers(0, 255, (b, 64, 64, 3), dtype=np.uint8),
        "next_obs/images/wrist": rng.integers(0, 255, (b, 64, 64, 3), dtype=np.uint8),
        "action": actions[:, 0], "actions": actions, "action_is_pad": pad,
        "reward": np.zeros(b, np.float32), "done": np.zeros(b, np.float32), "weight": np.ones(b, np.float32),
        "segment": np.zeros(b, np.int8), "instruction": ["pick up the red cube"] * (b // 2) + ["push the puck"] * (b - b // 2),
    }
