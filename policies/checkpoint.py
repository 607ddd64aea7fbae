"""Checkpoints: a directory with ``model.safetensors`` (weights + normalisation buffers) and
``config.json`` (kind, model config, step, weight version, norm stats, sha256 of the weights).

* Writing is atomic: files go to a temporary sibling directory which then replaces the target, so a
  reader sees the old checkpoint or the new one, never a mix.
* Loading never unpickles (safetensors + JSON only) and validates the names, shapes and finiteness
  of every tensor against a freshly built model, with errors that say what to do.

    save("runs/x/ckpt", policy, step=1200, version=7)
    policy = load("runs/x/ckpt")          # VLAPolicy with the saved norm stats and version
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

FORMAT = "hil_robot.checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checkpoint(directory: str | Path, kind: str, model_config: Mapping[str, Any],
                     tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any] | None = None,
                     extra_files: Callable[[Path], None] | None = None) -> Path:
    """Atomically write ``directory`` with the given tensors and JSON metadata (``extra_files(tmp)``
    may add files, e.g. a tokenizer, to the directory before it is published). -> the directory."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(flat, str(tmp / WEIGHTS_FILE))
        if extra_files is not None:
            extra_files(tmp)
        doc = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
            "model_config": dict(model_config), "weights_sha256": _sha256(tmp / WEIGHTS_FILE),
            "created_time_s": time.time(), **dict(meta or {}),
        }
        with open(tmp / CONFIG_FILE, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / WEIGHTS_FILE, "rb") as f:
            os.fsync(f.fileno())
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


def read_checkpoint(directory: str | Path, kind: str | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """-> (config.json contents, tensors). Checks format, kind and the weights' sha256."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint directory {directory} does not exist; pass a directory written by "
                              "policies.checkpoint.save (it holds model.safetensors + config.json)")
    cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise CheckpointError(f"checkpoint {directory} has no {p.name}; it is incomplete or not a hil_robot checkpoint")
    try:
        doc = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e}); the checkpoint is corrupt, use an older one") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{cfg_path} is not a hil_robot checkpoint config (format={doc.get('format') if isinstance(doc, dict) else None!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{cfg_path}: format_version {doc.get('format_version')} unsupported (this build reads {FORMAT_VERSION})")
    if kind is not None and doc.get("kind") != kind:
        raise CheckpointError(f"{directory} holds a {doc.get('kind')!r} checkpoint, expected {kind!r}")
    want = doc.get("weights_sha256")
    if want and _sha256(w_path) != want:
        raise CheckpointError(f"{w_path} does not match the sha256 in {CONFIG_FILE}: the weights file is truncated "
                              "or from another checkpoint")
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{w_path} is not a readable safetensors file ({e}); checkpoints are never unpickled") from None
    return doc, tensors


def check_tensors(tensors: Mapping[str, torch.Tensor], module: torch.nn.Module, where: str) -> dict[str, torch.Tensor]:
    """Names, shapes and finiteness of ``tensors`` against ``module``'s state dict."""
    from policies.vla import validate_weights

    spec = {k: (tuple(v.shape), str(v.dtype)) for k, v in module.state_dict().items()}
    try:
        return validate_weights(tensors, spec, what=where)
    except ValueError as e:
        raise CheckpointError(str(e)) from None


# ----------------------------------------------------------------------------- VLA policies


def save(directory: str | Path, policy: Any, step: int = 0, version: int | None = None,
         extra: Mapping[str, Any] | None = None) -> Path:
    """Save a VLAPolicy (weights, model config, norm stats, step, weight version)."""
    version = policy.version if version is None else int(version)
    meta = {"step": int(step), "version": version, "norm_stats": policy.model.norm.stats(),
            "params": sum(p.numel() for p in policy.model.parameters()), "extra": dict(extra or {})}
    return write_checkpoint(directory, "vla", policy.config.to_dict(), policy.model.state_dict(), meta,
                            extra_files=getattr(policy.model, "save_extra_files", None))


def load(directory: str | Path, device: str | torch.device = "cpu", seed: int = 0) -> Any:
    """-> VLAPolicy with the saved weights, norm stats and version (``policy.checkpoint_step`` too)."""
    from policies.vla import VLAPolicy
    from policies.vla_model import VLAModel, VLAModelConfig

    doc, tensors = read_checkpoint(directory, kind="vla")
    try:
        if isinstance(doc.get("model_config"), dict) and doc["model_config"].get("arch") == "vlm":
            from policies.vla_vlm import TOKENIZER_DIR, VLMVLAConfig, rebuild_vlm_vla

            if not (Path(directory) / TOKENIZER_DIR).is_dir():
                raise CheckpointError(f"checkpoint {directory} has no {TOKENIZER_DIR}/; a VLM VLA checkpoint is incomplete without it")
            model = rebuild_vlm_vla(VLMVLAConfig.from_dict(doc["model_config"]), Path(directory) / TOKENIZER_DIR)
        else:
            model = VLAModel(VLAModelConfig.from_dict(doc["model_config"]))
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, OSError) as e:
        raise CheckpointError(f"{directory}/{CONFIG_FILE}: bad model_config ({e})") from None
    model.load_state_dict(check_tensors(tensors, model, f"checkpoint {directory}"), strict=True)
    _check_norm_stats(doc, model, directory)
    policy = VLAPolicy(model, version=int(doc.get("version", 0)), device=device, seed=seed)
    policy.checkpoint_step = int(doc.get("step", 0))  # type: ignore[attr-defined]
    return policy


def _check_norm_stats(doc: Mapping[str, Any], model: Any, directory: Any) -> None:
    """The JSON copy of the stats (for people) must agree with the tensors (what the model uses)."""
    stats = doc.get("norm_stats")
    if not stats:
        return
    for name in ("state_mean", "state_std", "action_mean", "action_std"):
        tensor = getattr(model.norm, name).numpy()
        if name not in stats or not np.allclose(np.asarray(stats[name], np.float32), tensor, rtol=1e-5, atol=1e-6):
            raise CheckpointError(f"{directory}: norm_stats.{name} in {CONFIG_FILE} disagrees with the weights file")


# ----------------------------------------------------------------------------- progress critic


def save_critic(directory: str | Path, model: Any, step: int = 0, extra: Mapping[str, Any] | None = None) -> Path:
    """Save a ``policies.critic.ProgressCritic`` (weights incl. state stats, network config)."""
    meta = {"step": int(step), "params": sum(p.numel() for p in model.parameters()), "extra": dict(extra or {})}
    return write_checkpoint(directory, "critic", model.cfg.to_dict(), model.state_dict(), meta)


def load_critic(directory: str | Path) -> Any:
    """-> ProgressCritic in eval mode (validated like a VLA checkpoint)."""
    from policies.critic import CriticNetConfig, ProgressCritic

    doc, tensors = read_checkpoint(directory, kind="critic")
    try:
        cfg = CriticNetConfig.from_dict(doc["model_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{directory}/{CONFIG_FILE}: bad model_config ({e})") from None
    model = ProgressCritic(cfg)
    model.load_state_dict(check_tensors(tensors, model, f"critic checkpoint {directory}"), strict=True)
    return model.eval()
