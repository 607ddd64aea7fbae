"""Control loop with in-test fakes (Robot/Policy/operator contracts) on a fake clock."""

from __future__ import annotations

import numpy as np
import pytest

import dataclasses

from hil_robot.config import PolicyConfig, RootConfig
from hil_robot.control.clock import FakeClock
from hil_robot.control.fakes import ChunkPolicy, KinematicRobot, ScriptedOperator
from hil_robot.control.loop import Controller
from hil_robot.types import OperatorCommand, OperatorMode, Segment, Source


class ListRecorder:
    """Follows the Recorder interface used by the controller; keeps everything in memory."""

    def __init__(self) -> None:
        self.steps, self.ended, self.started = [], [], []

    def start_episode(self, episode_id, **header):
        self.started.append((episode_id, header))

    def add(self, step):
        self.steps.append(step)

    def end_episode(self, success, final_observation=None, **meta):
        self.ended.append((success, meta))
        return meta


def make(policy_fn=None, script=None, control=None, h=1, **policy_kw):
    cfg = RootConfig(policy=PolicyConfig(name="expert", action_horizon=1, n_action_steps=1))  # no Hydra: fast
    cfg.control = dataclasses.replace(cfg.control, **(control or {}))
    clock = FakeClock()
    robot = KinematicRobot(cfg.robot, clock=clock.now)
    policy = ChunkPolicy(policy_fn or (lambda c, o: np.zeros((h, 7), np.float32)), **policy_kw) if policy_fn is not False else None
    op = ScriptedOperator(script) if script else None
    rec = ListRecorder()
    ctl = Controller(robot, policy, op, rec, cfg, clock=clock)
    return ctl, robot, policy, op, rec, clock


def const(dx: float, grip: float = -1.0):
    return lambda c, o: np.array([[dx, 0, 0, 0, 0, 0, grip]], np.float32)


def test_takeover_correction_language_and_smooth_handback() -> None:
    def script(step, obs, ctx):
        if 5 <= step <= 12:
            seg = Segment.RECOVERY if step < 10 else Segment.CORRECTION
            return OperatorCommand(obs["timestamp_s"], OperatorMode.TAKEOVER, action=np.array([1, 0, 0, 0, 0, 0, -1.0]),
                                   segment=seg, language_correction="grasp the red cube" if step == 11 else "",
                                   operator_id="alice", device_id="spacemouse")
        return OperatorCommand(obs["timestamp_s"])

    ctl, robot, policy, op, rec, _ = make(const(-1.0), script, {"handback_max_delta": 0.5})
    res = ctl.run_episode(max_steps=20)
    s = rec.steps
    assert res.steps == 20 and len(s) == 20 and res.interventions == 1 and res.end_reason == "max_steps"
    assert [r.segment for r in s[:5]] == [Segment.AUTONOMOUS] * 5
    assert [r.segment for r in s[5:10]] == [Segment.RECOVERY] * 5
    assert [r.segment for r in s[10:13]] == [Segment.CORRECTION] * 3
    assert all(r.source == Source.HUMAN and r.operator_id == "alice" and r.policy_version == -1 for r in s[5:13])
    assert all(r.source == Source.POLICY and r.segment == Segment.AUTONOMOUS and r.policy_version == 1 for r in s[13:])
    # policy action recorded during the takeover too, executed action is the operator's
    assert s[7].action_policy[0] == pytest.approx(-1.0) and s[7].action_executed[0] == pytest.approx(1.0)
    # hand-back: bounded step from the operator's +1 to the policy's -1
    dx = [float(r.action_executed[0]) for r in s[12:18]]
    assert dx == pytest.approx([1.0, 0.5, 0.0, -0.5, -1.0, -1.0])
    # language correction: attached to its step; the policy sees it from the next tick on
    assert s[11].language_correction == "grasp the red cube" and s[11].instruction == "pick up the cube"
    assert all(r.instruction == "grasp the red cube" for r in s[12:])
    assert policy.seen[12]["prompt"] == "grasp the red cube" and policy.seen[11]["prompt"] == "pick up the cube"
    assert s[-1].truncated and not s[-1].done
    assert rec.ended[0][0] is False and rec.ended[0][1]["extra"]["end_reason"] == "max_steps"


