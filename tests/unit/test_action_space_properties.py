"""Property tests: whatever a policy returns in any native action space, the adapted command that
leaves the safety filter stays in the workspace box and within the step limits, and a non-finite
native row always holds. Hypothesis draws the limits, the space and its conventions and a seed;
numpy fills each example with ROWS adversarial rows (NaN/Inf, huge values, targets far outside the
box, joints beyond their limits) and states in and out of the box."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hil_robot.config import RobotConfig, SafetyConfig
from hil_robot.config.policy import ROTATION_WIDTH, PolicyConfig
from hil_robot.control.action_space import ActionAdapter
from hil_robot.control.safety import FLAG_BIT, HOLD, SEND, SafetyLimits, limit_commands
from hil_robot.kinematics import PANDA
from hil_robot.rotations import quat_from_rotvec

ROWS = 1000
TOL_M = 1e-6  # float32 output rounding
TOL_RAD = 1e-5


def robot_cfg(box_lo, box_size, max_step_m, max_step_rad, pos_scale, rot_scale) -> RobotConfig:
    return RobotConfig(
        control_hz=10.0, max_delta_pos_m=pos_scale, max_delta_rot_rad=rot_scale,
        safety=SafetyConfig(workspace_min_m=tuple(box_lo), workspace_max_m=tuple(l + s for l, s in zip(box_lo, box_size)),
                            max_step_m=max_step_m, max_step_rad=max_step_rad),
    )


robots = st.builds(
    robot_cfg,
    box_lo=st.tuples(*[st.floats(-0.5, 0.5)] * 3),
    box_size=st.tuples(*[st.floats(0.05, 1.0)] * 3),
    max_step_m=st.floats(1e-3, 0.1),
    max_step_rad=st.floats(1e-2, 1.0),
    pos_scale=st.floats(1e-3, 0.1),
    rot_scale=st.floats(1e-2, 1.0),
)
policies = st.builds(
    PolicyConfig,
    action_space=st.sampled_from(["ee_delta", "ee_pose_abs", "joint_pos_abs", "joint_vel"]),
    action_rotation=st.sampled_from(sorted(ROTATION_WIDTH)),
    action_gripper=st.sampled_from(["signed", "close_1", "open_1", "width_m"]),
    action_pos_scale_m=st.sampled_from([0.0, 1.0, 0.01]),
    action_rot_scale_rad=st.sampled_from([0.0, 1.0]),
    joint_vel_dt_s=st.sampled_from([0.0, 0.5]),
    native_action_dim=st.sampled_from([0, 32]),
)


def native_rows(rng: np.random.Generator, a: ActionAdapter, box_lo: np.ndarray, box_hi: np.ndarray, n: int) -> np.ndarray:
    rows = rng.normal(0, 1, (n, a.native_dim)) * rng.choice([0.01, 1.0, 10.0, 1e6], size=(n, 1))
    if a.space == "ee_pose_abs":  # plausible targets near/around the box, plus the wild ones above
        centre, size = (box_lo + box_hi) / 2, box_hi - box_lo
        near = rng.random(n) < 0.6
        rows[near, :3] = centre + rng.uniform(-1.5, 1.5, (near.sum(), 3)) * size
        if a.rotation.startswith("quat"):
            q = quat_from_rotvec(rng.normal(0, 1.5, (n, 3)))
            rows[near, 3:7] = (q[:, [1, 2, 3, 0]] if a.rotation == "quat_xyzw" else q)[near]
    if a.space == "joint_pos_abs":
        lim = np.array(PANDA.joint_limits_rad)
        near = rng.random(n) < 0.6
        rows[near, :7] = rng.uniform(lim[:, 0] - 0.5, lim[:, 1] + 0.5, (near.sum(), 7))
    bad = rng.random(n) < 0.1
    cols = rng.integers(0, a.width, n)
    rows[bad, cols[bad]] = rng.choice([np.nan, np.inf, -np.inf], bad.sum())
    return rows


def states(rng: np.random.Generator, box_lo: np.ndarray, box_hi: np.ndarray, n: int) -> np.ndarray:
    lim = np.array(PANDA.joint_limits_rad)
    q = rng.uniform(lim[:, 0], lim[:, 1], (n, 7))
    pos, quat = PANDA.fk(q)
    s = np.zeros((n, 15))
    size = box_hi - box_lo
    s[:, 0:3] = box_lo + rng.uniform(-0.2, 1.2, (n, 3)) * size  # some EE positions outside the box
    s[:, 3:7], s[:, 7], s[:, 8:15] = quat, rng.random(n), q
    return s


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(robot=robots, policy=policies, seed=st.integers(0, 2**32 - 1))
def test_no_adapted_command_leaves_the_box_or_exceeds_the_step_limits_and_nan_holds(robot, policy, seed):
    rng = np.random.default_rng(seed)
    a = ActionAdapter(policy, robot, 0.1)
    limits = SafetyLimits.from_robot_config(robot, 0.1)
    lo, hi = limits.box_min_m, limits.box_max_m
    rows = native_rows(rng, a, lo, hi, ROWS)
    st_ = states(rng, lo, hi, ROWS)
    deltas = a.to_deltas(rows, st_)
    ee = st_[:, :3]
    out, kind, flags = limit_commands(limits, deltas, True, 0.0, ee, st_[:, 7] * 2 - 1, False)
    native_bad = ~np.isfinite(rows[:, : a.width]).all(axis=1)
    assert (kind[native_bad] == HOLD).all() and (flags[native_bad] & FLAG_BIT["nan_hold"]).all(), "NaN/Inf must hold"
    assert (kind[~np.isfinite(deltas).all(axis=1)] == HOLD).all()
    sent = kind == SEND
    o = out.astype(np.float64)
    move = o[:, :3] * limits.pos_scale_m
    target = ee + move
    assert (np.linalg.norm(move[sent], axis=1) <= limits.max_step_m + TOL_M).all(), "translation step limit exceeded"
    assert (np.linalg.norm(o[sent, 3:6] * limits.rot_scale_rad, axis=1) <= limits.max_step_rad + TOL_RAD).all()
    # in the box, or (EE already outside on an axis) not further out on that axis
    assert (target[sent] >= np.minimum(lo, ee[sent]) - TOL_M).all() and (target[sent] <= np.maximum(hi, ee[sent]) + TOL_M).all()
    assert np.isfinite(o).all() and (np.abs(o) <= 1).all()
    # the per-tick single-row path makes the same command as the batch
    for i in rng.choice(ROWS, 50, replace=False):
        np.testing.assert_allclose(a.to_delta(rows[i], st_[i]), deltas[i], rtol=1e-9, atol=1e-9)
