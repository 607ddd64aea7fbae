"""Weighted behavioural cloning of the VLA (Sirius "Robot Learning on the Job", DESIGN §4).

One ``update(batch)``:

1. per-sample loss ``l_i = policy.model.compute_loss(batch)[i]`` (the VLA's own loss: L1 chunk
   regression or flow matching, padded actions masked by the model);
2. per-sample weight ``w_i = sirius_i · adv_i`` where
   * ``sirius_i`` is the replay's ``weight`` (class weights chosen so interventions carry ~50% of
     the loss, pre-intervention ~0.2%, demos their natural share, autonomous the rest);
   * ``adv_i = min(exp(A_i / β), max_weight)`` when ``learner.advantage_beta > 0``: critic
     advantages turn RL signal into extra BC weight (advantage-weighted regression). ``A`` comes
     from the batch's ``advantage`` column or from ``advantage_fn(batch)``;
3. ``loss = Σ w_i l_i / Σ w_i``, one AdamW step (gradient norm clipped);
With ``learner.finetune=lora|expert`` the model arrives with its base frozen (peft LoRA adapters,
or everything but the action expert), so only the adapter/expert parameters get gradients and
optimiser state; the loss and the Sirius weights are the same.

With ``learner.advantage_conditioning`` (RECAP-style) the VLA carries an advantage token: each
sample's indicator is 'positive' when its advantage A_i is in the batch's top
``advantage_positive_frac`` or a person acted (demo, recovery, correction), else 'negative';
``advantage_dropout`` of the samples get 'unknown'. The loss weights stay as above; serving asks
for 'positive' (``policies.vla_model.advantage_indicator``).

4. with ``learner.ema_decay > 0``, an exponential moving average of the weights is what gets
   published and saved for serving (the optimiser keeps training the raw weights).

Plain BC (``uniform=True``, ``learner.algorithm=bc``) sets every ``w_i = 1`` — the ablation.
Metrics are namespaced ``wbc/`` (or ``bc/``) and include each segment's share of the loss, so
one can check the Sirius shares on live data.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from hil_robot.config.learner import LearnerConfig
from hil_robot.learn import dist
from hil_robot.types import SEGMENT_INDEX, SEGMENT_ORDER, Segment

_PERSON = np.array([SEGMENT_INDEX[s] for s in (Segment.DEMO, Segment.RECOVERY, Segment.CORRECTION)])

AdvantageFn = Callable[[Mapping[str, Any]], np.ndarray]


class _BCLoss(nn.Module):
    """forward(model batch) -> per-sample loss [B]; a Module so DDP can wrap it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.model.compute_loss(batch)


