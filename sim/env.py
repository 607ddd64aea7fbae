"""Gymnasium environment over ``SimRobot``: ``gymnasium.make("hil_robot/PickCube-v0", ...)``.

Observation: dict with ``images/<cam>`` uint8 [H, W, 3], ``state`` float32 [15], ``task_state``
float32 [14], ``prompt`` str, ``timestamp_s`` float. Action: float32 [7] normalised EE delta.
Reward: 1.0 on the step that reaches success, else 0.0 (progress is in ``info``).
``terminated`` on success or failure; ``truncated`` after ``sim.max_episode_steps``.
"""

from __future__ import annotations

import dataclasses
import string
from typing import Any

import gymnasium as gym
import numpy as np

from hil_robot.config._build import ConfigError
from hil_robot.config.robot import RobotConfig
from hil_robot.config.sim import SimConfig
from hil_robot.types import IMAGE_PREFIX, STATE_DIM
from sim.robot import SimRobot
from sim.tasks import TASK_STATE_DIM, check_task

ENV_IDS = {
    "hil_robot/PickCube-v0": "pick_cube",
    "hil_robot/PushTarget-v0": "push_target",
    "hil_robot/PegInsert-v0": "peg_insert",
    "hil_robot/StackCubes-v0": "stack_cubes",
}


class HilSimEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, sim_cfg: SimConfig | None = None, robot_cfg: RobotConfig | None = None,
                 seed: int | None = None, render_mode: str | None = None, task: str | None = None,
                 **sim_overrides: Any) -> None:
        sim_cfg = sim_cfg or SimConfig()
        if task is not None:
            check_task(task)
            sim_overrides["task"] = task
        if sim_overrides:
            names = {f.name for f in dataclasses.fields(SimConfig)}
            bad = sorted(set(sim_overrides) - names)
            if bad:
                raise ConfigError(f"unknown sim option {bad[0]!r}; allowed: {', '.join(sorted(names))}")
            sim_cfg = dataclasses.replace(sim_cfg, **sim_overrides)
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode={render_mode!r} is not supported; use 'rgb_array' or None")
        self.sim_cfg = sim_cfg
        self.robot_cfg = robot_cfg or RobotConfig()
        self.render_mode = render_mode
        self.robot = SimRobot(sim_cfg, self.robot_cfg, seed=seed)
        self.robot.connect()
        self._seed_next = seed
        self._steps = 0
        self.metadata = {**HilSimEnv.metadata, "render_fps": self.robot_cfg.control_hz}
        spaces: dict[str, gym.Space] = {}
        if sim_cfg.render:
            for cam in sim_cfg.cameras:
                spaces[IMAGE_PREFIX + cam] = gym.spaces.Box(0, 255, (sim_cfg.image_height, sim_cfg.image_width, 3), np.uint8)
        spaces["state"] = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
        spaces["task_state"] = gym.spaces.Box(-np.inf, np.inf, (TASK_STATE_DIM,), np.float32)
        spaces["prompt"] = gym.spaces.Text(max_length=256, charset=string.printable)
        spaces["timestamp_s"] = gym.spaces.Box(-np.inf, np.inf, (), np.float64)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        if seed is None and self._seed_next is not None:
            seed, self._seed_next = self._seed_next, None
        obs = self.robot.reset(seed)
        self._steps = 0
        return obs, self._info(self.robot.task_status(), ())

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        sent = self.robot.send_action(action)
        self._steps += 1
        obs = self.robot.observe()
        status = self.robot.task_status()
        terminated = status["success"] or status["failed"]
        truncated = not terminated and self._steps >= self.sim_cfg.max_episode_steps
        info = self._info(status, sent.limits)
        info["action_applied"] = sent.action
        return obs, float(status["success"]), bool(terminated), bool(truncated), info

    def _info(self, status: dict, limits: tuple[str, ...]) -> dict:
        return {**status, "is_success": status["success"], "limits": limits,
                "limit_counts": self.robot.limit_counts, "step": self._steps}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self.robot.render_frame("front")

    def close(self) -> None:
        self.robot.close()


def make_env(sim_cfg: SimConfig | None = None, robot_cfg: RobotConfig | None = None, seed: int | None = None,
             **kwargs: Any) -> HilSimEnv:
    """The env for ``sim_cfg.task`` (see ``HilSimEnv`` for keyword overrides)."""
    return HilSimEnv(sim_cfg, robot_cfg, seed=seed, **kwargs)


def register_envs() -> None:
    for env_id, task in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="sim.env:HilSimEnv", kwargs={"task": task}, disable_env_checker=True)