def test_dof_mask_operator_drives_gripper_policy_drives_arm() -> None:
    mask = np.array([0, 0, 0, 0, 0, 0, 1], bool)
    script = lambda step, obs, ctx: OperatorCommand(obs["timestamp_s"], OperatorMode.TAKEOVER,
                                                   action=np.array([0, 0, 0, 0, 0, 0, 1.0]), dof_mask=mask)
    ctl, robot, *_ , rec, _ = make(const(0.5), script)
    ctl.run_episode(max_steps=4)
    ex = np.array([r.action_executed for r in rec.steps])
    assert ex[:, 0] == pytest.approx([0.5] * 4)  # policy's arm command
    # operator's gripper close, rate-limited from open (-1) by 10 units/s at 10 Hz
    assert ex[:, 6] == pytest.approx([0.0, 1.0, 1.0, 1.0])
    assert "gripper_rate" in rec.steps[0].safety_flags
    assert all(r.source == Source.HUMAN and r.segment == Segment.RECOVERY and r.policy_version == 1 for r in rec.steps)


def test_estop_latches_until_explicit_reset() -> None:
    script = lambda step, obs, ctx: OperatorCommand(obs["timestamp_s"], estop=(step == 3))
    ctl, robot, *_, rec, _ = make(const(0.5), script)
    ctl.on_step = lambda rec_, dec: ctl.reset_estop() if rec_.step == 8 else None
    ctl.run_episode(max_steps=12)
    kinds = ["estop" in r.safety_flags for r in rec.steps]
    assert kinds == [False] * 3 + [True] * 6 + [False] * 3  # latched from 3 through 8, cleared only by reset
    assert robot.stops == 6 and len(robot.sent) == 6
    assert all((r.action_executed[:6] == 0).all() for r in rec.steps[3:9])


def test_stale_observations_are_not_used() -> None:
    ctl, robot, policy, *_ = make(const(0.5))
    robot.clock = lambda: ctl.clock.now() - 1.0  # camera/arm driver lagging by a second
    ctl.run_episode(max_steps=5)
    assert policy.calls == 0, "a stale observation reached the policy"
    assert all(float(np.abs(a[:6]).max()) == 0 for a in robot.sent)
    assert ctl.counters["stale_obs"] == 5


def test_dead_policy_holds_then_stops() -> None:
    def dies(call, obs):
        if call >= 3:
            raise ConnectionError("policy server gone")
        return np.array([[0.3, 0, 0, 0, 0, 0, -1]], np.float32)

    ctl, robot, *_, rec, _ = make(dies, control={"max_policy_wait_s": 0.2})
    ctl.run_episode(max_steps=20)
    flags = [r.safety_flags for r in rec.steps]
    assert all("no_command" not in f for f in flags[:3])
    assert all("no_command" in f or "watchdog_stop" in f for f in flags[3:])
    first_stop = next(i for i, f in enumerate(flags) if "watchdog_stop" in f)
    # last usable input at tick 2; stop once it is > watchdog_stop_s (1 s) old at the end of a tick
    assert first_stop == 12
    assert robot.stops == 20 - first_stop
    assert ctl.executor.counters["errors"] >= 10


def test_nan_policy_output_is_held_and_never_reaches_the_robot() -> None:
    ctl, robot, *_, rec, _ = make(lambda c, o: np.full((1, 7), np.nan, np.float32))
    ctl.run_episode(max_steps=5)  # KinematicRobot raises on a NaN action
    # the executor rejects the chunk: every tick holds on no command, marked, never a policy action
    assert all("no_command" in r.safety_flags and "bad_chunk:non_finite" in r.safety_flags for r in rec.steps)
    assert all(np.isnan(r.action_policy).all() and r.policy_version == -1 for r in rec.steps)
    assert ctl.executor.counters["rejected_non_finite"] >= 1
    assert len(robot.sent) == 5 and all(np.isfinite(a).all() for a in robot.sent)


