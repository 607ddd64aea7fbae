"""Property tests of the safety filter: >= 10^5 random commands (NaN/Inf/huge values, random
timing, random poses in and out of the box, e-stops) through the same code the controller uses.

* ``test_batched_core_*``: hypothesis draws the limits and a seed plus a small explicit array of
  adversarial rows; numpy fills each example up to ``ROWS`` commands; 60 examples -> 1.2e5 commands.
* ``SafetyMachine``: hypothesis drives the stateful ``SafetyFilter`` (e-stop latch, watchdog over
  time, gripper memory, pose targets) with sequences of commands.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hil_robot.config import RobotConfig, SafetyConfig
from hil_robot.control.safety import FLAG_BIT, HOLD, SEND, STOP, SafetyFilter, SafetyLimits, limit_commands, pose_targets_to_actions

ROWS = 2000
EXAMPLES = 60
TOL_M = 1e-7  # float32 output rounding, metres
TOL_RAD = 1e-6
COUNTED = {"commands": 0}

wild = st.floats(allow_nan=True, allow_infinity=True, width=32)


def robot_cfg(box_lo, box_size, max_step_m, max_step_rad, pos_scale, rot_scale, grip_rate, hz=20.0) -> RobotConfig:
    hi = tuple(lo + s for lo, s in zip(box_lo, box_size))
    return RobotConfig(
        control_hz=hz,
        max_delta_pos_m=pos_scale,
        max_delta_rot_rad=rot_scale,
        safety=SafetyConfig(
            workspace_min_m=tuple(box_lo), workspace_max_m=hi, max_step_m=max_step_m, max_step_rad=max_step_rad,
            gripper_max_rate_per_s=grip_rate, watchdog_hold_s=0.1, watchdog_stop_s=1.0,
        ),
    )


limits_strategy = st.builds(
    robot_cfg,
    box_lo=st.tuples(*[st.floats(-1, 1)] * 3),
    box_size=st.tuples(*[st.floats(0.05, 1.0)] * 3),
    max_step_m=st.floats(1e-3, 0.1),
    max_step_rad=st.floats(1e-2, 1.0),
    pos_scale=st.floats(1e-3, 0.1),
    rot_scale=st.floats(1e-2, 1.0),
    grip_rate=st.floats(0.1, 50.0),
)


def random_batch(rng: np.random.Generator, limits: SafetyLimits, n: int):
    """Commands, timing, poses and e-stops for n independent filter calls (adversarial mixture)."""
    act = rng.normal(0, 1, (n, 7)) * rng.choice([0.1, 1.0, 10.0, 1e6, 1e30], size=(n, 1))
    special = rng.random((n, 7))
    act[special < 0.02] = np.nan
    act[(special >= 0.02) & (special < 0.03)] = np.inf
    act[(special >= 0.03) & (special < 0.04)] = -np.inf
    act[(special >= 0.04) & (special < 0.06)] = 1.0
    lo, hi = limits.box_min_m, limits.box_max_m
    span = hi - lo
    ee = lo + rng.uniform(-0.3, 1.3, (n, 3)) * span  # ~40% of rows start outside on some axis
    edge = rng.random((n, 3))
    ee = np.where(edge < 0.05, lo, np.where(edge > 0.95, hi, ee))  # exactly on the faces
    ee[rng.random(n) < 0.01] = np.nan
    age = rng.choice([-0.5, 0.0, 0.05, 0.1, 0.1000001, 0.5, 1.0, 1.01, 3.0], size=n) + rng.normal(0, 0.02, n) * (rng.random(n) < 0.5)
    age[rng.random(n) < 0.01] = np.nan
    has = rng.random(n) > 0.05
    g0 = rng.uniform(-1.2, 1.2, n)
    g0[rng.random(n) < 0.01] = np.nan
    estop = rng.random(n) < 0.05
    return act, has, age, ee, g0, estop


def check_core(limits: SafetyLimits, act, has, age, ee, g0, estop) -> None:
    out, kind, flags = limit_commands(limits, act, has, age, ee, g0, estop)
    COUNTED["commands"] += len(act)
    o = out.astype(np.float64)
    assert out.dtype == np.float32 and np.isfinite(out).all(), "non-finite output"
    assert (np.abs(o) <= 1.0).all()
    finite_cmd = np.isfinite(act).all(axis=1)
    finite_state = np.isfinite(ee).all(axis=1) & np.isfinite(g0)
    with np.errstate(invalid="ignore"):
        stale_stop = ~(age <= limits.watchdog_stop_s + 1e-6)
        stale_hold = age > limits.watchdog_hold_s + 1e-6
    # who may move at all
    must_stop = estop | stale_stop
    assert (kind[must_stop] == STOP).all(), "e-stop / watchdog_stop did not stop"
    assert (kind[estop] == STOP).all() and (flags[estop] & FLAG_BIT["estop"]).all()
    may_send = ~must_stop & has & ~stale_hold & (age >= -limits.watchdog_hold_s) & finite_cmd & finite_state
    assert (kind[~may_send] != SEND).all(), "sent a command that had to be held"
    assert (kind[may_send] == SEND).all(), "held a valid command"
    assert (kind[~must_stop & ~finite_cmd & has & ~stale_hold] == HOLD).all(), "NaN/Inf not held"
    held = kind != SEND
    assert (o[held, :6] == 0).all(), "hold/stop moved the arm"
    g_ref = np.where(np.isfinite(g0), np.clip(g0, -1, 1), 0.0)
    assert np.allclose(o[held, 6], g_ref[held], atol=1e-6), "hold changed the gripper"
    # step limits
    s = kind == SEND
    dpos = o[s, :3] * limits.pos_scale_m
    drot = o[s, 3:6] * limits.rot_scale_rad
    assert (np.linalg.norm(dpos, axis=1) <= limits.max_step_m + TOL_M).all(), "translation step limit exceeded"
    assert (np.linalg.norm(drot, axis=1) <= limits.max_step_rad + TOL_RAD).all(), "rotation step limit exceeded"
    assert (np.abs(o[s, 6] - g_ref[s]) <= limits.gripper_max_step + 1e-6).all(), "gripper rate exceeded"
    # workspace: inside stays inside; outside never moves further out
    e = ee[s]
    target = e + dpos
    lo, hi = limits.box_min_m, limits.box_max_m
    inside = (e >= lo) & (e <= hi)
    assert (target[inside] >= np.broadcast_to(lo, e.shape)[inside] - TOL_M).all()
    assert (target[inside] <= np.broadcast_to(hi, e.shape)[inside] + TOL_M).all(), "left the workspace box"
    out_dist_before = np.maximum(lo - e, 0) + np.maximum(e - hi, 0)
    out_dist_after = np.maximum(lo - target, 0) + np.maximum(target - hi, 0)
    assert (out_dist_after <= out_dist_before + TOL_M).all(), "moved further outside the box"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cfg=limits_strategy, seed=st.integers(0, 2**32 - 1), explicit=hnp.arrays(np.float64, st.tuples(st.integers(1, 32), st.just(7)), elements=wild))
def test_batched_core_never_violates_limits(cfg: RobotConfig, seed: int, explicit: np.ndarray) -> None:
    limits = SafetyLimits.from_robot_config(cfg)
    rng = np.random.default_rng(seed)
    act, has, age, ee, g0, estop = random_batch(rng, limits, ROWS)
    act[: len(explicit)] = explicit  # hypothesis-shrinkable adversarial rows
    check_core(limits, act, has, age, ee, g0, estop)


@settings(max_examples=40, deadline=None)
@given(cfg=limits_strategy, seed=st.integers(0, 2**32 - 1))
def test_pose_targets_jump_guard_and_limits(cfg: RobotConfig, seed: int) -> None:
    limits = SafetyLimits.from_robot_config(cfg)
    rng = np.random.default_rng(seed)
    n = 500
    ee = rng.uniform(limits.box_min_m, limits.box_max_m, (n, 3))
    eq = rng.normal(size=(n, 4))
    eq /= np.linalg.norm(eq, axis=1, keepdims=True)
    pose = np.concatenate([ee + rng.normal(0, 0.05, (n, 3)), eq + rng.normal(0, 0.2, (n, 4)), rng.uniform(-1.5, 1.5, (n, 1))], axis=1)
    pose[rng.random((n, 8)) < 0.01] = np.nan
    act, jumped = pose_targets_to_actions(limits, pose, ee, eq, ee, eq)
    COUNTED["commands"] += n
    far = np.linalg.norm(pose[:, :3] - ee, axis=1) > limits.pose_jump_m
    from hil_robot.rotations import quat_angle_rad

    far |= quat_angle_rad(pose[:, 3:7], eq) > limits.pose_jump_rad
    finite = np.isfinite(pose).all(axis=1)
    assert (jumped == (far & finite)).all(), "pose-jump guard decision wrong"
    assert np.isnan(act[jumped | ~finite]).all(), "rejected target produced a command"
    ok = ~jumped & finite
    assert (np.abs(act[ok, :6]) <= 1 + 1e-9).all()
    out, kind, _ = limit_commands(limits, act, np.ones(n, bool), np.zeros(n), ee, np.zeros(n), np.zeros(n, bool))
    assert (kind[~ok] == HOLD).all() and (kind[ok] == SEND).all()
    assert (np.linalg.norm(out[:, :3].astype(np.float64) * limits.pos_scale_m, axis=1) <= limits.max_step_m + TOL_M).all()


class SafetyMachine(RuleBasedStateMachine):
    """The stateful filter over time: e-stop latch, watchdog escalation, gripper memory."""

    BURST = 40

    def __init__(self) -> None:
        super().__init__()
        self.cfg = robot_cfg((0.25, -0.35, 0.0), (0.5, 0.7, 0.55), 0.03, 0.25, 0.02, 0.15, 10.0, hz=20.0)
        self.f = SafetyFilter(self.cfg)
        self.period = self.f.limits.period_s
        self.t = 100.0
        self.last_input = self.t
        self.latched = False
        self.state = np.zeros(15, np.float32)
        self.state[:3] = (0.5, 0.0, 0.3)
        self.state[3] = 1.0
        self.state[7] = 1.0
        self.f.reset(self.t, self.state)
        self.rng = np.random.default_rng(0)
        self.gripper = -1.0

    def _run(self, action, input_time) -> None:
        d = self.f.filter(action, input_time, self.t, self.state)
        COUNTED["commands"] += 1
        assert np.isfinite(d.action).all() and (np.abs(d.action) <= 1).all()
        if self.latched:
            assert d.kind == "stop" and "estop" in d.flags, "e-stop did not stay latched"
        if action is not None and input_time is not None and np.isfinite(action).all():
            self.last_input = max(self.last_input, input_time)
        usable = action is not None and np.isfinite(action).all()
        age_end = self.t + self.period - (input_time if usable else self.last_input)
        if age_end > 1.0 + 1e-6 or self.latched:
            assert d.kind == "stop"
        elif action is None or age_end > 0.1 + 1e-6:
            assert d.kind == "hold", (d, age_end)
        elif not usable:
            assert d.kind == "hold" and ("nan_hold" in d.flags or "watchdog_hold" in d.flags)
        if d.kind == "send":
            assert np.linalg.norm(d.action[:3] * 0.02) <= 0.03 + TOL_M
            assert abs(float(d.action[6]) - self.gripper) <= 10.0 * self.period + 1e-6
            self.gripper = float(d.action[6])
            # integrate the EE so the box is exercised over time
            self.state[:3] = self.state[:3] + d.action[:3] * 0.02
            lo, hi = np.array([0.25, -0.35, 0.0]), np.array([0.75, 0.35, 0.55])
            assert ((self.state[:3] >= lo - 1e-6) & (self.state[:3] <= hi + 1e-6)).all(), "left the box"
        elif d.kind == "hold":
            assert (d.action[:6] == 0).all() and float(d.action[6]) == pytest.approx(self.gripper, abs=1e-6)

    @rule(scale=st.sampled_from([0.5, 1.0, 5.0, 1e9]), delay_ticks=st.integers(0, 3), nan_rate=st.sampled_from([0.0, 0.05, 0.5]))
    def fresh_commands(self, scale, delay_ticks, nan_rate) -> None:
        for _ in range(self.BURST):
            a = self.rng.normal(0, scale, 7)
            a[self.rng.random(7) < nan_rate] = self.rng.choice([np.nan, np.inf, -np.inf])
            self._run(a, self.t - delay_ticks * self.period)
            self.t += self.period

    @rule(gap_s=st.floats(0.0, 2.0))
    def silence(self, gap_s) -> None:
        end = self.t + gap_s
        while self.t < end:
            self._run(None, None)
            self.t += self.period

    @rule(age_s=st.floats(-0.5, 3.0, allow_nan=False))
    def old_command(self, age_s) -> None:
        self._run(np.zeros(7), self.t - age_s)
        self.t += self.period

    @rule()
    def press_estop(self) -> None:
        self.f.estop("test")
        self.latched = True

    @precondition(lambda self: self.latched)
    @rule()
    def reset_estop(self) -> None:
        self.f.reset_estop()
        self.latched = False

    @invariant()
    def latch_matches(self) -> None:
        assert self.f.estopped == self.latched


TestSafetyMachine = SafetyMachine.TestCase
TestSafetyMachine.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)


def test_zz_enough_commands_were_checked() -> None:
    """Runs last in this module (alphabetical in pytest order after the machine): the property
    tests above must together have driven at least 10^5 commands through the filter."""
    if COUNTED["commands"] == 0:
        pytest.skip("run the whole module to count commands")
    print("commands checked:", COUNTED["commands"])
    assert COUNTED["commands"] >= 100_000, COUNTED


def test_nan_never_reaches_the_robot_even_with_nan_state() -> None:
    cfg = robot_cfg((0.25, -0.35, 0.0), (0.5, 0.7, 0.55), 0.03, 0.25, 0.02, 0.15, 10.0)
    f = SafetyFilter(cfg)
    state = np.full(15, np.nan, np.float32)
    f.reset(0.0, state)
    d = f.filter(np.ones(7), 0.0, 0.0, state)
    assert d.kind == "hold" and "state_invalid" in d.flags and np.isfinite(d.action).all()
    assert not math.isnan(float(d.action[6]))


@settings(max_examples=15, deadline=None)
@given(cfg=limits_strategy, seed=st.integers(0, 2**32 - 1))
def test_per_tick_path_equals_the_batched_core(cfg: RobotConfig, seed: int) -> None:
    """``limit_one`` (what SafetyFilter runs each tick) makes exactly the batched core's decisions."""
    from hil_robot.control.safety import limit_one

    limits = SafetyLimits.from_robot_config(cfg)
    rng = np.random.default_rng(seed)
    n = 400
    act, has, age, ee, g0, estop = random_batch(rng, limits, n)
    forced = np.where(rng.random(n) < 0.05, FLAG_BIT["pose_jump"], 0)
    out, kind, flags = limit_commands(limits, act, has, age, ee, g0, estop, forced)
    for i in range(n):
        o1, k1, f1 = limit_one(limits, act[i], bool(has[i]), float(age[i]), ee[i], float(g0[i]), bool(estop[i]), int(forced[i]))
        assert k1 == kind[i] and f1 == flags[i], (i, k1, kind[i], f1, flags[i])
        assert np.allclose(np.float32(o1), out[i], atol=2e-7), (i, o1, out[i])
    COUNTED["commands"] += n


def test_watchdog_shorter_than_a_control_period_is_a_config_error() -> None:
    from hil_robot.config import ConfigError

    cfg = robot_cfg((0.25, -0.35, 0.0), (0.5, 0.7, 0.55), 0.03, 0.25, 0.02, 0.15, 10.0, hz=5.0)
    with pytest.raises(ConfigError, match="watchdog_hold_s"):
        SafetyFilter(cfg)
