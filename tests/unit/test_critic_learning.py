"""The progress critic learns from sim episodes: ranks held-out expert episodes, detects success,
terminates episodes, filters bad demos and ignores mismatched instructions (DESIGN §4, VLAC)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hil_robot.learn.critic import (CriticEpisode, CriticTrainSettings, collect_sim_episodes, detection_rates,
                                    filter_demos, score_episodes, train_critic)
from policies.critic import LocalCriticBackend, ProgressTracker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)  # 2 threads thrash when the CPU is shared; 1 is the cheaper choice here
    train = collect_sim_episodes("pick_cube", 24, 10, seed=0, image_hw=(64, 64))
    held = collect_sim_episodes("pick_cube", 10, 8, seed=1, image_hw=(64, 64))
    model, metrics = train_critic(train, CriticTrainSettings(steps=500, seed=0))  # 300 left P(done) at 0.8 on a success
    return LocalCriticBackend(model), held, metrics


def test_ranks_heldout_expert_episodes(trained):
    backend, held, _ = trained
    succ = score_episodes(backend, [e for e in held if e.success])
    rhos = np.array([s["spearman"] for s in succ])
    assert rhos.mean() >= 0.9 and rhos.min() >= 0.8, rhos


def test_detects_success_with_few_false_positives(trained):
    backend, held, _ = trained
    succ = score_episodes(backend, [e for e in held if e.success])
    fail = score_episodes(backend, [e for e in held if not e.success])
    positives = [s["p_done"][-1] for s in succ]  # the frame where the task is complete
    negatives = np.concatenate([s["p_done"] for s in fail] + [s["p_done"][: len(s["p_done"]) // 2] for s in succ])
    rates = detection_rates(positives, negatives, threshold=0.5)
    assert rates["recall"] >= 0.9 and rates["false_positive_rate"] <= 0.1, (rates, np.round(positives, 2))


def test_online_tracker_terminates_successes_only(trained):
    backend, held, _ = trained
    terminated, successes = [], 0
    for ep in held:
        tracker = ProgressTracker(backend, done_threshold=0.9)
        obs = [{k: v[i] for k, v in ep.frames.items()} for i in range(len(ep))]
        tracker.reset(obs[0], ep.instruction)
        infos = [tracker.step(o) for o in obs[1:]]
        first_done = next((i + 1 for i, info in enumerate(infos) if info["done"]), None)
        if ep.success:
            successes += 1
            if first_done is not None:  # never early: only in the last fifth of the episode
                assert first_done >= 0.8 * (len(ep) - 1), (ep.name, first_done, len(ep))
                terminated.append(ep.name)
            assert infos[-1]["value"] > 0.4 and sum(i["reward"] for i in infos) > 0.5
        else:
            assert first_done is None, ep.name
    # with the training appearance varying the light direction, a held-out success can end with
    # P(done) below 0.9 on its last frame (0.42 seen; two of ten in a full CI run on 2 cores, one of
    # ten when the file runs alone): the small critic is late there, never early, never on a failure
    assert successes >= 5 and len(terminated) >= 0.8 * successes, (terminated, successes)


def test_filters_reversed_demos_and_keeps_good_ones(trained):
    backend, held, _ = trained
    good = [e for e in held if e.success]
    reversed_eps = [CriticEpisode({k: v[::-1].copy() for k, v in e.frames.items()}, e.instruction, True, e.name + "-rev")
                    for e in good[:4]]
    kept, scores = filter_demos(backend, good + reversed_eps, min_spearman=0.8)
    assert {e.name for e in kept} == {e.name for e in good}
    for s in scores[len(good):]:  # time runs backwards: the value barely leaves 0 (VLAC update for Δ < 0)
        assert s["value"][-1] < 0.1, (s["name"], s["spearman"], s["value"][-1])
    assert min(s["value"][-1] for s in scores[: len(good)]) > 0.4


def test_mismatched_instruction_gives_little_progress(trained):
    backend, held, _ = trained
    ep = next(e for e in held if e.success)
    a = {k: v[:-1] for k, v in ep.frames.items()}
    b = {k: v[1:] for k, v in ep.frames.items()}
    right, _ = backend.score(a, b, [ep.instruction] * (len(ep) - 1))
    wrong, p_wrong = backend.score(a, b, ["insert the peg into the hole"] * (len(ep) - 1))
    assert right.sum() > 0.5 and abs(wrong.sum()) < 0.5 * right.sum() and p_wrong[-1] < 0.5
