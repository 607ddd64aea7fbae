"""Weighted behavioural cloning of a LeRobot policy (ACT, SmolVLA, ...) with LeRobot's own loss,
keeping the Sirius class weights (``learner.algorithm=weighted_bc|bc`` with ``policy=lerobot``).

Runs in the LeRobot environment (``hil-robot run ... policy=lerobot`` starts the learner with
``.venv-lerobot/bin/python``). One ``update(batch)``:

1. replay batch (``hil_robot.data`` ``sample``: ``obs/images/<cam>`` uint8 [B,H,W,3], ``obs/state``,
   ``instruction``, ``actions`` [B,T,7] + ``action_is_pad``, ``weight``) -> per sample the serving
   path's own observation batch (``LeRobotPolicy.observation_batch``: the checkpoint's ``obs_map``,
   shape checks, images in [0, 1]) -> concatenated, with ``action`` / ``action_is_pad`` -> the
   checkpoint's preprocessor (its normalisation statistics for state *and* action; tokeniser);
2. per-sample loss ``l_i`` from LeRobot's loss: ACT's L1 over the chunk with the pad mask (ACT's
   ``forward`` only returns the batch mean, so the same expression is evaluated per sample on
   ``ACT.forward``'s output, + its KL term per sample with ``use_vae``); SmolVLA (and any policy
   whose ``forward`` takes ``reduction``) ``forward(batch, reduction="none")``; otherwise one forward
   per sample (correct, B times slower);
3. ``loss = Σ w_i l_i / Σ w_i`` with ``w_i`` the replay's Sirius ``weight`` (all 1 for ``bc``), one
   AdamW step on the trainable parameters (``learner.finetune``: all / LoRA adapters / action expert),
   gradient norm clipped;
4. with ``learner.ema_decay > 0`` an exponential moving average of the trainable tensors is what gets
   published and saved for serving (as ``WeightedBC``: decay ramps up as min(decay, (1+n)/(10+n))).

The recorded actions are our normalised EE delta, so the checkpoint's native action space must be
``ee_delta`` (``policies.lerobot_backend.check_finetune_action_space``). Not supported here (a clear
error): advantage weights, advantage conditioning.
"""

from __future__ import annotations

import contextlib
import inspect
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hil_robot.config import ConfigError
from hil_robot.config.learner import LearnerConfig
from hil_robot.learn.weighted_bc import segment_shares


def check_supported(cfg: LearnerConfig, policy_cfg: Any = None) -> None:
    """What LeRobotBC does not do yet raises a ConfigError naming the key."""
    from policies.lerobot_backend import check_finetune_action_space

    if policy_cfg is not None:
        check_finetune_action_space(policy_cfg)
    for key, on in (("learner.advantage_beta", cfg.advantage_beta > 0),
                    ("learner.advantage_conditioning", cfg.advantage_conditioning)):
        if on:
            raise ConfigError(f"{key} is not supported when fine-tuning a LeRobot policy (policy=lerobot) yet; turn it off")


