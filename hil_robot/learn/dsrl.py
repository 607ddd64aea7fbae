"""DSRL: RL that steers a frozen flow-matching VLA through its initial noise (``learner.rl_actor=noise``).

The SAC actor of ``hil_robot.learn.rlpd`` does not output robot actions here: it outputs the noise
w in [-1, 1]^(H·D) (times ``learner.rl_noise_bound``) from which the frozen VLA integrates its chunk;
the robot executes the chunk's first action, and the actor chooses again at the next tick. Q(s, w)
is learned over that noise space; the VLA is never trained and never runs inside an update.

Every recorded transition — the policy's own steps, the operator's recovery and correction, the
demos — becomes a noise-space action the same way: the executed actions a_t..a_{t+H-1} (the
``actions`` chunk of the replay, padded past the episode end) are inverted through the VLA's flow
(``invert_actions``: the Euler steps run backwards) to the noise that would have produced them
from o_t. So interventions are offline RLPD data in the actor's own action space, with no recorded
noise needed. The VLA is frozen, so each transition is inverted once and cached by (store,
episode, step); noise outside the bound is clipped to it per dimension (``dsrl/noise_clipped_frac``:
the share of clipped dimensions; a standard normal exceeds 1.5 in 13 % of them) and
``dsrl/noise_rms`` tells whether the labels look like the VLA's own noise (RMS 1 for N(0, I)).

    labeler = NoiseLabeler(vla, buffer, lc)
    batch = labeler.relabel(batch)   # batch["action"] := noise / bound, float32 [B, H·D]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class NoiseLabeler:
    """Noise-space actions for replay transitions (module docstring). vla: a ``VLAPolicy`` with a
    flow head; buffer: the learner's ``ReplayBuffer`` (rows of the batch are re-gathered from it)."""

    def __init__(self, vla: Any, buffer: Any, lc: Any, *, chunk_rows: int = 64):
        cfg = vla.config
        if getattr(cfg, "head", "flow") != "flow":
            raise ValueError("learner.rl_actor=noise steers a flow-matching VLA: policy.checkpoint must be a VLA trained "
                             f"with policy.head=flow (this one has head={cfg.head})")
        self.vla = vla
        self.buffer = buffer
        self.horizon, self.action_dim = int(cfg.action_horizon), int(cfg.action_dim)
        self.bound = float(lc.rl_noise_bound)
        self.iters = int(lc.rl_noise_invert_iters)
        self.max_cache = 2 * int(lc.memory_max_steps)
        self.chunk_rows = chunk_rows
        self.cameras = tuple(cfg.cameras)
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}  # -> noise / bound, float32 [H·D] (clipped)
        self.stats = {"inverted": 0, "hits": 0, "clipped": 0, "rms_sum": 0.0}

    @property
    def noise_dim(self) -> int:
        return self.horizon * self.action_dim

    @torch.no_grad()
    def invert_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Buffer rows int64 [n] -> (noise / bound clipped to [-1, 1] float32 [n, H·D], clipped dims int [n], RMS of the noise [n])."""
        from policies.vla import batch_to_torch

        model = self.vla.model
        was_training = model.training
        model.eval()
        out, clipped, rms = [], [], []
        try:
            for start in range(0, len(rows), self.chunk_rows):
                part = rows[start:start + self.chunk_rows]
                g = self.buffer.gather(part, self.horizon, np.ones(len(part), np.float32), next_obs=False, images=True)
                missing = [c for c in self.cameras if f"obs/images/{c}" not in g]
                if missing:
                    raise KeyError(f"learner.rl_actor=noise: the VLA needs cameras {list(self.cameras)}, the replay has "
                                   f"no {missing}; record with the cameras the VLA was trained on")
                mb = batch_to_torch({k: v for k, v in g.items() if not k.startswith("next_obs/")}, self.vla.device)
                noise = model.invert_actions(mb, mb["actions"], iters=self.iters).float().cpu().numpy()
                u = noise.reshape(len(part), -1) / self.bound
                clipped.append((np.abs(u) > 1.0).sum(1))
                rms.append(np.sqrt((noise.reshape(len(part), -1) ** 2).mean(1)))
                out.append(np.clip(u, -1.0, 1.0).astype(np.float32))
        finally:
            model.train(was_training)
        return np.concatenate(out), np.concatenate(clipped), np.concatenate(rms)

    def relabel(self, batch: dict[str, Any]) -> dict[str, Any]:
        """batch["action"] := the transitions' noise-space actions float32 [B, H·D] in [-1, 1]
        (inverted once per transition; the executed action stays in ``env_action``)."""
        keys = list(zip(batch["store_index"].tolist(), batch["episode_index"].tolist(), batch["step_index"].tolist()))
        cache = self._cache
        if len(cache) > self.max_cache:
            cache.clear()  # bounded: at most twice the replay's capacity
        first: dict[tuple[int, int, int], int] = {}
        for i, k in enumerate(keys):
            if k not in cache:
                first.setdefault(k, i)
        if first:
            idx = np.fromiter(first.values(), np.int64)
            noise, clipped, rms = self.invert_rows(np.asarray(batch["replay_row"])[idx])
            for i, u in zip(idx.tolist(), noise):
                cache[keys[i]] = u
            self.stats["clipped"] += int(clipped.sum())
            self.stats["rms_sum"] += float(rms.sum())
        self.stats["inverted"] += len(first)
        self.stats["hits"] += len(keys) - len(first)
        batch["env_action"] = batch["action"]
        batch["action"] = np.stack([cache[k] for k in keys]).astype(np.float32)
        return batch

    def metrics(self) -> dict[str, float]:
        n = max(1, self.stats["inverted"])
        return {"dsrl/inverted": float(self.stats["inverted"]),
                "dsrl/noise_clipped_frac": self.stats["clipped"] / (n * self.noise_dim),
                "dsrl/noise_rms": self.stats["rms_sum"] / n}
