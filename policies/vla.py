"""The VLA as a Policy: network (``policies.vla_model``) + input transforms + normalisation stats.

    policy = make_vla_policy(cfg)              # fresh, or loaded from cfg.policy.checkpoint
    out = policy.infer(obs)                    # {"actions": float32[H, 7] in [-1, 1], "policy_version", ...}
    loss = policy.model.compute_loss(batch_to_torch(replay_batch, "cpu"))   # Tensor[B], for the learner
    policy.load_weights(weights, version)      # weight bus swap, between infer calls

Replay batches (``hil_robot.data`` ``sample``) are converted by :func:`batch_to_torch`; live
observations (``hil_robot.types`` contract) by :func:`obs_to_batch`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Mapping

import numpy as np
import torch

from hil_robot.types import STATE_DIM, ContractError, validate_observation
from policies.normalize import stats_from_batch
from policies.text import embed_instructions
from policies.vla_model import SIZE_PRESETS, VLAModel, VLAModelConfig, check_images, count_params

log = logging.getLogger(__name__)

_NUMERIC_PASSTHROUGH = ("action", "action_policy", "reward", "done", "truncated", "weight", "segment",
                        "episode_index", "step_index")


def _tensor(arr: Any, dtype: Any = None) -> torch.Tensor:
    """numpy -> torch without a copy when possible (copies read-only or non-contiguous buffers)."""
    return torch.from_numpy(np.require(np.asarray(arr, dtype=dtype), requirements=("C", "W")))


def _images(batch: Mapping[str, Any], prefix: str, device: torch.device) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in batch.items():
        if key.startswith(prefix):
            arr = np.asarray(value)
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
                raise ContractError(f"{key} must be uint8 [B, H, W, 3], got {arr.dtype} {arr.shape}")
            out[key[len(prefix):]] = _tensor(arr).to(device, non_blocking=True)
    return out


def batch_to_torch(batch: Mapping[str, Any], device: str | torch.device = "cpu") -> dict[str, Any]:
    """Replay dict (numpy, keys as in the episode store's ``sample``) -> model batch (torch).

    Output: ``images`` {cam: uint8 [B,H,W,3]}, ``state`` [B,15], ``text`` [B,384], ``actions`` [B,T,7],
    ``action_is_pad`` bool [B,T]; when present also ``next_images``, ``next_state``, ``task_state``,
    ``next_task_state`` and the numeric fields (``action``, ``reward``, ``done``, ``truncated``,
    ``weight``, ``segment``, ...) as tensors, and ``instruction`` as the list of strings.
    """
    device = torch.device(device)
    if "obs/state" not in batch or "instruction" not in batch:
        raise ContractError(f"replay batch needs 'obs/state' and 'instruction'; got keys {sorted(batch)}")
    instructions = [str(s) for s in batch["instruction"]]
    state = np.asarray(batch["obs/state"], dtype=np.float32)
    if len(instructions) != state.shape[0]:
        raise ContractError(f"batch has {state.shape[0]} states but {len(instructions)} instructions")
    out: dict[str, Any] = {
        "images": _images(batch, "obs/images/", device),
        "state": _tensor(state).to(device),
        "text": torch.from_numpy(embed_instructions(instructions)).to(device),
        "instruction": instructions,
    }
    if "actions" in batch:
        out["actions"] = _tensor(batch["actions"], np.float32).to(device)
        pad = batch.get("action_is_pad")
        pad = np.zeros(out["actions"].shape[:2], bool) if pad is None else np.asarray(pad, dtype=bool)
        out["action_is_pad"] = _tensor(pad).to(device)
    elif "action" in batch:
        out["actions"] = _tensor(batch["action"], np.float32)[:, None].to(device)
        out["action_is_pad"] = torch.zeros(out["actions"].shape[:2], dtype=torch.bool, device=device)
    if "next_obs/state" in batch:
        out["next_images"] = _images(batch, "next_obs/images/", device)
        out["next_state"] = _tensor(batch["next_obs/state"], np.float32).to(device)
    for src, dst in (("obs/task_state", "task_state"), ("next_obs/task_state", "next_task_state")):
        if src in batch:
            out[dst] = _tensor(batch[src], np.float32).to(device)
    for key in _NUMERIC_PASSTHROUGH:
        if key in batch:
            out[key] = _tensor(batch[key]).to(device)
    return out


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor as numpy on the CPU (a view when possible); bfloat16 (``policy.dtype=bf16``), which
    numpy lacks, travels and is described as float32."""
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def next_obs_view(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The ``next_*`` half of a converted batch as a model batch (same instruction)."""
    return {"images": batch["next_images"], "state": batch["next_state"], "text": batch["text"]}


def obs_to_batch(obs: Mapping[str, Any], device: str | torch.device = "cpu") -> dict[str, Any]:
    """One observation (types contract) -> a model batch of size 1."""
    device = torch.device(device)
    images = {k[len("images/"):]: _tensor(v)[None].to(device)
              for k, v in obs.items() if k.startswith("images/")}
    return {
        "images": images,
        "state": _tensor(obs["state"], np.float32)[None].to(device),
        "text": torch.from_numpy(embed_instructions([str(obs.get("prompt", ""))])).to(device),
        "instruction": [str(obs.get("prompt", ""))],
    }


class VLAPolicy:
    """Policy + WeightUpdatable around a :class:`VLAModel`. Thread-safe: ``infer`` and
    ``load_weights`` take the same lock, so a weight swap lands between two chunks."""

    def __init__(self, model: VLAModel, *, version: int = 0, device: str | torch.device = "cpu", seed: int = 0) -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.version = int(version)
        self.seed = seed
        self._generator = torch.Generator().manual_seed(seed)
        self._lock = threading.Lock()

    @property
    def config(self) -> VLAModelConfig:
        return self.model.cfg

    # ------------------------------------------------------------------ Policy
    def infer(self, obs: dict[str, Any], noise: Any = None) -> dict[str, Any]:
        """obs (types contract) -> {"actions": float32[H, 7] in [-1, 1], "policy_version", "infer_ms"}.

        noise (flow head): the flow's initial noise, float [H, D] or [1, H, D], instead of a random
        draw (DSRL steering; also the ``noise`` field of the openpi front)."""
        t0 = time.perf_counter()
        obs = validate_observation(obs, cameras=self.config.cameras)
        batch = obs_to_batch(obs, self.device)
        check_images(batch["images"], self.config)
        with self._lock:
            was_training = self.model.training
            self.model.eval()
            if noise is not None:
                noise = torch.tensor(np.asarray(noise, np.float32)).reshape(1, *np.shape(noise)[-2:])  # a copy: bus buffers are read-only
            actions = self.model.sample_actions(batch, self._generator, noise=noise)[0]
            self.model.train(was_training)
            version = self.version
        out = actions.float().cpu().numpy()
        if not np.isfinite(out).all():
            raise RuntimeError(f"VLA (weights version {version}) produced non-finite actions; reload a good checkpoint")
        return {"actions": out.astype(np.float32), "policy_version": version,
                "infer_ms": (time.perf_counter() - t0) * 1e3}

    def infer_batch(self, observations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Several observations (e.g. from several robots) in one forward pass; same outputs as ``infer``."""
        t0 = time.perf_counter()
        checked = [validate_observation(o, cameras=self.config.cameras) for o in observations]
        singles = [obs_to_batch(o, self.device) for o in checked]
        for single in singles:
            check_images(single["images"], self.config)
        batch = {"images": {c: torch.cat([b["images"][c] for b in singles]) for c in self.config.cameras},
                 "state": torch.cat([b["state"] for b in singles]), "text": torch.cat([b["text"] for b in singles]),
                 "instruction": [s for b in singles for s in b["instruction"]]}
        with self._lock:
            was_training = self.model.training
            self.model.eval()
            actions = self.model.sample_actions(batch, self._generator).float().cpu().numpy()
            self.model.train(was_training)
            version = self.version
        if not np.isfinite(actions).all():
            raise RuntimeError(f"VLA (weights version {version}) produced non-finite actions; reload a good checkpoint")
        ms = (time.perf_counter() - t0) * 1e3
        return [{"actions": a.astype(np.float32), "policy_version": version, "infer_ms": ms} for a in actions]

    def warm_up(self) -> float:
        """One inference on a blank observation, so the first real request does not pay the lazy
        start-up costs (kernel selection, text encoding); the noise generator is re-seeded after,
        so what follows is exactly what a fresh policy would do. -> seconds taken."""
        h, w = self.config.image_hw
        obs: dict[str, Any] = {f"images/{c}": np.zeros((h, w, 3), np.uint8) for c in self.config.cameras}
        obs.update(state=np.zeros(STATE_DIM, np.float32), prompt="warm up", timestamp_s=0.0)
        t0 = time.perf_counter()
        self.infer(obs)
        self.reset()
        return time.perf_counter() - t0

    def reset(self) -> None:
        """The VLA is stateless across steps; re-seed the flow-matching noise for reproducible episodes."""
        self._generator.manual_seed(self.seed)

    @property
    def metadata(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "name": "vla", "arch": getattr(cfg, "arch", "native"), "head": cfg.head,
            "action_horizon": cfg.action_horizon, "action_dim": cfg.action_dim,
            "cameras": list(cfg.cameras), "image_hw": list(cfg.image_hw), "policy_version": self.version,
            "params": count_params(self.model), "norm_stats_count": int(self.model.norm.count[0].item()),
        }

    # ------------------------------------------------------------------ WeightUpdatable
    def weight_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Every parameter and buffer (norm stats included): name -> (shape, numpy dtype)."""
        return {k: (tuple(v.shape), str(to_numpy(v).dtype)) for k, v in self.model.state_dict().items()}

    def state_numpy(self) -> dict[str, np.ndarray]:
        """Current weights as numpy arrays (what a WeightPublisher sends)."""
        with self._lock:
            return {k: to_numpy(v).copy() for k, v in self.model.state_dict().items()}

    def load_weights(self, weights: dict[str, np.ndarray], version: int) -> None:
        """Install a full set of weights (validated here too) and report ``version`` from now on."""
        tensors = validate_weights(weights, self.weight_spec(), what="weight update")
        with self._lock:
            self.model.load_state_dict(tensors, strict=True)
            self.version = int(version)

    # ------------------------------------------------------------------ deltas (finetune=lora|expert)
    def adapter_info(self) -> dict[str, Any]:
        """Fine-tuning mode plus LoRA rank/alpha/targets: a delta must have been made for the same."""
        return self.model.adapter_info()

    def delta_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """The trainable tensors only (LoRA A/B, or the action expert): name -> (shape, numpy dtype)."""
        names = set(self.model.delta_names())
        return {k: v for k, v in self.weight_spec().items() if k in names}

    def delta_numpy(self) -> dict[str, np.ndarray]:
        """Current trainable tensors (copies) — what a delta update carries."""
        names = set(self.model.delta_names())
        with self._lock:
            return {k: to_numpy(v).copy() for k, v in self.model.state_dict().items() if k in names}

    def base_numpy(self) -> dict[str, np.ndarray]:
        """The frozen tensors (views on CPU, no copy): everything a delta does not carry."""
        names = set(self.model.delta_names())
        return {k: to_numpy(v) for k, v in self.model.state_dict().items() if k not in names}

    def base_id(self) -> str:
        """Checksum of the frozen weights + adapter settings (``transport.weights.compute_base_id``)."""
        from hil_robot.transport.weights import compute_base_id

        with self._lock:
            return compute_base_id(self.base_numpy(), self.adapter_info())

    def load_delta(self, weights: dict[str, np.ndarray], version: int) -> None:
        """Install the trainable tensors only (the frozen base stays): a copy into the existing
        parameters — no merge, so a swap costs a few MB of copies however large the base is."""
        spec = self.delta_spec()
        if set(weights) != set(spec):
            raise ValueError(f"delta update does not match the model: missing {sorted(set(spec) - set(weights))[:5]}, "
                             f"unexpected {sorted(set(weights) - set(spec))[:5]} (was it made for another adapter?)")
        arrays = {}
        for name, (shape, dtype) in spec.items():
            arr = np.asarray(weights[name])
            if arr.shape != tuple(shape) or arr.dtype != np.dtype(dtype) or not np.isfinite(arr).all():
                raise ValueError(f"delta update: {name} is {arr.dtype} {arr.shape} (finite: {bool(np.isfinite(arr).all())}), "
                                 f"the model needs finite {dtype} {tuple(shape)}")
            arrays[name] = arr
        params = dict(self.model.named_parameters())
        with self._lock, torch.no_grad():
            for name, arr in arrays.items():
                p = params[name]
                if p.device.type == "cpu":  # a plain memcpy: torch's per-op thread pool cost ~0.4 ms a tensor here
                    np.copyto(p.detach().numpy(), arr)
                else:
                    p.copy_(torch.from_numpy(np.ascontiguousarray(arr)), non_blocking=True)
            self.version = int(version)

    def set_norm_stats(self, stats: Mapping[str, Any]) -> None:
        with self._lock:
            self.model.norm.set_stats(stats)

    def fit_norm_stats(self, replay_batch: Mapping[str, Any]) -> dict[str, Any]:
        """Compute state/action stats from a (large) replay sample and install them."""
        stats = stats_from_batch(replay_batch)
        self.set_norm_stats(stats)
        return stats


def validate_weights(weights: Mapping[str, Any], spec: Mapping[str, tuple[tuple[int, ...], str]], *,
                     what: str) -> dict[str, torch.Tensor]:
    """Check names, shapes and finiteness against ``spec``; -> tensors. Errors say what is wrong."""
    missing = sorted(set(spec) - set(weights))
    unexpected = sorted(set(weights) - set(spec))
    if missing or unexpected:
        raise ValueError(
            f"{what} does not match the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} (was it made for another config?)"
        )
    out = {}
    for name, (shape, dtype) in spec.items():
        arr = weights[name]
        tensor = arr if isinstance(arr, torch.Tensor) else torch.tensor(np.asarray(arr))  # copy: bus buffers may be read-only
        if tuple(tensor.shape) != tuple(shape):
            raise ValueError(f"{what}: {name} has shape {tuple(tensor.shape)}, the model needs {tuple(shape)}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{what}: {name} contains NaN/Inf values; refusing to load")
        out[name] = tensor
    return out


def model_config_from(cfg: Any) -> VLAModelConfig:
    """RootConfig -> VLAModelConfig (cameras and image size from sim, the rest from policy)."""
    pc = cfg.policy
    preset = dict(SIZE_PRESETS[pc.size])
    if getattr(pc, "backbone", ""):
        preset["backbone"] = pc.backbone
    return VLAModelConfig(
        cameras=tuple(cfg.sim.cameras), image_hw=(cfg.sim.image_height, cfg.sim.image_width),
        action_horizon=pc.action_horizon, head=pc.head, flow_steps=getattr(pc, "flow_steps", 10),
        augment_shift_px=getattr(pc, "augment_shift_px", 4),
        advantage_cond=bool(getattr(getattr(cfg, "learner", None), "advantage_conditioning", False)), **preset,
    )


def apply_finetune(model: VLAModel, cfg: Any) -> None:
    """``learner.finetune=lora|expert``: a full model gets the adapters (or freezing) in place; a
    model already in that mode must match its rank/targets (else the deltas could not load)."""
    lc = getattr(cfg, "learner", None)
    if getattr(lc, "advantage_conditioning", False):  # RECAP-style: the VLA gets its advantage token
        if not hasattr(model, "enable_advantage_cond"):
            raise ValueError("learner.advantage_conditioning adds an advantage token to the VLA's observation tokens; "
                             "it is built for policy.arch=native (the VLM VLA has none yet): use policy=vla")
        model.enable_advantage_cond()
    mode = getattr(lc, "finetune", "full")
    if mode == "full":
        return  # a LoRA/expert checkpoint is served as it was trained
    targets = tuple(lc.lora_targets)
    if hasattr(model, "lora_targets_for"):  # the VLM VLA reads the default list as its own projections
        targets = model.lora_targets_for(targets)
    if model.cfg.finetune == "full":
        model.enable_finetune(mode, lc.lora_rank, lc.lora_alpha, targets)
        return
    want = {"finetune": mode}
    if mode == "lora":
        want.update(rank=int(lc.lora_rank), alpha=float(lc.lora_alpha), targets=sorted(targets))
    if model.adapter_info() != want:
        raise ValueError(f"the checkpoint was trained with {model.adapter_info()} but learner.finetune asks for {want}; "
                         "set learner.finetune/lora_rank/lora_alpha/lora_targets to the checkpoint's values")


def make_vla_policy(cfg: Any) -> VLAPolicy:
    """Load ``cfg.policy.checkpoint`` when set (its stored config and stats win), else fresh weights;
    then ``learner.finetune`` (lora/expert) is applied (see :func:`apply_finetune`)."""
    device = getattr(cfg.policy, "device", "cpu") or "cpu"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.policy.checkpoint:
        from policies.checkpoint import load

        policy = load(cfg.policy.checkpoint, device=device)
        want = tuple(cfg.sim.cameras)
        if tuple(policy.config.cameras) != want:
            log.warning("checkpoint cameras %s differ from sim.cameras %s; the checkpoint wins",
                        policy.config.cameras, want)
        apply_finetune(policy.model, cfg)
        policy.model.to(policy.device)  # new adapter parameters join the model's device
        return policy
    if getattr(cfg.policy, "arch", "native") == "vlm":  # policy=vla_vlm: SmolVLM/Idefics3 + action expert
        from policies.vla_vlm import make_vlm_vla_model

        model = make_vlm_vla_model(cfg)
        apply_finetune(model, cfg)
        return VLAPolicy(model, device=device, seed=cfg.experiment.seed)
    model = VLAModel(model_config_from(cfg))
    if cfg.policy.pretrained_backbone:
        from policies.vision import load_backbone_weights

        load_backbone_weights(model.backbone, cfg.policy.pretrained_backbone)
    apply_finetune(model, cfg)
    return VLAPolicy(model, device=device, seed=cfg.experiment.seed)
