"""The simulated operator: takes over a stalled (deliberately bad) policy, recovers, then corrects,
hands back; respects reaction delay and budget; marks success and failure."""

from __future__ import annotations

import numpy as np
import pytest

import sim  # noqa: F401
from hil_robot.config import RobotConfig, SimConfig, SimOperatorConfig
from hil_robot.types import OperatorMode, Segment
from sim.expert import make_expert
from sim.operator import SimulatedOperator
from sim.robot import SimRobot
from sim.rollout import relabel_pre_intervention, run_episode


class FrozenPolicy:
    """A deliberately bad policy: never moves, keeps the jaw open."""

    metadata = {"name": "frozen", "action_horizon": 1, "action_dim": 7}

    def infer(self, obs):
        return {"actions": np.array([[0, 0, 0, 0, 0, 0, -1]], np.float32), "policy_version": 0}

    def reset(self):
        pass


def runs(segments: list[str]) -> list[tuple[str, int]]:
    out: list[list] = []
    for s in segments:
        if out and out[-1][0] == s:
            out[-1][1] += 1
        else:
            out.append([s, 1])
    return [(s, n) for s, n in out]


@pytest.mark.parametrize("task", ["pick_cube", "stack_cubes"])
def test_bad_policy_gets_recovery_then_correction(task):
    cfg = SimOperatorConfig(stall_steps=10, reaction_delay_steps=2, max_interventions_per_episode=3)
    robot = SimRobot(SimConfig(task=task, render=False), RobotConfig(), seed=0)
    op = SimulatedOperator(cfg, task, seed=0)
    res = run_episode(robot, FrozenPolicy(), op, seed=4, max_steps=120, pre_intervention_k=5)
    assert res.interventions == 3, f"expected the budget of 3 takeovers, got {res.interventions}"
    human = [(s, n) for s, n in runs(res.segments) if s in ("recovery", "correction")]
    # every takeover: one recovery run immediately followed by one correction run
    assert [s for s, _ in human] == ["recovery", "correction"] * 3, runs(res.segments)
    first = res.segments.index("recovery")
    assert first == cfg.stall_steps + cfg.reaction_delay_steps, "takeover must wait stall_steps + reaction delay"
    assert res.segments[first - 5 : first] == ["pre_intervention"] * 5
    assert res.segments[-1] == "autonomous", "after the budget is spent the robot is handed back"
    # the operator logged every tick, with a mode matching its segment
    assert len(op.log) == res.steps
    for entry in op.log:
        takeover = entry["mode"] == OperatorMode.TAKEOVER.value
        assert takeover == (entry["segment"] in ("recovery", "correction"))
    # while the operator drove, the executed action is the operator's, not the frozen policy's
    idx = [i for i, s in enumerate(res.segments) if s in ("recovery", "correction")]
    assert np.abs(res.actions[idx, :3]).max() > 0.2
    assert np.allclose(res.policy_actions[idx, :6], 0.0)


def test_correction_finishes_the_stuck_subtask():
    cfg = SimOperatorConfig(stall_steps=8, reaction_delay_steps=1, max_interventions_per_episode=1, action_noise_std=0.0)
    robot = SimRobot(SimConfig(task="pick_cube", render=False), RobotConfig(), seed=0)
    op = SimulatedOperator(cfg, "pick_cube", seed=0)
    run_episode(robot, FrozenPolicy(), op, seed=1, max_steps=60)
    corr = [e for e in op.log if e["segment"] == "correction"]
    assert corr and corr[0]["subtask"] == "reach"
    handback = next(i for i, e in enumerate(op.log) if i > 0 and op.log[i - 1]["segment"] == "correction"
                    and e["segment"] == "autonomous")
    assert op.log[handback]["subtask"] != "reach", "the operator hands back only after completing the sub-task"


def test_expert_under_operator_is_marked_success_without_takeover():
    robot = SimRobot(SimConfig(task="push_target", render=False), RobotConfig(), seed=0)
    op = SimulatedOperator(SimOperatorConfig(), "push_target", seed=0)
    res = run_episode(robot, make_expert("push_target"), op, seed=2)
    assert res.success and res.outcome == "success"
    assert res.interventions == 0
    assert op.log[-1]["mark"] == "success"


def _fake_obs():
    robot = SimRobot(SimConfig(task="pick_cube", render=False), RobotConfig(), seed=0)
    return robot.reset(0)


def _status(**kw):
    base = {"success": False, "failed": False, "progress": 0.1, "subtask": "reach", "risk": False}
    base.update(kw)
    return base


