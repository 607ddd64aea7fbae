"""Action-space adapters (hil_robot/control/action_space.py): forward kinematics against MuJoCo,
every native space and gripper convention, absolute targets through the safety filter, H != ours,
and bad chunks rejected by the executor."""

from __future__ import annotations

import dataclasses
import logging
import math
import time

import numpy as np
import pytest

from hil_robot.config import ConfigError
from hil_robot.config.policy import PolicyConfig
from hil_robot.config.robot import RobotConfig, SafetyConfig
from hil_robot.control.action_space import ActionAdapter, BadChunkError
from hil_robot.control.chunking import ChunkExecutor
from hil_robot.control.safety import SafetyFilter
from hil_robot.kinematics import PANDA, matrix_to_quat
from hil_robot.rotations import quat_angle_rad, quat_from_rotvec, quat_mul, relative_rotvec
from hil_robot.types import ContractError, STATE_DIM

READY = np.array((0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4))


def state_at(q: np.ndarray, opening: float = 1.0) -> np.ndarray:
    """A consistent robot state: the TCP pose forward kinematics gives for joints q."""
    pos, quat = PANDA.fk(q)
    s = np.zeros(STATE_DIM, np.float32)
    s[0:3], s[3:7], s[7], s[8:15] = pos, quat, opening, q
    return s


def adapter(robot: RobotConfig | None = None, **policy) -> ActionAdapter:
    return ActionAdapter(PolicyConfig(**policy), robot or RobotConfig(), 0.1)


def filtered(robot: RobotConfig, delta: np.ndarray, state: np.ndarray):
    f = SafetyFilter(robot, 0.1)
    f.reset(0.0, state)
    return f.filter(delta, 0.0, 0.0, state)


# ----------------------------------------------------------------------------- kinematics


def test_panda_fk_matches_mujoco_tcp_pose_within_0_1_mm():
    import mujoco

    from hil_robot.config import SimConfig
    from sim import panda as sim_panda
    from sim.world import SimWorld

    assert PANDA.dh == sim_panda.DH and PANDA.joint_limits_rad == sim_panda.JOINT_LIMITS_RAD, "sim arm and robot model differ"
    world = SimWorld(SimConfig(task="pick_cube", render=False, randomize=False), RobotConfig(), seed=0)
    lim = np.array(PANDA.joint_limits_rad)
    qs = np.random.default_rng(0).uniform(lim[:, 0], lim[:, 1], (30, 7))
    pos, quat = PANDA.fk(qs)  # batched
    for q, p, qu in zip(qs, pos, quat):
        mp, mq = world.ik.fk(q)
        assert np.abs(p - mp).max() < 1e-4, f"TCP position differs from MuJoCo by {np.abs(p - mp).max():.2e} m at q={q}"
        assert quat_angle_rad(qu, mq) < 1e-4, "TCP orientation differs from MuJoCo"
    # the per-tick single call agrees with the batch
    p1, q1 = PANDA.fk(qs[0])
    assert np.allclose(p1, pos[0]) and np.allclose(q1, quat[0])
    R = np.zeros(9)
    mujoco.mju_quat2Mat(R, quat[3])
    assert np.allclose(matrix_to_quat(R.reshape(3, 3)), quat[3], atol=1e-12)


# ----------------------------------------------------------------------------- spaces


def test_ours_passes_through_untouched_and_other_metric_scales_convert():
    ours = adapter()
    assert ours.identity
    row = np.array([0.3, -2.0, np.nan, 0.1, 0.2, -0.3, 0.9], np.float32)
    assert np.array_equal(ours.to_delta(row, state_at(READY)), row.astype(np.float64), equal_nan=True)
    # a policy trained with 1 unit = 1 m / 1 rad per tick
    metric = adapter(action_pos_scale_m=1.0, action_rot_scale_rad=1.0)
    assert not metric.identity
    out = metric.to_delta(np.array([0.01, 0.0, -0.005, 0.075, 0.0, 0.0, 1.0]), state_at(READY))
    assert np.allclose(out, [0.5, 0.0, -0.25, 0.5, 0.0, 0.0, 1.0])


