"""A compute-free, weight-updatable policy: it returns a constant chunk whose value comes from its
weights, so a weight swap is visible through the wire. Used to measure transport overhead (model
compute excluded) and to test the weight bus end to end; not a learning policy.

    p = NullPolicy(horizon=50, action_dim=7, n_params=1_000_000)
    p.infer(obs)["actions"]  # float32[50, 7], every entry = tanh(weights["bias"][0])
"""

from __future__ import annotations

from typing import Any

import numpy as np


class NullPolicy:
    def __init__(self, horizon: int = 50, action_dim: int = 7, n_params: int = 1024, name: str = "null") -> None:
        self.horizon, self.action_dim, self.name = horizon, action_dim, name
        self.version = 0
        self.weights = {"bias": np.zeros(action_dim, np.float32),
                        "body": np.zeros(max(n_params - action_dim, 1), np.float32)}
        self._out = np.zeros((horizon, action_dim), np.float32)
        self.infer_calls = 0
        self.resets = 0

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(obs, dict):
            raise TypeError("observation must be a dict")
        self.infer_calls += 1
        return {"actions": self._out, "policy_version": self.version}

    def infer_batch(self, observations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.infer(o) for o in observations]

    def reset(self) -> None:
        self.resets += 1

    @property
    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "action_horizon": self.horizon, "action_dim": self.action_dim, "cameras": [],
                "policy_version": self.version, "n_params": sum(w.size for w in self.weights.values())}

    def weight_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {k: (tuple(v.shape), str(v.dtype)) for k, v in self.weights.items()}

    def load_weights(self, weights: dict[str, np.ndarray], version: int) -> None:
        new = dict(self.weights)
        new.update(weights)
        out = np.broadcast_to(np.tanh(new["bias"]).astype(np.float32), (self.horizon, self.action_dim)).copy()
        self.weights, self._out, self.version = new, out, int(version)


def make_null_policy(cfg: Any = None) -> NullPolicy:
    """Factory for ``hil-robot serve-policy policy_factory=hil_robot.transport.null_policy:make_null_policy``."""
    horizon = int(getattr(getattr(cfg, "policy", None), "action_horizon", 50)) if cfg is not None else 50
    return NullPolicy(horizon=horizon)
