"""The VLA network: camera tokens + instruction token + proprioception token -> transformer encoder
-> action decoder that predicts a chunk of H actions. Two heads, selected by ``head``:

* ``l1``   ACT-style: H learned queries cross-attend to the observation tokens; L1 loss on the
           normalised chunk (padded steps masked).
* ``flow`` pi0-style flow matching: the decoder gets the noisy chunk x_t = (1-t)·noise + t·a and the
           time t, predicts the velocity a - noise (MSE); sampling integrates ``flow_steps`` Euler
           steps from noise (t=0) to actions (t=1). The observation is encoded once per chunk.

Batch (torch, from ``policies.vla.batch_to_torch``)::

    images   {camera: uint8 [B, H, W, 3]}
    state    float32 [B, 15]
    text     float32 [B, 384]   (frozen MiniLM embedding of the instruction)
    actions  float32 [B, T, 7]  (training only), action_is_pad bool [B, T]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from policies.normalize import Normalizer
from policies.text import TEXT_DIM
from policies.vision import images_to_float, make_backbone, random_shift, sincos_2d
from hil_robot.types import ACTION_DIM, STATE_DIM


FINETUNE_MODES = ("full", "lora", "expert")
# advantage conditioning (RECAP-style, learner.advantage_conditioning): one token tells the VLA
# whether the sample's action was better than usual; serving always asks for a positive one
ADV_NEGATIVE, ADV_POSITIVE, ADV_UNKNOWN = 0, 1, 2
# the action expert (finetune=expert trains only these): the decoder stack and its heads
EXPERT_PREFIXES = ("decoder.", "query_embed", "action_in.", "time_mlp.", "action_out.")


@dataclasses.dataclass
class VLAModelConfig:
    """Everything needed to rebuild the network (saved as JSON in the checkpoint)."""

    cameras: tuple[str, ...] = ("front", "wrist")
    image_hw: tuple[int, int] = (128, 128)
    action_horizon: int = 10
    head: str = "l1"  # l1 | flow
    backbone: str = "conv"  # conv | resnet18
    vision_channels: tuple[int, ...] = (32, 64, 96, 128)
    vision_extra_convs: int = 0
    d_model: int = 128
    n_heads: int = 4
    enc_layers: int = 2
    dec_layers: int = 2
    ffn_mult: int = 4
    dropout: float = 0.1
    flow_steps: int = 10
    augment_shift_px: int = 4  # DrQ random shift during training (0 = off)
    state_dim: int = STATE_DIM
    action_dim: int = ACTION_DIM
    text_dim: int = TEXT_DIM
    # fine-tuning mode (learner.finetune): full | lora (peft adapters on lora_targets, the rest
    # frozen) | expert (only the action decoder trains). Saved with the checkpoint so a LoRA
    # checkpoint rebuilds the same adapter modules (base + adapter tensors in one state dict).
    finetune: str = "full"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_targets: tuple[str, ...] = ("linear1", "linear2", "self_qkv", "self_out", "cross_q", "cross_kv", "cross_out",
                                     "mlp.0", "mlp.3")
    # an advantage-indicator token (negative / positive / unknown) joins the observation tokens
    advantage_cond: bool = False

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)
        self.image_hw = tuple(int(v) for v in self.image_hw)  # type: ignore[assignment]
        self.vision_channels = tuple(int(v) for v in self.vision_channels)
        self.lora_targets = tuple(str(t) for t in self.lora_targets)
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune={self.finetune!r}; choose one of {FINETUNE_MODES}")
        if self.finetune == "lora" and (self.lora_rank < 1 or not self.lora_targets):
            raise ValueError(f"LoRA needs lora_rank >= 1 and at least one target (got {self.lora_rank}, {self.lora_targets})")
        if self.head not in ("l1", "flow"):
            raise ValueError(f"head={self.head!r}; choose l1 or flow")
        if not self.cameras:
            raise ValueError("the VLA needs at least one camera")
        if self.d_model % self.n_heads or self.d_model % 4:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads} and by 4")
        if self.action_horizon < 1:
            raise ValueError("action_horizon must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VLAModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown VLA model config keys {unknown}; allowed: {sorted(names)}")
        return cls(**dict(d))


# size presets (policy.size): "cpu" meets the 30 ms batch-1 budget on 2 CPU cores, "gpu" is wider;
# "small" halves the early conv widths (same tokens, ~1.4x cheaper update at 64x64): the sim experiments
# train it on one CPU thread next to the robot
SIZE_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(backbone="conv", vision_channels=(32, 64, 96, 128), vision_extra_convs=0, d_model=128,
                n_heads=4, enc_layers=2, dec_layers=2),
    "small": dict(backbone="conv", vision_channels=(16, 32, 64, 128), vision_extra_convs=0, d_model=128,
                  n_heads=4, enc_layers=2, dec_layers=2),
    "gpu": dict(backbone="resnet18", vision_channels=(64, 128, 256, 512), vision_extra_convs=0, d_model=384,
                n_heads=8, enc_layers=4, dec_layers=4),
}


def _encoder_layer(d: int, heads: int, mult: int, dropout: float) -> nn.Module:
    return nn.TransformerEncoderLayer(d, heads, d * mult, dropout, activation="gelu", batch_first=True, norm_first=True)


class DecoderBlock(nn.Module):
    """Pre-norm block: self-attention over the H action tokens, cross-attention to the observation
    memory, MLP. The memory's keys/values are computed once per chunk (``memory_kv``) and reused by
    every flow-matching step."""

    def __init__(self, d: int, heads: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_qkv = nn.Linear(d, 3 * d)
        self.self_out = nn.Linear(d, d)
        self.cross_q = nn.Linear(d, d)
        self.cross_kv = nn.Linear(d, 2 * d)
        self.cross_out = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, d * mult), nn.GELU(), nn.Dropout(dropout), nn.Linear(d * mult, d))
        self.drop = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, d] -> [B, heads, L, d/heads]
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.cross_kv(memory).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        b, h, n, dh = out.shape
        return out.transpose(1, 2).reshape(b, n, h * dh)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q, k, v = (self._split(t) for t in self.self_qkv(self.norm1(x)).chunk(3, dim=-1))
        x = x + self.drop(self.self_out(self._attend(q, k, v)))
        x = x + self.drop(self.cross_out(self._attend(self._split(self.cross_q(self.norm2(x))), *kv)))
        return x + self.drop(self.mlp(self.norm3(x)))


class VLAModel(nn.Module):
    def __init__(self, cfg: VLAModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.backbone = make_backbone(cfg.backbone, cfg.vision_channels, cfg.vision_extra_convs)
        self.vision_proj = nn.Conv2d(self.backbone.out_channels, d, 1)
        self.camera_embed = nn.Parameter(torch.randn(len(cfg.cameras), d) * 0.02)
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.GELU(), nn.Linear(d, d))
        self.state_proj = nn.Sequential(nn.Linear(cfg.state_dim, d), nn.GELU(), nn.Linear(d, d))
        self.type_embed = nn.Parameter(torch.randn(2, d) * 0.02)  # text, state token types
        self.encoder = nn.TransformerEncoder(
            _encoder_layer(d, cfg.n_heads, cfg.ffn_mult, cfg.dropout), cfg.enc_layers, enable_nested_tensor=False
        )
        self.memory_norm = nn.LayerNorm(d)
        self.decoder = nn.ModuleList(DecoderBlock(d, cfg.n_heads, cfg.ffn_mult, cfg.dropout) for _ in range(cfg.dec_layers))
        self.query_embed = nn.Parameter(torch.randn(cfg.action_horizon, d) * 0.02)
        if cfg.head == "flow":
            self.action_in = nn.Linear(cfg.action_dim, d)
            self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.action_out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.action_dim))
        self.norm = Normalizer(cfg.state_dim, cfg.action_dim)
        if cfg.advantage_cond:
            self.advantage_embed = nn.Parameter(torch.randn(3, d) * 0.02)
        self._pos_cache: dict[tuple[int, int, str], torch.Tensor] = {}
        if cfg.finetune != "full":
            self._setup_finetune()

    # ------------------------------------------------------------------ fine-tuning modes
    def enable_finetune(self, mode: str, rank: int = 16, alpha: float = 32.0, targets: tuple[str, ...] = ()) -> None:
        """Switch a full model (fresh, or loaded from a full checkpoint) to LoRA / expert-only
        training in place; the config records it so checkpoints rebuild the same modules."""
        if self.cfg.finetune != "full":
            raise ValueError(f"the model is already finetune={self.cfg.finetune}; build it from its config instead")
        self.cfg.finetune, self.cfg.lora_rank, self.cfg.lora_alpha = mode, int(rank), float(alpha)
        if targets:
            self.cfg.lora_targets = tuple(targets)
        self.cfg.__post_init__()
        if mode != "full":
            self._setup_finetune()

    def enable_advantage_cond(self) -> None:
        """Add the advantage token to a model built without it (e.g. a pre-trained checkpoint that
        is now fine-tuned RECAP-style); it starts near zero and always trains."""
        if self.cfg.advantage_cond:
            return
        self.cfg.advantage_cond = True
        self.advantage_embed = nn.Parameter(torch.randn(3, self.cfg.d_model, device=self.query_embed.device) * 0.02)

    def _setup_finetune(self) -> None:
        cfg = self.cfg
        if cfg.finetune == "lora":
            from peft import LoraConfig, inject_adapter_in_model

            self._check_lora_targets()
            lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=list(cfg.lora_targets),
                              lora_dropout=0.0, bias="none")
            inject_adapter_in_model(lora, self)
            # nn.TransformerEncoderLayer's inference fast path reads linear1/linear2.weight directly
            # and would skip the adapters; an encoder layer carrying adapters takes the plain path
            for layer in self.encoder.layers:
                if any(_is_lora(m) for m in layer.modules()):
                    layer.activation_relu_or_gelu = 0  # one of the fast path's preconditions
        for name, p in self.named_parameters():
            p.requires_grad_(self.is_trainable(name))

    def _check_lora_targets(self) -> None:
        """Every target suffix must name at least one Linear/Conv2d outside nn.MultiheadAttention
        (its out_proj weight is used directly by the attention kernel, an adapter there does nothing)."""
        inside_mha = {f"{n}.{c}" for n, m in self.named_modules() if isinstance(m, nn.MultiheadAttention)
                      for c, _ in m.named_modules() if c}
        ok = {n for n, m in self.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and n not in inside_mha}
        for target in self.cfg.lora_targets:
            if not any(n == target or n.endswith("." + target) for n in ok):
                raise ValueError(f"learner.lora_targets: {target!r} matches no Linear/Conv2d module of the VLA (nor one "
                                 f"inside nn.MultiheadAttention); candidates end in e.g. "
                                 f"{sorted({n.rsplit('.', 1)[-1] for n in ok})[:12]}")

    def is_trainable(self, name: str) -> bool:
        """Does the parameter/tensor ``name`` train (and travel in a delta) under cfg.finetune?"""
        mode = self.cfg.finetune
        if name == "advantage_embed":  # new with advantage conditioning: trains in every mode
            return True
        if mode == "lora":
            return ".lora_A." in name or ".lora_B." in name
        if mode == "expert":
            return name.startswith(EXPERT_PREFIXES)
        return True

    def delta_names(self) -> list[str]:
        """State-dict names of the trainable tensors (what a delta update carries), sorted."""
        return sorted(n for n, _ in self.named_parameters() if self.is_trainable(n))

    def adapter_info(self) -> dict[str, Any]:
        """What a delta must match besides the base weights: mode, LoRA rank/alpha/targets."""
        cfg = self.cfg
        info: dict[str, Any] = {"finetune": cfg.finetune}
        if cfg.finetune == "lora":
            info.update(rank=cfg.lora_rank, alpha=float(cfg.lora_alpha), targets=sorted(cfg.lora_targets))
        return info

    # ------------------------------------------------------------------ observation -> tokens
    def _pos(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        key = (h, w, str(device))
        if key not in self._pos_cache:
            self._pos_cache[key] = sincos_2d(h, w, self.cfg.d_model, device)
        return self._pos_cache[key]

    def encode(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """-> memory tokens float [B, N, d] (N = cameras·h·w + 2)."""
        images = batch["images"]
        tokens = []
        augment = self.training and self.cfg.augment_shift_px > 0
        for i, cam in enumerate(self.cfg.cameras):
            if cam not in images:
                raise KeyError(f"batch has no camera {cam!r} (has {sorted(images)}); the model was built for {self.cfg.cameras}")
            x = images_to_float(images[cam])
            if augment:
                x = random_shift(x, self.cfg.augment_shift_px)
            feat = self.vision_proj(self.backbone(x))  # [B, d, h, w]
            b, d, h, w = feat.shape
            feat = feat.flatten(2).transpose(1, 2) + self._pos(h, w, feat.device) + self.camera_embed[i]
            tokens.append(feat)
        text = self.text_proj(batch["text"]) + self.type_embed[0]
        state = self.state_proj(self.norm.norm_state(batch["state"])) + self.type_embed[1]
        tokens += [text.unsqueeze(1), state.unsqueeze(1)]
        if self.cfg.advantage_cond:
            tokens.append(self.advantage_embed[advantage_indicator(batch, state.shape[0], state.device)].unsqueeze(1))
        return self.memory_norm(self.encoder(torch.cat(tokens, dim=1)))

    def observation_features(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Pooled observation embedding float [B, d] (for RL heads built on the VLA encoder)."""
        return self.encode(batch).mean(dim=1)

    # ------------------------------------------------------------------ decoding
    def _time_embed(self, t: torch.Tensor) -> torch.Tensor:
        half = self.cfg.d_model // 2
        freqs = torch.exp(-torch.arange(half, device=t.device).float() * (torch.log(torch.tensor(1000.0)) / half))
        ang = t.view(-1, 1) * 1000.0 * freqs.view(1, -1)
        return self.time_mlp(torch.cat([ang.sin(), ang.cos()], dim=1))

    def memory_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [block.memory_kv(memory) for block in self.decoder]

    def _decode(self, kv: list, b: int, x_t: torch.Tensor | None = None, t: torch.Tensor | None = None) -> torch.Tensor:
        """kv: per-block memory keys/values -> normalised chunk (l1) or velocity (flow), float [B, H, D]."""
        x = self.query_embed.unsqueeze(0).expand(b, -1, -1)
        if self.cfg.head == "flow":
            assert x_t is not None and t is not None
            x = x + self.action_in(x_t) + self._time_embed(t).unsqueeze(1)
        for block, block_kv in zip(self.decoder, kv):
            x = block(x, block_kv)
        return self.action_out(x)

    # ------------------------------------------------------------------ training / inference
    def compute_loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Per-sample loss float [B] (mean over unpadded steps and action dims).

        ``actions`` [B, T, 7] may be longer (truncated) or shorter (padded) than the horizon H."""
        target, pad = _fit_horizon(batch["actions"], batch.get("action_is_pad"), self.cfg.action_horizon)
        target = self.norm.norm_action(target)
        valid = (~pad).float().unsqueeze(-1)  # [B, H, 1]
        kv = self.memory_kv(self.encode(batch))
        b = target.shape[0]
        if self.cfg.head == "l1":
            err = (self._decode(kv, b) - target).abs()
        else:
            noise = torch.randn_like(target)
            t = torch.rand(b, device=target.device)
            x_t = (1 - t.view(b, 1, 1)) * noise + t.view(b, 1, 1) * target
            err = (self._decode(kv, b, x_t, t) - (target - noise)).pow(2)
        per_sample = (err * valid).sum(dim=(1, 2)) / (valid.sum(dim=(1, 2)) * self.cfg.action_dim).clamp_min(1.0)
        return per_sample

    @torch.no_grad()
    def sample_actions(self, batch: Mapping[str, Any], generator: torch.Generator | None = None,
                       noise: torch.Tensor | None = None) -> torch.Tensor:
        """-> action chunk in robot units, clipped to [-1, 1]: float [B, H, D].

        noise (flow head): the initial x_0 float [B, H, D] instead of a Gaussian draw — the same
        noise and observation give the same chunk (DSRL steers the policy through it)."""
        memory = self.encode(batch)
        kv, b = self.memory_kv(memory), memory.shape[0]
        if self.cfg.head == "l1":
            if noise is not None:
                raise ValueError("noise= needs a flow-matching VLA (policy.head=flow); this one has head=l1")
            norm_actions = self._decode(kv, b)
        else:
            shape = (b, self.cfg.action_horizon, self.cfg.action_dim)
            x = initial_noise(shape, noise, generator, memory.device)
            norm_actions = flow_integrate(lambda x_t, t: self._decode(kv, b, x_t, t), x, self.cfg.flow_steps)
        return self.norm.unnorm_action(norm_actions).clamp(-1.0, 1.0)

    @torch.no_grad()
    def invert_actions(self, batch: Mapping[str, Any], actions: torch.Tensor, iters: int = 3) -> torch.Tensor:
        """The noise from which ``sample_actions`` would produce ``actions`` (robot units, [B, T, D],
        fitted to the horizon like training targets) for these observations: the Euler steps run
        backwards, each solved by ``iters`` fixed-point iterations. -> float [B, H, D]."""
        if self.cfg.head != "flow":
            raise ValueError("inverting actions to noise needs a flow-matching VLA (policy.head=flow)")
        target, _ = _fit_horizon(actions.float(), None, self.cfg.action_horizon)
        memory = self.encode(batch)
        kv, b = self.memory_kv(memory), memory.shape[0]
        return flow_invert(lambda x_t, t: self._decode(kv, b, x_t, t), self.norm.norm_action(target),
                           self.cfg.flow_steps, iters)


def advantage_indicator(batch: Mapping[str, Any], b: int, device: torch.device) -> torch.Tensor:
    """The batch's ``advantage_indicator`` int64 [B] (0 negative, 1 positive, 2 unknown), or all
    positive when absent (serving asks for better-than-usual actions)."""
    ind = batch.get("advantage_indicator")
    if ind is None:
        return torch.full((b,), ADV_POSITIVE, dtype=torch.long, device=device)
    ind = torch.as_tensor(ind, device=device).long().reshape(-1)
    if ind.shape[0] != b or bool(((ind < 0) | (ind > ADV_UNKNOWN)).any()):
        raise ValueError(f"advantage_indicator must be int [{b}] in {{0, 1, 2}}, got {tuple(ind.shape)}")
    return ind


def initial_noise(shape: tuple[int, ...], noise: torch.Tensor | None, generator: torch.Generator | None,
                  device: torch.device) -> torch.Tensor:
    """x_0 of the flow: the given noise (checked: shape, finite) or a Gaussian draw on the CPU generator."""
    if noise is None:
        return torch.randn(shape, generator=generator, device="cpu").to(device)
    noise = torch.as_tensor(noise, dtype=torch.float32)
    if tuple(noise.shape) != tuple(shape):
        raise ValueError(f"noise has shape {tuple(noise.shape)}; this VLA samples chunks of shape {tuple(shape)} "
                         "(batch, action_horizon, action_dim)")
    if not torch.isfinite(noise).all():
        raise ValueError("noise contains NaN/Inf")
    return noise.to(device)


def flow_integrate(velocity, x: torch.Tensor, steps: int) -> torch.Tensor:
    """Euler from t=0 (noise x) to t=1: x_{k+1} = x_k + dt·v(x_k, t_k), t_k = k/steps."""
    dt, b = 1.0 / steps, x.shape[0]
    for k in range(steps):
        x = x + dt * velocity(x, torch.full((b,), k * dt, device=x.device))
    return x


def flow_invert(velocity, x1: torch.Tensor, steps: int, iters: int = 3) -> torch.Tensor:
    """Inverse of :func:`flow_integrate`: from x_1 back to the noise x_0. Each step solves
    x_k = x_{k+1} − dt·v(x_k, t_k) by fixed-point iteration from x_{k+1} − dt·v(x_{k+1}, t_k)."""
    dt, b = 1.0 / steps, x1.shape[0]
    x = x1
    for k in reversed(range(steps)):
        t = torch.full((b,), k * dt, device=x.device)
        nxt, guess = x, x
        for _ in range(max(1, iters) + 1):
            guess = nxt - dt * velocity(guess, t)
        x = guess
    return x


def _fit_horizon(actions: torch.Tensor, pad: torch.Tensor | None, horizon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Truncate or pad [B, T, D] actions (and their pad mask) to exactly ``horizon`` steps."""
    if actions.ndim == 2:
        actions = actions.unsqueeze(1)
    b, t, _ = actions.shape
    if pad is None:
        pad = torch.zeros(b, t, dtype=torch.bool, device=actions.device)
    pad = pad.bool()
    if t >= horizon:
        return actions[:, :horizon], pad[:, :horizon]
    extra = horizon - t
    actions = torch.cat([actions, actions[:, -1:].expand(b, extra, -1)], dim=1)
    pad = torch.cat([pad, torch.ones(b, extra, dtype=torch.bool, device=pad.device)], dim=1)
    return actions, pad


def _is_lora(module: nn.Module) -> bool:
    return hasattr(module, "lora_A") and hasattr(module, "base_layer")


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def check_images(images: Mapping[str, torch.Tensor], cfg: VLAModelConfig) -> None:
    for cam in cfg.cameras:
        if cam not in images:
            raise KeyError(f"no camera {cam!r} in the input (has {sorted(images)}); the policy needs {list(cfg.cameras)}")
        shape = tuple(images[cam].shape[-3:-1])
        if shape != tuple(cfg.image_hw):
            raise ValueError(
                f"camera {cam!r} is {shape[0]}x{shape[1]} but the policy was built for "
                f"{cfg.image_hw[0]}x{cfg.image_hw[1]}; set sim.image_height/width to match or retrain"
            )

