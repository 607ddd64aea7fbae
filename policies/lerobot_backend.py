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
"""

from __future__ import annotations

import json
import logging
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
        self.policy.eval()

    # ------------------------------------------------------------------ observation -> batch
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
        with torch.inference_mode():
            chunk = self.policy.predict_action_chunk(batch)
        chunk = self.post(chunk)
        actions = chunk.detach().to("cpu").float().numpy()
        actions = actions[0] if actions.ndim == 3 else actions
        if actions.ndim != 2 or actions.shape[1] != self.action_dim:
            raise RuntimeError(f"{self.kind} returned an action chunk of shape {chunk.shape}; expected [1, H, {self.action_dim}]")
        return {"actions": np.ascontiguousarray(actions, dtype=np.float32), "policy_version": self.version,
                "infer_ms": (time.perf_counter() - t0) * 1e3}

    def reset(self) -> None:
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
                "policy_version": self.version}


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


def make_lerobot_policy(cfg: Any) -> LeRobotPolicy:
    """Registry entry (``policy=lerobot``): ``policy.checkpoint`` of type ``policy.lerobot_type``."""
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
    policy = load_lerobot_policy(p.checkpoint, p.lerobot_type, device=p.device, obs_map=p.obs_map or None,
                                 action_space=getattr(p, "action_space", "ee_delta") or "ee_delta")
    want = int(getattr(p, "native_action_dim", 0) or 0)
    if want and policy.action_dim != want:
        raise ConfigError(f"{p.checkpoint} predicts {policy.action_dim}-D actions but policy.native_action_dim={want} "
                          f"(policy.action_space={policy.action_space}); set policy.native_action_dim={policy.action_dim} "
                          "and the action space the checkpoint was trained in")
    return policy
