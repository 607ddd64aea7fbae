"""Gymnasium API, the Robot protocol, determinism under a seed, and bad actions (NaN / out of range)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import sim
from hil_robot.config import ConfigError, RobotConfig, SimConfig
from hil_robot.types import Robot, SentAction, validate_observation
from sim.expert import make_expert
from sim.robot import SimRobot

SMALL = dict(image_height=48, image_width=64)


@pytest.mark.parametrize("env_id,task", list(sim.ENV_IDS.items()))
def test_gymnasium_ids_are_registered(env_id, task):
    env = gym.make(env_id, render=False)
    obs, info = env.reset(seed=0)
    assert env.unwrapped.sim_cfg.task == task
    assert obs["state"].shape == (15,) and obs["task_state"].shape == (14,)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert isinstance(reward, float) and not terminated and not truncated
    assert {"success", "failed", "progress", "subtask", "limits", "limit_counts"} <= set(info)
    env.close()


def test_image_observations_follow_the_contract():
    env = sim.make_env(SimConfig(task="pick_cube", **SMALL), RobotConfig(), seed=0, render_mode="rgb_array")
    obs, _ = env.reset()
    obs = validate_observation(obs, cameras=("front", "wrist"))
    for cam in ("front", "wrist"):
        img = obs[f"images/{cam}"]
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        assert img.std() > 5, f"{cam} image looks blank"
        assert env.observation_space[f"images/{cam}"].contains(img)
    assert obs["prompt"] == "pick up the red cube and lift it"
    assert env.render().shape == (48, 64, 3)
    env.close()


def test_truncated_after_max_episode_steps():
    env = sim.make_env(SimConfig(task="pick_cube", render=False, max_episode_steps=5), RobotConfig(), seed=0)
    env.reset(seed=0)
    flags = [env.step(np.zeros(7, np.float32))[3] for _ in range(5)]
    assert flags == [False] * 4 + [True]


def test_same_seed_same_observations_and_actions():
    def rollout(seed):
        robot = SimRobot(SimConfig(task="stack_cubes", **SMALL), RobotConfig(), seed=0)
        policy = make_expert("stack_cubes", noise_std=0.3, seed=seed)
        obs = robot.reset(seed)
        states, images, actions = [], [], []
        for _ in range(12):
            a = policy.infer(obs)["actions"][0]
            robot.send_action(a)
            obs = robot.observe()
            states.append(obs["state"]), images.append(obs["images/front"]), actions.append(a)
        return np.array(states), np.array(images), np.array(actions), obs["task_state"]

    s1, i1, a1, t1 = rollout(7)
    s2, i2, a2, t2 = rollout(7)
    assert np.array_equal(s1, s2) and np.array_equal(a1, a2) and np.array_equal(i1, i2) and np.array_equal(t1, t2)
    s3, _, _, t3 = rollout(8)
    assert not np.allclose(t1, t3), "a different seed must give a different layout"


def test_randomisation_changes_colours_lights_and_cameras_between_seeds():
    robot = SimRobot(SimConfig(task="pick_cube", **SMALL), RobotConfig(), seed=0)
    robot.reset(1)
    m = robot.world.model
    snap = (m.geom_rgba.copy(), m.light_diffuse.copy(), m.cam_pos.copy())
    robot.reset(2)
    assert not np.allclose(snap[0], m.geom_rgba) and not np.allclose(snap[1], m.light_diffuse)
    assert not np.allclose(snap[2], m.cam_pos)
    robot.reset(1)
    assert np.allclose(snap[0], m.geom_rgba) and np.allclose(snap[2], m.cam_pos)


def test_nan_and_out_of_range_actions_are_held_or_clipped_and_counted():
    robot = SimRobot(SimConfig(task="pick_cube", render=False), RobotConfig(), seed=0)
    assert isinstance(robot, Robot)
    st0 = robot.reset(0)["state"].copy()
    sent = robot.send_action(np.array([np.nan, 0, 0, 0, 0, np.inf, 1], np.float32))
    assert isinstance(sent, SentAction) and "nan_hold" in sent.limits
    assert np.all(np.isfinite(sent.action)) and np.allclose(sent.action[:6], 0)
    st1 = robot.observe()["state"]
    assert np.all(np.isfinite(robot.world.data.qpos)) and np.all(np.isfinite(robot.world.data.ctrl))
    assert np.linalg.norm(st1[:3] - st0[:3]) < 0.003, "NaN must mean hold"
    sent = robot.send_action(np.array([5, -3, 0, 0, 0, 0, 2], np.float32))
    assert "clip_action" in sent.limits and np.allclose(sent.action, [1, -1, 0, 0, 0, 0, 1])
    sent = robot.send_pose_target(np.full(8, np.nan, np.float32))
    assert "nan_hold" in sent.limits
    assert robot.limit_counts["nan_hold"] == 2 and robot.limit_counts["clip_action"] == 1
    for _ in range(40):  # push up against the workspace ceiling
        sent = robot.send_action(np.array([0, 0, 1, 0, 0, 0, -1], np.float32))
    assert "workspace" in sent.limits
    assert robot.observe()["state"][2] <= RobotConfig().safety.workspace_max_m[2] + 0.005
    with pytest.raises(ValueError, match="shape"):
        robot.send_action(np.zeros(6, np.float32))


def test_env_info_reports_limits():
    env = sim.make_env(SimConfig(task="push_target", render=False), RobotConfig(), seed=0)
    env.reset(seed=0)
    *_, info = env.step(np.full(7, np.nan, np.float32))
    assert info["limits"] == ("nan_hold",) and info["limit_counts"] == {"nan_hold": 1}


def test_robot_protocol_lifecycle_and_metadata():
    with SimRobot(SimConfig(task="peg_insert", render=False), RobotConfig(control_hz=20.0), seed=0) as robot:
        md = robot.metadata
        assert md["control_hz"] == 20.0 and md["substeps"] == 25 and md["action_dim"] == 7
        assert md["subtasks"] == ("reach", "grasp", "lift", "align", "insert")
        robot.send_action(np.array([1, 0, 0, 0, 0, 0, 0], np.float32))
        robot.stop()  # mid-motion: the target was 2 cm ahead
        p = robot.observe()["state"][:3].copy()
        for _ in range(5):
            robot.send_action(np.zeros(7, np.float32))
        assert np.linalg.norm(robot.observe()["state"][:3] - p) < 0.003, "after stop() the arm settles where it stopped"
        status = robot.task_status()
        assert set(status) >= {"success", "failed", "progress", "subtask"} and 0 <= status["progress"] <= 1


def test_env_rejects_bad_options():
    with pytest.raises(ConfigError, match="allowed"):
        sim.make_env(SimConfig(render=False), RobotConfig(), image_size=3)
    with pytest.raises(ConfigError, match="valid tasks"):
        gym.make("hil_robot/PickCube-v0", task="lift_cup")
    with pytest.raises(ConfigError, match="sim.image_height"):
        SimConfig(image_height=0)
