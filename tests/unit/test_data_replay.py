"""Replay: next-observation handling at episode ends, action chunks, Sirius weight shares,
RLPD views, memory strategies, several stores and refresh."""

from __future__ import annotations

import numpy as np
import pytest

from hil_robot.config.learner import LearnerConfig, SiriusWeights
from hil_robot.data import EpisodeStore, Recorder, ReplayBuffer, StoreReplay, memory, synthetic
from hil_robot.types import SEGMENT_INDEX, SEGMENT_ORDER, Segment

SMALL = {"hw": (8, 8), "cameras": ("front",)}
A, PRE, R, C, D, P = "autonomous", "pre_intervention", "recovery", "correction", "demo", "perturbation"


def _store(path, episodes, codec="raw"):
    """episodes: list of (segments, terminal, final_obs)."""
    store = EpisodeStore(path, image_codec=codec)
    rec = Recorder(store, 0)
    for i, (segs, terminal, final) in enumerate(episodes):
        synthetic.record_episode(rec, f"ep{i}", segs, episode=i, terminal=terminal, final_obs=final, **SMALL)
    return store


def _all_transitions(replay, horizon=1, view="all"):
    rows = replay.buffer._build_views()[view] if isinstance(replay, StoreReplay) else replay._build_views()[view]
    buf = replay.buffer if isinstance(replay, StoreReplay) else replay
    return buf.gather(rows, horizon, np.ones(len(rows), np.float32))


def test_next_obs_at_terminal_truncated_and_mid_episode(tmp_path):
    store = _store(tmp_path / "s", [([A] * 4, True, False), ([A] * 3, False, True), ([A] * 3, False, False)])
    replay = StoreReplay([store], capacity_steps=100)
    b = _all_transitions(replay)
    ep, st = b["obs/state"][:, 1].astype(int), b["obs/state"][:, 0].astype(int)
    nxt_ep, nxt_st = b["next_obs/state"][:, 1].astype(int), b["next_obs/state"][:, 0].astype(int)
    assert (nxt_ep == ep).all()
    for i in range(len(st)):
        last = (ep[i], st[i]) in {(0, 3), (1, 2), (2, 2)}
        if not last:
            assert nxt_st[i] == st[i] + 1 and b["done"][i] == 0 and b["truncated"][i] == 0
    pairs = set(zip(ep.tolist(), st.tolist()))
    assert (2, 2) not in pairs, "a cut-off last step without a final observation cannot bootstrap and must not be sampled"
    assert len(pairs) == 4 + 3 + 2
    term = np.flatnonzero((ep == 0) & (st == 3))[0]
    assert b["done"][term] == 1 and b["truncated"][term] == 0 and b["reward"][term] == 1.0
    trunc = np.flatnonzero((ep == 1) & (st == 2))[0]
    assert b["done"][trunc] == 0 and b["truncated"][trunc] == 1
    assert nxt_st[trunc] == 3, "truncated transition must bootstrap from the recorded final observation"
    np.testing.assert_array_equal(b["next_obs/images/front"][trunc], synthetic.observation(3, 1, **SMALL)["images/front"])
    np.testing.assert_array_equal(b["obs/images/front"][term], synthetic.observation(3, 0, **SMALL)["images/front"])
    assert b["next_obs/task_state"][trunc][0] == 3


def test_action_chunks_are_padded_past_the_episode_end(tmp_path):
    store = _store(tmp_path / "s", [([A] * 5, True, False)])
    replay = StoreReplay([store], capacity_steps=100)
    b = _all_transitions(replay, horizon=4)
    for i, t in enumerate(b["step_index"]):
        expected = [min(t + k, 4) / 1000.0 for k in range(4)]
        np.testing.assert_allclose(b["actions"][i, :, 0], expected, atol=1e-7)
        assert b["action_is_pad"][i].tolist() == [t + k > 4 for k in range(4)]
        assert b["action"][i, 0] == pytest.approx(t / 1000.0)
    assert b["actions"].shape == (5, 4, 7) and b["actions"].dtype == np.float32
    assert b["segment"].dtype == np.int8 and b["step_index"].dtype == np.int64 and len(b["instruction"]) == 5


