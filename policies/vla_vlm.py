"""A VLA on a vision-language model: an Idefics3/SmolVLM backbone + a flow-matching action expert.

``policy=vla_vlm`` (``policy.name=vla``, ``policy.arch=vlm``). The backbone is a transformers
``Idefics3Model`` (SmolVLM's architecture: SigLIP-style vision encoder, pixel-shuffle connector,
Llama decoder). It reads one prefix per observation::

    prefix = [vision tokens of each camera] [instruction tokens (right-padded)]
    h      = VLM decoder last hidden states of the prefix            float [B, L, d_vlm]

and a small transformer, the action expert (pi0-style), turns noise into an action chunk::

    tokens = [proprio token] [H action tokens: action_in(x_t) + time_embed(t)] + positions
    block  = self-attention over the tokens, cross-attention to proj(h) (prefix padding masked), MLP
    v      = out(tokens[1:])                 velocity float [B, H, 7]
    loss   = ‖v(x_t, t) − (a − noise)‖², x_t = (1 − t)·noise + t·a, t ~ U(0, 1) (padded steps masked)
    sample = ``flow_steps`` Euler steps from noise (t = 0) to actions (t = 1); the prefix runs once

State and actions are z-scored by ``norm`` (stats from the data, saved in the checkpoint) like the
small VLA (``policies.vla_model``), and the module has its surface (``compute_loss``,
``sample_actions``, ``norm``, ``enable_finetune``/``adapter_info``/``delta_names``), so
``VLAPolicy``, the learner, checkpoints and weight deltas use it unchanged.

Backbones:
* ``policy.vlm_path=""``: a tiny random-init Idefics3 (tests, CPU runs) whose text vocabulary is the
  MiniLM WordPiece tokenizer bundled with the instruction encoder (``policies.text``).
* ``policy.vlm_path=DIR``: a local ``save_pretrained`` directory (e.g. SmolVLM-256M), loaded with
  ``local_files_only=True``; its own tokenizer; never a hub download.

``policy.dtype=bf16`` keeps the VLM weights in bfloat16 (GPU hosts); the expert, the LoRA adapters
and the statistics stay float32. Images arrive uint8 [B, H, W, 3] and are resized to the vision
encoder's square input and normalised inside the model.

    model = build_vlm_vla(VLMVLAConfig(cameras=("front", "wrist"), image_hw=(64, 64)))
    loss = model.compute_loss(batch)              # float [B]
    chunk = model.sample_actions(batch)           # float [B, H, 7] in [-1, 1]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hil_robot.types import ACTION_DIM, STATE_DIM
from policies.normalize import Normalizer
from policies.vision import random_shift
from policies.vla_model import FINETUNE_MODES, _fit_horizon, flow_integrate, flow_invert, initial_noise

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
VLM_TYPES = ("idefics3", "smolvlm")
# attention and MLP projections of the Llama decoder and the SigLIP vision encoder
VLM_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "gate_proj", "up_proj", "down_proj", "fc1", "fc2")
TOKENIZER_DIR = "tokenizer"  # inside a checkpoint directory


@dataclasses.dataclass
class VLMVLAConfig:
    """Everything needed to rebuild the network (saved as JSON in the checkpoint). ``backbone_config``
    is the VLM's transformers config (filled in when the backbone is built)."""

    arch: str = "vlm"
    cameras: tuple[str, ...] = ("front", "wrist")
    image_hw: tuple[int, int] = (64, 64)
    action_horizon: int = 10
    head: str = "flow"  # the expert is a flow-matching head
    flow_steps: int = 10
    state_dim: int = STATE_DIM
    action_dim: int = ACTION_DIM
    vlm_path: str = ""  # where the backbone came from ("" = tiny random init); for people, not reloaded
    backbone_config: dict = dataclasses.field(default_factory=dict)
    dtype: str = "fp32"  # VLM weights: fp32 | bf16
    max_text_tokens: int = 32
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # SigLIP / Idefics3 pixel normalisation
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    augment_shift_px: int = 0  # DrQ random shift of the camera images while training (0 = off)
    expert_width: int = 256
    expert_layers: int = 4
    expert_heads: int = 4
    ffn_mult: int = 4
    dropout: float = 0.0
    # tiny random-init backbone (vlm_path = "")
    tiny_vision_hidden: int = 64
    tiny_vision_layers: int = 2
    tiny_patch_size: int = 8
    tiny_text_hidden: int = 64
    tiny_text_layers: int = 2
    tiny_heads: int = 4
    tiny_scale_factor: int = 2
    # learner.finetune: full | lora (adapters on the VLM's lora_targets) | expert (only the action expert)
    finetune: str = "full"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_targets: tuple[str, ...] = VLM_LORA_TARGETS

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)
        self.image_hw = tuple(int(v) for v in self.image_hw)  # type: ignore[assignment]
        self.image_mean = tuple(float(v) for v in self.image_mean)
        self.image_std = tuple(float(v) for v in self.image_std)
        self.lora_targets = tuple(str(t) for t in self.lora_targets)
        if self.arch != "vlm":
            raise ValueError(f"VLMVLAConfig.arch={self.arch!r}; it describes the VLM VLA (arch=vlm)")
        if self.head != "flow":
            raise ValueError(f"policy.head={self.head!r}: the VLM VLA's action expert is a flow-matching head; "
                             "set policy.head=flow (policy=vla_vlm does)")
        if self.dtype not in DTYPES:
            raise ValueError(f"policy.dtype={self.dtype!r}; choose fp32 or bf16")
        if self.finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune={self.finetune!r}; choose one of {FINETUNE_MODES}")
        if self.finetune == "lora" and (self.lora_rank < 1 or not self.lora_targets):
            raise ValueError(f"LoRA needs lora_rank >= 1 and at least one target (got {self.lora_rank}, {self.lora_targets})")
        if not self.cameras:
            raise ValueError("the VLA needs at least one camera")
        if len(self.image_hw) != 2 or min(self.image_hw) < 8:
            raise ValueError(f"image_hw={self.image_hw}: give (height, width), each at least 8")
        if self.expert_width % self.expert_heads or self.expert_width % 2:
            raise ValueError(f"expert_width={self.expert_width} must be even and divisible by expert_heads={self.expert_heads}")
        if self.action_horizon < 1 or self.flow_steps < 1:
            raise ValueError("action_horizon and flow_steps must be >= 1")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError(f"image_mean/std need 3 values each, std > 0 (got {self.image_mean}, {self.image_std})")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VLMVLAConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown VLM VLA config keys {unknown}; allowed: {sorted(names)}")
        return cls(**dict(d))


