"""bench_critic's online condition: run-like episodes (demos, deploy episodes under the simulated
operator) in a store, OnlineCritic trained on them as the learner does, held-out episodes scored."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_critic.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_critic", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _separation(bench, backend, held) -> dict[str, float]:
    """done_auc (final frames of successes vs the rest, the bench's) and episode_auc: the highest
    P(done) of an episode separating the successes from the failures (what the learner's terminal,
    P(done) > threshold, needs)."""
    from hil_robot.learn.critic import score_episodes

    scores = score_episodes(backend, held)
    top = lambda ok: np.array([s["p_done"].max() for s in scores if s["success"] == ok])  # noqa: E731
    return {"done_auc": bench.calibration(backend, held)["done_auc"], "episode_auc": bench.roc_auc(top(True), top(False))}


def _separates(m: dict[str, float]) -> bool:
    """Better than chance (0.5) by a clear margin on a clearly separable set."""
    return m["done_auc"] >= 0.8 and m["episode_auc"] >= 0.8


@pytest.fixture(scope="module")
def online_run(tmp_path_factory):
    from hil_robot.learn.critic import collect_sim_episodes

    torch.set_num_threads(1)
    bench = _bench()
    # 3 demos + 6 deploy episodes; warm-up (200 steps per member) after 3 deploy episodes, then 2 rounds of 20
    args = bench.parse_args(["--hw", "16", "--run-demos", "3", "--run-deploy", "6", "--small-steps", "240"])
    held = collect_sim_episodes("pick_cube", 4, 4, seed=1, image_hw=(16, 16))
    tmp = tmp_path_factory.mktemp("bench_critic")
    out, run, oc = bench.run_online(0, args, held, str(tmp))
    return bench, args, held, tmp, out, run, oc


def test_online_condition_gives_finite_in_range_metrics(online_run):
    _, args, _, _, out, run, _ = online_run
    assert run["run_episodes"] == 9 and 0 <= run["run_failures"] <= 6 and run["run_takeover_episodes"] >= 1
    for name in ("online", "online_mean"):
        m = out[name]
        assert set(m) == {"done_auc", "spearman_succ", "spearman_fail", "final_v_succ", "final_v_fail", "train_s",
                          "done_recall", "done_fpr"}
        assert all(np.isfinite(v) for v in m.values()), m
        assert 0.0 <= m["done_recall"] <= 1.0 and 0.0 <= m["done_fpr"] <= 1.0
        assert 0.0 <= m["done_auc"] <= 1.0 and -1.0 <= m["spearman_succ"] <= 1.0 and -1.0 <= m["spearman_fail"] <= 1.0
        assert 0.0 <= m["final_v_fail"] <= 1.0 and 0.0 <= m["final_v_succ"] <= 1.0 and m["train_s"] > 0


def test_online_critic_separates_heldout_successes_from_failures(online_run):
    bench, _, held, _, _, _, oc = online_run
    for penalised in (True, False):  # the learner's reading (mean - std, smallest member's P(done)) and the mean
        m = _separation(bench, bench.EnsembleBackend(oc, penalised=penalised), held)
        assert _separates(m), (penalised, m)


def test_an_untrained_ensemble_does_not_pass_the_separation_check(online_run):
    """The check above can fail: the same ensemble with its initial (random) weights does not pass."""
    from hil_robot.config import load_config
    from hil_robot.data import StoreReplay
    from hil_robot.learn.online_critic import OnlineCritic

    bench, _, held, tmp, _, _, _ = online_run
    lc = load_config(["learner.reward=critic_online"]).learner
    buffer = StoreReplay([str(tmp / "run0")], 2000, seed=0).buffer
    for init in range(3):
        torch.manual_seed(init)
        oc = OnlineCritic(lc, buffer)
        for penalised in (True, False):
            m = _separation(bench, bench.EnsembleBackend(oc, penalised=penalised), held)
            assert not _separates(m), (init, penalised, m)
