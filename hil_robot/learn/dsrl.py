"""DSRL: RL that steers a frozen flow-matching VLA through its initial noise (``learner.rl_actor=noise``).

The SAC actor of ``hil_robot.learn.rlpd`` does not output robot actions here: it outputs the noise
w in [-1, 1]^(H·D) (times ``learner.rl_noise_bound``) from which the frozen VLA integrates its chunk;
the robot executes ``policy.n_action_steps`` of the chunk, and the actor chooses again. Q(s, w) is
learned over that noise space; the VLA is never trained and never runs inside an update.

Where each transition's noise-space action comes from, in this order:

1. **recorded**: the served policy returns the noise with its chunk (``RLPolicy``), the controller
   records it on the tick whose observation chose it (``StepRecord.policy_noise``, the chunk's
   first row) — exact, and the only source when the VLA is remote (π0 behind an openpi server:
   ``policy.server_url`` + ``learner.rl_noise_shape``; the learner has no weights to invert);
2. **inverted** (a local VLA, ``policy.checkpoint``): the operator's recovery and correction and
   the demos (and the policy's ticks of episodes recorded without noise) get the noise that would have
   produced its executed actions a_t..a_{t+H-1} from o_t, by running the VLA's Euler steps
   backwards (``invert_actions``). So interventions are RLPD's offline half in the actor's own
   action space. The VLA is frozen, so each transition is inverted once and cached by (store,
   episode, step); noise outside the bound is clipped per dimension (``dsrl/noise_clipped_frac``;
   a standard normal exceeds 1.5 in 13 % of them) and ``dsrl/noise_rms`` tells whether the labels
   look like the VLA's own noise (RMS 1 for N(0, I));
3. neither — a policy tick inside a chunk when noise is recorded (no decision of the actor's
   there: its inverted noise would describe the rest of one chunk and the start of the next), and
   with a remote VLA everything not recorded: left out of the batch (``dsrl/labelled_frac``).

A decision runs its chunk for ``policy.n_action_steps`` ticks, so with more than one the
transitions span that many steps (``ReplayBuffer.n_step``: summed discounted reward, the span's
last next-observation, discount gamma^m), like the choice the actor makes when serving.

    labeler = NoiseLabeler(vla, buffer, lc, span=cfg.policy.n_action_steps)
    batch = labeler.relabel(batch)   # batch["action"] := noise / bound, float32 [B', H·D]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class NoiseLabeler:
    """Noise-space actions for replay transitions (module docstring). vla: a local ``VLAPolicy``
    with a flow head, or None (remote VLA: recorded noise only, ``noise_shape`` required);
    buffer: the learner's ``ReplayBuffer`` (rows of the batch are re-gathered from it); span: ticks
    one decision runs (``policy.n_action_steps``); images: whether batches carry the cameras (the
    re-gathered next observations of spans then do too)."""

    def __init__(self, vla: Any, buffer: Any, lc: Any, *, noise_shape: tuple[int, ...] = (), span: int = 1,
                 images: bool = True, chunk_rows: int = 64):
        if vla is not None:
            cfg = vla.config
            if getattr(cfg, "head", "flow") != "flow":
                raise ValueError("learner.rl_actor=noise steers a flow-matching VLA: policy.checkpoint must be a VLA "
                                 f"trained with policy.head=flow (this one has head={cfg.head})")
            local = (int(cfg.action_horizon), int(cfg.action_dim))
            if noise_shape and tuple(noise_shape) != local:
                raise ValueError(f"learner.rl_noise_shape={list(noise_shape)} but the VLA in policy.checkpoint samples "
                                 f"noise of shape {list(local)}; leave rl_noise_shape empty for a local VLA")
            noise_shape = local
            self.cameras = tuple(cfg.cameras)
        else:
            if len(noise_shape) != 2:
                raise ValueError("learner.rl_actor=noise without a local VLA (policy.checkpoint) needs "
                                 "learner.rl_noise_shape=[action_horizon, action_dim] of the remote model's noise")
            self.cameras = ()
        if span > 1 and lc.reward != "sparse":
            raise ValueError(f"learner=dsrl with policy.n_action_steps={span} sums the recorded reward over each chunk; "
                             f"learner.reward={lc.reward} relabels single steps only: use learner.reward=sparse or "
                             "policy.n_action_steps=1")
        self.vla = vla
        self.buffer = buffer
        self.horizon, self.action_dim = int(noise_shape[0]), int(noise_shape[1])
        self.bound = float(lc.rl_noise_bound)
        self.iters = int(lc.rl_noise_invert_iters)
        self.gamma = float(lc.gamma)
        self.span = max(1, int(span))
        self.images = images
        self.max_cache = 2 * int(lc.memory_max_steps)
        self.chunk_rows = chunk_rows
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}  # -> noise / bound, float32 [H·D] (clipped)
        self.stats = {"inverted": 0, "hits": 0, "clipped": 0, "rms_sum": 0.0, "recorded": 0, "seen": 0,
                      "unlabelled": 0, "span_steps": 0, "spans": 0}

    @property
    def noise_dim(self) -> int:
        return self.horizon * self.action_dim

    @torch.no_grad()
    def invert_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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

    def _inverted(self, batch: dict[str, Any], idx: np.ndarray) -> np.ndarray:
        """Cached inversion labels float32 [len(idx), H·D] for batch rows idx."""
        keys = list(zip(batch["store_index"][idx].tolist(), batch["episode_index"][idx].tolist(),
                        batch["step_index"][idx].tolist()))
        cache = self._cache
        if len(cache) > self.max_cache:
            cache.clear()  # bounded: at most twice the replay's capacity
        first: dict[tuple[int, int, int], int] = {}
        for i, k in enumerate(keys):
            if k not in cache:
                first.setdefault(k, i)
        if first:
            pos = np.fromiter(first.values(), np.int64)
            noise, clipped, rms = self.invert_rows(np.asarray(batch["replay_row"])[idx][pos])
            for i, u in zip(pos.tolist(), noise):
                cache[keys[i]] = u
            self.stats["clipped"] += int(clipped.sum())
            self.stats["rms_sum"] += float(rms.sum())
        self.stats["inverted"] += len(first)
        self.stats["hits"] += len(keys) - len(first)
        return np.stack([cache[k] for k in keys]).astype(np.float32) if keys else np.zeros((0, self.noise_dim), np.float32)

    def relabel(self, batch: dict[str, Any]) -> dict[str, Any]:
        """batch["action"] := the transitions' noise-space actions float32 [B', H·D] in [-1, 1]
        (recorded, else inverted; rows with neither are dropped, so B' <= B); the executed action
        stays in ``env_action``. With span > 1 reward / done / truncated / next_obs / ``discount``
        describe the whole span."""
        n = len(batch["replay_row"])
        labels = np.zeros((n, self.noise_dim), np.float32)
        have = np.zeros(n, bool)
        rec = batch.get("policy_noise")
        if rec is not None:
            rec = np.asarray(rec, np.float32)
            if rec.shape[1] != self.noise_dim:
                raise ValueError(f"recorded policy_noise has {rec.shape[1]} values per step, the actor's noise has "
                                 f"{self.noise_dim} ({self.horizon}x{self.action_dim}); learner.rl_noise_shape must "
                                 "match the served policy")
            have = np.isfinite(rec).all(1)
            labels[have] = np.clip(rec[have] / self.bound, -1.0, 1.0)
            self.stats["recorded"] += int(have.sum())
        invert = ~have
        if rec is not None:  # recording is on: the policy's own ticks are its recorded decisions, or nothing
            invert &= np.asarray(batch["source"]) != 0  # (a tick inside a chunk was no decision of the actor's)
        if self.vla is not None and invert.any():
            idx = np.flatnonzero(invert)
            labels[idx] = self._inverted(batch, idx)
            have[idx] = True
        self.stats["seen"] += n
        self.stats["unlabelled"] += int((~have).sum())
        batch["env_action"] = batch["action"]
        batch["action"] = labels
        if self.span > 1:
            span = self.buffer.n_step(np.asarray(batch["replay_row"]), self.span, self.gamma)
            have &= span["valid"]
        keep = np.flatnonzero(have)
        if len(keep) < n:
            batch = take_rows(batch, keep, n)
        if self.span > 1:
            span = {k: v[keep] for k, v in span.items()}
            apply_spans(self.buffer, batch, span, self.images)
            self.stats["spans"] += len(keep)
            self.stats["span_steps"] += int(span["steps"].sum())
        return batch

    def metrics(self) -> dict[str, float]:
        n = max(1, self.stats["inverted"])
        seen = max(1, self.stats["seen"])
        out = {"dsrl/inverted": float(self.stats["inverted"]),
               "dsrl/noise_clipped_frac": self.stats["clipped"] / (n * self.noise_dim),
               "dsrl/noise_rms": self.stats["rms_sum"] / n,
               "dsrl/recorded_frac": self.stats["recorded"] / seen,
               "dsrl/labelled_frac": 1.0 - self.stats["unlabelled"] / seen}
        if self.stats["spans"]:
            out["dsrl/span_steps"] = self.stats["span_steps"] / self.stats["spans"]
        return out


def apply_spans(buffer: Any, batch: dict[str, Any], span: dict[str, np.ndarray], images: bool) -> dict[str, Any]:
    """Turn the batch's rows into the multi-step transitions of ``span`` (``buffer.n_step`` of the
    same rows): next_obs of the span's last step, its summed discounted reward, done, truncated and
    ``discount`` (gamma^m). In place; returns the batch."""
    nxt = buffer.gather(span["end_row"], 1, np.ones(len(span["end_row"]), np.float32), next_obs=True, images=images)
    batch.update({k: v for k, v in nxt.items() if k.startswith("next_obs/")})
    batch.update(reward=span["reward"], done=span["done"], truncated=span["truncated"], discount=span["discount"])
    return batch


def take_rows(batch: dict[str, Any], idx: np.ndarray, n: int) -> dict[str, Any]:
    """The batch restricted to rows idx: every per-row array / list (leading size n) is indexed."""
    out: dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == n:
            out[k] = v[idx]
        elif isinstance(v, list) and len(v) == n:
            out[k] = [v[i] for i in idx.tolist()]
        else:
            out[k] = v
    return out
