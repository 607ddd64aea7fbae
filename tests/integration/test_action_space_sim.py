"""Policies that speak absolute action spaces drive the MuJoCo robot through the controller, the
action-space adapter and the safety filter, and complete pick_cube; the episode store records our
normalised delta as ``action_policy`` and the native space in the episode metadata.

The policy is the scripted expert re-expressed in a foreign space: its next-tick TCP target as an
``ee_pose_abs`` row (quaternion xyzw, gripper [0, 1] with 1 = closed), or converted to joint
targets by our damped-least-squares IK as a ``joint_pos_abs`` row (gripper as opening width in m).
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np
import pytest

from hil_robot.config import load_config
from hil_robot.control.clock import FakeClock
from hil_robot.control.loop import Controller
from hil_robot.data import EpisodeStore, Recorder
from hil_robot.rotations import quat_from_rotvec, quat_mul
from hil_robot.types import Source
from sim import panda
from sim.expert import make_expert
from sim.ik import DampedLeastSquaresIK
from sim.robot import SimRobot


class ForeignExpert:
    """The scripted expert's next TCP pose target in a native space (chunks of one row)."""

    def __init__(self, space: str, cfg, model: mujoco.MjModel, home_q: np.ndarray) -> None:
        self.space, self.cfg = space, cfg
        self.expert = make_expert("pick_cube", cfg.robot)
        jid = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, f"joint{i + 1}") for i in range(7)]
        self.ik = DampedLeastSquaresIK(model, "tcp", [model.jnt_qposadr[j] for j in jid], [model.jnt_dofadr[j] for j in jid],
                                       np.array(panda.JOINT_LIMITS_RAD), home_q)  # its own MjData
        self.ik_errors_m: list[float] = []

    def infer(self, obs):
        s = np.asarray(obs["state"], np.float64)
        a = self.expert.act(obs).astype(np.float64)
        pos = s[0:3] + a[:3] * self.cfg.robot.max_delta_pos_m
        quat = quat_mul(quat_from_rotvec(a[3:6] * self.cfg.robot.max_delta_rot_rad), s[3:7])
        if self.space == "ee_pose_abs":
            w, x, y, z = quat
            row = np.r_[pos, x, y, z, w, (a[6] + 1.0) / 2.0]  # close_1
        else:
            res = self.ik.solve(pos, quat, s[8:15], max_iters=60)
            self.ik_errors_m.append(res.pos_err_m)
            row = np.r_[res.qpos, panda.FINGER_TRAVEL_M * (1.0 - a[6])]  # width_m: 0.08 open .. 0 closed
        return {"actions": row[None].astype(np.float32), "policy_version": 7}

    def reset(self) -> None:
        self.expert.reset()

    metadata = {"name": "foreign_expert"}


@pytest.mark.parametrize("space, extra", [
    ("ee_pose_abs", {"action_rotation": "quat_xyzw", "action_gripper": "close_1"}),
    ("joint_pos_abs", {"action_gripper": "width_m"}),
])
def test_absolute_space_policy_completes_pick_cube(space, extra, tmp_path):
    cfg = load_config(["policy=expert", "sim.render=false", "sim.task=pick_cube", "sim.randomize=false"])
    cfg.policy = dataclasses.replace(cfg.policy, action_space=space, **extra)
    clock = FakeClock()
    robot = SimRobot(cfg.sim, cfg.robot, seed=0, clock=clock.now)
    store = EpisodeStore(tmp_path / "store", fsync=False)
    rec = Recorder(store, cfg.learner.pre_intervention_k)
    with robot:
        policy = ForeignExpert(space, cfg, robot.world.model, robot.world.home_qpos)
        ctl = Controller(robot, policy, None, rec, cfg, clock=clock)
        steps = []
        ctl.on_step = lambda r, d: steps.append((r, d))
        try:
            res = ctl.run_episode(max_steps=cfg.sim.max_episode_steps, seed=11)
        finally:
            ctl.close()
            rec.close()
    assert res.success, f"{space} policy did not pick the cube in {res.steps} steps ({res.end_reason})"
    if policy.ik_errors_m:
        assert np.median(policy.ik_errors_m) < 1e-3, "the test's IK did not produce the intended joint targets"
    assert ctl.executor.counters["rejected_chunks"] == 0
    for r, d in steps:
        assert r.source == Source.POLICY and r.policy_version == 7
        assert np.isfinite(r.action_policy).all() and (np.abs(r.action_policy) <= 1 + 1e-6).all()
        assert d.kind == "send"
    closed = [r.action_policy[6] for r, _ in steps if r.action_policy[6] > 0.5]
    assert closed and np.allclose(closed, 1.0, atol=1e-5), "the native gripper convention became our +1 = closed"
    ep = EpisodeStore(tmp_path / "store", read_only=True).read_episode(0)
    assert ep.meta.success and ep.meta.extra["action_space"]["space"] == space
    assert np.isfinite(ep.columns["action_policy"]).all()
