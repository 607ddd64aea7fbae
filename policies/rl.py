"""Networks for sample-efficient RL (RLPD / HIL-SERL style SAC), built for CPU speed.

* ``MLP``: Linear -> LayerNorm -> ReLU stacks (RLPD's LayerNorm critics keep Q-values bounded
  under a high update-to-data ratio).
* ``ImageEncoder``: one small conv tower per camera, channels-last for the CPU kernels. Stem is
  a 4x4/stride-4 patchify conv (cheap on 128x128), then two 3x3/stride-2 convs, flatten,
  Linear -> LayerNorm -> tanh (DrQ-style bottleneck).
* ``random_shift``: DrQ augmentation: replicate-pad by 4 px and crop back at a random offset,
  applied on uint8 [B, H, W, 3] before the float conversion.
* ``EnsembleCritic``: E Q-heads evaluated as one batched matmul ([E, B, in] @ [E, in, out]).
* ``TanhGaussianActor``: squashed Gaussian over the continuous action dims.
* ``GripperCritic``: Q over the discrete gripper actions (close / stay / open).

Observation features (``RLFeaturizer``):
  state mode: ``obs/state`` float32 [B, 15] (+ ``obs/task_state`` [B, K] when present)
  image mode: images ``obs/images/<cam>`` uint8 [B, H, W, 3] + ``obs/state``
"""

from __future__ import annotations

import math
import threading
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

GRIPPER_CLOSE, GRIPPER_STAY, GRIPPER_OPEN = 0, 1, 2
NUM_GRIPPER_ACTIONS = 3


class MLP(nn.Module):
    """[B, in] -> [B, out]; hidden layers are Linear -> LayerNorm -> ReLU."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.LayerNorm(h), nn.ReLU()]
            d = h
        if out_dim is not None:
            layers.append(nn.Linear(d, out_dim))
            d = out_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def random_shift(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ random shift on channels-last images. images: [B, H, W, C] (uint8 or float) -> same
    shape and dtype, each sample shifted by an integer offset in [-pad, pad] per axis with
    replicated borders (clamped indices == replicate padding; no float copy of uint8)."""
    if pad <= 0:
        return images
    b, h, w, c = images.shape
    offsets = torch.randint(-pad, pad + 1, (b, 2), generator=generator)
    rows = (offsets[:, 0, None] + torch.arange(h)[None, :]).clamp_(0, h - 1)  # [B, H]
    cols = (offsets[:, 1, None] + torch.arange(w)[None, :]).clamp_(0, w - 1)  # [B, W]
    # one flat row gather over B*H*W pixels (fastest of the gathers tried on CPU)
    flat = (torch.arange(b)[:, None, None] * (h * w) + rows[:, :, None] * w + cols[:, None, :]).reshape(-1)
    return images.reshape(b * h * w, c).index_select(0, flat.to(images.device)).reshape(b, h, w, c)


