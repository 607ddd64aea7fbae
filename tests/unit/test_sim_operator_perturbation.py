"""Simulated-operator perturbations: off by default, seeded, labelled 'perturbation', really disturb the
scene (the drop moves the cube), hand straight back; the controller records them as human
perturbation steps and the replay gives them no behaviour-cloning weight."""

from __future__ import annotations


import numpy as np
import pytest

import sim  # noqa: F401
from hil_robot.config import ConfigError, RobotConfig, SimConfig, SimOperatorConfig
from hil_robot.types import SEGMENT_INDEX, OperatorMode, Segment
from sim.expert import make_expert
from sim.operator import SimulatedOperator
from sim.robot import SimRobot
from sim.rollout import run_episode

PERTURB = dict(perturb_prob=1.0, perturb_window=(3, 8), perturb_steps=4)  # a push before the expert is done


def _run(task: str, cfg: SimOperatorConfig, seed: int = 0, max_steps: int = 100, trace_cube: bool = False):
    robot = SimRobot(SimConfig(task=task, render=False), RobotConfig(), seed=seed)
    op = SimulatedOperator(cfg, task, seed=seed)
    cube_z: list[float] = []
    if trace_cube:  # object A height (task_state[2]) seen by the operator each tick
        inner = op.command

        def command(obs, context):
            cube_z.append(float(obs["task_state"][2]))
            return inner(obs, context)

        op.command = command
    res = run_episode(robot, make_expert(task), op, seed=seed, max_steps=max_steps, pre_intervention_k=5)
    robot.close()
    return res, op, cube_z


def test_off_by_default_and_config_checked():
    assert SimOperatorConfig().perturb_prob == 0.0
    res, op, _ = _run("pick_cube", SimOperatorConfig())
    assert "perturbation" not in res.segments and res.perturbations == 0
    assert all(e["perturbation"] == "" for e in op.log)
    with pytest.raises(ConfigError, match="perturb_kinds"):
        SimOperatorConfig(perturb_kinds=("shake",))
    with pytest.raises(ConfigError, match="perturb_window"):
        SimOperatorConfig(perturb_window=(10, 5))
    with pytest.raises(ConfigError, match="perturb_prob"):
        SimOperatorConfig(perturb_prob=1.5)


def test_push_is_labelled_seeded_and_handed_back():
    cfg = SimOperatorConfig(**PERTURB, perturb_kinds=("push",))
    res, op, _ = _run("pick_cube", cfg, seed=3)
    idx = [i for i, s in enumerate(res.segments) if s == "perturbation"]
    assert len(idx) == cfg.perturb_steps and idx == list(range(idx[0], idx[0] + cfg.perturb_steps)), res.segments
    lo, hi = cfg.perturb_window
    assert lo <= idx[0] <= hi and res.perturbations == 1 and res.interventions == 0
    for i in idx:  # the operator's mode and log agree; the executed action is the push, not the expert's
        assert op.log[i]["mode"] == OperatorMode.PERTURBATION.value and op.log[i]["perturbation"] == "push"
        assert np.linalg.norm(res.actions[i, :3]) == pytest.approx(cfg.perturb_push_scale, abs=1e-5)
        assert not np.allclose(res.actions[i, :3], res.policy_actions[i, :3])
    # handed straight back to the policy: no recovery/correction right after the event
    assert res.segments[idx[-1] + 1] == "autonomous"
    # seeded: the same seed gives the same event, another seed may not
    res2, _, _ = _run("pick_cube", cfg, seed=3)
    assert res2.segments == res.segments and np.array_equal(res2.actions, res.actions)


def test_drop_opens_the_jaw_and_the_cube_falls():
    cfg = SimOperatorConfig(**{**PERTURB, "perturb_window": (3, 60)}, perturb_kinds=("drop",))
    res, op, cube_z = _run("pick_cube", cfg, seed=1, max_steps=40, trace_cube=True)
    idx = [i for i, s in enumerate(res.segments) if s == "perturbation"]
    assert idx, f"no drop happened: {res.segments}"
    assert all(res.actions[i, 6] == pytest.approx(-1.0) for i in idx)  # jaw opened
    assert all(np.allclose(res.actions[i, :6], 0.0) for i in idx)  # arm held still
    before = cube_z[idx[0]]  # the cube was held and lifted when the drop began
    assert op.log[idx[0]]["subtask"] == "lift" and before > 0.03
    assert min(cube_z[idx[0]:idx[-1] + 3]) < before - 0.01, f"cube did not fall: z {cube_z[idx[0]:idx[-1] + 3]}"


def test_drop_needs_a_graspable_task():
    op = SimulatedOperator(SimOperatorConfig(**PERTURB, perturb_kinds=("drop",)), "push_target", seed=0)
    assert op._perturb_plan is None  # nothing to hold in push_target: no drop planned
    op = SimulatedOperator(SimOperatorConfig(**PERTURB, perturb_kinds=("push", "drop")), "push_target", seed=0)
    assert op._perturb_plan is not None and op._perturb_plan[0] == "push"


