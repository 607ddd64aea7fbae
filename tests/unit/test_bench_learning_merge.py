"""bench_learning merges conditions run separately into one JSON (the ablation keys need two runs)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_learning.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_learning", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rounds(evals, human):
    return [{"round": i + 1, "eval_success": e, "deploy_success": 1.0, "interventions_per_episode": 1.0,
             "intervention_rate": h, "wall_min": 3.0 * (i + 1), "env_steps": 1000.0 * (i + 1), "policy_version": 10.0 * i}
            for i, (e, h) in enumerate(zip(evals, human))]


def test_merged_runs_give_the_ablation_keys(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"main": {"rounds": _rounds([0.2, 0.9, 0.8], [0.3, 0.2, 0.1]),
                                      "final_eval_success": 0.8, "final_intervention_rate": 0.1}}))
    b.write_text(json.dumps({"bc": {"rounds": _rounds([0.1, 0.4, 0.5], [0.3, 0.3, 0.3]),
                                    "final_eval_success": 0.5, "final_intervention_rate": 0.3}}))
    out = tmp_path / "out.json"
    assert _bench().main(["--conditions", "", "--merge", f"{a},{b}", "--out", str(tmp_path / "o"), "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["final_success"] == 0.8 and got["minutes_to_90pct"] == 6.0 and got["final_intervention_rate"] == 0.1
    assert got["wbc_minus_bc_success"] == pytest.approx(0.3) and got["critic_minus_sparse_success"] is None
    assert (tmp_path / "o" / "learning_curves.png").stat().st_size > 0


def test_merge_of_a_foreign_file_is_refused_with_advice(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"final_success": 0.8}))
    with pytest.raises(SystemExit):
        _bench().main(["--conditions", "", "--merge", str(bad), "--out", str(tmp_path / "o")])


def test_every_condition_is_a_run_the_learner_and_server_agree_on():
    from hil_robot.config import load_config
    from hil_robot.run import check_images, check_policy_matches_learner

    bench = _bench()
    for name, overrides in bench.CONDITIONS.items():
        if name in bench.NEEDS_VLA:  # the bench adds the pre-trained VLA's directory
            overrides = [*overrides, "policy.checkpoint=runs/pretrained_vla"]
        cfg = load_config(["experiment=sim_pick_cube", *overrides])  # a bad key fails here, naming it
        check_policy_matches_learner(cfg)
        check_images(cfg)  # a condition whose learner or policy reads cameras also renders them
        assert (cfg.learner.algorithm == "rlpd") == name.startswith(("rlpd", "dsrl")), name


def test_tasks_get_one_row_each_with_the_minutes_steps_and_updates_to_80_and_90(tmp_path):
    rounds = _rounds([0.2, 0.85, 0.95], [0.3, 0.2, 0.1])
    for i, r in enumerate(rounds):
        r["learner_updates"] = 100.0 * (i + 1)
    a = tmp_path / "a.json"
    a.write_text(json.dumps({
        "main": {"rounds": rounds, "final_eval_success": 0.95, "final_eval_ci95": [0.6, 1.0], "task": "pick_cube", "condition": "main"},
        "push_target/main": {"rounds": _rounds([0.0, 0.1, 0.3], [0.4, 0.4, 0.3]), "final_eval_success": 0.3,
                             "task": "push_target", "condition": "main"}}))
    out = tmp_path / "out.json"
    assert _bench().main(["--conditions", "", "--merge", str(a), "--out", str(tmp_path / "o"), "--json", str(out)]) == 0
    tasks = json.loads(out.read_text())["tasks"]
    pick, push = tasks["pick_cube/main"], tasks["push_target/main"]
    assert (pick["minutes_to_80pct"], pick["env_steps_to_80pct"], pick["updates_to_80pct"]) == (6.0, 2000.0, 200.0)
    assert (pick["minutes_to_90pct"], pick["updates_to_90pct"]) == (9.0, 300.0)
    assert pick["last5_success"] == pytest.approx(2.0 / 3) and pick["final_ci95"] == [0.6, 1.0]
    assert push["minutes_to_80pct"] is None and push["best_success"] == 0.3 and push["updates_to_80pct"] is None


def test_unknown_task_is_refused_naming_the_tasks(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _bench().main(["--tasks", "fly", "--conditions", "", "--out", str(tmp_path / "o")])
    assert "pick_cube, push_target, peg_insert, stack_cubes" in capsys.readouterr().err


def test_every_sim_task_learns_with_the_same_recipe():
    """One recipe (configs/recipe/sim.yaml): the four sim experiments differ in their task alone."""
    import dataclasses

    from hil_robot.config import load_config

    bench = _bench()
    cfgs = {t: load_config([f"experiment=sim_{t}"]) for t in bench.TASKS}
    ref = cfgs["pick_cube"]
    for task, cfg in cfgs.items():
        assert cfg.sim.task == task and cfg.experiment.name == f"sim_{task}"
        assert cfg.learner == ref.learner and cfg.policy == ref.policy, task
        assert dataclasses.replace(cfg.sim, task=ref.sim.task) == ref.sim, task
        assert dataclasses.replace(cfg.experiment, name=ref.experiment.name, run_dir=ref.experiment.run_dir) == ref.experiment, task
    assert ref.learner.ema_decay == 0.995 and ref.policy.size == "small" and ref.experiment.demo_episodes == 30


def test_rounds_without_eval_are_skipped_by_the_figures_and_every_nth_round_and_the_last_evaluate():
    """experiment.eval_every_rounds=N: rounds between evaluations carry NaN eval success; the
    table's last five, best and minutes-to-threshold use the evaluated rounds only."""
    import math

    from hil_robot.config import load_config
    from hil_robot.config._build import ConfigError
    from hil_robot.run import evaluates

    bench = _bench()
    nan = math.nan
    rounds = _rounds([nan, 0.5, nan, 0.9, nan, nan, 0.7, nan, 0.8, nan, nan, 0.6], [0.2] * 12)
    assert bench.last_mean(rounds) == pytest.approx((0.5 + 0.9 + 0.7 + 0.8 + 0.6) / 5)
    assert bench.first_at(rounds, 0.9) == 12.0 and bench.first_at(rounds, 0.95) is None
    e = load_config(["experiment.eval_every_rounds=3", "experiment.rounds=10"]).experiment
    assert [r for r in range(1, 11) if evaluates(r, e, out_of_time=False)] == [3, 6, 9, 10]
    assert evaluates(4, e, out_of_time=True)  # the round that used up the budget is the last: evaluated
    assert all(evaluates(r, load_config([]).experiment, False) for r in range(1, 6))  # default: every round
    with pytest.raises(ConfigError, match="eval_every_rounds"):
        load_config(["experiment.eval_every_rounds=0"])


