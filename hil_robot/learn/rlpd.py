"""RLPD / HIL-SERL style SAC, one update read top to bottom (DESIGN §4).

Per ``update(batch)`` (a replay batch of ``utd_ratio * B`` samples, already mixed 50/50 from the
demo+intervention view and the online view, see ``mix_batches``):

1. split into ``utd_ratio`` minibatches; for each:
   * DrQ random shift (pad 4) on every camera of obs and next_obs;
   * target: ``y = r + γ · bootstrap · (min over a random subset of the target ensemble of
     Q'(s', a') − α·log π(a'|s'))`` with ``a' ~ π(s')``; ``bootstrap = 0`` only on a true terminal
     (``done`` and not ``truncated``): time limits bootstrap;
   * critic ensemble + discrete gripper critic (target: reward minus a toggle penalty plus the
     same next-state value ``γ · bootstrap · V(s')``) regress their targets; the conv encoder
     learns through the critic loss;
   * Polyak-average the target networks (τ).
2. actor and temperature update on the last minibatch, on detached encoder features (DrQ).

Actions: the continuous dims ``[dx..drz]`` (and the gripper too when ``rl_gripper=continuous``)
come from a tanh-Gaussian actor; with ``rl_gripper=discrete`` the gripper is chosen by the
gripper critic over (close, stay, open). With ``rl_actor=residual`` the actor outputs a
correction added to a base policy's action; the caller puts the base policy's (the VLA's) actions
in the batch as ``obs/base_action`` and ``next_obs/base_action`` float32 [B, 7]
(``loop.add_base_actions``). With ``rl_actor=noise`` (DSRL, ``hil_robot.learn.dsrl``) the action is
the frozen flow VLA's initial noise / ``rl_noise_bound``, float32 [B, H·D] (``obs_spec["noise_dim"]``);
the batch's ``action`` carries the inverted noise and the VLA picks the gripper (no gripper critic).

Metrics are namespaced ``rlpd/...``. For speed the next-state features come from the *target*
encoder for both the next action and the target Q (one encoder pass instead of two).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hil_robot.config.learner import LearnerConfig
from hil_robot.learn import dist
from hil_robot.types import ACTION_DIM, GRIPPER_INDEX, STATE_LAYOUT
from policies.rl import (
    GRIPPER_STAY,
    EnsembleCritic,
    GripperCritic,
    RLFeaturizer,
    TanhGaussianActor,
    actor_dims,
    gripper_class,
    make_featurizer,
    random_shift,
)

GRIPPER_OPENING = STATE_LAYOUT["gripper"][0]


def obs_spec_from_batch(batch: Mapping[str, Any], cfg: LearnerConfig) -> dict[str, Any]:
    """What the networks must accept, read off one replay batch: state dim, cameras, image size."""
    if "obs/state" not in batch:
        raise KeyError("replay batch has no 'obs/state'; is this a hil_robot replay batch?")
    state_dim = int(np.shape(batch["obs/state"])[-1])
    if cfg.rl_obs == "state" and "obs/task_state" in batch:
        state_dim += int(np.shape(batch["obs/task_state"])[-1])
    cameras: tuple[str, ...] = ()
    image_hw = (0, 0)
    if cfg.rl_obs == "image":
        have = sorted(k[len("obs/images/"):] for k in batch if k.startswith("obs/images/"))
        cameras = tuple(cfg.rl_cameras) if cfg.rl_cameras else tuple(have)
        missing = [c for c in cameras if c not in have]
        if missing or not cameras:
            raise KeyError(f"learner.rl_obs=image needs cameras {list(cameras) or '(any)'}; the batch has {have}")
        image_hw = tuple(np.shape(batch[f"obs/images/{cameras[0]}"])[1:3])
    return {"state_dim": state_dim, "cameras": cameras, "image_hw": image_hw}


def to_torch(batch: Mapping[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    """numpy replay batch -> tensors (zero-copy on CPU); non-array entries are dropped."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, np.ndarray) and v.dtype != object:
            out[k] = torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True)
        elif isinstance(v, torch.Tensor):
            out[k] = v.to(device)
    return out