def test_controller_records_perturbation_as_human_steps():
    from hil_robot.control.arbitration import Arbiter
    from hil_robot.types import OperatorCommand, Source

    arb = Arbiter()
    cmd = OperatorCommand(timestamp_s=0.0, mode=OperatorMode.PERTURBATION, action=np.ones(7, np.float32),
                          segment=Segment.PERTURBATION)
    out = arb.arbitrate(np.zeros(7), 0.0, cmd, cmd.action)
    assert out.segment == Segment.PERTURBATION and out.source == Source.HUMAN
    assert np.allclose(out.action, 1.0)


def test_bc_weight_of_perturbation_steps_is_zero():
    from hil_robot.config.learner import SiriusWeights
    from hil_robot.data import memory

    counts = np.zeros(len(memory.CLASS_NAMES), np.int64)
    for seg, n in ((Segment.AUTONOMOUS, 50), (Segment.RECOVERY, 10), (Segment.PERTURBATION, 8)):
        counts[memory.SEGMENT_TO_CLASS[SEGMENT_INDEX[seg]]] += n
    w = memory.class_weights(counts, SiriusWeights())
    assert w[memory.SEGMENT_TO_CLASS[SEGMENT_INDEX[Segment.PERTURBATION]]] == 0.0
    assert w[memory.SEGMENT_TO_CLASS[SEGMENT_INDEX[Segment.AUTONOMOUS]]] > 0


def test_replay_never_samples_perturbation_steps_for_bc(tmp_path):
    from hil_robot.data.recorder import Recorder
    from hil_robot.data.store import EpisodeStore
    from hil_robot.data.store_replay import StoreReplay

    cfg = SimOperatorConfig(**PERTURB, perturb_kinds=("push",))
    robot = SimRobot(SimConfig(task="pick_cube", render=False), RobotConfig(), seed=3)
    res = run_episode(robot, make_expert("pick_cube"), SimulatedOperator(cfg, "pick_cube", seed=3), seed=3, max_steps=60)
    robot.close()
    assert "perturbation" in res.segments
    store = EpisodeStore(tmp_path / "store")
    rec = Recorder(store, pre_intervention_k=0)
    _record(rec, res)
    rec.close()
    replay = StoreReplay(tmp_path / "store")
    assert replay.num_episodes == 1
    pert = SEGMENT_INDEX[Segment.PERTURBATION]
    assert (replay.sample(256, view="all", rng=np.random.default_rng(0))["segment"] == pert).any()
    bc = replay.sample(512, view="bc", rng=np.random.default_rng(0))
    assert not (bc["segment"] == pert).any() and (bc["weight"] > 0).all()
    assert replay.buffer.class_weights("all")[memory_class(Segment.PERTURBATION)] == 0.0

    # an action chunk that reaches into a perturbation is cut there: those actions are padded
    chunk = replay.sample(1024, horizon=10, view="bc", rng=np.random.default_rng(1))
    segs = np.asarray(res.segments)
    starts = np.flatnonzero((segs == "perturbation") & (np.roll(segs, 1) != "perturbation"))
    hit = 0
    for i, step in enumerate(chunk["step_index"]):
        for k in range(1, 10):
            if step + k < len(segs) and segs[step + k] == "perturbation" and not (segs[step:step + k] == "perturbation").any():
                assert chunk["action_is_pad"][i, k:].all(), (step, k)
                hit += 1
                break
    assert len(starts) and hit > 0


def memory_class(seg: Segment) -> int:
    from hil_robot.data import memory

    return int(memory.SEGMENT_TO_CLASS[SEGMENT_INDEX[seg]])


def _record(rec, res) -> None:
    from hil_robot.types import Source, StepRecord

    for t, seg in enumerate(res.segments):
        human = seg in ("recovery", "correction", "perturbation")
        rec.add(StepRecord(
            episode_id="ep0", step=t,
            observation={"state": np.zeros(15, np.float32), "prompt": "pick", "timestamp_s": float(t)},
            action_executed=res.actions[t], action_policy=res.policy_actions[t],
            source=Source.HUMAN if human else Source.POLICY, segment=Segment(seg), instruction="pick",
            policy_version=-1 if human else 0, reward=0.0, done=t == len(res.segments) - 1,
        ))
    rec.end_episode(success=res.success)


def test_probability_is_per_episode_and_reproducible():
    cfg = SimOperatorConfig(perturb_prob=0.5, perturb_kinds=("push",))
    op = SimulatedOperator(cfg, "pick_cube", seed=11)
    plans = [op._perturb_plan] + [(op.reset(), op._perturb_plan)[1] for _ in range(39)]  # reset() per episode
    fired = sum(p is not None for p in plans)
    assert 8 <= fired <= 32, f"{fired}/40 episodes planned a perturbation at p=0.5"
    assert len({p[1] for p in plans if p is not None}) > 1  # start steps vary between episodes
    again = SimulatedOperator(cfg, "pick_cube", seed=11)
    assert [again._perturb_plan] + [(again.reset(), again._perturb_plan)[1] for _ in range(39)] == plans
