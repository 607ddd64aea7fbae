"""A progress critic on a vision-language transformer (VLAC-style pairwise progress + done).

The backbone is a transformers ``Idefics3Model`` (the SmolVLM architecture: a SigLIP-style vision
encoder, a pixel-shuffle connector and a Llama decoder). Each frame (all cameras + proprioception)
becomes a run of tokens in the decoder's embedding space::

    frame(x) = [vision tokens of each camera] [state token] [frame-end marker]

and one pair is read by two causal passes over the same tokens in both orders::

    P(x, y) = [instruction tokens] frame(x) frame(y) [pair-end marker]
    g(x, y) = progress_head(h at the pair-end marker of P(x, y))
    Δ(a, b) = tanh(g(a, b) − g(b, a))            # swapping the frames flips the sign exactly; Δ(a, a) = 0
    P(done | b) = σ(done_head(h at b's frame-end marker in P(b, a)))

The decoder is causal, so the done read-out of P(b, a) sees only the instruction and frame b:
P(done) depends on b alone, as for the small critic in ``policies.critic``. Instructions are
left-padded with explicit position ids, so a row scores the same alone or in a batch.

The module has the same surface as ``ProgressCritic`` (``cfg.cameras``, ``frame_features``,
``heads``, ``done_logits``, ``encode_text``, ``state_mean``/``state_std``), so ``LocalCriticBackend``,
``ProgressTracker``, ``train_critic`` and ``CriticPolicyAdapter`` use it unchanged.

Weights on disk (``save_pretrained(dir)``; ``load_vlm_critic(dir)``): the backbone and tokenizer in
the ordinary transformers layout (``config.json``, ``model.safetensors``, tokenizer files) plus
``critic.json`` (the critic config, sha256 of the heads) and ``critic_head.safetensors`` (heads,
markers, state projection and statistics). A bare SmolVLM/Idefics3 directory (no critic files) is a
starting point for ``hil-robot train-critic critic.kind=vlm critic.vlm_path=DIR``; serving needs
the critic files.

    critic = VLMProgressCritic.tiny(VLMCriticConfig(cameras=("front", "wrist"), image_hw=(64, 64)))
    critic.save_pretrained("runs/vlm_critic")
    backend = VLMCriticBackend(load_vlm_critic("runs/vlm_critic"))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hil_robot.types import STATE_DIM
from policies.checkpoint import CheckpointError
from policies.critic import LocalCriticBackend

CRITIC_FILE, HEAD_FILE = "critic.json", "critic_head.safetensors"
FORMAT, FORMAT_VERSION = "hil_robot.vlm_critic", 1
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BACKBONE_TYPES = ("idefics3", "smolvlm")


@dataclasses.dataclass
class VLMCriticConfig:
    """Critic shape (saved in ``critic.json``); ``tiny_*`` size the random-init backbone of ``tiny``."""

    cameras: tuple[str, ...] = ("front", "wrist")
    image_hw: tuple[int, int] = (64, 64)  # frames the critic accepts (resized to the vision encoder's size)
    use_state: bool = True
    state_dim: int = STATE_DIM
    max_text_tokens: int = 32
    head_hidden: int = 128
    image_mean: float = 0.5  # SigLIP/Idefics3 pixel normalisation
    image_std: float = 0.5
    tiny_vision_hidden: int = 64
    tiny_vision_layers: int = 2
    tiny_patch_size: int = 8
    tiny_text_hidden: int = 64
    tiny_text_layers: int = 2
    tiny_heads: int = 4
    tiny_scale_factor: int = 2

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)
        self.image_hw = tuple(int(v) for v in self.image_hw)  # type: ignore[assignment]
        if not self.cameras:
            raise ValueError("the VLM critic needs at least one camera")
        if len(self.image_hw) != 2 or min(self.image_hw) < 8:
            raise ValueError(f"image_hw={self.image_hw}: give (height, width), each at least 8")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VLMCriticConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown VLM critic config keys {unknown}; allowed: {sorted(names)}")
        return cls(**dict(d))


class TextBatch(NamedTuple):
    """Left-padded instruction tokens: ids int64 [B, L], mask int64 [B, L] (0 = padding)."""

    ids: torch.Tensor
    mask: torch.Tensor


def minilm_tokenizer() -> Any:
    """The WordPiece tokenizer bundled with the instruction encoder (``policies.text``)."""
    from transformers import AutoTokenizer

    from policies.text import model_dir

    return AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)


def tiny_backbone_config(cfg: VLMCriticConfig, vocab_size: int, pad_token_id: int) -> Any:
    """A small random-init Idefics3 config (tests, CPU benches): one vision token per 2×2 patch group."""
    from transformers import Idefics3Config

    side = max(cfg.image_hw)
    side = -(-side // (cfg.tiny_patch_size * cfg.tiny_scale_factor)) * cfg.tiny_patch_size * cfg.tiny_scale_factor
    heads = cfg.tiny_heads
    return Idefics3Config(
        vision_config=dict(hidden_size=cfg.tiny_vision_hidden, intermediate_size=2 * cfg.tiny_vision_hidden,
                           num_hidden_layers=cfg.tiny_vision_layers, num_attention_heads=heads, image_size=side,
                           patch_size=cfg.tiny_patch_size),
        text_config=dict(model_type="llama", vocab_size=vocab_size, hidden_size=cfg.tiny_text_hidden,
                         intermediate_size=2 * cfg.tiny_text_hidden, num_hidden_layers=cfg.tiny_text_layers,
                         num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                         max_position_embeddings=512, pad_token_id=pad_token_id),
        scale_factor=cfg.tiny_scale_factor, image_token_id=vocab_size - 1, pad_token_id=pad_token_id)


class VLMProgressCritic(nn.Module):
    """Pairwise progress + done on an Idefics3/SmolVLM backbone (see the module docstring)."""

    def __init__(self, cfg: VLMCriticConfig, backbone: nn.Module, tokenizer: Any) -> None:
        super().__init__()
        for part in ("vision_model", "connector", "text_model"):
            if not hasattr(backbone, part):
                raise ValueError(f"the VLM critic backbone must be an Idefics3/SmolVLM model (no .{part} on "
                                 f"{type(backbone).__name__})")
        self.cfg = cfg
        self.backbone = backbone
        self.tokenizer = tokenizer
        bcfg = backbone.config
        vision = bcfg.vision_config
        self.vision_size = int(vision.image_size if isinstance(vision.image_size, int) else vision.image_size[0])
        grid = self.vision_size // int(vision.patch_size)
        if self.vision_size % int(vision.patch_size) or grid % int(bcfg.scale_factor):
            raise ValueError(f"vision image_size {self.vision_size} / patch {vision.patch_size} must give a patch grid "
                             f"divisible by the connector's scale_factor {bcfg.scale_factor}")
        self.tokens_per_image = (grid // int(bcfg.scale_factor)) ** 2
        vocab = backbone.get_input_embeddings().num_embeddings
        if len(tokenizer) > vocab:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the backbone embeds only {vocab}; "
                             "use the tokenizer saved with the backbone")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad if pad is not None else 0)
        d = int(bcfg.text_config.hidden_size)
        self.hidden = d
        self.state_proj = nn.Linear(cfg.state_dim, d) if cfg.use_state else None
        self.register_buffer("state_mean", torch.zeros(cfg.state_dim))
        self.register_buffer("state_std", torch.ones(cfg.state_dim))
        self.frame_end = nn.Parameter(torch.randn(d) * 0.02)
        self.pair_end = nn.Parameter(torch.randn(d) * 0.02)
        h = cfg.head_hidden
        self.progress_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, h), nn.GELU(), nn.Linear(h, 1))
        self.done_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, h), nn.GELU(), nn.Linear(h, 1))
        self._token_cache: dict[str, list[int]] = {}

    @classmethod
    def tiny(cls, cfg: VLMCriticConfig | None = None, seed: int | None = None) -> "VLMProgressCritic":
        """Random-init tiny backbone + the bundled MiniLM WordPiece tokenizer (vocab sized to it)."""
        from transformers import Idefics3Model

        cfg = cfg or VLMCriticConfig()
        if seed is not None:
            torch.manual_seed(seed)
        tok = minilm_tokenizer()
        backbone = Idefics3Model(tiny_backbone_config(cfg, len(tok), int(tok.pad_token_id or 0)))
        return cls(cfg, backbone, tok)

    @property
    def frame_len(self) -> int:
        return len(self.cfg.cameras) * self.tokens_per_image + int(self.cfg.use_state) + 1

    @property
    def dtype(self) -> torch.dtype:
        return self.frame_end.dtype

    # ------------------------------------------------------------------ inputs
    def encode_text(self, instructions: Sequence[str], device: torch.device | str) -> TextBatch:
        """Instructions -> left-padded token ids (each distinct string tokenized once)."""
        rows = []
        for text in instructions:
            text = str(text)
            if text not in self._token_cache:
                if len(self._token_cache) >= 4096:  # a served critic sees whatever strings its clients send
                    self._token_cache.clear()
                ids = self.tokenizer(text, truncation=True, max_length=self.cfg.max_text_tokens)["input_ids"]
                self._token_cache[text] = list(ids) or [self.pad_token_id]
            rows.append(self._token_cache[text])
        width = max((len(r) for r in rows), default=1)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        return TextBatch(ids.to(device), mask.to(device))

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> normalised float [N, 3, S, S] at the vision encoder's size."""
        x = images.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-2:] != (self.vision_size, self.vision_size):
            x = F.interpolate(x, size=(self.vision_size, self.vision_size), mode="bilinear", align_corners=False)
        return ((x - self.cfg.image_mean) / self.cfg.image_std).to(self.dtype)

    def frame_features(self, frame: Mapping[str, Any]) -> torch.Tensor:
        """One side of the pair -> token embeddings [N, frame_len, hidden]."""
        parts = []
        for cam in self.cfg.cameras:
            if cam not in frame["images"]:
                raise KeyError(f"critic input has no camera {cam!r} (has {sorted(frame['images'])}); "
                               f"it was trained on {list(self.cfg.cameras)}")
            vision = self.backbone.vision_model(pixel_values=self.pixels(frame["images"][cam])).last_hidden_state
            parts.append(self.backbone.connector(vision))  # [N, tokens_per_image, hidden]
        n = parts[0].shape[0]
        if self.state_proj is not None:
            state = ((frame["state"].float() - self.state_mean) / self.state_std).to(self.dtype)
            parts.append(self.state_proj(state).unsqueeze(1))
        parts.append(self.frame_end.expand(n, 1, -1))
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------------ decoder passes
    def _decode(self, text: TextBatch, *segments: torch.Tensor) -> tuple[torch.Tensor, int]:
        """[instruction, *segments] through the decoder -> (hidden [B, L, d], instruction length)."""
        emb = self.backbone.get_input_embeddings()(text.ids).to(self.dtype)
        seq = torch.cat([emb, *segments], dim=1)
        tail = seq.shape[1] - emb.shape[1]
        mask = torch.cat([text.mask, text.mask.new_ones(text.mask.shape[0], tail)], dim=1)
        pos = (mask.cumsum(1) - 1).clamp_min(0)
        out = self.backbone.text_model(inputs_embeds=seq, attention_mask=mask, position_ids=pos, use_cache=False)
        return out.last_hidden_state, emb.shape[1]

    def heads(self, fa: torch.Tensor, fb: torch.Tensor, text: TextBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame tokens [B, frame_len, d] of both sides -> (Δ float [B] in [-1, 1], done logit of b [B])."""
        end = self.pair_end.expand(fa.shape[0], 1, -1)
        # two calls of the same shape (not one of 2B rows): swapping a and b swaps the two results
        # bit for bit, so Δ(b, a) = −Δ(a, b) and Δ(a, a) = 0 hold exactly, not just to rounding
        h_ab, _ = self._decode(text, fa, fb, end)
        h_ba, lt = self._decode(text, fb, fa, end)
        diff = self.progress_head(h_ab[:, -1]).squeeze(1).float() - self.progress_head(h_ba[:, -1]).squeeze(1).float()
        done_logit = self.done_head(h_ba[:, lt + self.frame_len - 1]).squeeze(1).float()  # b's marker in P(b, a)
        return torch.sign(diff) * torch.tanh(diff.abs()), done_logit  # odd by construction

    def done_logits(self, fb: torch.Tensor, text: TextBatch) -> torch.Tensor:
        """P(done) logit of frames ``fb`` alone: the same read-out as ``heads``, without the second frame."""
        h, _ = self._decode(text, fb)
        return self.done_head(h[:, -1]).squeeze(1).float()

    def forward(self, frame_a: Mapping[str, Any], frame_b: Mapping[str, Any], text: TextBatch,
                feats: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        fa, fb = feats if feats is not None else (self.frame_features(frame_a), self.frame_features(frame_b))
        return self.heads(fa, fb, text)

    # ------------------------------------------------------------------ weights
    def head_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def save_pretrained(self, directory: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        """Write backbone + tokenizer (transformers layout) and the critic files, atomically."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
        try:
            self.backbone.save_pretrained(str(tmp), safe_serialization=True)
            self.tokenizer.save_pretrained(str(tmp))
            save_file({k: v.detach().cpu().contiguous() for k, v in self.head_state_dict().items()}, str(tmp / HEAD_FILE))
            doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "critic_config": self.cfg.to_dict(),
                   "head_sha256": _sha256(tmp / HEAD_FILE), "dtype": str(self.dtype).replace("torch.", ""),
                   "params": sum(p.numel() for p in self.parameters()), "extra": dict(extra or {})}
            (tmp / CRITIC_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True))
            old = None
            if directory.exists():
                old = directory.parent / f".{directory.name}.old-{os.getpid()}-{time.monotonic_ns()}"
                os.rename(directory, old)
            os.rename(tmp, directory)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return directory


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_vlm_critic(path: str | Path, *, require_head: bool = True, cfg: VLMCriticConfig | None = None,
                    device: str | torch.device = "cpu", dtype: str = "float32") -> VLMProgressCritic:
    """A VLM critic from a local directory (never from a hub). ``require_head=False`` accepts a bare
    SmolVLM/Idefics3 directory and gives fresh heads (``cfg`` sets cameras and image size) to train."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from policies.vla import validate_weights

    path = Path(path)
    where = f"critic.vlm_path={path}"
    if dtype not in DTYPES:
        raise CheckpointError(f"critic.dtype={dtype!r}; choose one of {sorted(DTYPES)}")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise CheckpointError(f"{where}: no such model directory (it needs config.json + model.safetensors from "
                              "save_pretrained: a SmolVLM/Idefics3 model or `hil-robot train-critic critic.kind=vlm` output)")
    try:
        bcfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{where}: config.json is not a transformers config ({e})") from None
    if bcfg.model_type not in BACKBONE_TYPES:
        raise CheckpointError(f"{where} holds a {bcfg.model_type!r} model; the VLM critic needs one of {BACKBONE_TYPES}")
    doc = None
    if (path / CRITIC_FILE).is_file():
        try:
            doc = json.loads((path / CRITIC_FILE).read_text())
            if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format {doc.get('format')!r} v{doc.get('format_version')}")
            cfg = VLMCriticConfig.from_dict(doc["critic_config"])
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{where}: {CRITIC_FILE} is unusable ({e}); re-save the critic") from None
    elif require_head:
        raise CheckpointError(f"{where} is a bare VLM without {CRITIC_FILE}/{HEAD_FILE}; train the critic heads first: "
                              f"hil-robot train-critic critic.kind=vlm critic.vlm_path={path} out=DIR, then serve DIR")
    try:
        backbone, info = AutoModel.from_pretrained(str(path), local_files_only=True, output_loading_info=True,
                                                   dtype=DTYPES[dtype])
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{where}: cannot load the backbone/tokenizer ({e})") from None
    missing = list(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
    if missing:
        raise CheckpointError(f"{where}: model.safetensors lacks or mis-shapes {len(missing)} backbone tensors "
                              f"(e.g. {missing[:3]}); the weights are from another model")
    if not all(torch.isfinite(p).all() for p in backbone.parameters()):
        raise CheckpointError(f"{where}: backbone weights contain NaN/Inf; refusing to load")
    model = VLMProgressCritic(cfg or VLMCriticConfig(), backbone, tokenizer)
    if doc is not None:
        head_path = path / HEAD_FILE
        if not head_path.is_file() or _sha256(head_path) != doc.get("head_sha256"):
            raise CheckpointError(f"{where}: {HEAD_FILE} is missing or does not match the sha256 in {CRITIC_FILE}")
        spec = {k: (tuple(v.shape), str(v.dtype)) for k, v in model.head_state_dict().items()}
        try:
            heads = validate_weights(load_file(str(head_path)), spec, what=f"VLM critic heads {head_path}")
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        model.load_state_dict(heads, strict=False)
    return model.to(device=device, dtype=DTYPES[dtype]).eval()


# ----------------------------------------------------------------------------- backend


def check_frames(frames: Mapping[str, Any], cameras: Sequence[str], image_hw: Sequence[int], state_dim: int,
                 n: int, side: str) -> None:
    """One side of a critic request; raises ValueError naming the key and what to send instead."""
    h, w = int(image_hw[0]), int(image_hw[1])
    for cam in cameras:
        key = f"images/{cam}"
        if key not in frames:
            have = sorted(k for k in frames if k.startswith("images/"))
            raise ValueError(f"critic frames {side}: no {key} (has {have}); this critic reads cameras {list(cameras)}")
        arr = np.asarray(frames[key])
        if arr.dtype != np.uint8 or arr.shape != (n, h, w, 3):
            raise ValueError(f"critic frames {side}: {key} is {arr.dtype} {arr.shape}; send uint8 [{n}, {h}, {w}, 3]")
    state = np.asarray(frames.get("state"))
    if state.shape != (n, state_dim) or not np.issubdtype(state.dtype, np.floating):
        raise ValueError(f"critic frames {side}: state is {state.dtype} {state.shape}; send float32 [{n}, {state_dim}]")
    if not np.isfinite(state).all():
        raise ValueError(f"critic frames {side}: state has NaN/Inf values")


class VLMCriticBackend(LocalCriticBackend):
    """``LocalCriticBackend`` over a ``VLMProgressCritic`` with request checks (camera set, uint8
    [B, H, W, 3] at the trained size, finite state) before anything reaches the network."""

    def score(self, frames_a: Mapping[str, np.ndarray], frames_b: Mapping[str, np.ndarray],
              instructions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        c = self.model.cfg
        for side, frames in (("a", frames_a), ("b", frames_b)):
            check_frames(frames, c.cameras, c.image_hw, c.state_dim, len(instructions), side)
        return super().score(frames_a, frames_b, instructions)

    @property
    def metadata(self) -> dict[str, Any]:
        m = self.model
        return {"name": "vlm_progress_critic", "backend": "local", "architecture": m.backbone.config.model_type,
                "cameras": list(m.cfg.cameras), "image_hw": list(m.cfg.image_hw), "dtype": str(m.dtype),
                "params": int(sum(p.numel() for p in m.parameters()))}


def vlm_backend_from_config(cc: Any) -> VLMCriticBackend:
    """CriticConfig (``kind=vlm``) -> backend on ``critic.device`` with ``critic.dtype``."""
    if not cc.vlm_path:
        raise ValueError("critic.kind=vlm needs critic.vlm_path=DIR (a VLM critic from "
                         "`hil-robot train-critic critic.kind=vlm out=DIR`)")
    device = cc.device if cc.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    return VLMCriticBackend(load_vlm_critic(cc.vlm_path, device=device, dtype=cc.dtype), device=device)