def mix_batches(offline: Mapping[str, Any], online: Mapping[str, Any]) -> dict[str, Any]:
    """RLPD's symmetric sampling: concatenate a demo+intervention batch and an online batch of the
    same size (``update`` shuffles before splitting into UTD minibatches). Keys missing from either
    side are dropped. Adds ``is_offline`` float32 [B] (1 on the demo+intervention rows)."""
    keys = [k for k in offline if k in online and k != "is_offline"]
    out: dict[str, Any] = {}
    for k in keys:
        a, b = offline[k], online[k]
        out[k] = list(a) + list(b) if isinstance(a, list) else np.concatenate([a, b], axis=0)
    n_off, n_on = len(offline["reward"]), len(online["reward"])
    out["is_offline"] = np.r_[np.ones(n_off, np.float32), np.zeros(n_on, np.float32)]
    return out


class _CriticLoss(nn.Module):
    """Everything the critic loss trains (encoder, Q ensemble, gripper critic) as one module, so
    DistributedDataParallel can wrap it. forward -> (loss, q [E, B], features [B, F])."""

    def __init__(self, featurizer: RLFeaturizer, critic: EnsembleCritic, gripper: GripperCritic | None):
        super().__init__()
        self.featurizer, self.critic, self.gripper = featurizer, critic, gripper

    def forward(self, state, images, action, y, g_cls, y_g):
        feat = self.featurizer(state, images)
        q = self.critic(feat, action)
        loss = F.mse_loss(q, y.expand_as(q), reduction="none").mean(1).sum()
        q_g = None
        if self.gripper is not None:
            q_g = self.gripper(feat).gather(1, g_cls[:, None]).squeeze(1)
            loss = loss + F.mse_loss(q_g, y_g)
        return loss, q, q_g, feat


class _ActorLoss(nn.Module):
    """The actor's loss on detached features; the critic is used but not trained here (it is kept
    outside this module's parameters so DDP syncs only the actor)."""

    def __init__(self, actor: TanhGaussianActor, critic: EnsembleCritic):
        super().__init__()
        self.actor = actor
        self._critic = [critic]  # a list: not a registered submodule

    def forward(self, actor_in, feat, base, alpha, residual_scale, bc_action=None, bc_mask=None, bc_weight=0.0,
                q_filter=False):
        """-> (loss, log_prob [B], bc loss, the BC mask used [B] or None)."""
        a, log_prob, mean = self.actor.sample_with_mean(actor_in)  # one trunk pass for the sample and the mean
        total = compose_action(a, base, residual_scale)
        q = self._critic[0](feat, total).mean(0)
        loss = (alpha * log_prob - q).mean()
        bc = torch.zeros((), device=loss.device)
        if bc_weight > 0 and bc_mask is not None and bool(bc_mask.any()):
            # BC on the recorded (demo / operator) actions: the actor's mean action against them,
            # in units of the Q scale so the weight means the same at any reward scale
            mean_a = compose_action(mean, base, residual_scale)
            if q_filter:
                bc_mask = q_filter_mask(self._critic[0], feat, bc_action, mean_a.detach(), bc_mask)
            err = (mean_a - bc_action).pow(2).sum(-1)
            bc = (err * bc_mask).sum() / bc_mask.sum().clamp_min(1.0)
            loss = loss + bc_weight * q.detach().abs().mean().clamp_min(1e-2) * bc
        return loss, log_prob, bc, bc_mask


@torch.no_grad()
def q_filter_mask(critic: EnsembleCritic, feat: torch.Tensor, a_rec: torch.Tensor, a_pi: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """The Q-filter: ``mask`` [B] kept only where Q(s, recorded action) > Q(s, the actor's mean
    action) (ensemble means). Evaluated on the rows where ``mask`` > 0 alone (the demo and
    intervention rows, about half the batch), both actions in one critic pass."""
    rows = torch.nonzero(mask > 0).squeeze(1)
    if rows.numel() == 0:
        return mask
    f = feat[rows]
    q = critic(torch.cat([f, f]), torch.cat([a_rec[rows], a_pi[rows]])).mean(0)
    better = (q[: rows.numel()] > q[rows.numel():]).float()
    return mask.index_put((rows,), mask[rows] * better)


class _Temperature(nn.Module):
    def __init__(self, init: float):
        super().__init__()
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init)))

    def forward(self, log_prob, target_entropy):
        return -(self.log_alpha * (log_prob.detach() + target_entropy)).mean()