def test_each_task_gets_its_own_ablation_differences(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"push_target/rlpd_sparse": {"rounds": _rounds([0.3, 0.5], [0.3, 0.3]), "final_eval_success": 0.5,
                                                         "task": "push_target", "condition": "rlpd_sparse"},
                             "rlpd_sparse": {"rounds": _rounds([0.9, 1.0], [0.1, 0.1]), "final_eval_success": 1.0}}))
    b.write_text(json.dumps({"push_target/rlpd_bc": {"rounds": _rounds([0.6, 0.75], [0.2, 0.2]), "final_eval_success": 0.75,
                                                     "task": "push_target", "condition": "rlpd_bc"}}))
    out = tmp_path / "out.json"
    assert _bench().main(["--conditions", "", "--merge", f"{a},{b}", "--out", str(tmp_path / "o"), "--json", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["per_task"]["push_target"]["rlpd_bc_minus_sparse_success"] == pytest.approx(0.25)
    assert got["rlpd_bc_minus_sparse_success"] is None  # pick_cube has no rlpd_bc run
    assert got["per_task"]["pick_cube"]["rlpd_bc_minus_sparse_success"] is None
    assert set(got["per_task"]) == {"pick_cube", "push_target"}


def test_the_recipe_with_the_online_critics_reward_is_compared_with_the_recipe(tmp_path):
    bench = _bench()
    assert bench.CONDITIONS["rlpd_bc_critic_online"] == [*bench.CONDITIONS["rlpd_bc"], "learner.reward=critic_online"]
    a = tmp_path / "a.json"
    a.write_text(json.dumps({
        "push_target/rlpd_bc": {"rounds": _rounds([0.6, 0.75], [0.2, 0.2]), "final_eval_success": 0.75},
        "push_target/rlpd_bc_critic_online": {"rounds": _rounds([0.7, 0.85], [0.2, 0.2]), "final_eval_success": 0.85},
        "push_target/rlpd_sparse": {"rounds": _rounds([0.3, 0.5], [0.3, 0.3]), "final_eval_success": 0.5}}))
    out = tmp_path / "out.json"
    assert bench.main(["--conditions", "", "--merge", str(a), "--out", str(tmp_path / "o"), "--json", str(out)]) == 0
    got = json.loads(out.read_text())["per_task"]["push_target"]
    assert got["recipe_critic_online_minus_sparse_success"] == pytest.approx(0.10)  # against the recipe, not plain RLPD
    assert got["critic_online_minus_sparse_success"] is None  # plain rlpd_critic_online was not run


def test_the_same_run_key_in_two_merged_files_is_refused_naming_both(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    run = {"rounds": _rounds([0.3], [0.3]), "final_eval_success": 0.3, "task": "push_target", "condition": "rlpd_sparse"}
    a.write_text(json.dumps({"push_target/rlpd_sparse": run}))
    b.write_text(json.dumps({"push_target/rlpd_sparse": {**run, "final_eval_success": 0.7}}))
    with pytest.raises(SystemExit):
        _bench().main(["--conditions", "", "--merge", f"{a},{b}", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert "push_target/rlpd_sparse" in err and str(a) in err and str(b) in err


def test_a_run_without_images_is_refused_when_something_reads_the_cameras():
    from hil_robot.config import ConfigError, load_config
    from hil_robot.run import check_images

    check_images(load_config(["experiment=sim_peg_insert", "recipe=rl", "sim.render=false"]))  # SAC from state: fine
    for extra, says in ((["learner.reward=critic_online"], "learner.reward=critic_online scores camera frames"),
                        (["learner.rl_obs=image"], "learner.rl_obs=image"),
                        (["learner.rl_actor=residual"], "learner.rl_actor=residual runs the VLA")):
        cfg = load_config(["experiment=sim_peg_insert", "recipe=rl", "sim.render=false", *extra])
        with pytest.raises(ConfigError, match="set sim.render=true") as e:
            check_images(cfg)
        assert says in str(e.value)
    with pytest.raises(ConfigError, match="policy=vla reads the cameras"):
        check_images(load_config(["experiment=sim_pick_cube", "sim.render=false"]))  # the main job's VLA
