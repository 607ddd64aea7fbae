"""Synthetic step records with rendered-looking camera frames, for tests and benchmarks.

Frames look like a simple rendered tabletop (flat shaded table, coloured boxes that move with the
step, no sensor noise unless ``noise_std`` > 0), so codec sizes are representative of the MuJoCo
scenes; the state vector encodes (episode number, step) so tests can check alignment:
``state[0] = step``, ``state[1] = episode number``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hil_robot.types import HUMAN_SEGMENTS, STATE_DIM, Segment, StepRecord

_ROWS = np.arange(128, dtype=np.float32)[:, None]


def frame(step: int, camera: int = 0, hw: tuple[int, int] = (128, 128), noise_std: float = 0.0,
          rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 [H, W, 3]: a shaded table with two boxes whose positions depend on ``step``."""
    h, w = hw
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    img = np.empty((h, w, 3), np.float32)
    img[..., 0] = 90 + 50 * y / h + 10 * camera
    img[..., 1] = 100 + 30 * x / w
    img[..., 2] = 110 - 20 * y / h
    cy = int((h // 4) + (h // 4) * np.sin(step / 7.0 + camera))
    cx = int(w // 3 + (step * 2) % (w // 2))
    img[cy:cy + h // 6, cx:cx + w // 6] = (200, 40, 40)
    img[h // 2 + 10:h // 2 + 10 + h // 5, (w // 5 + step) % (w - w // 5):(w // 5 + step) % (w - w // 5) + w // 8] = (40, 170, 60)
    if noise_std > 0:
        img += (rng or np.random.default_rng(step)).normal(0, noise_std, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def observation(step: int, episode: int = 0, cameras: Sequence[str] = ("front", "wrist"), hw: tuple[int, int] = (128, 128),
                task_state_dim: int = 6, noise_std: float = 0.0, timestamp_s: float | None = None) -> dict:
    obs: dict = {f"images/{c}": frame(step + 31 * episode, i, hw, noise_std) for i, c in enumerate(cameras)}
    state = np.zeros(STATE_DIM, np.float32)
    state[0], state[1] = step, episode
    obs["state"] = state
    obs["prompt"] = "pick up the red cube"
    obs["timestamp_s"] = float(step * 0.1 if timestamp_s is None else timestamp_s)
    if task_state_dim:
        obs["task_state"] = np.full(task_state_dim, step, np.float32)
    return obs


def step_record(episode_id: str, step: int, segment: Segment | str = Segment.AUTONOMOUS, *, episode: int = 0,
                last: bool = False, terminal: bool = True, obs: dict | None = None, timestamp_s: float | None = None,
                **obs_kwargs) -> StepRecord:
    """A StepRecord whose action encodes (episode, step): action[0] = step / 1000, action[1] = episode / 1000."""
    seg = Segment.parse(segment)
    action = np.zeros(7, np.float32)
    action[0], action[1] = step / 1000.0, episode / 1000.0
    human = seg in HUMAN_SEGMENTS
    return StepRecord(
        episode_id=episode_id, step=step, observation=obs if obs is not None else observation(step, episode, **obs_kwargs),
        action_executed=action, action_policy=np.full(7, np.nan, np.float32) if human else action,
        source="human" if human else "policy", segment=seg, instruction="pick up the red cube",
        policy_version=-1 if human else 3, reward=1.0 if (last and terminal) else 0.0, critic_progress=0.01 * step,
        done=last and terminal, truncated=last and not terminal, success=last and terminal,
        timestamp_s=float(step * 0.1 if timestamp_s is None else timestamp_s), obs_timestamp_s=float(step * 0.1),
        operator_id="sim_operator" if human else "", device_id="sim" if human else "",
        safety_flags=("step_pos",) if step % 5 == 4 else (), language_correction="grasp lower" if seg == Segment.CORRECTION else "",
    )


def record_episode(recorder, episode_id: str, segments: Sequence[Segment | str], *, episode: int = 0, terminal: bool = True,
                   final_obs: bool = True, success: bool = True, **obs_kwargs):
    """Feed one episode through a Recorder; returns its EpisodeMeta."""
    n = len(segments)
    for t, seg in enumerate(segments):
        recorder.add(step_record(episode_id, t, seg, episode=episode, last=t == n - 1, terminal=terminal, **obs_kwargs))
    final = observation(n, episode, **obs_kwargs) if final_obs else None
    return recorder.end_episode(success, final_observation=final, task="pick_cube")
