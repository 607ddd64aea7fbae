"""Evaluation that cannot overfit and the run's load figures: Wilson intervals, fixed vs fresh
evaluation seeds per round, the held-out visual condition in the evaluation phase's arguments,
per-round CPU shares (psutil on real processes) and learner updates in the round table."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from hil_robot.cli import parse_command_args
from hil_robot.config import ConfigError
from hil_robot.config.experiment import ExperimentConfig
from hil_robot.report import format_rate, format_table, read_csv, round_summary, wilson_interval
from hil_robot.run import EVAL_SEED0, FRESH_SEED_RANGE, CpuMeter, HilRun, _append_round_csv


def test_wilson_interval_matches_known_values_and_stays_in_0_1():
    lo, hi = wilson_interval(7, 10)
    assert lo == pytest.approx(0.3968, abs=1e-4) and hi == pytest.approx(0.8922, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert lo == pytest.approx(0.7225, abs=1e-4) and hi == pytest.approx(1.0, abs=1e-12)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    assert format_rate(7, 10) == "7/10 = 70% [40%, 89%]"


def _row(rnd, phase, success, kind="", steps=20):
    return {"wall_s": 10.0 * rnd, "round": rnd, "phase": phase, "episode_id": f"{phase}{rnd}", "success": success,
            "steps": steps, "env_steps_total": 100 * rnd, "interventions": 0, "human_steps": 0, "policy_version": rnd,
            "seed_kind": kind, "visual": "train"}


def test_round_summary_keeps_fresh_and_fixed_seeds_apart_with_intervals(tmp_path):
    rows = [_row(1, "deploy", 1)] + [_row(1, "eval", 1, "fixed")] * 8 + [_row(1, "eval", 0, "fixed")] * 2 \
        + [_row(1, "eval", 1, "fresh")] * 3 + [_row(1, "eval", 0, "fresh")] * 7
    _append_round_csv(tmp_path / "rounds.csv", {"round": 1, "wall_s": 10.0, "env_steps": 100, "learner_updates": 250.0,
                                                "learner_updates_per_s": 2.5, "cpu_share": {"learner": 0.4, "other": 0.1}})
    s = round_summary(rows, read_csv(tmp_path / "rounds.csv"))[0]
    assert s["eval_fixed_success"] == 0.8 and s["eval_fresh_success"] == 0.3 and s["eval_success"] == 0.55
    assert (s["eval_fresh_ci_low"], s["eval_fresh_ci_high"]) == pytest.approx(wilson_interval(3, 10))
    assert s["learner_updates"] == 250.0 and s["learner_updates_per_s"] == 2.5 and s["cpu_learner"] == 0.4
    table = format_table([s])
    assert "eval fresh" in table and "upd/s" in table
    assert "fresh seeds 3/10 = 30% [11%, 60%]" in table and "fixed seeds 8/10 = 80%" in table


def test_rows_without_seed_kind_count_as_fixed_seeds():
    rows = [_row(1, "eval", 1, ""), _row(1, "eval", 0, "")]
    s = round_summary(rows)[0]
    assert s["eval_fixed_success"] == 0.5 and math.isnan(s["eval_fresh_success"]) and s["eval_fresh_episodes"] == 0


def _hil(tmp_path, *overrides):
    _, cfg = parse_command_args(list(overrides), options={})
    return HilRun(cfg, list(overrides), tmp_path / "run", quiet=True)


def test_fresh_eval_seeds_are_new_every_round_reproducible_and_apart_from_other_seeds(tmp_path):
    a = _hil(tmp_path / "a", "experiment.seed=3")
    seeds = [a.fresh_seed() for _ in range(20)]
    assert len(set(seeds)) == 20
    assert all(FRESH_SEED_RANGE[0] <= s < FRESH_SEED_RANGE[1] for s in seeds)
    # far from deployment (seed * 100_000 + round * 1000 + i), demos and the fixed evaluation seeds
    assert FRESH_SEED_RANGE[0] > EVAL_SEED0 + 10_000 * 1000 and FRESH_SEED_RANGE[0] > 10_000 * 100_000 + 100_000
    b = _hil(tmp_path / "b", "experiment.seed=3")
    assert [b.fresh_seed() for _ in range(20)] == seeds
    c = _hil(tmp_path / "c", "experiment.seed=4")
    assert [c.fresh_seed() for _ in range(20)] != seeds


def test_the_eval_phase_runs_under_the_configured_visuals(tmp_path):
    hil = _hil(tmp_path, "sim.visual=train", "experiment.eval_visual=heldout")
    args = hil.controller_args("eval", 4, 123, 1)
    assert args.count("sim.visual=heldout") == 1 and "sim.visual=train" not in args
    assert "operator=none" in args and "seed=123" in args
    listed = hil.controller_args("eval", 2, -1, 1, seeds="1000000,1073741830")  # fixed and fresh in one phase
    assert "seeds=1000000,1073741830" in listed and not any(a.startswith("seed=") for a in listed)
    deploy = hil.controller_args("deploy", 4, 5, 1)
    assert "sim.visual=train" in deploy and "sim.visual=heldout" not in deploy
    same = _hil(tmp_path / "s", "experiment.eval_visual=same")
    assert same.eval_visual() == "train"
    with pytest.raises(ConfigError, match="experiment.eval_visual"):
        ExperimentConfig(eval_visual="test")
    assert ExperimentConfig(eval_episodes=3).eval_fresh_episodes == 3  # -1: as many as the fixed ones
    assert ExperimentConfig(eval_episodes=3, eval_fresh_episodes=0).eval_fresh_episodes == 0


def test_cpu_meter_attributes_a_busy_process_its_cpu_time():
    burn = "import sys\nx = 0\nfor i in range(4_000_000): x += i\nprint('done', flush=True)\nsys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        meter = CpuMeter()
        assert proc.stdout.readline().strip() == "done"  # its work is done; it now waits on stdin
        meter.sample("learner", proc.pid)
        meter.sample("gone", 2**22 + 12345)  # no such process: ignored
        share = meter.take()
        assert set(share) == {"learner", "other"}
        assert 0.0 < share["learner"] <= 1.0 and share["other"] >= 0.0
        again = meter.take()  # nothing new since the last take
        assert again.get("learner", 0.0) < share["learner"]
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_round_csv_widens_when_a_process_group_appears(tmp_path):
    path = tmp_path / "rounds.csv"
    base = {"wall_s": 1.0, "env_steps": 10, "learner_updates": 5.0, "learner_updates_per_s": 1.0}
    _append_round_csv(path, {"round": 1, **base, "cpu_share": {"learner": 0.5}})
    _append_round_csv(path, {"round": 2, **base, "cpu_share": {"learner": 0.3, "controller": 0.2}})
    rows = read_csv(path)
    assert [r["round"] for r in rows] == [1.0, 2.0]
    assert rows[0]["cpu_controller"] == "" and rows[1]["cpu_controller"] == 0.2


def test_rounds_without_eval_summarise_and_draw(tmp_path):
    """experiment.eval_every_rounds > 1: a deploy-only round has no eval rate (NaN, 0 episodes),
    the table prints it and the plots draw the evaluated rounds."""
    import csv

    from hil_robot.report import draw

    from hil_robot.types import Segment

    rows = [_row(1, "deploy", 1), _row(2, "deploy", 0), _row(2, "eval", 1, "fixed"), _row(2, "eval", 0, "fresh"),
            _row(3, "deploy", 1)]
    for r in rows:
        r.update({f"seg_{seg.value}": r["steps"] if seg == Segment.AUTONOMOUS else 0 for seg in Segment})
    summary = round_summary(rows)
    assert math.isnan(summary[0]["eval_success"]) and summary[0]["eval_episodes"] == 0
    assert summary[1]["eval_success"] == 0.5
    assert format_table(summary)
    (tmp_path / "metrics").mkdir()
    with open(tmp_path / "metrics" / "episodes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    assert all(p.is_file() for p in draw(tmp_path))
