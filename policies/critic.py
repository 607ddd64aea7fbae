"""Progress critic (VLAC-style, DESIGN §4): ``critic(obs_a, obs_b, instruction) -> (Δprogress, P(done))``.

* Δprogress ∈ [-1, 1]: how much closer to completing ``instruction`` the scene in ``obs_b`` is than in
  ``obs_a`` (negative = regress). Built antisymmetric: Δ(a, b) = tanh(g(a, b) - g(b, a)), so
  swapping the frames flips the sign exactly and Δ(a, a) = 0.
* P(done): probability that ``obs_b`` shows the instruction completed.

Online use (``ProgressTracker``): dense reward r_t = Δ(o_t, o_{t+1}), value V ← V + (1 − V)·Δ for
Δ ≥ 0 and V ← V + V·Δ for Δ < 0 (keeps V in [0, 1]), episode ends when P(done) > threshold.
Offline (``score_episode``): V over an episode and its Spearman rank correlation with time.

Backends (``CriticBackend``): ``LocalCriticBackend`` runs the network in-process; a VLM critic on a
GPU host is reached through ``policies.critic_remote`` over the policy-server transport. Training
lives in ``hil_robot/learn/critic.py``.

Frames (one side of a pair), as a torch batch: ``images`` {camera: uint8 [B, H, W, 3]},
``state`` float32 [B, 15]; ``text`` float32 [B, 384] is shared by both sides.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from hil_robot.types import STATE_DIM
from policies.text import TEXT_DIM, embed_instructions
from policies.vision import ConvEncoder, images_to_float, random_shift


@dataclasses.dataclass
class CriticNetConfig:
    """Network shape (saved as JSON in the critic checkpoint)."""

    cameras: tuple[str, ...] = ("front", "wrist")
    image_hw: tuple[int, int] = (64, 64)
    vision_channels: tuple[int, ...] = (16, 32, 64, 64)
    feature_dim: int = 128
    hidden_dim: int = 256
    use_state: bool = True
    augment_shift_px: int = 2
    state_dim: int = STATE_DIM
    text_dim: int = TEXT_DIM

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)
        self.image_hw = tuple(int(v) for v in self.image_hw)  # type: ignore[assignment]
        self.vision_channels = tuple(int(v) for v in self.vision_channels)
        if not self.cameras:
            raise ValueError("the critic needs at least one camera")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CriticNetConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown critic config keys {unknown}; allowed: {sorted(names)}")
        return cls(**dict(d))


class ProgressCritic(nn.Module):
    def __init__(self, cfg: CriticNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ConvEncoder(cfg.vision_channels)
        c = self.encoder.out_channels
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.cam_proj = nn.Linear(c * 16 * len(cfg.cameras), cfg.feature_dim)
        self.state_proj = nn.Linear(cfg.state_dim, cfg.feature_dim) if cfg.use_state else None
        self.register_buffer("state_mean", torch.zeros(cfg.state_dim))
        self.register_buffer("state_std", torch.ones(cfg.state_dim))
        f, h, t = cfg.feature_dim, cfg.hidden_dim, cfg.text_dim
        self.frame_norm = nn.LayerNorm(f)
        self.text_proj = nn.Linear(t, f)
        # pair head: features of (a, b, b - a) modulated by the instruction
        self.pair_head = nn.Sequential(nn.Linear(4 * f, h), nn.LayerNorm(h), nn.GELU(), nn.Linear(h, h), nn.GELU(),
                                       nn.Linear(h, 1))
        self.done_head = nn.Sequential(nn.Linear(2 * f, h), nn.LayerNorm(h), nn.GELU(), nn.Linear(h, 1))

    def frame_features(self, frame: Mapping[str, Any]) -> torch.Tensor:
        """One side of the pair -> float [B, feature_dim]."""
        feats = []
        augment = self.training and self.cfg.augment_shift_px > 0
        for cam in self.cfg.cameras:
            if cam not in frame["images"]:
                raise KeyError(f"critic input has no camera {cam!r} (has {sorted(frame['images'])}); "
                               f"it was trained on {list(self.cfg.cameras)}")
            x = images_to_float(frame["images"][cam])
            if augment:
                x = random_shift(x, self.cfg.augment_shift_px)
            feats.append(self.pool(self.encoder(x)).flatten(1))
        out = self.cam_proj(torch.cat(feats, dim=1))
        if self.state_proj is not None:
            out = out + self.state_proj((frame["state"] - self.state_mean) / self.state_std)
        return self.frame_norm(out)

    def forward(self, frame_a: Mapping[str, Any], frame_b: Mapping[str, Any], text: torch.Tensor,
                feats: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (Δprogress float [B] in [-1, 1], done logit float [B])."""
        fa, fb = feats if feats is not None else (self.frame_features(frame_a), self.frame_features(frame_b))
        return self.heads(fa, fb, text)

    def heads(self, fa: torch.Tensor, fb: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tf = self.text_proj(text)
        g_ab = self.pair_head(torch.cat([fa * tf, fb * tf, (fb - fa) * tf, tf], dim=1)).squeeze(1)
        g_ba = self.pair_head(torch.cat([fb * tf, fa * tf, (fa - fb) * tf, tf], dim=1)).squeeze(1)
        return torch.tanh(g_ab - g_ba), self.done_logits(fb, text)

    def done_logits(self, fb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """P(done) logit [B] of frame features ``fb`` under the instruction."""
        tf = self.text_proj(text)
        return self.done_head(torch.cat([fb * tf, tf], dim=1)).squeeze(1)

    def encode_text(self, instructions: Sequence[str], device: torch.device | str) -> torch.Tensor:
        """Instructions -> what ``heads`` takes as ``text`` (frozen MiniLM embeddings [B, 384])."""
        return torch.from_numpy(embed_instructions(list(instructions))).to(device)


# ----------------------------------------------------------------------------- backends


class CriticBackend(Protocol):
    """Anything that scores frame pairs. ``frames_*``: {"images/<cam>": uint8 [B,H,W,3], "state": [B,15]}."""

    def score(self, frames_a: Mapping[str, np.ndarray], frames_b: Mapping[str, np.ndarray],
              instructions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """-> (Δprogress float32 [B] in [-1, 1], P(done) float32 [B] in [0, 1])."""
        ...


def frames_to_torch(frames: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    images = {k[len("images/"):]: torch.from_numpy(np.require(v, requirements=("C", "W"))).to(device)
              for k, v in frames.items() if k.startswith("images/")}
    return {"images": images, "state": torch.from_numpy(np.array(frames["state"], np.float32)).to(device)}


def stack_observations(observations: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """list of observation dicts -> batched frames {"images/<cam>": [B,...], "state": [B, 15]}."""
    keys = [k for k in observations[0] if k.startswith("images/")] + ["state"]
    return {k: np.stack([np.asarray(o[k]) for o in observations]) for k in keys}


class LocalCriticBackend:
    """A critic network in this process (:class:`ProgressCritic`, or anything with its ``forward`` and
    ``encode_text``, e.g. ``policies.critic_vlm.VLMProgressCritic``). Thread-safe."""

    def __init__(self, model: ProgressCritic, device: str | torch.device = "cpu", max_batch: int = 256) -> None:
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.max_batch = max_batch
        self._lock = threading.Lock()

    @torch.no_grad()
    def score(self, frames_a: Mapping[str, np.ndarray], frames_b: Mapping[str, np.ndarray],
              instructions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        n = len(instructions)
        deltas, dones = [], []
        with self._lock:
            for s in range(0, n, self.max_batch):
                sl = slice(s, s + self.max_batch)
                fa = frames_to_torch({k: v[sl] for k, v in frames_a.items()}, self.device)
                fb = frames_to_torch({k: v[sl] for k, v in frames_b.items()}, self.device)
                delta, logit = self.model(fa, fb, self.model.encode_text(list(instructions[sl]), self.device))
                deltas.append(delta.cpu().numpy())
                dones.append(torch.sigmoid(logit).cpu().numpy())
        return np.concatenate(deltas).astype(np.float32), np.concatenate(dones).astype(np.float32)

    @property
    def metadata(self) -> dict[str, Any]:
        return {"name": "progress_critic", "backend": "local", "cameras": list(self.model.cfg.cameras),
                "image_hw": list(self.model.cfg.image_hw)}


# ----------------------------------------------------------------------------- online + offline use


def accumulate_value(value: float, delta: float) -> float:
    """VLAC value update: V + (1 − V)·Δ when progressing, V + V·Δ when regressing (V stays in [0, 1])."""
    value = value + (1.0 - value) * delta if delta >= 0 else value + value * delta
    return float(min(max(value, 0.0), 1.0))


class ProgressTracker:
    """Per-episode critic state for the control loop: dense reward, value and a done signal.

        tracker.reset(first_obs, instruction)
        info = tracker.step(next_obs)   # {"reward", "value", "p_done", "done"}
    """

    def __init__(self, backend: CriticBackend, done_threshold: float = 0.9, done_patience: int = 1) -> None:
        self.backend = backend
        self.done_threshold = done_threshold
        self.done_patience = max(1, done_patience)
        self.reset(None, "")

    def reset(self, obs: Mapping[str, Any] | None, instruction: str) -> None:
        self._prev = obs
        self.instruction = instruction
        self.value = 0.0
        self._over = 0

    def step(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        if self._prev is None:
            self._prev = obs
            return {"reward": 0.0, "value": self.value, "p_done": 0.0, "done": False}
        delta, p_done = self.backend.score(stack_observations([self._prev]), stack_observations([obs]), [self.instruction])
        self._prev = obs
        d, p = float(delta[0]), float(p_done[0])
        self.value = accumulate_value(self.value, d)
        self._over = self._over + 1 if p > self.done_threshold else 0
        return {"reward": d, "value": self.value, "p_done": p, "done": self._over >= self.done_patience}


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN if either side is constant."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)


def score_episode(backend: CriticBackend, frames: Mapping[str, np.ndarray], instruction: str,
                  stride: int = 1) -> dict[str, Any]:
    """Run the critic along one episode. frames: {"images/<cam>": [T,H,W,3], "state": [T,15]}.

    -> {"delta": float32 [T'-1] (Δ between consecutive scored frames), "value": float32 [T'] (V, starting
    at 0), "p_done": float32 [T'], "spearman": rank correlation of V with time, "index": scored frame ids}.
    ``stride`` > 1 scores every stride-th frame (the last frame always included)."""
    t = len(frames["state"])
    idx = np.unique(np.r_[np.arange(0, t, max(1, stride)), t - 1])
    if len(idx) < 2:
        raise ValueError(f"an episode needs at least 2 frames to score, got {t}")
    sub = {k: np.asarray(v)[idx] for k, v in frames.items()}
    a = {k: v[:-1] for k, v in sub.items()}
    b = {k: v[1:] for k, v in sub.items()}
    delta, p_done_b = backend.score(a, b, [instruction] * (len(idx) - 1))
    _, p_done_0 = backend.score({k: v[:1] for k, v in sub.items()}, {k: v[:1] for k, v in sub.items()}, [instruction])
    value = [0.0]
    for d in delta:
        value.append(accumulate_value(value[-1], float(d)))
    value_arr = np.asarray(value, np.float32)
    return {"delta": delta, "value": value_arr, "p_done": np.r_[p_done_0, p_done_b].astype(np.float32),
            "spearman": spearman(value_arr, idx), "index": idx}