def test_task_success_and_operator_marks_end_episodes() -> None:
    ctl, robot, *_, rec, _ = make(const(0.1))
    robot.success_at_step = 7
    res = ctl.run_episode(max_steps=50)
    assert res.success and res.end_reason == "success" and res.steps == 7
    assert rec.steps[-1].done and rec.steps[-1].success and rec.steps[-1].reward == 1.0
    script = lambda step, obs, ctx: OperatorCommand(obs["timestamp_s"], mark="failure" if step == 4 else "")
    ctl, robot, *_, rec, _ = make(const(0.1), script)
    res = ctl.run_episode(max_steps=50)
    assert not res.success and res.end_reason == "operator_failure" and res.steps == 5 and rec.steps[-1].done


def test_deadline_misses_and_overruns_are_counted() -> None:
    ctl, robot, policy, op, rec, clock = make(const(0.1))
    orig = robot.send_action
    slow = {3: 0.06, 6: 0.33}  # a 60 ms late command; then a 3.3-period stall

    def send(a):
        clock.advance(slow.get(robot.steps, 0.0))
        return orig(a)

    robot.send_action = send
    ctl.run_episode(max_steps=10)
    # misses: step 3 (60 ms > half of 100 ms), step 6 (330 ms); step 7 resumes 30 ms into its slot: in time
    assert ctl.counters["deadline_misses"] == 2
    assert ctl.counters["overruns"] == 2
    slots = [t.scheduled_s for t in ctl.timings]
    assert np.allclose(np.diff(slots), [0.1] * 6 + [0.3] + [0.1] * 2)  # skipped slots, no burst


def test_operator_pose_targets_with_jump_guard() -> None:
    def script(step, obs, ctx):
        pos = obs["state"][:3].astype(np.float64)
        target = pos + (np.array([0.01, 0, 0]) if step != 3 else np.array([0.2, 0, 0]))
        return OperatorCommand(obs["timestamp_s"], OperatorMode.TAKEOVER, pose_target=np.r_[target, 1, 0, 0, 0, -1])

    ctl, robot, *_, rec, _ = make(const(0.0), script)
    ctl.run_episode(max_steps=6)
    assert "pose_jump" in rec.steps[3].safety_flags and (rec.steps[3].action_executed[:6] == 0).all()
    assert rec.steps[2].action_executed[0] == pytest.approx(0.5)  # 1 cm at 2 cm per unit
    assert all("pose_jump" not in r.safety_flags for i, r in enumerate(rec.steps) if i != 3)


def test_teleop_only_records_demo_segments() -> None:
    script = lambda step, obs, ctx: OperatorCommand(obs["timestamp_s"], action=np.array([0.2, 0, 0, 0, 0, 0, -1.0]))
    ctl, robot, policy, op, rec, _ = make(False, script)
    ctl.run_episode(max_steps=3)
    assert [r.segment for r in rec.steps] == [Segment.DEMO] * 3 and all(r.source == Source.HUMAN for r in rec.steps)
    assert rec.steps[0].action_executed[0] == pytest.approx(0.2)


