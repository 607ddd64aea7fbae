"""Panda kinematics in the sim: DH forward kinematics, DLS IK accuracy, physical tracking, substeps."""

from __future__ import annotations

import numpy as np
import pytest

import sim  # noqa: F401  (headless GL default)
from hil_robot.config import RobotConfig, SimConfig
from sim import panda
from hil_robot.rotations import quat_from_rotvec, quat_mul, relative_rotvec
from sim.robot import SimRobot
from sim.world import SimWorld, substeps_for


@pytest.fixture(scope="module")
def world() -> SimWorld:
    return SimWorld(SimConfig(task="pick_cube", render=False, randomize=False), RobotConfig(), seed=0)


def test_mujoco_model_matches_panda_dh(world):
    rng = np.random.default_rng(0)
    lim = np.array(panda.JOINT_LIMITS_RAD)
    for _ in range(20):
        q = rng.uniform(lim[:, 0], lim[:, 1])
        T = panda.forward_kinematics(q)
        pos, quat = world.ik.fk(q)
        assert np.allclose(pos, T[:3, 3], atol=1e-6), "MuJoCo TCP position differs from the Panda DH chain"
        R = np.zeros(9)
        import mujoco

        mujoco.mju_quat2Mat(R, quat)
        assert np.allclose(R.reshape(3, 3), T[:3, :3], atol=1e-6)


def test_ready_pose_tcp_is_the_real_panda_one():
    T = panda.forward_kinematics(np.array(panda.READY_QPOS))
    # Franka's ready pose puts the flange at (0.307, 0, 0.59); the TCP is 0.1034 m below, pointing down
    assert np.allclose(T[:3, 3], [0.3069, 0.0, 0.4869], atol=1e-3)
    assert np.allclose(T[:3, 2], [0, 0, -1], atol=1e-6)


def test_ik_reaches_reachable_targets(world):
    rng = np.random.default_rng(1)
    home = world.home_qpos
    for _ in range(25):
        q_goal = np.clip(home + rng.uniform(-0.5, 0.5, 7), world.ik.lo, world.ik.hi)
        target_pos, target_quat = world.ik.fk(q_goal)
        res = world.ik.solve(target_pos, target_quat, home, max_iters=100)
        assert res.pos_err_m < 1e-3, f"IK position error {res.pos_err_m * 1e3:.2f} mm"
        assert res.rot_err_rad < 1e-2, f"IK rotation error {res.rot_err_rad:.3f} rad"
        assert np.all(res.qpos >= world.ik.lo) and np.all(res.qpos <= world.ik.hi)


def test_ik_unreachable_target_stays_within_limits(world):
    res = world.ik.solve(np.array([1.5, 0.0, 0.3]), panda.DOWN_QUAT, world.home_qpos, max_iters=50)
    assert res.pos_err_m > 0.3  # 1.5 m is out of the Panda's reach
    assert np.all(res.qpos >= world.ik.lo) and np.all(res.qpos <= world.ik.hi)


def test_pose_target_is_tracked_by_the_physical_arm():
    robot = SimRobot(SimConfig(task="pick_cube", render=False, randomize=False), RobotConfig(), seed=0)
    robot.reset(0)
    target_quat = quat_mul(quat_from_rotvec(np.array([0.0, 0.0, 0.4])), panda.DOWN_QUAT)
    pose = np.array([0.5, 0.12, 0.2, *target_quat, -1.0], np.float32)
    for _ in range(15):
        robot.send_pose_target(pose)
    st = robot.observe()["state"]
    assert np.linalg.norm(st[:3] - pose[:3]) < 0.004, f"TCP {st[:3]} did not reach {pose[:3]}"
    assert np.linalg.norm(relative_rotvec(pose[3:7].astype(float), st[3:7].astype(float))) < 0.03


def test_delta_actions_move_the_tcp_by_the_configured_step():
    rc = RobotConfig()
    robot = SimRobot(SimConfig(task="pick_cube", render=False, randomize=False), rc, seed=0)
    p0 = robot.reset(0)["state"][:3].copy()
    for _ in range(5):
        robot.send_action(np.array([1, 0, 0, 0, 0, 0, -1], np.float32))
    for _ in range(5):
        robot.send_action(np.zeros(7, np.float32))
    p1 = robot.observe()["state"][:3]
    assert abs((p1[0] - p0[0]) - 5 * rc.max_delta_pos_m) < 0.004
    assert abs(p1[1] - p0[1]) < 0.004 and abs(p1[2] - p0[2]) < 0.004


@pytest.mark.parametrize("hz,expected", [(10.0, 50), (15.0, 33), (20.0, 25), (12.0, 42)])
def test_substeps_use_round(hz, expected):
    assert substeps_for(hz, 0.002) == expected


def test_world_uses_control_rate_from_robot_config():
    w = SimWorld(SimConfig(task="pick_cube", render=False), RobotConfig(control_hz=15.0), seed=0)
    assert w.substeps == 33
    assert w.model.opt.timestep == pytest.approx(0.002)
