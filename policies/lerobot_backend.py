"""A LeRobot policy (ACT, SmolVLA, π0, π0.5) as one of our ``Policy``s, hosted inside our policy server.

Runs only in the LeRobot environment (Python >= 3.12, ``make lerobot-env``); ``hil-robot run ...
policy=lerobot`` starts ``serve-policy`` with that interpreter, so the robot side never imports torch
and talks to it over our zmq protocol like to any other policy server.

    policy = make_lerobot_policy(cfg)      # cfg.policy.checkpoint: a LeRobot save_pretrained directory
    out = policy.infer(obs)                # {"actions": f32[H, D] native, "policy_version": 0, ...}
    policy.reset()                         # clears LeRobot's internal action/observation queues

What happens per request (the statistics come from the checkpoint, not from our config):

    our obs --obs_map--> {observation.images.<cam>: f32[1, 3, H, W] in [0, 1], observation.state: f32[1, D],
                          task: str} --checkpoint preprocessor (normalise, tokenise, device)-->
    predict_action_chunk --checkpoint postprocessor (unnormalise)--> f32[H, D] native actions

The chunk is returned in the checkpoint's native action space (``metadata["action_space"]``); the
controller's action adapter and the always-on safety filter handle the rest.

Weight updates (the weight bus, like ``policies.vla.VLAPolicy``): ``weight_spec`` / ``state_numpy`` /
``load_weights`` (validated names, shapes, finite; the last good weights stay on any error) and, with
``learner.finetune=lora|expert`` (:func:`apply_finetune`), the delta interface ``delta_spec`` /
``delta_numpy`` / ``load_delta`` / ``base_numpy`` / ``base_id`` / ``adapter_info``. LoRA adapters are
peft's (``inject_adapter_in_model``) on the LeRobot model's layers (:data:`LORA_TARGETS`); expert-only
training trains :data:`EXPERT_PREFIXES`. ``hil_robot.learn.lerobot_bc`` is the learner's side.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hil_robot.config import ConfigError
from hil_robot.obs_mapping import ObsMapping, ObsMappingError

log = logging.getLogger(__name__)

IMAGE_KEY_PREFIX = "observation.images."
STATE_KEY = "observation.state"
TASK_KEY = "task"
LANGUAGE_TYPES = ("smolvla", "pi0", "pi05")  # these tokenise ``task`` (our obs["prompt"])
FINETUNE_MODES = ("full", "lora", "expert")
# learner.finetune=expert: the parameters that turn the (frozen) observation features into actions
EXPERT_PREFIXES: dict[str, tuple[str, ...]] = {
    "act": ("model.decoder.", "model.decoder_pos_embed.", "model.action_head."),  # transformer decoder + action head
    "smolvla": ("model.vlm_with_expert.lm_expert.", "model.state_proj.", "model.action_in_proj.",  # the action expert
                "model.action_out_proj.", "model.action_time_mlp_in.", "model.action_time_mlp_out."),  # + projections
}
# learner.finetune=lora default targets: fnmatch patterns over module names (a pattern also matches
# as a dotted suffix). ACT: the feed-forward Linears of every encoder and decoder layer and the action
# head. ACT's q/k/v/out live in nn.MultiheadAttention, which peft adapts only by merging the adapter
# into the frozen weights and subtracting it again on every forward: W + d - d drifts the base in
# float32 (measured: the base changed after two updates), which breaks the bit-exact base and its
# base_id the delta bus relies on, so attention modules are refused as targets. SmolVLA: the action
# expert's attention and MLP projections (plain Linears, called through their forward).
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "act": ("linear1", "linear2", "action_head"),
    "smolvla": tuple(f"lm_expert.*.{n}" for n in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj")),
}


class LeRobotObservationError(ValueError):
    """The observation does not give a feature the LeRobot policy needs (named, with shapes)."""


def read_checkpoint_config(path: str | Path, expected_type: str) -> dict[str, Any]:
    """config.json of a LeRobot checkpoint directory, checked: present, a policy config, of ``expected_type``."""
    ckpt = Path(path)
    if not ckpt.is_dir():
        raise ConfigError(f"policy.checkpoint={str(path)!r} is not a directory; point it at a LeRobot save_pretrained "
                          "directory (config.json + model.safetensors + policy_*processor files). A random-weight one "
                          "for tests: .venv-lerobot/bin/python -m policies.lerobot_tiny out=DIR type=act")
    cfg_path = ckpt / "config.json"
    if not cfg_path.is_file():
        raise ConfigError(f"{cfg_path} is missing: {ckpt} is not a LeRobot policy checkpoint")
    try:
        data = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{cfg_path} is not readable JSON ({e})") from None
    kind = data.get("type") if isinstance(data, dict) else None
    if not isinstance(kind, str):
        raise ConfigError(f"{cfg_path} has no policy 'type' (act, smolvla, pi0, ...): not a LeRobot policy config")
    if kind != expected_type:
        raise ConfigError(f"{cfg_path} is a LeRobot {kind!r} policy but policy.lerobot_type={expected_type!r}; "
                          f"set policy.lerobot_type={kind}")
    if not (ckpt / "model.safetensors").is_file():
        raise ConfigError(f"{ckpt / 'model.safetensors'} is missing: the checkpoint has no weights")
    for name in ("policy_preprocessor.json", "policy_postprocessor.json"):
        if not (ckpt / name).is_file():
            raise ConfigError(f"{ckpt / name} is missing: the checkpoint carries no pre/post-processor "
                              "(normalisation statistics); save it with the policy's processors")
    return data


def default_obs_map(input_features: Mapping[str, Any], kind: str) -> dict[str, str]:
    """``observation.images.<cam>`` <- ``images/<cam>``, ``observation.state`` <- ``state``, ``task`` <- ``prompt``."""
    out: dict[str, str] = {}
    for key in input_features:
        if key.startswith(IMAGE_KEY_PREFIX):
            out[key] = "images/" + key[len(IMAGE_KEY_PREFIX):]
        elif key == STATE_KEY:
            out[key] = "state"
        else:
            raise ConfigError(f"the checkpoint needs feature {key!r}, which has no default source in our observation; "
                              f"map it in policy.obs_map (e.g. policy.obs_map={{{key}: state[0:8]}})")
    if kind in LANGUAGE_TYPES:
        out[TASK_KEY] = "prompt"
    return out


class LeRobotPolicy:
    """``Policy`` around a LeRobot ``PreTrainedPolicy`` and the processors saved with it."""

    def __init__(self, policy: Any, preprocessor: Any, postprocessor: Any, kind: str, obs_map: Mapping[str, str],
                 *, checkpoint: str = "", device: str = "cpu", action_space: str = "ee_delta") -> None:
        import torch

        self._torch = torch
        self.policy, self.pre, self.post = policy, preprocessor, postprocessor
        self.kind, self.device, self.checkpoint = kind, device, checkpoint
        self.inputs = dict(policy.config.input_features)
        self.action_dim = int(policy.config.output_features["action"].shape[0])
        self.horizon = int(policy.config.chunk_size)
        missing = [k for k in self.inputs if k not in obs_map]
        if missing:
            raise ConfigError(f"policy.obs_map gives no source for the checkpoint's feature(s) {', '.join(missing)} "
                              f"(it maps: {', '.join(obs_map) or 'nothing'})")
        if kind in LANGUAGE_TYPES and TASK_KEY not in obs_map:
            raise ConfigError(f"a {kind} policy needs the instruction: add {TASK_KEY}: prompt to policy.obs_map")
        self.mapping = ObsMapping(obs_map)
        self.action_space = action_space
        self.version = 0
        self.finetune = "full"
        self.lora: dict[str, Any] = {}  # rank, alpha, targets (the patterns), modules (what they matched)
        self._lock = threading.Lock()  # infer and weight swaps: a swap lands between two chunks
        self.policy.eval()

    # ------------------------------------------------------------------ observation -> batch
    def observation_batch(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """One observation -> the LeRobot batch of size 1 before the preprocessor (also the learner's path)."""
        return self._batch(obs)

    def _batch(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        torch = self._torch
        try:
            mapped = self.mapping.apply(obs)
        except ObsMappingError as e:
            raise LeRobotObservationError(str(e)) from None
        batch: dict[str, Any] = {}
        for key, feature in self.inputs.items():
            value = np.asarray(mapped[key])
            want = tuple(int(s) for s in feature.shape)
            if key.startswith(IMAGE_KEY_PREFIX):
                if value.ndim != 3 or (value.shape[2], *value.shape[:2]) != want:
                    raise LeRobotObservationError(
                        f"feature {key!r} needs an image of {want[1]}x{want[2]} (3 channels) but {self.mapping.spec[key]!r} "
                        f"gave shape {value.shape}; render at that size (sim.image_height/width) or add "
                        f"|resize:{want[1]}x{want[2]} to policy.obs_map[{key!r}]")
                img = torch.from_numpy(np.ascontiguousarray(value.transpose(2, 0, 1))).float().div_(255.0)
                batch[key] = img.unsqueeze(0)
            else:
                if value.shape != want:
                    raise LeRobotObservationError(f"feature {key!r} needs shape {want} but {self.mapping.spec[key]!r} gave "
                                                  f"shape {value.shape}; fix policy.obs_map[{key!r}]")
                if not np.isfinite(value).all():
                    raise LeRobotObservationError(f"feature {key!r} ({self.mapping.spec[key]!r}) holds NaN/Inf")
                batch[key] = torch.from_numpy(value.astype(np.float32)).unsqueeze(0)
        if TASK_KEY in self.mapping.spec:
            task = mapped[TASK_KEY]
            if self.kind in LANGUAGE_TYPES and not task:
                raise LeRobotObservationError(f"a {self.kind} policy needs an instruction but obs['prompt'] is empty")
            batch[TASK_KEY] = task
        return batch

    # ------------------------------------------------------------------ Policy
    def infer(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        torch = self._torch
        t0 = time.perf_counter()
        batch = self.pre(self._batch(obs))
        with self._lock, torch.inference_mode():
            was_training = self.policy.training
            self.policy.eval()
            chunk = self.policy.predict_action_chunk(batch)
            self.policy.train(was_training)
            version = self.version
        chunk = self.post(chunk)
        actions = chunk.detach().to("cpu").float().numpy()
        actions = actions[0] if actions.ndim == 3 else actions
        if actions.ndim != 2 or actions.shape[1] != self.action_dim:
            raise RuntimeError(f"{self.kind} returned an action chunk of shape {chunk.shape}; expected [1, H, {self.action_dim}]")
        if not np.isfinite(actions).all():
            raise RuntimeError(f"{self.kind} (weights version {version}) produced non-finite actions")
        return {"actions": np.ascontiguousarray(actions, dtype=np.float32), "policy_version": version,
                "infer_ms": (time.perf_counter() - t0) * 1e3}

    def reset(self) -> None:
        with self._lock:
            self.policy.reset()  # LeRobot's action / observation queues (select_action state)

    def warm_up(self) -> float:
        """One inference on a neutral observation so the first real request does not pay start-up costs."""
        t0 = time.perf_counter()
        obs: dict[str, Any] = {"prompt": "pick up the cube", "state": np.zeros(15, np.float32)}
        for key, spec in self.mapping.spec.items():
            src = spec.split("|")[0].strip()
            if key.startswith(IMAGE_KEY_PREFIX) and src.startswith("images/"):
                _, h, w = (int(s) for s in self.inputs[key].shape)
                obs[src] = np.zeros((h, w, 3), np.uint8)
        try:
            self.infer(obs)
        except LeRobotObservationError as e:  # a custom mapping over other keys: the first request warms up
            log.info("warm-up skipped (%s)", e)
        self.reset()
        return time.perf_counter() - t0

    @property
    def metadata(self) -> dict[str, Any]:
        return {"name": f"lerobot_{self.kind}", "backend": "lerobot", "lerobot_type": self.kind,
                "checkpoint": self.checkpoint, "action_horizon": self.horizon, "action_dim": self.action_dim,
                "native_action_dim": self.action_dim, "action_space": self.action_space, "device": self.device,
                "features": {k: list(v.shape) for k, v in self.inputs.items()}, "obs_map": dict(self.mapping.spec),
                "policy_version": self.version, "finetune": self.finetune}

    # ------------------------------------------------------------------ fine-tuning modes
    def enable_finetune(self, mode: str, rank: int = 16, alpha: float = 32.0, targets: tuple[str, ...] = ()) -> None:
        """``lora``: peft adapters on the modules ``targets`` match (default :data:`LORA_TARGETS`), base
        frozen; ``expert``: only :data:`EXPERT_PREFIXES` train. Applied in place, once."""
        if mode not in FINETUNE_MODES:
            raise ConfigError(f"learner.finetune={mode!r}; choose one of {', '.join(FINETUNE_MODES)}")
        if self.finetune != "full":
            raise ValueError(f"the LeRobot policy is already finetune={self.finetune}")
        if mode == "full":
            return
        if mode == "expert" and self.kind not in EXPERT_PREFIXES:
            raise ConfigError(f"learner.finetune=expert knows the action expert of {', '.join(EXPERT_PREFIXES)}, not "
                              f"{self.kind}; use learner.finetune=lora with learner.lora_targets, or full")
        if mode == "lora":
            from peft import LoraConfig, inject_adapter_in_model

            targets = tuple(targets) or LORA_TARGETS.get(self.kind, ())
            if not targets:
                raise ConfigError(f"learner.finetune=lora on a LeRobot {self.kind}: name the modules in learner.lora_targets")
            modules = self._lora_modules(targets)
            inject_adapter_in_model(LoraConfig(r=int(rank), lora_alpha=float(alpha), target_modules=modules,
                                               lora_dropout=0.0, bias="none"), self.policy)
            self.lora = {"rank": int(rank), "alpha": float(alpha), "targets": tuple(targets), "modules": modules}
        self.finetune = mode
        for name, p in self.policy.named_parameters():
            p.requires_grad_(self.is_trainable(name))

    def _lora_modules(self, targets: tuple[str, ...]) -> list[str]:
        """Exact module names the patterns match: Linear/Conv2d only — never nn.MultiheadAttention nor a
        Linear inside one (peft merges/unmerges those per forward, drifting the frozen base; LORA_TARGETS)."""
        nn = self._torch.nn
        mha = {n for n, m in self.policy.named_modules() if isinstance(m, nn.MultiheadAttention)}
        inside_mha = {f"{n}.{c}" for n, m in self.policy.named_modules() if isinstance(m, nn.MultiheadAttention)
                      for c, _ in m.named_modules() if c}
        ok = [n for n, m in self.policy.named_modules()
              if isinstance(m, (nn.Linear, nn.Conv2d)) and n not in inside_mha]
        out: list[str] = []
        for t in targets:
            hit = [n for n in ok if fnmatch.fnmatchcase(n, t) or fnmatch.fnmatchcase(n, "*." + t)]
            if any(fnmatch.fnmatchcase(n, t) or fnmatch.fnmatchcase(n, "*." + t) for n in mha | inside_mha):
                raise ConfigError(f"learner.lora_targets: {t!r} names an nn.MultiheadAttention (or a layer inside one); "
                                  "peft adapts those by merging into the frozen weights per forward, which drifts the "
                                  "base the delta bus checks; target Linear layers (e.g. linear1, linear2)")
            if not hit:
                raise ConfigError(f"learner.lora_targets: {t!r} matches no Linear/Conv2d module of the "
                                  f"LeRobot {self.kind} (module names end in e.g. {sorted({n.rsplit('.', 1)[-1] for n in ok})[:12]}; "
                                  f"patterns like 'lm_expert.*.q_proj' work)")
            out += [n for n in hit if n not in out]
        return sorted(out)

    def is_trainable(self, name: str) -> bool:
        """Does parameter ``name`` train (and travel in a delta) under this fine-tuning mode?"""
        if self.finetune == "lora":
            return ".lora_A." in name or ".lora_B." in name
        if self.finetune == "expert":
            return name.startswith(EXPERT_PREFIXES[self.kind])
        return True

    def delta_names(self) -> list[str]:
        """State-dict names of the trainable tensors (what a delta update carries), sorted."""
        return sorted(n for n, _ in self.policy.named_parameters() if self.is_trainable(n))

    def adapter_info(self) -> dict[str, Any]:
        """Fine-tuning mode plus LoRA rank/alpha/targets: a delta must have been made for the same."""
        info: dict[str, Any] = {"finetune": self.finetune}
        if self.finetune == "lora":
            info.update(rank=self.lora["rank"], alpha=self.lora["alpha"], targets=list(self.lora["modules"]))
        return info

    # ------------------------------------------------------------------ WeightUpdatable
    def weight_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Every parameter and buffer of the LeRobot model: name -> (shape, numpy dtype)."""
        return {k: (tuple(v.shape), str(_to_numpy(v).dtype)) for k, v in self.policy.state_dict().items()}

    def state_numpy(self) -> dict[str, np.ndarray]:
        """Current weights as numpy arrays (copies): what a full update carries."""
        with self._lock:
            return {k: _to_numpy(v).copy() for k, v in self.policy.state_dict().items()}

    def load_weights(self, weights: Mapping[str, Any], version: int) -> None:
        """Install a full set of weights (validated first: nothing changes when it fails) as ``version``."""
        spec = self.weight_spec()
        checked = _validate(weights, spec, "weight update")
        current = self.policy.state_dict()
        tensors = {k: self._torch.from_numpy(np.array(a, copy=True)).to(current[k].dtype) for k, a in checked.items()}
        with self._lock:
            self.policy.load_state_dict(tensors, strict=True)
            self.version = int(version)

    def delta_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        names = set(self.delta_names())
        return {k: v for k, v in self.weight_spec().items() if k in names}

    def delta_numpy(self) -> dict[str, np.ndarray]:
        names = set(self.delta_names())
        with self._lock:
            return {k: _to_numpy(v).copy() for k, v in self.policy.state_dict().items() if k in names}

    def base_numpy(self) -> dict[str, np.ndarray]:
        """The frozen tensors (CPU views where possible): everything a delta does not carry."""
        names = set(self.delta_names())
        return {k: _to_numpy(v) for k, v in self.policy.state_dict().items() if k not in names}

    def base_id(self) -> str:
        from hil_robot.transport.weights import compute_base_id

        with self._lock:
            return compute_base_id(self.base_numpy(), self.adapter_info())

    def load_delta(self, weights: Mapping[str, Any], version: int) -> None:
        """Install the trainable tensors only (validated first; the frozen base stays)."""
        if self.finetune == "full":
            raise ValueError("a delta update arrived but this LeRobot policy is finetune=full; serve it with the "
                             "learner's learner.finetune")
        checked = _validate(weights, self.delta_spec(), "delta update")
        params = dict(self.policy.named_parameters())
        with self._lock, self._torch.no_grad():
            for name, arr in checked.items():
                p = params[name]
                if p.device.type == "cpu" and p.dtype == self._torch.float32:
                    np.copyto(p.detach().numpy(), arr)
                else:
                    p.copy_(self._torch.from_numpy(np.array(arr, copy=True)).to(p.dtype))
            self.version = int(version)


def _to_numpy(t: Any) -> np.ndarray:
    """A tensor as numpy on the CPU (a view when possible); bfloat16 travels as float32."""
    import torch

    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def _validate(weights: Mapping[str, Any], spec: Mapping[str, tuple[tuple[int, ...], str]], what: str) -> dict[str, np.ndarray]:
    """Names exactly ``spec``'s, shapes, dtypes, finite values; -> numpy arrays. Errors say what is wrong."""
    missing, unexpected = sorted(set(spec) - set(weights)), sorted(set(weights) - set(spec))
    if missing or unexpected:
        raise ValueError(f"{what} does not match the LeRobot model: missing {missing[:5]}, unexpected {unexpected[:5]} "
                         "(was it made for another checkpoint or learner.finetune/lora_rank/lora_targets?)")
    out = {}
    for name, (shape, dtype) in spec.items():
        arr = weights[name]
        arr = arr.detach().cpu().numpy() if hasattr(arr, "detach") else np.asarray(arr)
        if arr.shape != tuple(shape) or arr.dtype != np.dtype(dtype):
            raise ValueError(f"{what}: {name} is {arr.dtype} {arr.shape}, the model needs {dtype} {tuple(shape)}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ValueError(f"{what}: {name} contains NaN/Inf values; refusing to load")
        out[name] = arr
    return out


def apply_finetune(policy: LeRobotPolicy, cfg: Any) -> None:
    """``learner.finetune=lora|expert`` on a loaded LeRobot policy (the learner and the policy server
    both call it with the same config, so deltas fit). The VLA's default ``learner.lora_targets``
    list means the LeRobot type's own defaults (:data:`LORA_TARGETS`)."""
    lc = getattr(cfg, "learner", None)
    mode = getattr(lc, "finetune", "full") if lc is not None else "full"
    if mode == "full":
        return
    targets: tuple[str, ...] = ()
    if mode == "lora":
        from hil_robot.config.learner import LearnerConfig

        given = tuple(str(t) for t in lc.lora_targets)
        targets = () if given == tuple(LearnerConfig().lora_targets) else given
    policy.enable_finetune(mode, int(lc.lora_rank), float(lc.lora_alpha), targets)


def check_finetune_action_space(policy_cfg: Any) -> None:
    """Fine-tuning learns from the recorded actions, which are our normalised EE delta: the checkpoint's
    native action space must be that one (``policy.action_space=ee_delta``, signed gripper, no scales)."""
    space = getattr(policy_cfg, "action_space", "ee_delta") or "ee_delta"
    gripper = getattr(policy_cfg, "action_gripper", "signed") or "signed"
    scales = (float(getattr(policy_cfg, "action_pos_scale_m", 0.0) or 0.0),
              float(getattr(policy_cfg, "action_rot_scale_rad", 0.0) or 0.0))
    dim = int(getattr(policy_cfg, "native_action_dim", 0) or 0)
    if space != "ee_delta" or gripper != "signed" or any(scales) or dim not in (0, 7):
        raise ConfigError(
            f"fine-tuning a LeRobot policy online needs the recorded actions in the checkpoint's native action space; "
            f"the store records our normalised EE delta [dx dy dz drx dry drz g] (policy.action_space=ee_delta, "
            f"action_gripper=signed, no action scales, 7 columns), but the checkpoint is declared as "
            f"action_space={space}, action_gripper={gripper}, scales={scales}, native_action_dim={dim}. "
            "Other native spaces are not fine-tuned online yet: use a checkpoint trained on our ee_delta, or fine-tune it "
            "offline with LeRobot's scripts on exported data converted to its space")


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"policy.device={name} but torch sees no CUDA device here; use policy.device=cpu")
    return name


def load_lerobot_policy(checkpoint: str | Path, kind: str, *, device: str = "cpu",
                        obs_map: Mapping[str, str] | None = None, action_space: str = "ee_delta") -> LeRobotPolicy:
    """Load a LeRobot ``save_pretrained`` directory (weights, config, processors with their statistics)."""
    read_checkpoint_config(checkpoint, kind)
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    ckpt = Path(checkpoint).resolve()
    device = _device(device)
    config = PreTrainedConfig.from_pretrained(str(ckpt))
    config.device = device
    pre_overrides: dict[str, Any] = {"device_processor": {"device": device}}
    vlm = ckpt / "vlm"  # a VLM config + tokenizer shipped inside the checkpoint (policies/lerobot_tiny.py)
    if hasattr(config, "vlm_model_name") and vlm.is_dir():
        config.vlm_model_name = str(vlm)
        pre_overrides["tokenizer_processor"] = {"tokenizer_name": str(vlm)}
    policy = get_policy_class(config.type).from_pretrained(str(ckpt), config=config)
    policy.to(device)
    pre, post = make_pre_post_processors(config, pretrained_path=str(ckpt), preprocessor_overrides=pre_overrides)
    mapping = dict(obs_map) if obs_map else default_obs_map(config.input_features, kind)
    log.info("loaded LeRobot %s from %s on %s (%d parameters)", kind, ckpt, device,
             sum(p.numel() for p in policy.parameters()))
    return LeRobotPolicy(policy, pre, post, kind, mapping, checkpoint=str(ckpt), device=device, action_space=action_space)


def make_lerobot_policy(cfg: Any, device: str = "") -> LeRobotPolicy:
    """Registry entry (``policy=lerobot``): ``policy.checkpoint`` of type ``policy.lerobot_type``, with
    ``learner.finetune`` applied (:func:`apply_finetune`); ``device`` overrides ``policy.device``."""
    p = cfg.policy
    if not p.checkpoint:
        raise ConfigError("policy=lerobot needs policy.checkpoint=DIR (a LeRobot save_pretrained directory: config.json, "
                          "model.safetensors, policy_*processor files); a random-weight one for tests: "
                          ".venv-lerobot/bin/python -m policies.lerobot_tiny out=DIR type=act")
    try:
        import lerobot  # noqa: F401
    except ImportError:
        import sys

        raise ConfigError(f"policy=lerobot runs in the LeRobot environment, but {sys.executable} has no lerobot; "
                          "run make lerobot-env and serve with .venv-lerobot/bin/hil-robot serve-policy") from None
    policy = load_lerobot_policy(p.checkpoint, p.lerobot_type, device=device or p.device, obs_map=p.obs_map or None,
                                 action_space=getattr(p, "action_space", "ee_delta") or "ee_delta")
    want = int(getattr(p, "native_action_dim", 0) or 0)
    if want and policy.action_dim != want:
        raise ConfigError(f"{p.checkpoint} predicts {policy.action_dim}-D actions but policy.native_action_dim={want} "
                          f"(policy.action_space={policy.action_space}); set policy.native_action_dim={policy.action_dim} "
                          "and the action space the checkpoint was trained in")
    apply_finetune(policy, cfg)
    policy.policy.to(policy.device)  # new adapter parameters join the model's device
    return policy