def test_batch_contract_shapes_and_dtypes(tmp_path):
    store = _store(tmp_path / "s", [([A, A, R, C], True, True)])
    b = StoreReplay([store], capacity_steps=50, seed=0).sample(16, horizon=3)
    assert b["obs/images/front"].shape == (16, 8, 8, 3) and b["obs/images/front"].dtype == np.uint8
    assert b["obs/state"].shape == (16, 15) and b["obs/state"].dtype == np.float32
    for key in ("reward", "done", "truncated", "weight"):
        assert b[key].shape == (16,) and b[key].dtype == np.float32, key
    assert b["actions"].shape == (16, 3, 7) and b["action_is_pad"].dtype == bool
    assert all(SEGMENT_ORDER[s] in (Segment.AUTONOMOUS, Segment.RECOVERY, Segment.CORRECTION) for s in b["segment"])
    lean = StoreReplay([store], capacity_steps=50, seed=0).sample(16, next_obs=False)
    assert not any(k.startswith("next_obs/") for k in lean) and set(b) - set(lean) == {k for k in b if k.startswith("next_obs/")}


def test_class_shares_follow_the_config():
    counts = np.array([600, 30, 100, 200, 70])  # autonomous, pre, intervention, demo, perturbation
    shares = memory.class_shares(counts, SiriusWeights())
    demo_natural = 200 / 1000
    np.testing.assert_allclose(shares, [1 - 0.5 - 0.002 - demo_natural, 0.002, 0.5, demo_natural, 0.0])
    shares = memory.class_shares(np.array([10, 0, 10, 0, 0]), SiriusWeights(intervention=0.3))
    np.testing.assert_allclose(shares, [0.7, 0, 0.3, 0, 0])  # absent classes drop out