class WeightedBC:
    """``update(batch) -> metrics`` for a policy whose ``model.compute_loss(batch) -> Tensor[B]``.

    policy: a VLA policy (``policy.model`` trains in place; the policy object is what gets saved).
    batch_to_torch: replay dict -> model batch (default ``policies.vla.batch_to_torch``).
    """

    def __init__(self, cfg: LearnerConfig, policy: Any, device: str | torch.device = "cpu", *,
                 uniform: bool | None = None, advantage_fn: AdvantageFn | None = None,
                 batch_to_torch: Callable[[Mapping[str, Any], torch.device], Mapping[str, Any]] | None = None,
                 grad_clip: float = 1.0):
        self.cfg = cfg
        self.device = torch.device(device)
        self.policy = policy
        self.model: nn.Module = policy.model.to(self.device)
        self.model.train()
        self.uniform = (cfg.algorithm == "bc") if uniform is None else uniform
        self.prefix = "bc" if self.uniform else "wbc"
        self.advantage_fn = advantage_fn
        if batch_to_torch is None:
            from policies.vla import batch_to_torch as _vla_batch_to_torch

            batch_to_torch = _vla_batch_to_torch
        self.batch_to_torch = batch_to_torch
        self.grad_clip = grad_clip
        self.loss_module = dist.wrap(_BCLoss(self.model), find_unused_parameters=True)
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=cfg.lr,
                                     weight_decay=1e-4, fused=self.device.type in ("cpu", "cuda"))
        self.num_updates = 0
        self._adv_rng = np.random.default_rng(0)  # which samples get the 'unknown' indicator
        # Optional exponential moving average of the weights (learner.ema_decay): what is published
        # and saved for serving, while the optimiser keeps training the raw weights. The decay ramps
        # up as min(decay, (1 + n) / (10 + n)) so early weights are not frozen in.
        self.ema: dict[str, torch.Tensor] | None = None
        if cfg.ema_decay > 0:
            self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    # ------------------------------------------------------------------ EMA
    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        d = min(self.cfg.ema_decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        for k, v in self.model.state_dict().items():
            e = self.ema[k]
            if v.is_floating_point():
                e.lerp_(v.detach(), 1.0 - d)
            else:  # integer buffers (e.g. counters) follow the raw model
                e.copy_(v)

    @contextlib.contextmanager
    def serving_weights(self) -> Iterator[nn.Module]:
        """The model holding the weights to serve (the EMA when on) for the duration of the block."""
        if self.ema is None:
            yield self.model
            return
        raw = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.ema)
        try:
            yield self.model
        finally:
            self.model.load_state_dict(raw)

    # ------------------------------------------------------------------ weights
    def sample_weights(self, batch: Mapping[str, Any], n: int) -> tuple[torch.Tensor, dict[str, float]]:
        """-> (w [B] float, metrics). Raises on missing/negative/non-finite weights (bad replay)."""
        metrics: dict[str, float] = {}
        if self.uniform:
            w = torch.ones(n)
        else:
            if "weight" not in batch:
                raise KeyError("weighted BC needs the replay batch's 'weight' column (Sirius class weights)")
            w = torch.as_tensor(np.asarray(batch["weight"], dtype=np.float32))
            if w.shape != (n,) or not torch.isfinite(w).all() or (w < 0).any():
                raise ValueError(f"replay 'weight' must be finite, >= 0 and shape ({n},); got {tuple(w.shape)}")
        if self.cfg.advantage_beta > 0:
            a = torch.as_tensor(self.advantages(batch, n))
            adv_w = torch.exp(a / self.cfg.advantage_beta).clamp(max=self.cfg.advantage_max_weight)
            adv_w = torch.nan_to_num(adv_w, nan=1.0)  # no critic value: neutral weight
            w = w * adv_w
            metrics[f"{self.prefix}/adv_weight_mean"] = float(adv_w.mean())
            metrics[f"{self.prefix}/advantage_mean"] = float(torch.nan_to_num(a).mean())
        return w.to(self.device), metrics

    def advantages(self, batch: Mapping[str, Any], n: int) -> np.ndarray:
        """A [B] float32: the batch's ``advantage`` column, else ``advantage_fn(batch)`` (computed once per batch)."""
        if "advantage" in batch:
            adv = np.asarray(batch["advantage"], dtype=np.float32)
        elif self.advantage_fn is not None:
            adv = np.asarray(self.advantage_fn(batch), dtype=np.float32)
            if isinstance(batch, dict):
                batch["advantage"] = adv
        else:
            raise KeyError("learner.advantage_beta > 0 / advantage_conditioning need advantages: an 'advantage' column "
                           "or a critic (learner.critic_checkpoint, or learner.advantage_source=critic_online)")
        return adv.reshape(n)

    def advantage_indicators(self, batch: Mapping[str, Any], n: int) -> tuple[np.ndarray, dict[str, float]]:
        """-> (int64 [B] in {0 negative, 1 positive, 2 unknown}, metrics): RECAP-style labels (module docstring)."""
        from policies.vla_model import ADV_NEGATIVE, ADV_POSITIVE, ADV_UNKNOWN

        a = np.nan_to_num(self.advantages(batch, n), nan=-np.inf)
        frac = self.cfg.advantage_positive_frac
        thresh = np.quantile(a[np.isfinite(a)], 1.0 - frac) if frac > 0 and np.isfinite(a).any() else np.inf
        positive = a >= thresh
        if "segment" in batch:
            positive |= np.isin(np.asarray(batch["segment"]), _PERSON)
        ind = np.where(positive, ADV_POSITIVE, ADV_NEGATIVE).astype(np.int64)
        ind[self._adv_rng.random(n) < self.cfg.advantage_dropout] = ADV_UNKNOWN
        return ind, {f"{self.prefix}/adv_positive_frac": float((ind == ADV_POSITIVE).mean())}

    # ------------------------------------------------------------------ update
    def update(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """batch: replay dict (numpy) -> metrics."""
        model_batch = self.batch_to_torch(batch, self.device)
        cond_metrics: dict[str, float] = {}
        if self.cfg.advantage_conditioning:
            ind, cond_metrics = self.advantage_indicators(batch, len(model_batch["state"]))
            model_batch["advantage_indicator"] = torch.from_numpy(ind).to(self.device)
        self.model.train()
        per_sample = self.loss_module(model_batch)  # [B]
        n = per_sample.shape[0]
        w, metrics = self.sample_weights(batch, n)
        metrics.update(cond_metrics)
        total_w = w.sum()
        if total_w <= 0:
            return {**metrics, f"{self.prefix}/skipped_zero_weight": 1.0}
        loss = (w * per_sample).sum() / total_w
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip) if self.grad_clip > 0 else torch.tensor(0.0)
        self.opt.step()
        self.num_updates += 1
        self._update_ema()
        p = self.prefix
        metrics.update({
            f"{p}/loss": float(loss.detach()),
            f"{p}/unweighted_loss": float(per_sample.detach().mean()),
            f"{p}/grad_norm": float(grad_norm),
            f"{p}/updates": float(self.num_updates),
        })
        if "segment" in batch:
            metrics.update(segment_shares(per_sample.detach(), w, np.asarray(batch["segment"]), p))
        return metrics

    # ------------------------------------------------------------------ state
    def publish_weights(self) -> dict[str, np.ndarray]:
        weights = self.ema if self.ema is not None else self.model.state_dict()
        # bfloat16 weights (policy.dtype=bf16) travel as float32: numpy has no bfloat16
        return {k: (v.detach().cpu().float() if v.dtype == torch.bfloat16 else v.detach().cpu()).numpy().copy()
                for k, v in weights.items()}

    def publish_delta(self) -> dict[str, np.ndarray]:
        """Only the trainable tensors (learner.finetune=lora|expert: LoRA A/B or the action expert),
        from the EMA when on — what a delta update carries."""
        names = set(self.model.delta_names())
        weights = self.ema if self.ema is not None else self.model.state_dict()
        # no copy: the publisher serialises them before training continues (same thread)
        return {k: v.detach().cpu().numpy() for k, v in weights.items() if k in names}

    def state_dict(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "num_updates": self.num_updates}
        if self.ema is not None:
            state["ema"] = self.ema
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.num_updates = int(state["num_updates"])
        if self.ema is not None:  # a checkpoint from a run without EMA starts the average at its weights
            src = state.get("ema") or self.model.state_dict()
            self.ema = {k: v.detach().clone().to(self.device) for k, v in src.items()}


def segment_shares(per_sample: torch.Tensor, w: torch.Tensor, segments: np.ndarray, prefix: str) -> dict[str, float]:
    """Each segment class's share of the weighted loss (sums to 1 over classes present)."""
    contrib = (w * per_sample).cpu()
    total = float(contrib.sum()) or 1.0
    seg = torch.as_tensor(segments.astype(np.int64))
    out = {}
    for i, s in enumerate(SEGMENT_ORDER):
        mask = seg == i
        if bool(mask.any()):
            out[f"{prefix}/loss_share_{s.value}"] = float(contrib[mask].sum()) / total
    return out