def test_ee_pose_abs_near_target_is_reached_in_one_tick():
    robot = RobotConfig()
    s = state_at(READY)
    target_pos = s[:3].astype(np.float64) + [0.01, -0.005, 0.004]
    target_quat = quat_mul(quat_from_rotvec([0.0, 0.0, 0.1]), s[3:7])
    a = adapter(robot, action_space="ee_pose_abs")
    delta = a.to_delta(np.r_[target_pos, target_quat, -1.0], s)  # gripper stays open
    assert np.allclose(delta[:3] * robot.max_delta_pos_m, target_pos - s[:3], atol=1e-6)
    assert np.allclose(delta[3:6] * robot.max_delta_rot_rad, [0, 0, 0.1], atol=1e-6)
    d = filtered(robot, delta, s)
    assert d.kind == "send" and d.flags == (), d.flags


def test_far_absolute_target_moves_exactly_at_the_step_limit():
    # the action range (0.05 m per component) is wider than the step limit, so the limit binds
    robot = RobotConfig(max_delta_pos_m=0.05, max_delta_rot_rad=0.5,
                        safety=SafetyConfig(max_step_m=0.03, max_step_rad=0.25))
    s = state_at(READY)
    direction = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    target = s[:3] + 0.2 * direction  # inside the box, far away
    far_rot = quat_mul(quat_from_rotvec([0.0, 1.2, 0.0]), s[3:7])
    for space, row in (("ee_pose_abs", np.r_[target, far_rot, -1.0]),):
        delta = adapter(robot, action_space=space).to_delta(row, s)
        d = filtered(robot, delta, s)
        move = d.action[:3].astype(np.float64) * robot.max_delta_pos_m
        assert d.kind == "send"
        assert math.isclose(np.linalg.norm(move), 0.03, rel_tol=1e-5), np.linalg.norm(move)
        assert np.allclose(move / np.linalg.norm(move), direction, atol=1e-5), "the direction must be kept"
        rot = d.action[3:6].astype(np.float64) * robot.max_delta_rot_rad
        assert math.isclose(np.linalg.norm(rot), 0.25, rel_tol=1e-5)
        assert np.allclose(rot / 0.25, [0, 1, 0], atol=1e-5)


def test_absolute_target_outside_the_box_stops_on_the_box():
    robot = RobotConfig()
    q = READY.copy()
    s = state_at(q)
    box_min = np.array(robot.safety.workspace_min_m)
    s[0] = box_min[0] + 0.005  # 5 mm inside the box's -x face
    target = np.r_[box_min[0] - 0.5, s[1], s[2]]
    delta = adapter(robot, action_space="ee_pose_abs").to_delta(np.r_[target, s[3:7], 1.0], s)
    d = filtered(robot, delta, s)
    new_x = s[0] + d.action[0] * robot.max_delta_pos_m
    assert "workspace" in d.flags and math.isclose(new_x, box_min[0], abs_tol=1e-6)


def test_rotation_formats_give_the_same_command():
    s = state_at(READY)
    pos = s[:3] + np.array([0.005, 0.0, -0.01])
    rv = np.array([0.1, -0.05, 0.2])
    q_target = quat_mul(quat_from_rotvec(rv), s[3:7])  # wxyz
    w, x, y, z = q_target
    # extrinsic xyz Euler angles of the same orientation, from its rotation matrix
    import mujoco

    R = np.zeros(9)
    mujoco.mju_quat2Mat(R, q_target)
    R = R.reshape(3, 3)
    roll, pitch, yaw = math.atan2(R[2, 1], R[2, 2]), -math.asin(R[2, 0]), math.atan2(R[1, 0], R[0, 0])
    rotvec_abs = relative_rotvec(q_target, [1.0, 0, 0, 0])
    rows = {
        "quat_wxyz": np.r_[pos, w, x, y, z, 1.0],
        "quat_xyzw": np.r_[pos, x, y, z, w, 1.0],
        "rotvec": np.r_[pos, rotvec_abs, 1.0],
        "euler_xyz": np.r_[pos, roll, pitch, yaw, 1.0],
    }
    outs = {k: adapter(action_space="ee_pose_abs", action_rotation=k).to_delta(v, s) for k, v in rows.items()}
    for k, out in outs.items():
        assert np.allclose(out, outs["quat_wxyz"], atol=1e-6), f"{k} disagrees with quat_wxyz"
    # reading an xyzw row as wxyz gives a different command: the order matters
    wrong = adapter(action_space="ee_pose_abs", action_rotation="quat_wxyz").to_delta(rows["quat_xyzw"], s)
    assert not np.allclose(wrong, outs["quat_wxyz"], atol=1e-3)