# ----------------------------------------------------------------------------- action expert


class ExpertBlock(nn.Module):
    """Pre-norm block: self-attention over [proprio, actions], cross-attention to the VLM prefix
    (padding masked), MLP. The prefix keys/values are computed once per chunk (``memory_kv``)."""

    def __init__(self, d: int, heads: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_qkv = nn.Linear(d, 3 * d)
        self.self_out = nn.Linear(d, d)
        self.cross_q = nn.Linear(d, d)
        self.cross_kv = nn.Linear(d, 2 * d)
        self.cross_out = nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, d * mult), nn.GELU(), nn.Linear(d * mult, d))
        self.drop = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, d] -> [B, heads, L, d/heads]
        b, n, d = x.shape
        return x.view(b, n, self.heads, d // self.heads).transpose(1, 2)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        b, h, n, dh = out.shape
        return out.transpose(1, 2).reshape(b, n, h * dh)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.cross_kv(memory).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        q, k, v = (self._split(t) for t in self.self_qkv(self.norm1(x)).chunk(3, dim=-1))
        x = x + self.drop(self.self_out(self._attend(q, k, v)))
        x = x + self.drop(self.cross_out(self._attend(self._split(self.cross_q(self.norm2(x))), *kv, mask)))
        return x + self.drop(self.mlp(self.norm3(x)))


class ActionExpert(nn.Module):
    """Noisy chunk + time + proprioception -> velocity, attending to the VLM's last hidden states."""

    def __init__(self, cfg: VLMVLAConfig, memory_dim: int) -> None:
        super().__init__()
        e = cfg.expert_width
        self.width = e
        self.memory_proj = nn.Sequential(nn.LayerNorm(memory_dim), nn.Linear(memory_dim, e))
        self.state_in = nn.Linear(cfg.state_dim, e)
        self.action_in = nn.Linear(cfg.action_dim, e)
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.pos = nn.Parameter(torch.randn(1 + cfg.action_horizon, e) * 0.02)
        self.blocks = nn.ModuleList(ExpertBlock(e, cfg.expert_heads, cfg.ffn_mult, cfg.dropout)
                                    for _ in range(cfg.expert_layers))
        self.out = nn.Sequential(nn.LayerNorm(e), nn.Linear(e, cfg.action_dim))

    def memory_kv(self, hidden: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        memory = self.memory_proj(hidden.float())
        return [block.memory_kv(memory) for block in self.blocks]

    def time_embed(self, t: torch.Tensor) -> torch.Tensor:
        half = self.width // 2
        freqs = torch.exp(-torch.arange(half, device=t.device, dtype=torch.float32) * (math.log(1000.0) / half))
        ang = t.float().view(-1, 1) * 1000.0 * freqs.view(1, -1)
        return self.time_mlp(torch.cat([ang.sin(), ang.cos()], dim=1))

    def forward(self, kv: list, mask: torch.Tensor, state: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """kv: per-block prefix keys/values, mask bool [B, 1, 1, L] (True = attend), state (normalised)
        float [B, S], x_t float [B, H, D], t float [B] -> velocity float [B, H, D]."""
        actions = self.action_in(x_t) + self.time_embed(t).unsqueeze(1)
        x = torch.cat([self.state_in(state).unsqueeze(1), actions], dim=1) + self.pos
        for block, block_kv in zip(self.blocks, kv):
            x = block(x, block_kv, mask)
        return self.out(x[:, 1:])


# ----------------------------------------------------------------------------- the model


class VLMVLAModel(nn.Module):
    """VLM prefix encoder + flow-matching action expert (see the module docstring)."""

    def __init__(self, cfg: VLMVLAConfig, vlm: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        for part in ("vision_model", "connector", "text_model"):
            if not hasattr(vlm, part):
                raise ValueError(f"the VLM VLA backbone must be an Idefics3/SmolVLM model (no .{part} on {type(vlm).__name__})")
        self.cfg = cfg
        bcfg = vlm.config
        if not cfg.backbone_config:
            cfg.backbone_config = bcfg.to_dict()
        vision = bcfg.vision_config
        self.vision_size = int(vision.image_size if isinstance(vision.image_size, int) else vision.image_size[0])
        grid = self.vision_size // int(vision.patch_size)
        if self.vision_size % int(vision.patch_size) or grid % int(bcfg.scale_factor):
            raise ValueError(f"vision image_size {self.vision_size} / patch {vision.patch_size} must give a patch grid "
                             f"divisible by the connector's scale_factor {bcfg.scale_factor}")
        self.tokens_per_image = (grid // int(bcfg.scale_factor)) ** 2
        vocab = vlm.get_input_embeddings().num_embeddings
        if len(tokenizer) > vocab:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the VLM embeds only {vocab}; "
                             "use the tokenizer saved with the VLM")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad if pad is not None else 0)
        self.tokenizer = tokenizer
        self.vlm = vlm.to(DTYPES[cfg.dtype])
        self.expert = ActionExpert(cfg, int(bcfg.text_config.hidden_size))
        self.norm = Normalizer(cfg.state_dim, cfg.action_dim)
        self.register_buffer("pixel_mean", torch.tensor(cfg.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.image_std).view(1, 3, 1, 1), persistent=False)
        self._token_cache: dict[str, list[int]] = {}
        if cfg.finetune != "full":
            self._setup_finetune()

    @property
    def vlm_dtype(self) -> torch.dtype:
        return self.vlm.get_input_embeddings().weight.dtype

    # ------------------------------------------------------------------ fine-tuning modes
    def lora_targets_for(self, targets: Sequence[str]) -> tuple[str, ...]:
        """``learner.lora_targets`` as this model reads them: the small VLA's default list (the
        learner's default) means the VLM's own attention/MLP projections (``VLM_LORA_TARGETS``)."""
        from policies.vla_model import VLAModelConfig

        targets = tuple(str(t) for t in targets)
        return VLM_LORA_TARGETS if not targets or targets == VLAModelConfig().lora_targets else targets

    def enable_finetune(self, mode: str, rank: int = 16, alpha: float = 32.0, targets: tuple[str, ...] = ()) -> None:
        """Switch a full model to LoRA / expert-only training in place (the config records it)."""
        if self.cfg.finetune != "full":
            raise ValueError(f"the model is already finetune={self.cfg.finetune}; build it from its config instead")
        self.cfg.finetune, self.cfg.lora_rank, self.cfg.lora_alpha = mode, int(rank), float(alpha)
        self.cfg.lora_targets = self.lora_targets_for(targets)
        self.cfg.__post_init__()
        if mode != "full":
            self._setup_finetune()

    def _setup_finetune(self) -> None:
        cfg = self.cfg
        if cfg.finetune == "lora":
            from peft import LoraConfig, inject_adapter_in_model

            self._check_lora_targets()
            # a full-match regex: adapters go on the VLM's projections only, never on the expert
            pattern = r"vlm\..*\.(?:" + "|".join(map(_re_escape, cfg.lora_targets)) + ")"
            lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=pattern,
                              lora_dropout=0.0, bias="none")
            inject_adapter_in_model(lora, self)
            for name, p in self.named_parameters():  # adapters train in float32 over a bf16 base
                if _is_adapter(name):
                    p.data = p.data.float()
        for name, p in self.named_parameters():
            p.requires_grad_(self.is_trainable(name))

    def _check_lora_targets(self) -> None:
        linears = {n.rsplit(".", 1)[-1] for n, m in self.vlm.named_modules() if isinstance(m, nn.Linear)}
        for target in self.cfg.lora_targets:
            if target not in linears:
                raise ValueError(f"learner.lora_targets: {target!r} names no Linear of the VLM; its projections are "
                                 f"{sorted(linears)}")

    def is_trainable(self, name: str) -> bool:
        """Does the parameter ``name`` train (and travel in a delta) under cfg.finetune?"""
        mode = self.cfg.finetune
        if mode == "lora":
            return _is_adapter(name)
        if mode == "expert":
            return name.startswith("expert.")
        return True

    def delta_names(self) -> list[str]:
        return sorted(n for n, _ in self.named_parameters() if self.is_trainable(n))

    def adapter_info(self) -> dict[str, Any]:
        cfg = self.cfg
        info: dict[str, Any] = {"finetune": cfg.finetune}
        if cfg.finetune == "lora":
            info.update(rank=cfg.lora_rank, alpha=float(cfg.lora_alpha), targets=sorted(cfg.lora_targets))
        return info

    # ------------------------------------------------------------------ observation -> prefix
    def encode_text(self, instructions: Sequence[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Instructions -> right-padded token ids int64 [B, L] and mask bool [B, L] (cached per string)."""
        rows = []
        for text in instructions:
            text = str(text)
            if text not in self._token_cache:
                if len(self._token_cache) >= 4096:  # a served policy sees whatever prompts its clients send
                    self._token_cache.clear()
                ids = self.tokenizer(text, truncation=True, max_length=self.cfg.max_text_tokens)["input_ids"]
                self._token_cache[text] = list(ids) or [self.pad_token_id]
            rows.append(self._token_cache[text])
        width = max((len(r) for r in rows), default=1)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, :len(r)] = True
        return ids.to(device), mask.to(device)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> normalised [N, 3, S, S] at the vision encoder's size, in the VLM dtype."""
        x = images.permute(0, 3, 1, 2).float() / 255.0
        if self.training and self.cfg.augment_shift_px > 0:
            x = random_shift(x, self.cfg.augment_shift_px)
        if x.shape[-2:] != (self.vision_size, self.vision_size):
            x = F.interpolate(x, size=(self.vision_size, self.vision_size), mode="bilinear", align_corners=False)
        return ((x - self.pixel_mean) / self.pixel_std).to(self.vlm_dtype)

    def prefix(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> VLM last hidden states [B, L, d_vlm] (VLM dtype) and mask bool [B, L] (False = padding)."""
        if "instruction" not in batch:
            raise KeyError("the VLM VLA reads the instruction text: the batch needs 'instruction' (a list of strings; "
                           "policies.vla.batch_to_torch / obs_to_batch add it)")
        images = batch["images"]
        parts = []
        for cam in self.cfg.cameras:
            if cam not in images:
                raise KeyError(f"batch has no camera {cam!r} (has {sorted(images)}); the model was built for {self.cfg.cameras}")
            vision = self.vlm.vision_model(pixel_values=self.pixels(images[cam])).last_hidden_state
            parts.append(self.vlm.connector(vision))  # [B, tokens_per_image, d_vlm]
        b, device = parts[0].shape[0], parts[0].device
        ids, text_mask = self.encode_text(batch["instruction"], device)
        if ids.shape[0] != b:
            raise ValueError(f"batch has {b} observations but {ids.shape[0]} instructions")
        seq = torch.cat([*parts, self.vlm.get_input_embeddings()(ids)], dim=1)
        mask = torch.cat([text_mask.new_ones(b, seq.shape[1] - ids.shape[1]), text_mask], dim=1)
        hidden = self.vlm.text_model(inputs_embeds=seq, attention_mask=mask.long(), use_cache=False).last_hidden_state
        return hidden, mask

    def _memory(self, batch: Mapping[str, Any]) -> tuple[list, torch.Tensor]:
        hidden, mask = self.prefix(batch)
        return self.expert.memory_kv(hidden), mask[:, None, None, :]

    def observation_features(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Mean of the VLM prefix states over real tokens, float [B, d_vlm] (for RL heads)."""
        hidden, mask = self.prefix(batch)
        m = mask.unsqueeze(-1).float()
        return (hidden.float() * m).sum(1) / m.sum(1).clamp_min(1.0)

    # ------------------------------------------------------------------ training / inference
    def compute_loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Per-sample flow-matching loss float [B] (mean over unpadded steps and action dims)."""
        target, pad = _fit_horizon(batch["actions"], batch.get("action_is_pad"), self.cfg.action_horizon)
        target = self.norm.norm_action(target.float())
        valid = (~pad).float().unsqueeze(-1)
        kv, mask = self._memory(batch)
        b = target.shape[0]
        noise = torch.randn_like(target)
        t = torch.rand(b, device=target.device)
        x_t = (1 - t.view(b, 1, 1)) * noise + t.view(b, 1, 1) * target
        state = self.norm.norm_state(batch["state"].float())
        err = (self.expert(kv, mask, state, x_t, t) - (target - noise)).pow(2)
        return (err * valid).sum(dim=(1, 2)) / (valid.sum(dim=(1, 2)) * self.cfg.action_dim).clamp_min(1.0)

    @torch.no_grad()
    def sample_actions(self, batch: Mapping[str, Any], generator: torch.Generator | None = None,
                       noise: torch.Tensor | None = None) -> torch.Tensor:
        """-> action chunk in robot units, clipped to [-1, 1]: float [B, H, D]. noise: the flow's
        initial x_0 [B, H, D] instead of a Gaussian draw (DSRL)."""
        kv, mask = self._memory(batch)
        b, device = mask.shape[0], mask.device
        state = self.norm.norm_state(batch["state"].float())
        x = initial_noise((b, self.cfg.action_horizon, self.cfg.action_dim), noise, generator, device)
        x = flow_integrate(lambda x_t, t: self.expert(kv, mask, state, x_t, t), x, self.cfg.flow_steps)
        return self.norm.unnorm_action(x).clamp(-1.0, 1.0)

    @torch.no_grad()
    def invert_actions(self, batch: Mapping[str, Any], actions: torch.Tensor, iters: int = 3) -> torch.Tensor:
        """The noise from which ``sample_actions`` gives ``actions`` [B, T, D] (see
        ``policies.vla_model.flow_invert``). -> float [B, H, D]."""
        target, _ = _fit_horizon(actions.float(), None, self.cfg.action_horizon)
        kv, mask = self._memory(batch)
        state = self.norm.norm_state(batch["state"].float())
        return flow_invert(lambda x_t, t: self.expert(kv, mask, state, x_t, t), self.norm.norm_action(target),
                           self.cfg.flow_steps, iters)

    # ------------------------------------------------------------------ checkpoints
    def save_extra_files(self, directory: Path) -> None:
        """The tokenizer beside the weights (``policies.checkpoint.save``), so a checkpoint is whole."""
        self.tokenizer.save_pretrained(str(Path(directory) / TOKENIZER_DIR))


def _is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def _re_escape(s: str) -> str:
    import re

    return re.escape(s)


# ----------------------------------------------------------------------------- building


def minilm_tokenizer() -> Any:
    """The WordPiece tokenizer bundled with the instruction encoder (``policies.text``)."""
    from transformers import AutoTokenizer

    from policies.text import model_dir

    return AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)


def tiny_vlm_config(cfg: VLMVLAConfig, vocab_size: int, pad_token_id: int) -> Any:
    """A small random-init Idefics3 config: vision input = the camera size rounded up to whole
    connector groups, one vision token per scale_factor² patches, text vocabulary = the tokenizer's
    plus one image token."""
    from transformers import Idefics3Config

    group = cfg.tiny_patch_size * cfg.tiny_scale_factor
    side = -(-max(cfg.image_hw) // group) * group
    heads = cfg.tiny_heads
    return Idefics3Config(
        vision_config=dict(hidden_size=cfg.tiny_vision_hidden, intermediate_size=2 * cfg.tiny_vision_hidden,
                           num_hidden_layers=cfg.tiny_vision_layers, num_attention_heads=heads, image_size=side,
                           patch_size=cfg.tiny_patch_size),
        text_config=dict(model_type="llama", vocab_size=vocab_size + 1, hidden_size=cfg.tiny_text_hidden,
                         intermediate_size=2 * cfg.tiny_text_hidden, num_hidden_layers=cfg.tiny_text_layers,
                         num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                         max_position_embeddings=512, pad_token_id=pad_token_id),
        scale_factor=cfg.tiny_scale_factor, image_token_id=vocab_size, pad_token_id=pad_token_id)


def _quiet_transformers() -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def load_pretrained_vlm(path: str | Path) -> tuple[nn.Module, Any, dict[str, Any]]:
    """A local VLM directory -> (Idefics3/SmolVLM model in float32, its tokenizer, pixel settings).

    Raises ``CheckpointError`` with one line naming the path when it is missing, holds another
    kind of model, or its weights do not cover the architecture."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from policies.checkpoint import CheckpointError

    _quiet_transformers()
    path = Path(path)
    where = f"policy.vlm_path={path}"
    if not path.is_dir() or not (path / "config.json").is_file():
        raise CheckpointError(f"{where}: no such model directory (it needs config.json + model.safetensors + tokenizer "
                              "files from save_pretrained, e.g. a local copy of SmolVLM-256M)")
    try:
        bcfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{where}: config.json is not a transformers config ({str(e).splitlines()[0]})") from None
    if bcfg.model_type not in VLM_TYPES:
        raise CheckpointError(f"{where} holds a {bcfg.model_type!r} model; the VLM VLA needs one of {VLM_TYPES} "
                              "(SmolVLM / Idefics3)")
    try:
        vlm, info = AutoModel.from_pretrained(str(path), local_files_only=True, output_loading_info=True,
                                              dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{where}: cannot load the VLM/tokenizer ({str(e).splitlines()[0]})") from None
    bad = list(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
    if bad:
        raise CheckpointError(f"{where}: the weights lack or mis-shape {len(bad)} VLM tensors (e.g. {sorted(bad)[:3]}); "
                              "they are from another model")
    if not all(torch.isfinite(p).all() for p in vlm.parameters()):
        raise CheckpointError(f"{where}: the VLM weights contain NaN/Inf; refusing to load")
    pixel: dict[str, Any] = {}
    pre = path / "preprocessor_config.json"
    if pre.is_file():  # the processor's normalisation, when the directory carries one
        try:
            doc = json.loads(pre.read_text())
            for key in ("image_mean", "image_std"):
                if isinstance(doc.get(key), list) and len(doc[key]) == 3:
                    pixel[key] = tuple(float(v) for v in doc[key])
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError):
            raise CheckpointError(f"{where}: preprocessor_config.json is not valid JSON") from None
    return vlm, tokenizer, pixel


def build_vlm_vla(cfg: VLMVLAConfig, *, seed: int | None = None) -> VLMVLAModel:
    """Fresh model: the pretrained VLM at ``cfg.vlm_path`` (or a tiny random one) + a new expert.
    ``seed`` makes the random parts reproducible (learner and policy server build the same base)."""
    _quiet_transformers()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if cfg.vlm_path:
            vlm, tokenizer, pixel = load_pretrained_vlm(cfg.vlm_path)
            for key, value in pixel.items():
                setattr(cfg, key, value)
        else:
            from transformers import Idefics3Model

            tokenizer = minilm_tokenizer()
            vlm = Idefics3Model(tiny_vlm_config(cfg, len(tokenizer), int(tokenizer.pad_token_id or 0)))
        cfg.backbone_config = {}
        return VLMVLAModel(cfg, vlm, tokenizer)


def rebuild_vlm_vla(cfg: VLMVLAConfig, tokenizer_dir: str | Path) -> VLMVLAModel:
    """The architecture from a saved config (``backbone_config``) and tokenizer, weights random:
    ``policies.checkpoint.load`` fills them in."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    _quiet_transformers()
    bc = dict(cfg.backbone_config)
    if bc.get("model_type") not in VLM_TYPES:
        raise ValueError(f"backbone_config.model_type={bc.get('model_type')!r}; expected one of {VLM_TYPES}")
    bcfg = CONFIG_MAPPING[bc["model_type"]].from_dict(bc)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    return VLMVLAModel(cfg, AutoModel.from_config(bcfg), tokenizer)


def model_config_from(cfg: Any) -> VLMVLAConfig:
    """RootConfig -> VLMVLAConfig (cameras and image size from sim; expert sized down for the tiny VLM)."""
    pc = cfg.policy
    tiny = {} if pc.vlm_path else dict(expert_width=64, expert_layers=2)
    return VLMVLAConfig(cameras=tuple(cfg.sim.cameras), image_hw=(cfg.sim.image_height, cfg.sim.image_width),
                        action_horizon=pc.action_horizon, head=pc.head, flow_steps=pc.flow_steps,
                        vlm_path=pc.vlm_path, dtype=pc.dtype, **tiny)


def make_vlm_vla_model(cfg: Any) -> VLMVLAModel:
    """RootConfig (``policy.arch=vlm``) -> a fresh model, seeded by ``experiment.seed``."""
    if cfg.policy.dtype in ("bf16", "bfloat16") and not str(cfg.policy.device).startswith(("cuda", "auto")):
        log.warning("policy.dtype=bf16 on device=%s: bfloat16 matmuls are slow on most CPUs; fp32 is the CPU default",
                    cfg.policy.device)
    return build_vlm_vla(model_config_from(cfg), seed=int(cfg.experiment.seed))