class LeRobotBC:
    """``update(batch) -> metrics`` for a ``policies.lerobot_backend.LeRobotPolicy`` (trained in place)."""

    def __init__(self, cfg: LearnerConfig, policy: Any, device: str | torch.device = "cpu", *,
                 uniform: bool | None = None, grad_clip: float = 1.0) -> None:
        check_supported(cfg)
        self.cfg, self.policy = cfg, policy
        self.device = torch.device(device)
        self.model: nn.Module = policy.policy.to(self.device)
        self.model.train()
        self.uniform = (cfg.algorithm == "bc") if uniform is None else uniform
        self.prefix = "bc" if self.uniform else "wbc"
        self.grad_clip = grad_clip
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"the LeRobot {policy.kind} has no trainable parameters (learner.finetune={policy.finetune})")
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
        self.num_updates = 0
        # EMA of the trainable tensors (learner.ema_decay): what is published and saved for serving
        self.ema: dict[str, torch.Tensor] | None = None
        if cfg.ema_decay > 0:
            self.ema = {n: q.detach().clone() for n, q in self.model.named_parameters() if q.requires_grad}
        fwd = inspect.signature(self.model.forward).parameters
        self.loss_kind = "act" if policy.kind == "act" else ("reduction" if "reduction" in fwd else "per_sample_forward")

    # ------------------------------------------------------------------ batch
    def lerobot_batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Replay dict (numpy) -> the preprocessed LeRobot training batch (normalised, on the device)."""
        if "actions" not in batch:
            raise KeyError("LeRobot BC needs action chunks: sample the replay with horizon = the checkpoint's chunk_size")
        actions = np.asarray(batch["actions"], np.float32)
        n, horizon = actions.shape[:2]
        if horizon != self.policy.horizon or actions.shape[2] != self.policy.action_dim:
            raise ValueError(f"replay actions are {actions.shape}; the {self.policy.kind} needs [B, {self.policy.horizon}, "
                             f"{self.policy.action_dim}] (chunk_size x action width)")
        keys = [k for k in batch if k.startswith("obs/")]
        instructions = [str(s) for s in batch["instruction"]]
        singles = []
        for i in range(n):
            obs = {k[len("obs/"):]: np.asarray(batch[k][i]) for k in keys}
            obs["prompt"] = instructions[i]
            singles.append(self.policy.observation_batch(obs))
        out: dict[str, Any] = {}
        for key, value in singles[0].items():
            if isinstance(value, torch.Tensor):
                out[key] = torch.cat([s[key] for s in singles])
            else:
                out[key] = [s[key] for s in singles]
        pad = batch.get("action_is_pad")
        pad = np.zeros((n, horizon), bool) if pad is None else np.asarray(pad, bool)
        out["action"] = torch.from_numpy(np.ascontiguousarray(actions))
        out["action_is_pad"] = torch.from_numpy(np.ascontiguousarray(pad))
        out = self.policy.pre(out)
        return {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in out.items()}

    # ------------------------------------------------------------------ loss
    def per_sample_loss(self, lb: dict[str, Any]) -> torch.Tensor:
        """LeRobot's training loss per sample [B] (module docstring)."""
        if self.loss_kind == "act":
            cfg = self.model.config
            b = dict(lb)
            if cfg.image_features:
                b["observation.images"] = [b[k] for k in cfg.image_features]
            actions_hat, (mu, log_sigma_x2) = self.model.model(b)
            abs_err = F.l1_loss(b["action"], actions_hat, reduction="none")  # [B, T, D]
            valid = (~b["action_is_pad"]).unsqueeze(-1)
            per = (abs_err * valid).sum(dim=(1, 2)) / (valid.sum(dim=(1, 2)) * abs_err.shape[-1]).clamp_min(1)
            if cfg.use_vae and log_sigma_x2 is not None:
                per = per + cfg.kl_weight * (-0.5 * (1 + log_sigma_x2 - mu.pow(2) - log_sigma_x2.exp())).sum(-1)
            return per
        if self.loss_kind == "reduction":
            return self.model.forward(lb, reduction="none")[0]
        n = len(lb["action"])
        return torch.stack([self.model.forward({k: (v[i:i + 1] if isinstance(v, torch.Tensor) else v[i:i + 1])
                                                for k, v in lb.items()})[0] for i in range(n)])

    def sample_weights(self, batch: Mapping[str, Any], n: int) -> torch.Tensor:
        if self.uniform:
            return torch.ones(n, device=self.device)
        if "weight" not in batch:
            raise KeyError("weighted BC needs the replay batch's 'weight' column (Sirius class weights)")
        w = torch.as_tensor(np.asarray(batch["weight"], dtype=np.float32))
        if w.shape != (n,) or not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"replay 'weight' must be finite, >= 0 and shape ({n},); got {tuple(w.shape)}")
        return w.to(self.device)

    # ------------------------------------------------------------------ update
    def update(self, batch: Mapping[str, Any]) -> dict[str, float]:
        lb = self.lerobot_batch(batch)
        self.model.train()
        per_sample = self.per_sample_loss(lb)
        n = per_sample.shape[0]
        w = self.sample_weights(batch, n)
        total_w = w.sum()
        p = self.prefix
        if total_w <= 0:
            return {f"{p}/skipped_zero_weight": 1.0}
        loss = (w * per_sample).sum() / total_w
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [q for q in self.model.parameters() if q.requires_grad]
        grad_norm = nn.utils.clip_grad_norm_(params, self.grad_clip) if self.grad_clip > 0 else torch.tensor(0.0)
        self.opt.step()
        self.num_updates += 1
        self._update_ema()
        metrics = {f"{p}/loss": float(loss.detach()), f"{p}/unweighted_loss": float(per_sample.detach().mean()),
                   f"{p}/grad_norm": float(grad_norm), f"{p}/updates": float(self.num_updates)}
        if "segment" in batch:
            metrics.update(segment_shares(per_sample.detach(), w, np.asarray(batch["segment"]), p))
        return metrics

    # ------------------------------------------------------------------ weights
    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        d = min(self.cfg.ema_decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        for n, q in self.model.named_parameters():
            if n in self.ema:
                self.ema[n].lerp_(q.detach(), 1.0 - d)

    @contextlib.contextmanager
    def serving_weights(self) -> Iterator[nn.Module]:
        """The model holding the weights to serve (the EMA when on) for the duration of the block."""
        if self.ema is None:
            yield self.model
            return
        params = dict(self.model.named_parameters())
        raw = {n: params[n].detach().clone() for n in self.ema}
        with torch.no_grad():
            for n, e in self.ema.items():
                params[n].copy_(e)
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for n, r in raw.items():
                    params[n].copy_(r)

    def publish_weights(self) -> dict[str, np.ndarray]:
        with self.serving_weights():
            return self.policy.state_numpy()

    def publish_delta(self) -> dict[str, np.ndarray]:
        """Only the trainable tensors (learner.finetune=lora|expert) — what a delta update carries."""
        with self.serving_weights():
            return self.policy.delta_numpy()

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
            params = dict(self.model.named_parameters())
            src = state.get("ema") or {n: params[n] for n in self.ema}
            self.ema = {n: v.detach().clone().to(self.device) for n, v in src.items()}

    # ------------------------------------------------------------------ serving checkpoint
    def merged_state_dict(self) -> dict[str, torch.Tensor]:
        """The model's weights under LeRobot's own names, LoRA adapters merged into their base layers
        (what a plain LeRobot checkpoint of the fine-tuned policy holds)."""
        sd = self.model.state_dict()
        if self.policy.finetune != "lora":
            return {k: v.detach().cpu().clone() for k, v in sd.items()}
        from peft.tuners.lora import LoraLayer
        from peft.tuners.lora.layer import MultiheadAttention as LoraMHA

        out = {k.replace(".base_layer", ""): v.detach().cpu().clone() for k, v in sd.items()
               if ".lora_A." not in k and ".lora_B." not in k}
        with torch.no_grad():
            for name, module in self.model.named_modules():
                if isinstance(module, LoraLayer) and "default" in getattr(module, "lora_A", {}):
                    clean = name.replace(".base_layer", "")
                    key = clean + (".in_proj_weight" if isinstance(module, LoraMHA) else ".weight")
                    out[key] += module.get_delta_weight("default").detach().cpu().to(out[key].dtype)
        return out

    def save_policy(self, out: str | Path) -> Path:
        """A LeRobot ``save_pretrained`` directory of the served weights (config.json, model.safetensors,
        the checkpoint's processors; ``vlm/`` when it has one): ``policy.checkpoint=OUT`` serves it."""
        from safetensors.torch import save_file

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.model.config._save_pretrained(out)
        with self.serving_weights():
            merged = self.merged_state_dict()
        save_file({k: v.contiguous() for k, v in merged.items()}, str(out / "model.safetensors"))
        self.policy.pre.save_pretrained(out)
        self.policy.post.save_pretrained(out)
        src_vlm = Path(self.policy.checkpoint) / "vlm"
        if src_vlm.is_dir() and not (out / "vlm").exists():
            shutil.copytree(src_vlm, out / "vlm")
        return out