@pytest.mark.parametrize(
    "convention, native, ours",
    [
        ("signed", [-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0]),
        ("close_1", [0.0, 0.5, 1.0], [-1.0, 0.0, 1.0]),
        ("open_1", [1.0, 0.5, 0.0], [-1.0, 0.0, 1.0]),
        ("width_m", [0.08, 0.04, 0.0], [-1.0, 0.0, 1.0]),
    ],
)
def test_gripper_conventions(convention, native, ours):
    s = state_at(READY)
    a = adapter(action_space="joint_pos_abs", action_gripper=convention)
    rows = np.array([np.r_[READY, g] for g in native])
    out = a.to_deltas(rows, np.stack([s] * len(native)))
    assert np.allclose(out[:, 6], ours, atol=1e-9)
    assert np.allclose(out[:, :6], 0.0, atol=1e-5), "joint target at the measured joints: no motion"


def test_joint_spaces_go_through_forward_kinematics():
    robot = RobotConfig()
    s = state_at(READY)
    q_goal = READY + np.array([0.02, -0.015, 0.01, 0.02, 0.0, -0.01, 0.03])
    goal_pos, goal_quat = PANDA.fk(q_goal)
    via_joints = adapter(robot, action_space="joint_pos_abs").to_delta(np.r_[q_goal, 1.0], s)
    via_pose = adapter(robot, action_space="ee_pose_abs").to_delta(np.r_[goal_pos, goal_quat, 1.0], s)
    assert np.allclose(via_joints, via_pose, atol=1e-9)
    # DROID-style velocities integrated over 0.5 s reach the same joint target
    qd = (q_goal - READY) / 0.5
    via_vel = adapter(robot, action_space="joint_vel", joint_vel_dt_s=0.5).to_delta(np.r_[qd, 1.0], s)
    assert np.allclose(via_vel, via_joints, atol=1e-9)
    # a joint target beyond the limits is clipped into them before forward kinematics
    beyond = READY.copy()
    beyond[3] = 1.0  # joint 4 must stay below -0.0698 rad
    clipped = READY.copy()
    clipped[3] = PANDA.joint_limits_rad[3][1]
    a = adapter(robot, action_space="joint_pos_abs")
    assert np.allclose(a.to_delta(np.r_[beyond, 0.0], s), a.to_delta(np.r_[clipped, 0.0], s))


def test_padding_columns_are_ignored_and_too_narrow_configs_fail():
    s = state_at(READY)
    a = adapter(action_space="joint_pos_abs", native_action_dim=32)
    row = np.r_[READY, 1.0, np.full(24, 123.0)]
    assert a.check_chunk(row[None]).shape == (1, 32)
    assert np.allclose(a.to_delta(row, s), adapter(action_space="joint_pos_abs").to_delta(row[:8], s))
    with pytest.raises(ConfigError, match="native_action_dim=7 is narrower"):
        PolicyConfig(action_space="joint_pos_abs", native_action_dim=7)
    with pytest.raises(ConfigError, match="policy.action_space"):
        PolicyConfig(action_space="joint_torque")
    with pytest.raises(ContractError, match="robot.kinematics"):
        adapter(RobotConfig(kinematics=""), action_space="joint_vel")


# ----------------------------------------------------------------------------- bad chunks