def test_robot_side_stays_torch_free() -> None:
    import subprocess
    import sys

    code = ("import sys, hil_robot.control, hil_robot.control.cli, hil_robot.control.fakes; "
            "bad = [m for m in ('torch', 'policies.vla') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_broken_operator_source_holds_instead_of_handing_over() -> None:
    def script(step, obs, ctx):
        if step == 2:
            raise OSError("device unplugged")
        return OperatorCommand(obs["timestamp_s"])

    ctl, robot, *_, rec, _ = make(const(0.5), script)
    ctl.run_episode(max_steps=4)
    assert "operator_error" in rec.steps[2].safety_flags and (rec.steps[2].action_executed[:6] == 0).all()
    assert rec.steps[3].action_executed[0] == pytest.approx(0.5) and ctl.counters["operator_errors"] == 1


def test_driver_error_stops_the_robot_and_keeps_the_recorded_steps() -> None:
    ctl, robot, *_, rec, _ = make(const(0.5))
    orig = robot.send_action

    def send(a):
        if robot.steps == 3:
            raise RuntimeError("arm driver lost")
        return orig(a)

    robot.send_action = send
    with pytest.raises(RuntimeError, match="arm driver lost"):
        ctl.run_episode(max_steps=10)
    assert robot.stops == 1 and len(rec.steps) == 3
    assert rec.ended[0][1]["extra"]["end_reason"].startswith("error: RuntimeError")


def test_observe_lead_sends_on_the_slot_with_fresh_enough_inputs() -> None:
    ctl, robot, policy, op, rec, clock = make(const(0.5), control={"observe_lead_s": 0.0})
    ctl.cfg.robot.control_hz = 20.0  # period 50 ms + lead 30 ms <= watchdog_hold_s 100 ms
    from hil_robot.config import ConfigError

    cfg = ctl.cfg
    cfg.control = dataclasses.replace(cfg.control, observe_lead_s=0.03)
    ctl = Controller(robot, policy, None, rec, cfg, clock=clock)
    orig = robot.send_action
    obs_times, send_times = [], []
    robot.send_action = lambda a: (send_times.append(clock.now()), orig(a))[1]
    ctl.on_step = lambda r, d: obs_times.append(r.obs_timestamp_s)
    ctl.run_episode(max_steps=6)
    slots = [t.scheduled_s for t in ctl.timings]
    assert send_times == pytest.approx(slots, abs=1e-9)  # commands leave exactly on the slot
    assert np.allclose(np.array(slots[1:]) - np.array(obs_times[1:]), 0.03)  # observed 30 ms before
    assert all(r.action_executed[0] == pytest.approx(0.5) for r in rec.steps)  # not held by the watchdog
    cfg.control = dataclasses.replace(cfg.control, observe_lead_s=0.06)
    with pytest.raises(ConfigError, match="observe_lead_s"):
        Controller(robot, policy, None, rec, cfg, clock=clock)


def test_cli_keys_latch_and_reset_the_estop_and_the_device_latch() -> None:
    from hil_robot.control.cli import KeyListener

    ctl, robot, *_ = make(const(0.1))

    class Device:
        cleared = 0

        def clear_estop(self):
            Device.cleared += 1

    keys = KeyListener(ctl, Device(), "x", "r")
    keys.handle("x")
    assert ctl.safety.estopped
    keys.handle("x")  # still latched, no toggle
    assert ctl.safety.estopped
    keys.handle("r")
    assert not ctl.safety.estopped and Device.cleared == 1
    keys.handle("q")
    assert keys.quit.is_set() and ctl._stop_requested


def test_first_chunk_is_fetched_before_tick_zero_even_from_a_cold_policy() -> None:
    tries = {"n": 0}

    def cold(call, obs):
        tries["n"] += 1
        if tries["n"] == 1:
            raise TimeoutError("cold server: first request timed out")
        return np.array([[0.4, 0, 0, 0, 0, 0, -1]], np.float32)

    ctl, robot, policy, *_, rec, clock = make(cold, control={"max_policy_wait_s": 0.0})
    res = ctl.run_episode(max_steps=3)
    assert res.first_chunk_wait_s >= 0 and ctl.executor.counters["prime_errors"] == 1
    assert rec.steps[0].action_executed[0] == pytest.approx(0.4), "tick 0 had no planned action"
    assert ctl.counters["deadline_misses"] == 0 and ctl.executor.counters["errors"] == 0
    tries["n"] = 0
    ctl, robot, policy, *_, rec, clock = make(cold, control={"max_policy_wait_s": 0.0, "first_chunk_timeout_s": 0.0})
    ctl.run_episode(max_steps=3)
    assert (rec.steps[0].action_executed[:6] == 0).all() and ctl.executor.counters["errors"] == 1  # no priming: tick 0 holds
