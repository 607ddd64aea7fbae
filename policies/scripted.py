"""Policies without a network: the sim's scripted expert, a noisy version of it, and uniform random.
No torch here, so robot-side processes can use them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hil_robot.types import ACTION_DIM, GRIPPER_INDEX, validate_chunk


class NoisyPolicy:
    """Wraps a policy and adds Gaussian noise (std ``noise_std``, normalised units) to every action,
    then clips to [-1, 1]. The gripper is perturbed too but keeps its sign unless ``flip_prob`` fires."""

    def __init__(self, inner: Any, noise_std: float, seed: int | None = None, flip_prob: float = 0.0) -> None:
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.inner = inner
        self.noise_std = float(noise_std)
        self.flip_prob = float(flip_prob)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        out = dict(self.inner.infer(obs))
        actions = validate_chunk(out["actions"]).copy()
        actions += self._rng.normal(0.0, self.noise_std, actions.shape).astype(np.float32)
        if self.flip_prob > 0:
            flip = self._rng.random(actions.shape[0]) < self.flip_prob
            actions[flip, GRIPPER_INDEX] *= -1.0
        out["actions"] = np.clip(actions, -1.0, 1.0).astype(np.float32)
        return out

    def reset(self) -> None:
        self.inner.reset()

    @property
    def metadata(self) -> dict[str, Any]:
        meta = dict(getattr(self.inner, "metadata", {}) or {})
        meta.update(name=f"noisy_{meta.get('name', 'policy')}", noise_std=self.noise_std)
        return meta


class RandomPolicy:
    """Uniform random chunks in [-1, 1] (a baseline and a smoke-test driver)."""

    def __init__(self, action_horizon: int = 1, seed: int | None = None) -> None:
        if action_horizon < 1:
            raise ValueError(f"action_horizon must be >= 1, got {action_horizon}")
        self.action_horizon = int(action_horizon)
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        actions = self._rng.uniform(-1.0, 1.0, (self.action_horizon, ACTION_DIM)).astype(np.float32)
        return {"actions": actions, "policy_version": 0}

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    @property
    def metadata(self) -> dict[str, Any]:
        return {"name": "random", "action_horizon": self.action_horizon, "action_dim": ACTION_DIM,
                "cameras": [], "policy_version": 0}


def make_expert_policy(cfg: Any) -> Any:
    from sim.expert import make_expert

    return make_expert(cfg.sim.task)


def make_noisy_expert_policy(cfg: Any) -> NoisyPolicy:
    from sim.expert import make_expert

    return NoisyPolicy(make_expert(cfg.sim.task), cfg.policy.noise_std, seed=cfg.experiment.seed)


def make_random_policy(cfg: Any) -> RandomPolicy:
    return RandomPolicy(cfg.policy.action_horizon, seed=cfg.experiment.seed)