@pytest.mark.parametrize(
    "payload, kind, words",
    [
        (np.zeros((10, 7), np.float32), "shape", ["(10, 7)", "float[H, 8]", "joint_pos_abs"]),
        (np.zeros(8, np.float32), "shape", ["(8,)"]),
        (np.zeros((0, 8), np.float32), "shape", ["(0, 8)"]),
        (np.array([["a"] * 8]), "non_numeric", ["<U1"]),
        ([[0.0] * 8, [0.0] * 3], "non_numeric", ["not an array"]),
        ({"q": 1}, "non_numeric", ["object"]),
        (np.full((4, 8), np.nan, np.float32), "non_finite", ["(4, 8)", "actions[0, 0]"]),
        (np.r_[np.zeros((2, 8)), [[0, 0, 0, 0, 0, np.inf, 0, 0]]], "non_finite", ["actions[2, 5] = inf"]),
        (None, "missing", ["'actions'"]),
    ],
)
def test_bad_chunks_are_rejected_naming_key_and_shape(payload, kind, words):
    a = adapter(action_space="joint_pos_abs")
    with pytest.raises(BadChunkError) as e:
        a.check_chunk(payload, "actions")
    assert e.value.kind == kind
    for w in words:
        assert w in str(e.value), f"{w!r} not in: {e.value}"
    with pytest.raises(BadChunkError, match="zero-length quaternion") as e:
        adapter(action_space="ee_pose_abs").check_chunk(np.zeros((3, 8)))
    assert e.value.kind == "bad_rotation"


class _Scripted:
    """A policy that returns whatever the script gives for its n-th call."""

    def __init__(self, replies):
        self.replies, self.calls = list(replies), 0

    def infer(self, obs):
        self.calls += 1
        return self.replies[min(self.calls - 1, len(self.replies) - 1)]

    def reset(self):
        pass

    metadata = {"name": "scripted"}


def test_executor_runs_h50_joint_chunks_and_rejects_bad_ones_once_logged(caplog):
    robot = RobotConfig()
    s = state_at(READY)
    a = adapter(robot, action_space="joint_pos_abs", action_gripper="close_1", action_horizon=10)
    steps = np.linspace(0, 0.5, 50)[:, None] * np.array([0.1, 0, 0, 0.1, 0, 0, 0])
    good = np.c_[READY + steps, np.ones(50)].astype(np.float32)  # H = 50, D = 8, ours is H = 10, D = 7
    bad = [{"actions": np.full((50, 8), np.nan)}, {"actions": np.zeros((50, 7))}, {"actions": "pi"},
           {"no_actions": 1}, {"actions": np.full((50, 8), np.nan)}]
    policy = _Scripted([{"actions": good, "policy_version": 3}] + bad)
    ex = ChunkExecutor(policy, n_action_steps=50, request_lead_steps=0, max_wait_s=2.0, lockstep=True, adapter=a)
    try:
        obs = {"state": s}
        for tick in range(50):
            p = ex.action_for_tick(tick, obs)
            assert p is not None and p.policy_version == 3 and p.chunk_index == tick
            assert np.array_equal(p.native, good[tick])
            expected = a.to_delta(good[tick], s)
            assert np.allclose(p.action, expected, atol=1e-6) and p.action[6] == 1.0  # close_1: 1 -> closed
        assert ex.counters["requests"] == 1, "one H=50 chunk covers 50 ticks"
        with caplog.at_level(logging.ERROR, "hil_robot.control.chunking"):
            for tick in range(50, 55):
                assert ex.action_for_tick(tick, obs) is None, "a rejected chunk must never be executed"
    finally:
        ex.close()
    c = ex.counters
    assert c["rejected_chunks"] == 5 and c["rejected_non_finite"] == 2 and c["rejected_shape"] == 1
    assert c["rejected_non_numeric"] == 1 and c["rejected_missing"] == 1
    logged = [r for r in caplog.records if "policy chunk rejected" in r.getMessage()]
    assert len(logged) == 4, "one log line per kind of bad chunk"
    assert ex.last_rejection == "non_finite"