class ImageEncoder(nn.Module):
    """Cameras uint8 [B, H, W, 3] each -> features [B, latent_dim * num_cameras].

    One conv tower per camera (4x4/s4 patchify stem, two 3x3/s2 convs, channels-last for the
    CPU kernels), then Linear -> LayerNorm -> tanh per camera.
    """

    def __init__(self, num_cameras: int, image_hw: tuple[int, int], channels: int = 32, latent_dim: int = 64):
        super().__init__()
        stem = max(channels // 2, 8)
        self.towers = nn.ModuleList()
        for _ in range(num_cameras):
            convs = nn.Sequential(
                nn.Conv2d(3, stem, kernel_size=4, stride=4),
                nn.ReLU(),
                nn.Conv2d(stem, channels, kernel_size=3, stride=2, padding=1),
                nn.ReLU(),
                nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1),
                nn.ReLU(),
                nn.Flatten(),
            )
            with torch.no_grad():
                flat = convs(torch.zeros(1, 3, *image_hw)).shape[1]
            self.towers.append(nn.Sequential(convs, nn.Linear(flat, latent_dim), nn.LayerNorm(latent_dim), nn.Tanh()))
        self.to(memory_format=torch.channels_last)
        self.out_dim = latent_dim * num_cameras

    def forward(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """images: one uint8 (0..255) [B, H, W, 3] tensor per camera -> [B, out_dim]."""
        feats = []
        for tower, img in zip(self.towers, images):
            x = img.permute(0, 3, 1, 2).float()  # a channels-last view, no copy
            feats.append(tower(x.mul_(1.0 / 255.0).sub_(0.5)))
        return torch.cat(feats, dim=-1)


class EnsembleLinear(nn.Module):
    """E independent Linear layers: [E, B, in] -> [E, B, out] with one batched matmul."""

    def __init__(self, ensemble: int, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(ensemble, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleLayerNorm(nn.Module):
    def __init__(self, ensemble: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ensemble, 1, dim))
        self.bias = nn.Parameter(torch.zeros(ensemble, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class EnsembleCritic(nn.Module):
    """Q_e(features, action) for e in 1..E: ([B, F], [B, A]) -> [E, B]."""

    def __init__(self, feature_dim: int, action_dim: int, hidden: Sequence[int], ensemble: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        d = feature_dim + action_dim
        for h in hidden:
            layers += [EnsembleLinear(ensemble, d, h), EnsembleLayerNorm(ensemble, h), nn.ReLU()]
            d = h
        layers.append(EnsembleLinear(ensemble, d, 1))
        self.net = nn.Sequential(*layers)
        self.ensemble = ensemble

    def forward(self, features: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([features, action], dim=-1)
        x = x.unsqueeze(0).expand(self.ensemble, *x.shape)
        return self.net(x).squeeze(-1)


class TanhGaussianActor(nn.Module):
    """features [B, F] -> squashed Gaussian over [-1, 1]^A (log-std in [log_std_min, log_std_max])."""

    def __init__(self, feature_dim: int, action_dim: int, hidden: Sequence[int], log_std_min: float = -5.0, log_std_max: float = 2.0):
        super().__init__()
        self.trunk = MLP(feature_dim, hidden)
        self.mean = nn.Linear(self.trunk.out_dim, action_dim)
        self.log_std = nn.Linear(self.trunk.out_dim, action_dim)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max

    def forward(self, features: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (action [B, A] in (-1, 1), log_prob [B]); deterministic returns tanh(mean), log_prob 0."""
        if deterministic:
            mean = self.mean(self.trunk(features))
            return torch.tanh(mean), torch.zeros(mean.shape[0], device=mean.device)
        action, log_prob, _ = self.sample_with_mean(features)
        return action, log_prob

    def sample_with_mean(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (sampled action [B, A], its log_prob [B], tanh(mean) [B, A]) from one trunk pass (the
        learner's BC term needs the mean action beside the sample)."""
        h = self.trunk(features)
        mean = self.mean(h)
        log_std = torch.tanh(self.log_std(h))
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1.0)
        std = log_std.exp()
        eps = torch.randn_like(mean)
        pre = mean + std * eps
        action = torch.tanh(pre)
        # Gaussian log-density minus the tanh Jacobian (numerically stable form)
        log_prob = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2.0 * (math.log(2.0) - pre - F.softplus(-2.0 * pre))).sum(-1)
        return action, log_prob, torch.tanh(mean)


class GripperCritic(nn.Module):
    """features [B, F] -> Q over (close, stay, open) [B, 3]."""

    def __init__(self, feature_dim: int, hidden: Sequence[int]):
        super().__init__()
        self.net = MLP(feature_dim, hidden, NUM_GRIPPER_ACTIONS)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


# a command this far from the current state's hold (-1 open, +1 closed) moves the jaw: the safety
# filter's gripper rate limit turns a served -1 -> +1 into 0 for the first tick (DESIGN §6), and that
# tick is where the policy decided to close
GRIPPER_MOVE_MIN = 0.5


def gripper_class(command: torch.Tensor, opening: torch.Tensor, closed_below: float) -> torch.Tensor:
    """Discrete gripper action from an executed absolute command (-1 open .. +1 close) and the
    measured opening (0 closed .. 1 open): 'close' where the jaw is open and the command moves it at
    least ``GRIPPER_MOVE_MIN`` towards closed (a rate-limited first step, 0, counts), 'open' the
    mirror image, 'stay' otherwise.

    command, opening: [B] -> int64 [B] in {close, stay, open}.
    """
    is_closed = opening < closed_below
    cls = torch.full_like(command, GRIPPER_STAY, dtype=torch.long)
    cls = torch.where(~is_closed & (command >= -1.0 + GRIPPER_MOVE_MIN), torch.full_like(cls, GRIPPER_CLOSE), cls)
    cls = torch.where(is_closed & (command <= 1.0 - GRIPPER_MOVE_MIN), torch.full_like(cls, GRIPPER_OPEN), cls)
    return cls


def gripper_command(cls: torch.Tensor, opening: torch.Tensor, closed_below: float) -> torch.Tensor:
    """Inverse of ``gripper_class``: discrete action [B] -> absolute command [B] in {-1, +1}."""
    hold = torch.where(opening < closed_below, 1.0, -1.0).to(opening.dtype)
    out = torch.where(cls == GRIPPER_CLOSE, torch.ones_like(hold), hold)
    return torch.where(cls == GRIPPER_OPEN, -torch.ones_like(hold), out)


class RLFeaturizer(nn.Module):
    """Replay batch (torch) -> features [B, F].

    state mode uses ``<prefix>state`` (+ ``<prefix>task_state``); image mode encodes
    ``<prefix>images/<cam>`` for ``cameras`` and appends ``<prefix>state``.
    """

    def __init__(
        self,
        mode: str,
        state_dim: int,
        cameras: Sequence[str] = (),
        image_hw: tuple[int, int] = (128, 128),
        channels: int = 32,
        latent_dim: int = 64,
    ):
        super().__init__()
        if mode not in ("state", "image"):
            raise ValueError(f"RL observation mode {mode!r}; choose state or image")
        self.mode = mode
        self.cameras = tuple(cameras)
        if mode == "image" and not self.cameras:
            raise ValueError("image mode needs at least one camera (learner.rl_cameras)")
        self.encoder = ImageEncoder(len(self.cameras), image_hw, channels, latent_dim) if mode == "image" else None
        self.state_dim = state_dim
        self.out_dim = state_dim + (self.encoder.out_dim if self.encoder is not None else 0)
        # observation normalisation (buffers: saved, published and served with the weights)
        self.register_buffer("state_mean", torch.zeros(state_dim))
        self.register_buffer("state_std", torch.ones(state_dim))

    def set_state_stats(self, states: torch.Tensor, min_std: float = 1e-2) -> None:
        """Fit the normalisation from raw state features [N, state_dim] (e.g. a big replay sample)."""
        with torch.no_grad():
            self.state_mean.copy_(states.float().mean(0))
            self.state_std.copy_(states.float().std(0).clamp_min(min_std))

    def images(self, batch: Mapping[str, torch.Tensor], prefix: str) -> list[torch.Tensor]:
        """-> one uint8 [B, H, W, 3] per camera (keys ``<prefix>images/<cam>``)."""
        return [batch[f"{prefix}images/{cam}"] for cam in self.cameras]

    def state(self, batch: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
        parts = [batch[f"{prefix}state"].float()]
        if self.mode == "state" and f"{prefix}task_state" in batch:
            parts.append(batch[f"{prefix}task_state"].float())
        s = torch.cat(parts, dim=-1)
        if s.shape[-1] != self.state_dim:
            raise ValueError(f"RL state features have {s.shape[-1]} dims, the networks expect {self.state_dim}")
        return s

    def forward(self, state: torch.Tensor, images: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """state: raw [B, state_dim] (from ``state``) -> features [B, out_dim]."""
        state = ((state - self.state_mean) / self.state_std).clamp(-10.0, 10.0)
        if self.encoder is None:
            return state
        return torch.cat([self.encoder(images), state], dim=-1)


# ----------------------------------------------------------------------------- construction shared by learner and policy


def make_featurizer(cfg, obs_spec: Mapping) -> RLFeaturizer:
    """cfg: ``LearnerConfig`` (rl_* fields); obs_spec: {"state_dim", "cameras", "image_hw"}."""
    return RLFeaturizer(cfg.rl_obs, int(obs_spec["state_dim"]), tuple(obs_spec["cameras"]), tuple(obs_spec["image_hw"]),
                        cfg.rl_encoder_channels, cfg.rl_latent_dim)


def actor_dims(cfg, feature_dim: int, noise_dim: int = 0) -> tuple[int, int]:
    """-> (actor input dim, actor action dim) for a config. ``rl_actor=noise`` (DSRL): the actor's
    action is the VLA's flow noise, ``noise_dim`` = horizon x action dim of that VLA."""
    if cfg.rl_actor == "noise":
        if noise_dim < 1:
            raise ValueError("learner.rl_actor=noise needs the steered VLA's noise size (action_horizon x action_dim)")
        return feature_dim, int(noise_dim)
    action_dim = 6 if cfg.rl_gripper == "discrete" else 7
    return feature_dim + (7 if cfg.rl_actor == "residual" else 0), action_dim


class RLPolicy:
    """The SAC actor as a ``types.Policy`` + ``types.WeightUpdatable`` (what the learner publishes:
    ``featurizer.*``, ``actor.*``, ``gripper_critic.*``). Chunks have H = 1, except in noise mode.

    base_policy: residual mode — a Policy whose first action the actor corrects; noise mode (DSRL)
    — a flow-matching ``VLAPolicy`` (frozen) whose chunk the actor chooses through its initial noise
    (``infer(obs, noise=...)``); that whole chunk is served.
    """

    def __init__(self, cfg, obs_spec: Mapping, *, base_policy=None, deterministic: bool = True,
                 device: str | torch.device = "cpu", version: int = 0):
        self.cfg = cfg
        self.obs_spec = dict(obs_spec)
        self.device = torch.device(device)
        if cfg.rl_actor in ("residual", "noise") and base_policy is None:
            raise ValueError(f"an RL policy with rl_actor={cfg.rl_actor} needs base_policy (the VLA)")
        self.base_policy = base_policy
        self.noise_mode = cfg.rl_actor == "noise"
        self.noise_shape: tuple[int, int] = (0, 0)
        if self.noise_mode:
            bc = getattr(base_policy, "config", None)
            if bc is not None and hasattr(bc, "head"):  # our VLA, served here
                if bc.head != "flow":
                    raise ValueError(f"rl_actor=noise steers a flow-matching VLA; the base VLA has head={bc.head}")
                self.noise_shape = (int(bc.action_horizon), int(bc.action_dim))
                if cfg.rl_noise_shape and tuple(cfg.rl_noise_shape) != self.noise_shape:
                    raise ValueError(f"learner.rl_noise_shape={list(cfg.rl_noise_shape)} but the VLA samples noise of "
                                     f"shape {list(self.noise_shape)}; leave it empty for a local VLA")
            elif len(cfg.rl_noise_shape) == 2:  # a remote flow VLA (openpi client): the shape is configured
                self.noise_shape = (int(cfg.rl_noise_shape[0]), int(cfg.rl_noise_shape[1]))
            else:
                raise ValueError("rl_actor=noise with a remote VLA needs learner.rl_noise_shape=[action_horizon, action_dim]")
        self.featurizer = make_featurizer(cfg, obs_spec)
        in_dim, self.action_dim = actor_dims(cfg, self.featurizer.out_dim, self.noise_shape[0] * self.noise_shape[1])
        self.actor = TanhGaussianActor(in_dim, self.action_dim, tuple(cfg.rl_hidden_dims))
        discrete = cfg.rl_gripper == "discrete" and not self.noise_mode  # DSRL: the VLA moves the gripper
        self.gripper_critic = GripperCritic(self.featurizer.out_dim, tuple(cfg.rl_hidden_dims)) if discrete else None
        self.modules = nn.ModuleDict({"featurizer": self.featurizer, "actor": self.actor,
                                      **({"gripper_critic": self.gripper_critic} if self.gripper_critic is not None else {})})
        self.modules.to(self.device).eval()
        self.deterministic = deterministic
        self.version = int(version)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ Policy
    @torch.no_grad()
    def infer(self, obs: dict) -> dict:
        """obs (types contract; ``task_state`` needed in state mode) -> {"actions": float32[1, 7], ...}."""
        batch = {"obs/state": torch.as_tensor(np.asarray(obs["state"], np.float32))[None]}
        if "task_state" in obs:
            batch["obs/task_state"] = torch.as_tensor(np.asarray(obs["task_state"], np.float32))[None]
        for cam in self.featurizer.cameras:
            batch[f"obs/images/{cam}"] = torch.as_tensor(np.asarray(obs[f"images/{cam}"]))[None]
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if self.noise_mode:
            return self._infer_noise(obs, batch)
        base = None
        if self.base_policy is not None:
            base_out = self.base_policy.infer(obs)
            base = torch.as_tensor(np.asarray(base_out["actions"], np.float32)[:1], device=self.device)
        with self._lock:
            state = self.featurizer.state(batch, "obs/")
            images = self.featurizer.images(batch, "obs/") if self.featurizer.encoder is not None else None
            feat = self.featurizer(state, images)
            x = feat if base is None else torch.cat([feat, base], dim=-1)
            a, _ = self.actor(x, deterministic=self.deterministic)
            if base is not None:
                a = (base[:, : a.shape[1]] + self.cfg.rl_residual_scale * a).clamp(-1.0, 1.0)
            out = torch.zeros(1, 7, device=self.device)
            out[:, : self.action_dim] = a
            if self.gripper_critic is not None:
                cls = self.gripper_critic(feat).argmax(1)
                out[:, 6] = gripper_command(cls, state[:, 7], self.cfg.rl_gripper_closed_below)
            version = self.version
        return {"actions": out.cpu().numpy().astype(np.float32), "policy_version": version}

    def _infer_noise(self, obs: dict, batch: dict) -> dict:
        """DSRL: the actor picks the noise, the frozen VLA integrates it; -> the VLA's whole chunk
        (the controller runs ``policy.n_action_steps`` of it: 1 = the actor chooses at every tick)."""
        with self._lock:
            feat = self.featurizer(self.featurizer.state(batch, "obs/"),
                                   self.featurizer.images(batch, "obs/") if self.featurizer.encoder is not None else None)
            u, _ = self.actor(feat, deterministic=self.deterministic)
            noise = (self.cfg.rl_noise_bound * u).reshape(*self.noise_shape).cpu().numpy().astype(np.float32)
            version = self.version
        out = self.base_policy.infer(obs, noise=noise)
        # the noise goes back with the chunk: the controller records it, the learner's label for this decision
        return {"actions": np.asarray(out["actions"], np.float32), "policy_version": version,
                "base_version": int(out.get("policy_version", -1)), "noise": noise}

    def reset(self) -> None:
        if self.base_policy is not None:
            self.base_policy.reset()

    @property
    def metadata(self) -> dict:
        cameras = list(self.featurizer.cameras)
        if self.base_policy is not None:  # the VLA underneath needs its cameras too
            base_cams = list(getattr(getattr(self.base_policy, "config", None), "cameras", ()))
            obs_map = getattr(self.base_policy, "obs_map", None)  # a remote VLA's client: the cameras it maps
            base_cams += [t.key[len("images/"):] for terms in (getattr(obs_map, "entries", None) or {}).values()
                          for t in terms if t.is_image]
            cameras += [c for c in base_cams if c not in cameras]
        return {"name": "rl", "action_horizon": self.noise_shape[0] if self.noise_mode else 1, "action_dim": 7, "cameras": cameras,
                "policy_version": self.version, "rl_obs": self.cfg.rl_obs, "rl_actor": self.cfg.rl_actor,
                "explore": not self.deterministic}

    # ------------------------------------------------------------------ WeightUpdatable
    def weight_spec(self) -> dict:
        return {k: (tuple(v.shape), str(v.detach().cpu().numpy().dtype)) for k, v in self.modules.state_dict().items()}

    def load_weights(self, weights: dict, version: int) -> None:
        spec = self.weight_spec()
        if set(weights) != set(spec):
            raise ValueError(f"RL weights do not match this policy: missing {sorted(set(spec) - set(weights))[:5]}, "
                             f"unexpected {sorted(set(weights) - set(spec))[:5]}")
        tensors = {}
        for k, (shape, _) in spec.items():
            t = torch.tensor(np.asarray(weights[k]))
            if tuple(t.shape) != shape or (t.is_floating_point() and not torch.isfinite(t).all()):
                raise ValueError(f"RL weight {k}: bad shape {tuple(t.shape)} (want {shape}) or non-finite values")
            tensors[k] = t
        with self._lock:
            self.modules.load_state_dict(tensors, strict=True)
            self.version = int(version)


def make_rl_policy(cfg) -> RLPolicy:
    """RootConfig -> the RLPD actor to serve (``policy.name=rl``), fresh weights: the server follows
    the learner's. Its inputs must match what the learner builds from the replay batch: robot state
    (+ the sim's ``task_state`` when ``learner.rl_obs=state`` on a sim robot), or the cameras in
    ``learner.rl_cameras`` (all sim cameras when empty) at the sim image size."""
    from hil_robot.config import ConfigError
    from hil_robot.types import STATE_DIM

    lc = cfg.learner
    base = None
    if lc.rl_actor == "noise":
        if cfg.policy.server_url and not cfg.policy.checkpoint:  # a remote flow VLA, e.g. pi0 behind openpi
            from hil_robot.transport.openpi_client import make_openpi_policy

            if not lc.rl_noise_shape:
                raise ConfigError("learner.rl_actor=noise with policy.server_url needs learner.rl_noise_shape="
                                  "[action_horizon, action_dim] of the remote model's noise, e.g. [50, 32] for pi0")
            base = make_openpi_policy(cfg)
        elif not cfg.policy.checkpoint:
            raise ConfigError("learner.rl_actor=noise (DSRL) steers a trained flow-matching VLA: set policy.checkpoint to "
                              "its directory (e.g. from `hil-robot train-bc policy.head=flow`), or policy.server_url "
                              "for one behind an openpi server (policy=rl_openpi)")
        else:
            from policies.vla import make_vla_policy

            base = make_vla_policy(cfg)
    elif lc.rl_actor == "residual":
        raise ConfigError("policy.name=rl serves a standalone actor; learner.rl_actor=residual needs the VLA as its base "
                          "policy, which the run does not serve yet: use learner.rl_actor=standalone")
    task_state = 0
    if lc.rl_obs == "state" and cfg.robot.kind == "sim":
        from sim.tasks.base import TASK_STATE_DIM

        task_state = TASK_STATE_DIM
    cameras: tuple[str, ...] = ()
    image_hw = (0, 0)
    if lc.rl_obs == "image":
        cameras = tuple(lc.rl_cameras) or tuple(cfg.sim.cameras)
        image_hw = (cfg.sim.image_height, cfg.sim.image_width)
    spec = {"state_dim": STATE_DIM + task_state, "cameras": cameras, "image_hw": image_hw}
    return RLPolicy(lc, spec, base_policy=base, deterministic=not cfg.policy.rl_explore,
                    device=cfg.policy.device if cfg.policy.device != "auto" else "cpu")
