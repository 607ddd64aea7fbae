"""A progress critic the learner trains online on the run's own episodes (``learner.reward=critic_online``).

A critic trained once on scripted episodes rates states it never saw as progress, and an RL actor
finds them. Here the critic learns from what the actor actually does, with the episode outcomes as
labels, so a state the actor farms becomes training data the next round:

* demos and successful episodes: progress = normalised time, ``done`` on their final frames (the
  success classifier: final frames vs the rest, HIL-SERL style);
* failed episodes and the policy's steps before an operator takeover (a takeover is evidence the
  policy was failing): no progress, not done;
* the steps from the last takeover to a success: progress towards that success.

The same pair/done losses as the offline critic (``hil_robot.learn.critic.critic_loss``) train an
ensemble of ``critic_online_ensemble`` small ``ProgressCritic`` networks, each on its own sample
stream. Reward for a transition: ``mean_k Δ_k − critic_online_penalty · std_k Δ_k`` (disagreement
is a penalty: states the members disagree on pay less) plus ``critic_online_success_bonus`` where
*every* member's P(done | next obs) exceeds ``critic_online_done_threshold`` — that is also the
terminal the TD target stops at. Scores are cached per transition and critic version; a new
version refreshes at most ``critic_online_rescore_per_batch`` older scores per batch.

    oc = OnlineCritic(lc, replay.buffer, device)
    oc.maybe_train()               # every critic_online_train_every_s: a few steps per member
    batch = oc.relabel(batch)      # reward, done, truncated from the critic ensemble
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from hil_robot.learn.critic import DEFAULT_OTHER_INSTRUCTIONS, CriticTrainSettings, PairSampler, critic_loss
from hil_robot.types import SEGMENT_INDEX, Segment
from policies.critic import CriticNetConfig, ProgressCritic

log = logging.getLogger(__name__)

_HUMAN = np.array([SEGMENT_INDEX[Segment.RECOVERY], SEGMENT_INDEX[Segment.CORRECTION]])


class ReplaySampler(PairSampler):
    """``PairSampler``'s groups drawn over the replay's rows (no copy of the frames): one 'unit' per
    labelled span of an episode (see the module docstring)."""

    def __init__(self, buffer: Any, settings: CriticTrainSettings, seed: int):
        self.s = settings
        self.rng = np.random.default_rng(seed)
        self.buffer = buffer
        units, success, instr = [], [], []
        for h in buffer.held.values():
            rows = h.rows if h.final_row is None or h.final_row < 0 else np.r_[h.rows, h.final_row]
            seg = buffer._segment[h.rows]
            human = np.flatnonzero(np.isin(seg, _HUMAN))
            text = buffer._instructions[buffer._instr[h.rows[0]]]
            if not h.success:
                units.append(rows), success.append(False), instr.append(text)
                continue
            if len(human) and not h.is_demo:
                if human[0] >= 3:  # the policy's approach that ended in a takeover
                    units.append(rows[: human[0]]), success.append(False), instr.append(text)
                starts = np.flatnonzero(np.diff(np.r_[-2, human]) > 1)  # first step of each takeover
                rows = rows[human[starts[-1]]:]
            units.append(rows), success.append(True), instr.append(text)
        keep = [i for i, u in enumerate(units) if len(u) >= 2]
        units = [units[i] for i in keep]
        self.rows = np.concatenate(units) if units else np.zeros(0, np.int64)
        self.lengths = np.array([len(u) for u in units], np.int64)
        self.starts = np.r_[0, np.cumsum(self.lengths)[:-1]].astype(np.int64)
        self.success = np.array([success[i] for i in keep], bool)
        self.instructions = [instr[i] for i in keep]
        own = set(self.instructions)
        self.others = [t for t in DEFAULT_OTHER_INSTRUCTIONS if t not in own] or ["do nothing"]
        self.succ_ids = np.flatnonzero(self.success)
        self.fail_ids = np.flatnonzero(~self.success)

    def gather(self, idx: np.ndarray, device: torch.device) -> dict[str, Any]:
        rows = self.rows[idx]
        b = self.buffer
        return {"images": {cam: torch.from_numpy(arr[rows]).to(device) for cam, arr in b._images.items()},
                "state": torch.from_numpy(b._obs["state"][rows]).to(device)}


class OnlineCritic:
    """An ensemble of small progress critics trained on the replay's episodes (module docstring)."""

    def __init__(self, lc: Any, buffer: Any, device: torch.device | str = "cpu", seed: int = 0):
        self.lc = lc
        self.seed = int(seed)  # experiment.seed: the members' initial weights and sample streams follow it
        self.buffer = buffer
        self.device = torch.device(device)
        cams = tuple(sorted(buffer._images))
        if not cams:
            raise ValueError("learner.reward=critic_online needs camera images in the episode store (the critic "
                             "scores frames); record with sim.render=true")
        hw = tuple(buffer._images[cams[0]].shape[1:3])
        net = CriticNetConfig(cameras=cams, image_hw=hw, vision_channels=(8, 16, 32, 32), feature_dim=64, hidden_dim=128)
        self.settings = CriticTrainSettings(episodes_per_batch=8, frames_per_episode=4, lr=1e-3, fail_fraction=0.5)
        with torch.random.fork_rng(devices=[]):  # seeded members without moving the learner's torch RNG
            self.models = []
            for k in range(lc.critic_online_ensemble):
                torch.manual_seed(self.seed * 7919 + k)
                self.models.append(ProgressCritic(net).to(self.device))
        self.opts = [torch.optim.AdamW(m.parameters(), lr=self.settings.lr, weight_decay=1e-4) for m in self.models]
        states = buffer._obs["state"][np.concatenate([h.rows for h in buffer.held.values()])]
        for m in self.models:
            m.state_mean.copy_(torch.from_numpy(states.mean(0)))
            m.state_std.copy_(torch.from_numpy(np.maximum(states.std(0), 1e-2)))
        self.version = 0
        self.steps = 0
        self._last_train = -np.inf
        self._cache: dict[tuple[int, int, int], tuple[int, float, float]] = {}  # -> (version, reward, done)
        self.stats = {"scored": 0, "hits": 0, "train_s": 0.0}
        self.last_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ training
    def train(self, steps: int) -> dict[str, float]:
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        sampler = ReplaySampler(self.buffer, self.settings, seed=self._stream(-1))  # the units: once per round
        if not len(sampler.succ_ids):
            return {}
        for k, (model, opt) in enumerate(zip(self.models, self.opts)):
            sampler.rng = np.random.default_rng(self._stream(k))  # each member its own sample stream
            model.train()
            for _ in range(steps):
                loss, m = critic_loss(model, sampler, sampler.sample(), self.device, self.settings)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                for key, v in m.items():
                    sums[key] = sums.get(key, 0.0) + v / (steps * len(self.models))
            model.eval()
        self.steps += steps
        self.version += 1
        self.stats["train_s"] += time.perf_counter() - t0
        sums["critic_online/units_fail"] = float(len(sampler.fail_ids))
        sums["critic_online/units_success"] = float(len(sampler.succ_ids))
        self.last_metrics = {k.replace("critic/", "critic_online/"): v for k, v in sums.items()}
        return self.last_metrics

    def _stream(self, member: int) -> list[int]:
        """Seed of one member's samples in this training round (experiment.seed, round, member)."""
        return [self.seed, self.steps, member + 1]

    def maybe_train(self) -> dict[str, float]:
        """The first call trains ``critic_online_warmup_steps``; later ones every
        ``critic_online_train_every_s`` train ``critic_online_steps`` per member."""
        now = time.monotonic()
        if self.version == 0:
            self._last_train = now
            return self.train(self.lc.critic_online_warmup_steps)
        if now - self._last_train >= self.lc.critic_online_train_every_s:
            self._last_train = now
            return self.train(self.lc.critic_online_steps)
        return {}

    # ------------------------------------------------------------------ scoring
    def _frames(self, batch: dict[str, Any], prefix: str, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """The cameras of batch rows ``rows`` (``prefix`` obs | next_obs): from the batch when it carries
        them, else straight from the replay by ``replay_row`` — a state-only RL batch leaves the images
        out, and only the rows scored here need them (copying every row's was most of an update)."""
        cams = self.models[0].cfg.cameras
        if all(f"{prefix}/images/{c}" in batch for c in cams):
            return {c: torch.from_numpy(batch[f"{prefix}/images/{c}"][rows]).to(self.device) for c in cams}
        at = np.asarray(batch["replay_row"], np.int64)[rows]
        if prefix == "next_obs":
            at = self.buffer._next[at]
        return {c: torch.from_numpy(self.buffer._images[c][at]).to(self.device) for c in cams}

    @torch.no_grad()
    def score(self, batch: dict[str, Any], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> (reward [n], terminal [n]) for batch rows ``rows`` (critic-ensemble reward, module docstring)."""
        fa = {"images": self._frames(batch, "obs", rows),
              "state": torch.from_numpy(batch["obs/state"][rows]).to(self.device)}
        fb = {"images": self._frames(batch, "next_obs", rows),
              "state": torch.from_numpy(batch["next_obs/state"][rows]).to(self.device)}
        text = self.models[0].encode_text([batch["instruction"][i] for i in rows], self.device)
        deltas, dones = [], []
        for m in self.models:
            d, logit = m(fa, fb, text)
            deltas.append(d), dones.append(torch.sigmoid(logit))
        delta, p_done = torch.stack(deltas), torch.stack(dones)
        lc = self.lc
        spread = delta.std(0) if len(self.models) > 1 else torch.zeros_like(delta[0])
        terminal = (p_done.min(0).values > lc.critic_online_done_threshold).float()
        reward = delta.mean(0) - lc.critic_online_penalty * spread + lc.critic_online_success_bonus * terminal
        return reward.cpu().numpy().astype(np.float32), terminal.cpu().numpy().astype(np.float32)

    def relabel(self, batch: dict[str, Any]) -> dict[str, Any]:
        """reward, done (critic terminal, or a stored failure terminal) and truncated for a replay batch."""
        keys = list(zip(batch["store_index"].tolist(), batch["episode_index"].tolist(), batch["step_index"].tolist()))
        cache = self._cache
        if len(cache) > 2 * self.lc.memory_max_steps:
            cache.clear()
        first: dict[tuple[int, int, int], int] = {}
        stale: dict[tuple[int, int, int], int] = {}
        for i, k in enumerate(keys):
            hit = cache.get(k)
            if hit is None:
                first.setdefault(k, i)  # never scored: always now
            elif hit[0] != self.version:
                stale.setdefault(k, i)
        # scores from an older critic version are refreshed at most critic_online_rescore_per_batch
        # per batch (every round is a new version: rescoring all of them held the learner at 4-6 upd/s)
        budget = self.lc.critic_online_rescore_per_batch
        for k, i in (stale.items() if budget < 0 else list(stale.items())[:budget]):
            first.setdefault(k, i)
        if first:
            idx = np.fromiter(first.values(), np.int64)
            reward, terminal = self.score(batch, idx)
            for i, r, t in zip(idx.tolist(), reward.tolist(), terminal.tolist()):
                cache[keys[i]] = (self.version, r, t)
        self.stats["scored"] += len(first)
        self.stats["hits"] += len(keys) - len(first)
        vals = np.array([cache[k][1:] for k in keys], np.float32)
        terminal = vals[:, 1]
        stored_fail = (np.asarray(batch["done"], np.float32) > 0) & (np.asarray(batch["episode_success"]) <= 0)
        batch["reward"] = vals[:, 0]
        batch["done"] = np.maximum(terminal, stored_fail.astype(np.float32))
        batch["truncated"] = np.where(batch["done"] > 0, 0.0, np.asarray(batch["truncated"], np.float32)).astype(np.float32)
        return batch