def compose_action(actor_out: torch.Tensor, base: torch.Tensor | None, residual_scale: float) -> torch.Tensor:
    """Standalone: the actor's action. Residual: clip(base + scale · actor_out) on the actor's dims."""
    if base is None:
        return actor_out
    return (base[:, : actor_out.shape[1]] + residual_scale * actor_out).clamp(-1.0, 1.0)


def adam(params, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass over all tensors; much cheaper than per-tensor steps)."""
    return torch.optim.Adam(params, lr=lr, fused=device.type in ("cpu", "cuda"))


class RLPD:
    """SAC with a critic ensemble, DrQ and a discrete gripper critic. ``update(batch) -> metrics``."""

    def __init__(self, cfg: LearnerConfig, obs_spec: Mapping[str, Any], device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.residual = cfg.rl_actor == "residual"
        self.noise = cfg.rl_actor == "noise"
        self.discrete_gripper = cfg.rl_gripper == "discrete" and not self.noise
        noise_dim = int(obs_spec.get("noise_dim", 0)) if self.noise else 0
        self.action_dim = actor_dims(cfg, 0, noise_dim)[1]
        hidden = tuple(cfg.rl_hidden_dims)

        def critic_parts() -> tuple[RLFeaturizer, EnsembleCritic, GripperCritic | None]:
            f = make_featurizer(cfg, obs_spec)
            q = EnsembleCritic(f.out_dim, self.action_dim, hidden, cfg.num_critics)
            g = GripperCritic(f.out_dim, hidden) if self.discrete_gripper else None
            return f, q, g

        self.featurizer, self.critic, self.gripper_critic = critic_parts()
        self.target = _CriticLoss(*critic_parts()).to(self.device)
        self.critic_loss = _CriticLoss(self.featurizer, self.critic, self.gripper_critic).to(self.device)
        self.target.load_state_dict(self.critic_loss.state_dict())
        self.target.requires_grad_(False)
        actor_in, _ = actor_dims(cfg, self.featurizer.out_dim, noise_dim)
        self.actor = TanhGaussianActor(actor_in, self.action_dim, hidden).to(self.device)
        self.actor_loss = _ActorLoss(self.actor, self.critic).to(self.device)
        self.temperature = _Temperature(cfg.init_temperature).to(self.device)
        self.target_entropy = -self.action_dim / 2.0
        # DistributedDataParallel when launched under torchrun with several processes
        self.critic_step = dist.wrap(self.critic_loss)
        self.actor_step = dist.wrap(self.actor_loss)
        self.temperature_step = dist.wrap(self.temperature)
        dist.broadcast_module(self.target)  # DDP syncs the online nets; the targets must match too
        self.critic_opt = adam(self.critic_loss.parameters(), cfg.lr, self.device)
        self.actor_opt = adam(self.actor.parameters(), cfg.lr, self.device)
        self.temperature_opt = adam(self.temperature.parameters(), cfg.lr, self.device)
        self.num_updates = 0

    def fit_state_stats(self, batch: Mapping[str, Any]) -> None:
        """Observation normalisation from a (large) replay sample; call once before training."""
        b = to_torch(batch, self.device)
        states = torch.cat([self.featurizer.state(b, "obs/"), self.featurizer.state(b, "next_obs/")])
        self.featurizer.set_state_stats(states)
        self.target.featurizer.load_state_dict(self.featurizer.state_dict())

    # ------------------------------------------------------------------ helpers
    @property
    def alpha(self) -> torch.Tensor:
        return self.temperature.log_alpha.exp().detach()

    def _inputs(self, b: Mapping[str, torch.Tensor], prefix: str) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        state = self.featurizer.state(b, prefix)
        if self.featurizer.encoder is None:
            return state, None
        return state, [random_shift(img, self.cfg.rl_drq_pad) for img in self.featurizer.images(b, prefix)]

    def _actor_input(self, feat: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        return feat if base is None else torch.cat([feat, base], dim=-1)

    def _base(self, b: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor | None:
        if not self.residual:
            return None
        key = f"{prefix}base_action"
        if key not in b:
            raise KeyError(f"learner.rl_actor=residual needs '{key}' (the base policy's action) in the batch")
        return b[key].float()

    # ------------------------------------------------------------------ update
    def update(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """batch: replay dict (numpy or torch) of utd_ratio * B samples -> metrics."""
        if self.featurizer.encoder is None:  # from state: the cameras (there for a critic reward) are not read here
            batch = {k: v for k, v in batch.items() if not k.startswith(("obs/images/", "next_obs/images/"))}
        b = to_torch(batch, self.device)
        n = b["reward"].shape[0]
        k = max(1, min(self.cfg.utd_ratio, n))
        perm = torch.randperm(n, device=self.device)
        metrics: dict[str, float] = {}
        for i in range(k):
            idx = perm[i * n // k:(i + 1) * n // k]
            mb = {key: v[idx] for key, v in b.items()}
            feat, base, critic_metrics = self._update_critic(mb)
        metrics.update(critic_metrics)
        metrics.update(self._update_actor(feat.detach(), base, mb))
        self.num_updates += 1
        metrics["rlpd/updates"] = float(self.num_updates)
        return metrics

    def _update_critic(self, mb: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, float]]:
        cfg = self.cfg
        reward = mb["reward"].float()
        done = mb["done"].float()
        truncated = mb["truncated"].float() if "truncated" in mb else torch.zeros_like(done)
        bootstrap = 1.0 - done * (1.0 - truncated)  # a time limit is not a terminal
        action = mb["action"].float()
        base, next_base = self._base(mb, "obs/"), self._base(mb, "next_obs/")
        state, images = self._inputs(mb, "obs/")
        g_cls = y_g = None
        with torch.no_grad():
            next_state, next_images = self._inputs(mb, "next_obs/")
            next_feat = self.target.featurizer(next_state, next_images)
            next_a, next_logp = self.actor(self._actor_input(next_feat, next_base))
            next_q = self.target.critic(next_feat, compose_action(next_a, next_base, cfg.rl_residual_scale))
            subset = torch.randperm(next_q.shape[0], device=self.device)[: cfg.rl_critic_subsample]
            next_v = next_q[subset].min(0).values
            if cfg.rl_backup_entropy:
                next_v = next_v - self.alpha * next_logp
            # a transition spanning m steps (DSRL: one decision ran its chunk m ticks) carries gamma^m
            discount = mb["discount"].float() if "discount" in mb else cfg.gamma
            y = reward + discount * bootstrap * next_v
            if self.discrete_gripper:
                opening = state[:, GRIPPER_OPENING]
                g_cls = gripper_class(action[:, GRIPPER_INDEX], opening, cfg.rl_gripper_closed_below)
                toggles = (g_cls != GRIPPER_STAY).float()
                # bootstrapped from the ensemble's (pessimistic) value of the next state, as the
                # continuous critic is: a double-DQN target on the gripper critic's own max drifted
                # above any reachable return (gripper Q 0.73 -> 1.93 with rewards <= 1 in a 30-min
                # run, critic loss x20, deploy success falling) once the run's grasps were labelled
                y_g = reward - cfg.rl_gripper_penalty * toggles + discount * bootstrap * next_v
        loss, q, q_g, feat = self.critic_step(state, images, action[:, : self.action_dim], y, g_cls, y_g)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.rl_grad_clip > 0:
            nn.utils.clip_grad_norm_(self.critic_loss.parameters(), cfg.rl_grad_clip)
        self.critic_opt.step()
        with torch.no_grad():
            online = list(self.critic_loss.parameters())
            torch._foreach_lerp_(list(self.target.parameters()), online, cfg.tau)
        metrics = {
            "rlpd/critic_loss": float(loss.detach()),
            "rlpd/q_mean": float(q.detach().mean()),
            "rlpd/target_mean": float(y.mean()),
            "rlpd/reward_mean": float(reward.mean()),
        }
        if q_g is not None:
            metrics["rlpd/gripper_q_mean"] = float(q_g.detach().mean())
            metrics["rlpd/gripper_toggle_frac"] = float(toggles.mean())
        return feat, base, metrics

    def _update_actor(self, feat: torch.Tensor, base: torch.Tensor | None,
                      mb: Mapping[str, torch.Tensor] | None = None) -> dict[str, float]:
        # BC on the demo+intervention rows (is_offline), Q-filtered inside the actor loss with
        # rl_bc_q_filter: imitated only where the critic rates the recorded action above the actor's
        use_bc = mb is not None and self.cfg.rl_bc_weight > 0 and "is_offline" in mb
        mask = mb["is_offline"].float() if use_bc else None
        bc_action = mb["action"].float()[:, : self.action_dim] if use_bc else None
        self.critic.requires_grad_(False)  # the actor loss must not accumulate critic grads
        try:
            loss, log_prob, bc, mask = self.actor_step(self._actor_input(feat, base), feat, base, self.alpha,
                                                       self.cfg.rl_residual_scale, bc_action, mask,
                                                       self.cfg.rl_bc_weight, self.cfg.rl_bc_q_filter)
            self.actor_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.actor_opt.step()
        finally:
            self.critic.requires_grad_(True)
        t_loss = self.temperature_step(log_prob, self.target_entropy)
        self.temperature_opt.zero_grad(set_to_none=True)
        t_loss.backward()
        self.temperature_opt.step()
        out = {
            "rlpd/actor_loss": float(loss.detach()),
            "rlpd/entropy": float(-log_prob.detach().mean()),
            "rlpd/temperature": float(self.alpha),
        }
        if mask is not None:
            out["rlpd/bc_loss"] = float(bc.detach())
            out["rlpd/bc_frac"] = float(mask.mean())
        return out

    # ------------------------------------------------------------------ acting and weights
    @torch.no_grad()
    def act(self, batch: Mapping[str, Any], deterministic: bool = True) -> np.ndarray:
        """Actions float32 [B, 7] for a batch of observations (keys ``obs/...``); used by tests and
        evaluation in-process. The served policy is ``policies.rl.RLPolicy``. ``rl_actor=noise``:
        the actor's noise-space action [B, H·D] in [-1, 1] (the VLA turns it into actions)."""
        from policies.rl import gripper_command

        b = to_torch(batch, self.device)
        state = self.featurizer.state(b, "obs/")
        images = self.featurizer.images(b, "obs/") if self.featurizer.encoder is not None else None
        feat = self.featurizer(state, images)
        if self.noise:
            return self.actor(feat, deterministic=deterministic)[0].cpu().numpy()
        base = self._base(b, "obs/")
        a, _ = self.actor(self._actor_input(feat, base), deterministic=deterministic)
        a = compose_action(a, base, self.cfg.rl_residual_scale)
        out = torch.zeros(a.shape[0], ACTION_DIM, device=self.device)
        out[:, : self.action_dim] = a
        if self.discrete_gripper:
            cls = self.gripper_critic(feat).argmax(1)
            out[:, GRIPPER_INDEX] = gripper_command(cls, state[:, GRIPPER_OPENING], self.cfg.rl_gripper_closed_below)
        return out.cpu().numpy()

    def policy_modules(self) -> dict[str, nn.Module]:
        """The modules a served RL policy needs (their weights are what the learner publishes)."""
        mods: dict[str, nn.Module] = {"featurizer": self.featurizer, "actor": self.actor}  # RLPolicy's names
        if self.gripper_critic is not None:
            mods["gripper_critic"] = self.gripper_critic
        return mods

    def publish_weights(self) -> dict[str, np.ndarray]:
        """Weights for ``policies.rl.RLPolicy`` (the served actor): name -> array."""
        return {f"{name}.{k}": v.detach().cpu().numpy().copy()
                for name, mod in self.policy_modules().items() for k, v in mod.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "critic": self.critic_loss.state_dict(),
            "target": self.target.state_dict(),
            "actor": self.actor.state_dict(),
            "temperature": self.temperature.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "temperature_opt": self.temperature_opt.state_dict(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.critic_loss.load_state_dict(state["critic"])
        self.target.load_state_dict(state["target"])
        self.actor.load_state_dict(state["actor"])
        self.temperature.load_state_dict(state["temperature"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.temperature_opt.load_state_dict(state["temperature_opt"])
        self.num_updates = int(state["num_updates"])
