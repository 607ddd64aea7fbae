"""The scripted experts succeed on >= 95% of 100 seeded episodes per task (state-only, no rendering)."""

from __future__ import annotations

import numpy as np
import pytest

import sim  # noqa: F401
from hil_robot.config import RobotConfig, SimConfig
from hil_robot.types import Policy
from sim.expert import make_expert
from sim.robot import SimRobot
from sim.tasks import TASKS

EPISODES = 100


@pytest.mark.parametrize("task", list(TASKS))
def test_expert_success_rate(task):
    robot = SimRobot(SimConfig(task=task, render=False), RobotConfig(), seed=0)
    expert = make_expert(task)
    successes, failures = 0, []
    for seed in range(EPISODES):
        obs = robot.reset(seed)
        expert.reset()
        status = robot.task_status()
        for _ in range(robot.sim_cfg.max_episode_steps):
            if status["success"] or status["failed"]:
                break
            robot.send_action(expert.infer(obs)["actions"][0])
            obs = robot.observe()
            status = robot.task_status()
        successes += status["success"]
        if not status["success"]:
            failures.append((seed, status["subtask"]))
    rate = successes / EPISODES
    assert rate >= 0.95, f"{task}: expert success {rate:.0%} < 95%; failed (seed, subtask): {failures}"


def test_expert_is_a_policy_with_chunk_of_one():
    expert = make_expert("push_target")
    assert isinstance(expert, Policy)
    robot = SimRobot(SimConfig(task="push_target", render=False), RobotConfig(), seed=0)
    out = expert.infer(robot.reset(3))
    assert out["actions"].shape == (1, 7) and out["actions"].dtype == np.float32
    assert np.all(np.abs(out["actions"]) <= 1.0)
    assert expert.metadata["action_horizon"] == 1 and expert.metadata["name"] == "expert"


def test_noisy_expert_adds_seeded_noise_to_motion_only():
    robot = SimRobot(SimConfig(task="pick_cube", render=False), RobotConfig(), seed=0)
    obs = robot.reset(0)
    clean = make_expert("pick_cube").act(obs)
    a1 = make_expert("pick_cube", noise_std=0.3, seed=5).act(obs)
    a2 = make_expert("pick_cube", noise_std=0.3, seed=5).act(obs)
    assert np.array_equal(a1, a2), "same seed must give the same noise"
    assert not np.allclose(a1[:6], clean[:6])
    assert a1[6] == clean[6], "the gripper command is left clean"


def test_expert_needs_privileged_task_state():
    with pytest.raises(ValueError, match="task_state"):
        make_expert("pick_cube").infer({"state": np.zeros(15, np.float32)})