@pytest.mark.parametrize("sirius", [SiriusWeights(), SiriusWeights(intervention=0.3, pre_intervention=0.05, demo=0.1)])
def test_sampled_weight_shares_match_configured_class_shares(tmp_path, sirius):
    eps = [([A] * 30 + [PRE] * 5 + [R] * 3 + [C] * 4 + [A] * 8, True, True) for _ in range(3)] + [([D] * 40, True, True)]
    eps.append(([P] * 10 + [A] * 10, True, True))
    store = _store(tmp_path / "s", eps)
    replay = StoreReplay([store], capacity_steps=1000, sirius=sirius, seed=1)
    b = replay.sample(200_000 // 8, view="bc")
    cls = memory.SEGMENT_TO_CLASS[b["segment"]]
    assert not (cls == 4).any(), "perturbation steps are not imitated"
    got = np.array([b["weight"][cls == c].sum() for c in range(5)]) / b["weight"].sum()
    counts = replay.buffer.class_counts("bc")
    n = counts.sum()
    demo = sirius.demo if sirius.demo >= 0 else counts[3] / n
    expected = np.array([1 - sirius.intervention - sirius.pre_intervention - demo, sirius.pre_intervention, sirius.intervention, demo, 0])
    np.testing.assert_allclose(got, expected, atol=0.01)
    assert b["weight"].mean() == pytest.approx(1.0, abs=0.03)


def test_rlpd_views_half_offline_and_interventions_in_both(tmp_path):
    store = _store(tmp_path / "s", [([D] * 10, True, True), ([A] * 10 + [R] * 2 + [C] * 3, True, True)])
    replay = StoreReplay([store], capacity_steps=100, seed=0)
    buf = replay.buffer
    off = {(int(e), int(s)) for e, s in zip(*_keys(buf, "offline"))}
    on = {(int(e), int(s)) for e, s in zip(*_keys(buf, "online"))}
    assert off == {(0, t) for t in range(10)} | {(1, t) for t in range(10, 15)}
    assert on == {(1, t) for t in range(15)}
    assert {(1, t) for t in range(10, 15)} <= off & on
    b = replay.sample_rlpd(64)
    assert b["is_offline"].sum() == 32 and (b["weight"] == 1).all()
    seg = b["segment"][b["is_offline"] == 1]
    assert np.isin(seg, [SEGMENT_INDEX[Segment.DEMO], SEGMENT_INDEX[Segment.RECOVERY], SEGMENT_INDEX[Segment.CORRECTION]]).all()
    assert (b["episode_index"][b["is_offline"] == 0] == 1).all()
    # state-only RL leaves the cameras out; every other key is the same batch
    from hil_robot.learn.loop import sample_rlpd

    full = sample_rlpd(replay, 16, 0.5, np.random.default_rng(3))
    lean = sample_rlpd(replay, 16, 0.5, np.random.default_rng(3), images=False)
    assert any(k.startswith("obs/images/") for k in full) and any(k.startswith("next_obs/images/") for k in full)
    assert set(lean) == {k for k in full if "/images/" not in k}
    for k in lean:
        np.testing.assert_array_equal(np.asarray(lean[k]), np.asarray(full[k]))


def _keys(buf, view):
    rows = buf._build_views()[view]
    return [buf.held[s].episode_index for s in buf._slot[rows]], buf._step[rows]


def _buffer_with(strategy, keep_demos=True):
    """Capacity 30 rows; episodes of 10 steps (no final obs) with 0, 5, 2, 8 intervention steps + a demo."""
    return ReplayBuffer(30, strategy, keep_demos=keep_demos)


@pytest.mark.parametrize(
    "strategy,evicted",
    [("fifo", ["ep0", "ep1"]), ("filo", ["ep2", "ep3"]), ("lifo_intervention", ["ep0", "ep2"]), ("mifo_intervention", ["ep1", "ep3"])],
)
def test_memory_strategies_evict_in_their_order(tmp_path, strategy, evicted):
    interventions = [0, 5, 2, 8, 1]
    eps = [([A] * (10 - k) + [C] * k, True, False) for k in interventions]
    store = _store(tmp_path / "s", eps)
    buf = _buffer_with(strategy)
    for i in range(5):
        assert buf.insert(store.read_episode(i))
    assert buf.num_steps <= 30 and buf.num_episodes == 3
    assert [eid for _, eid in buf.evicted] == evicted
    assert f"ep{4}" in {h.episode_id for h in buf.held.values()}, "the newest episode is always admitted"


def test_demos_are_kept_unless_disabled(tmp_path):
    store = _store(tmp_path / "s", [([D] * 10, True, False)] + [([A] * 10, True, False)] * 3)
    for keep, first_out in ((True, "ep1"), (False, "ep0")):
        buf = ReplayBuffer(30, "fifo", keep_demos=keep)
        for i in range(4):
            buf.insert(store.read_episode(i))
        assert buf.evicted[0][1] == first_out


@pytest.mark.parametrize("threads", [0, 2])
def test_memory_is_bounded_and_rows_are_reused(tmp_path, threads):
    store = _store(tmp_path / "s", [([A] * 7, False, True)] * 6)
    buf = ReplayBuffer(20, "fifo", gather_threads=threads)
    for i in range(6):
        buf.insert(store.read_episode(i))
        rows = np.concatenate([np.append(h.rows, h.final_row) for h in buf.held.values()])
        assert len(rows) == len(set(rows.tolist())) <= 20
    b = buf.sample(64, view="all")
    np.testing.assert_array_equal(b["obs/state"][:, 1], b["episode_index"])  # rows not mixed up after reuse
    np.testing.assert_array_equal(b["obs/state"][:, 0], b["step_index"])
    for i in range(64):  # images belong to the same rows as the state, in parallel gathers too
        ep, t = int(b["episode_index"][i]), int(b["step_index"][i])
        np.testing.assert_array_equal(b["obs/images/front"][i], synthetic.observation(t, ep, **SMALL)["images/front"])
        np.testing.assert_array_equal(b["next_obs/images/front"][i], synthetic.observation(t + 1, ep, **SMALL)["images/front"])


def test_several_stores_and_refresh_picks_up_new_episodes(tmp_path):
    demos = _store(tmp_path / "demos", [([D] * 5, True, True)])
    online = EpisodeStore(tmp_path / "online", image_codec="raw")
    replay = StoreReplay.from_config(LearnerConfig(memory_max_steps=100), [demos.root, online.root], seed=0)
    assert replay.num_episodes == 1
    rec = Recorder(online, 2)
    synthetic.record_episode(rec, "new", [A] * 4 + [R] * 2, **SMALL)
    assert replay.refresh() == 1 and replay.refresh() == 0
    assert replay.num_episodes == 2 and replay.num_steps == 11
    b = replay.sample(128, view="all")
    assert set(b["store_index"].tolist()) == {0, 1}
    state = replay.state_dict()
    again = StoreReplay([demos.root, online.root], capacity_steps=100, refresh=False)
    again.load_state_dict(state)
    assert again.num_steps == 11 and again.refresh() == 0


def test_replay_on_a_store_that_does_not_exist_yet(tmp_path):
    replay = StoreReplay([tmp_path / "later"], capacity_steps=50)
    assert replay.num_episodes == 0 and replay.refresh() == 0
    synthetic.record_episode(Recorder(EpisodeStore(tmp_path / "later"), 2), "first", [A] * 3, **SMALL)
    assert replay.refresh() == 1


def test_empty_view_gives_a_clear_error(tmp_path):
    store = _store(tmp_path / "s", [([A] * 3, True, True)])
    replay = StoreReplay([store], capacity_steps=10)
    with pytest.raises(ValueError, match="'offline' is empty"):
        replay.sample(4, view="offline")


def test_n_step_targets_sum_the_discounted_reward_and_bootstrap_from_n_steps_ahead(tmp_path):
    from hil_robot.learn.loop import n_step_targets, sample_rlpd

    store = _store(tmp_path / "s", [([D] * 10, True, True), ([A] * 6 + [R] * 2 + [C] * 4, True, True)])
    replay = StoreReplay([store], capacity_steps=100, seed=0)
    buf = replay.buffer
    gamma, n = 0.5, 3
    one = sample_rlpd(replay, 64, 0.5, np.random.default_rng(1), images=False)
    out = n_step_targets(buf, dict(one), n, gamma)
    assert len(out["reward"]) == 64 and (out["is_offline"] == one["is_offline"]).all()
    for i, row in enumerate(one["replay_row"]):
        cur, ret, m = int(row), float(buf._reward[row]), 1  # walk the episode by hand
        while m < n and buf._succ[cur] >= 0:
            cur = int(buf._succ[cur])
            ret += gamma ** m * float(buf._reward[cur])
            m += 1
        assert out["reward"][i] == pytest.approx(ret) and out["discount"][i] == pytest.approx(gamma ** m)
        assert out["done"][i] == buf._done[cur]
        np.testing.assert_array_equal(out["next_obs/state"][i], buf._obs["state"][buf._next[cur]])
    assert (out["discount"] < gamma ** 2).any() and (out["reward"] > 0).any()  # 3-step spans, the success reward reached
    # the update reads what it reads from one step: obs, action, offline mask unchanged
    for k in ("obs/state", "action", "is_offline"):
        np.testing.assert_array_equal(out[k], one[k])


def test_n_step_needs_the_stored_reward():
    from hil_robot.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="rl_n_step=3 .*learner.reward=sparse"):
        load_config(["learner=rlpd", "learner.rl_n_step=3", "learner.reward=critic_online"])
    assert load_config(["learner=rlpd", "learner.rl_n_step=3"]).learner.rl_n_step == 3