def test_failure_risk_triggers_after_reaction_delay_and_failure_is_marked():
    obs = _fake_obs()
    op = SimulatedOperator(SimOperatorConfig(stall_steps=50, reaction_delay_steps=3), "pick_cube", seed=0)
    modes = [op.command(obs, {"step": t, "task_status": _status(risk=t >= 2, progress=0.1 + 0.05 * t)}).mode
             for t in range(8)]
    assert modes[:5] == [OperatorMode.AUTONOMOUS] * 5
    assert modes[5] == OperatorMode.TAKEOVER  # risk seen at t=2, acted at t=5
    assert op.log[2]["trigger"] == "failure_risk"
    cmd = op.command(obs, {"step": 8, "task_status": _status(failed=True)})
    assert cmd.mark == "failure" and cmd.mode == OperatorMode.AUTONOMOUS


def test_zero_budget_never_takes_over_and_segment_is_emitted_every_tick():
    obs = _fake_obs()
    op = SimulatedOperator(SimOperatorConfig(stall_steps=2, max_interventions_per_episode=0), "pick_cube", seed=0)
    for t in range(10):
        cmd = op.command(obs, {"step": t, "task_status": _status(risk=True)})
        assert cmd.mode == OperatorMode.AUTONOMOUS and cmd.segment == Segment.AUTONOMOUS and cmd.action is None
    assert len(op.log) == 10


def test_operator_needs_task_status():
    op = SimulatedOperator(SimOperatorConfig(), "pick_cube", seed=0)
    with pytest.raises(ValueError, match="task_status"):
        op.command(_fake_obs(), {"step": 0})


def test_pre_intervention_relabel():
    segs = ["autonomous"] * 4 + ["recovery", "correction"] + ["autonomous"] * 2 + ["recovery"]
    assert relabel_pre_intervention(segs, 2) == (
        ["autonomous"] * 2 + ["pre_intervention"] * 2 + ["recovery", "correction"] + ["pre_intervention"] * 2 + ["recovery"]
    )


def test_operator_rescues_a_noisy_policy():
    robot = SimRobot(SimConfig(task="pick_cube", render=False), RobotConfig(), seed=0)
    alone = with_op = 0
    for seed in range(8):
        alone += run_episode(robot, make_expert("pick_cube", noise_std=0.6, seed=seed), None, seed=seed).success
        op = SimulatedOperator(SimOperatorConfig(), "pick_cube", seed=seed)
        res = run_episode(robot, make_expert("pick_cube", noise_std=0.6, seed=seed), op, seed=seed)
        with_op += res.success
        if res.success:
            assert op.log[-1]["mark"] == "success"
    assert with_op >= alone + 4, f"operator should rescue the noisy expert: alone {alone}/8, with operator {with_op}/8"


class CrawlingPolicy:
    """The expert's moves at a tenth of their size: progress grows a little every few ticks."""

    metadata = {"name": "crawl", "action_horizon": 1, "action_dim": 7}

    def __init__(self, task: str):
        self.expert = make_expert(task, RobotConfig())

    def infer(self, obs):
        a = np.asarray(self.expert.act(obs), np.float32).copy()
        a[:6] *= 0.1
        return {"actions": a[None], "policy_version": 0}

    def reset(self):
        self.expert.reset()


def test_a_crawl_never_stalls_but_a_slow_trigger_takes_over():
    """Each crawl tick sets a new best often enough that 'no new best for stall_steps' never fires;
    stall_min_gain > 0 takes over when the best grew by less than that in stall_steps ticks."""
    robot = SimRobot(SimConfig(task="pick_cube", render=False), RobotConfig(), seed=0)
    plain = SimulatedOperator(SimOperatorConfig(stall_steps=15, trigger_on_failure_risk=False), "pick_cube", seed=0)
    res = run_episode(robot, CrawlingPolicy("pick_cube"), plain, seed=4, max_steps=40, pre_intervention_k=5)
    assert res.interventions == 0 and not any(e["trigger"] for e in plain.log)
    assert plain.log[-1]["progress"] > plain.log[0]["progress"]  # it was getting somewhere, slowly
    slow_cfg = SimOperatorConfig(stall_steps=15, trigger_on_failure_risk=False, stall_min_gain=0.05)
    slow = SimulatedOperator(slow_cfg, "pick_cube", seed=0)
    res = run_episode(robot, CrawlingPolicy("pick_cube"), slow, seed=4, max_steps=40, pre_intervention_k=5)
    triggers = [e for e in slow.log if e["trigger"]]
    assert res.interventions >= 1 and triggers[0]["trigger"] == "slow"
    assert triggers[0]["step"] == slow_cfg.stall_steps  # the first full window of the crawl
    gained = slow.log[triggers[0]["step"]]["progress"] - slow.log[0]["progress"]
    assert 0 < gained < slow_cfg.stall_min_gain
    with pytest.raises(Exception, match="stall_min_gain"):
        SimOperatorConfig(stall_min_gain=-0.1)