def test_bad_chunk_ticks_hold_are_flagged_and_never_reach_the_learner(tmp_path):
    """Good chunks, then NaN / wrong-shape chunks, then good again: the bad ticks hold, are stored
    with NaN action_policy, version -1 and a bad_chunk flag, and the replay never samples them nor
    puts them inside an action-chunk target."""
    from hil_robot.config import RootConfig
    from hil_robot.control.clock import FakeClock
    from hil_robot.control.fakes import ChunkPolicy, KinematicRobot
    from hil_robot.control.loop import Controller
    from hil_robot.data import EpisodeStore, Recorder
    from hil_robot.data.replay import ReplayBuffer

    def fn(call, obs):
        if 4 <= call < 8:
            return np.full((1, 7), np.nan) if call % 2 else np.zeros((1, 5))
        return np.array([[0.2, 0, 0, 0, 0, 0, -1.0]])

    cfg = RootConfig(policy=PolicyConfig(name="expert", action_horizon=1, n_action_steps=1))
    clock = FakeClock()
    robot = KinematicRobot(cfg.robot, clock=clock.now)
    store = EpisodeStore(tmp_path / "store", fsync=False)
    rec = Recorder(store, cfg.learner.pre_intervention_k)
    ctl = Controller(robot, ChunkPolicy(fn), None, rec, cfg, clock=clock)
    try:
        ctl.run_episode(max_steps=12)
    finally:
        ctl.close()
        rec.close()
    ep = EpisodeStore(tmp_path / "store", read_only=True).read_episode(0)
    ap = np.asarray(ep.columns["action_policy"])
    bad = ~np.isfinite(ap).all(axis=1)
    assert bad.tolist() == [False] * 4 + [True] * 4 + [False] * 4
    assert (np.asarray(ep.columns["policy_version"])[bad] == -1).all()
    flags = [tuple(f) for f in ep.columns["safety_flags"]]
    assert all(any(f.startswith("bad_chunk:") for f in fl) and "no_command" in fl for fl, b in zip(flags, bad) if b)
    assert not any(any(f.startswith("bad_chunk:") for f in fl) for fl, b in zip(flags, bad) if not b)
    assert np.allclose(np.asarray(ep.columns["action_executed"])[bad][:, :6], 0.0), "bad ticks hold"
    assert len(robot.sent) == 12 and all(np.isfinite(a).all() for a in robot.sent)
    assert ctl.stats()["chunks/rejected_non_finite"] == 2 and ctl.stats()["chunks/rejected_shape"] == 2
    buf = ReplayBuffer(64, "fifo")
    buf.insert(ep)
    assert buf.view_size("bc") == 8, "the 4 held ticks must not be samples"
    batch = buf.sample(256, horizon=4, view="bc", rng=np.random.default_rng(0))
    assert np.isfinite(batch["action_policy"]).all(), "a held tick was sampled"
    # a chunk target starting before the bad ticks is padded from the first bad tick on
    a = batch["actions"]
    assert not (np.abs(a[..., 0]) < 1e-6)[~batch["action_is_pad"]].any(), "a hold became an imitation target"


def test_temporal_ensembling_converts_each_row_before_averaging():
    """Two overlapping ee_pose_abs chunks (Euler angles): the ensembled command is the weighted mean
    of each row converted from the tick's state, never an average of raw angles."""
    robot = RobotConfig()
    s = state_at(READY)
    a = adapter(robot, action_space="ee_pose_abs", action_rotation="euler_xyz")
    r1 = np.r_[s[:3] + [0.004, 0, 0], math.pi - 0.01, 0.0, 0.0, -1.0]
    r2 = np.r_[s[:3] + [0.0, 0.004, 0], -math.pi + 0.01, 0.0, 0.0, -1.0]  # the same roll, across the wrap
    policy = _Scripted([{"actions": np.stack([r1] * 3), "policy_version": 1}, {"actions": np.stack([r2] * 3), "policy_version": 2}])
    ex = ChunkExecutor(policy, n_action_steps=1, request_lead_steps=0, max_wait_s=2.0, temporal_ensembling=True,
                       ensemble_decay=0.5, lockstep=True, adapter=a)
    try:
        obs = {"state": s}
        ex.action_for_tick(0, obs)
        ex.action_for_tick(1, obs)  # requests chunk 2 (planned from tick 1)
        if ex._future is not None:
            ex._future.result(timeout=10)  # let the reply land before tick 2 (no race on timing)
        p = ex.action_for_tick(2, obs)  # covered by chunk 1 (row 2) and chunk 2 (row 1)
    finally:
        ex.close()
    w = np.exp(-0.5 * np.arange(2))
    want = (w[0] * a.to_delta(r1, s) + w[1] * a.to_delta(r2, s)) / w.sum()
    assert p is not None and p.policy_version == 2 and np.array_equal(p.native, r2.astype(np.float32))
    assert np.allclose(p.action, want, atol=1e-5)
    assert abs(p.action[3]) < 0.5, "rolls of +pi-0.01 and -pi+0.01 are 0.02 rad apart, not 2 pi"
