"""Progress critic network, value accumulation, checkpoints and the remote backend (fast tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies import checkpoint
from policies.checkpoint import CheckpointError
from policies.critic import (CriticNetConfig, LocalCriticBackend, ProgressCritic, ProgressTracker, accumulate_value,
                             score_episode, spearman)
from hil_robot.learn.critic import CriticEpisode, CriticTrainSettings, PairSampler, label_rewards

torch.set_num_threads(1)

NET = CriticNetConfig(cameras=("front", "wrist"), image_hw=(32, 32), vision_channels=(8, 8, 16, 16), feature_dim=32,
                      hidden_dim=32)


def frames(rng: np.random.Generator, b: int) -> dict:
    return {"images/front": rng.integers(0, 255, (b, 32, 32, 3), dtype=np.uint8),
            "images/wrist": rng.integers(0, 255, (b, 32, 32, 3), dtype=np.uint8),
            "state": rng.normal(size=(b, 15)).astype(np.float32)}


def backend(seed: int = 0) -> LocalCriticBackend:
    torch.manual_seed(seed)
    return LocalCriticBackend(ProgressCritic(NET))


def test_delta_is_antisymmetric_bounded_and_zero_on_identical_frames():
    be, rng = backend(), np.random.default_rng(0)
    a, b = frames(rng, 6), frames(rng, 6)
    text = ["pick up the red cube"] * 6
    d_ab, p_ab = be.score(a, b, text)
    d_ba, _ = be.score(b, a, text)
    d_aa, _ = be.score(a, a, text)
    assert d_ab.shape == (6,) and p_ab.shape == (6,)
    np.testing.assert_allclose(d_ab, -d_ba, atol=1e-6)
    np.testing.assert_allclose(d_aa, 0.0, atol=1e-6)
    assert np.all(np.abs(d_ab) <= 1) and np.all((p_ab >= 0) & (p_ab <= 1))


def test_value_accumulation_follows_vlac_and_stays_in_unit_interval():
    assert accumulate_value(0.0, 0.5) == pytest.approx(0.5)
    assert accumulate_value(0.5, 0.5) == pytest.approx(0.75)  # V + (1 - V)Δ
    assert accumulate_value(0.5, -0.5) == pytest.approx(0.25)  # V + VΔ when regressing
    v, rng = 0.0, np.random.default_rng(0)
    for d in rng.uniform(-1, 1, 500):
        v = accumulate_value(v, float(d))
        assert 0.0 <= v <= 1.0


def test_spearman():
    assert spearman(np.arange(10), np.arange(10) ** 2) == pytest.approx(1.0)
    assert spearman(np.arange(10), -np.arange(10)) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.ones(5), np.arange(5)))


def test_score_episode_and_tracker_agree():
    be, rng = backend(1), np.random.default_rng(1)
    ep = frames(rng, 7)
    res = score_episode(be, ep, "pick up the red cube")
    assert res["value"].shape == (7,) and res["delta"].shape == (6,) and res["p_done"].shape == (7,)
    tracker = ProgressTracker(be, done_threshold=2.0)  # never done
    obs = [{"images/front": ep["images/front"][i], "images/wrist": ep["images/wrist"][i], "state": ep["state"][i]}
           for i in range(7)]
    tracker.reset(obs[0], "pick up the red cube")
    infos = [tracker.step(o) for o in obs[1:]]
    np.testing.assert_allclose([i["reward"] for i in infos], res["delta"], atol=1e-5)
    assert tracker.value == pytest.approx(float(res["value"][-1]), abs=1e-5)
    assert not any(i["done"] for i in infos)
    low = ProgressTracker(be, done_threshold=-1.0, done_patience=2)  # always over the threshold
    low.reset(obs[0], "x")
    assert [low.step(o)["done"] for o in obs[1:4]] == [False, True, True]


def test_label_rewards_on_replay_batch():
    be, rng = backend(), np.random.default_rng(2)
    a, b = frames(rng, 5), frames(rng, 5)
    batch = {**{f"obs/{k}": v for k, v in a.items()}, **{f"next_obs/{k}": v for k, v in b.items()},
             "instruction": ["pick up the red cube"] * 5}
    out = label_rewards(be, batch)
    want, _ = be.score(a, b, batch["instruction"])
    np.testing.assert_allclose(out["reward"], want)


def test_pair_sampler_targets():
    rng = np.random.default_rng(3)
    succ = CriticEpisode(frames(rng, 11), "pick up the red cube", True)
    fail = CriticEpisode(frames(rng, 8), "pick up the red cube", False)
    s = PairSampler([succ, fail], CriticTrainSettings(seed=0, done_last_k=2, episodes_per_batch=40, frames_per_episode=3))
    g = s.sample()
    idx = g["idx"]
    assert len(idx) == 120 and len(g["frame_text"]) == 120
    fa, fb = idx[g["pa"]], idx[g["pb"]]
    matched = np.array([t == "pick up the red cube" for t in g["pair_text"]])
    in_succ = fa < 11
    sel = in_succ & matched
    np.testing.assert_allclose(g["delta"][sel], (fb[sel] - fa[sel]) / 10.0, atol=1e-6)
    assert (g["delta"][sel] < 0).any() and (g["delta"][sel] > 0).any()  # reversed pairs present
    assert np.all((fa < 11) == (fb < 11))  # pairs never mix episodes
    np.testing.assert_array_equal(g["done"], ((idx < 11) & (idx >= 9)).astype(np.float32))
    assert (~matched).any() and np.all(g["delta"][~matched] == 0)  # mismatched instructions
    assert len(g["neg_frames"]) == len(g["neg_text"]) > 0
    fail_sel = fa >= 11
    assert fail_sel.any() and np.all(g["delta"][fail_sel] == 0) and np.all(g["weight"][fail_sel] == 0.5)
    with pytest.raises(ValueError, match="successful"):
        PairSampler([fail], CriticTrainSettings())


def test_critic_checkpoint_round_trip_and_kind_check(tmp_path):
    be, rng = backend(4), np.random.default_rng(4)
    a, b = frames(rng, 3), frames(rng, 3)
    checkpoint.save_critic(tmp_path / "critic", be.model, step=5)
    loaded = LocalCriticBackend(checkpoint.load_critic(tmp_path / "critic"))
    for x, y in zip(be.score(a, b, ["t"] * 3), loaded.score(a, b, ["t"] * 3)):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(CheckpointError, match="expected 'vla'"):
        checkpoint.load(tmp_path / "critic")


def test_remote_critic_over_policy_server_matches_local(free_port):
    transport = pytest.importorskip("hil_robot.transport.policy_server")
    from hil_robot.transport.policy_client import PolicyClient
    from policies.critic_remote import CriticPolicyAdapter, RemoteCriticBackend

    be, rng = backend(5), np.random.default_rng(5)
    a, b = frames(rng, 5), frames(rng, 5)
    texts = ["pick up the red cube"] * 3 + ["push the puck"] * 2
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with transport.PolicyServer(CriticPolicyAdapter(be), endpoint):
        client = PolicyClient(endpoint, timeout_s=10.0, heartbeat_s=None)
        try:
            remote = RemoteCriticBackend(client, max_batch=2)  # 3 requests
            got = remote.score(a, b, texts)
            assert client.fetch_metadata()["kind"] == "critic"
        finally:
            client.close()
    want = be.score(a, b, texts)
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], atol=1e-6)


def test_episodes_from_store_and_train_critic_cli(tmp_path):
    from hil_robot.data import EpisodeStore, Recorder
    from hil_robot.data.synthetic import record_episode
    from hil_robot.learn.critic import episodes_from_store, train_critic_cli

    store = EpisodeStore(tmp_path / "store", image_codec="png")
    rec = Recorder(store, pre_intervention_k=2)
    for i in range(4):
        record_episode(rec, f"ep{i}", ["demo"] * 6, episode=i, success=i != 3, hw=(32, 32))
    rec.close()
    store.close()
    eps = episodes_from_store([str(tmp_path / "store")], cameras=("front", "wrist"))
    assert len(eps) == 4 and [e.success for e in eps].count(False) == 1
    assert eps[0].frames["images/front"].shape == (7, 32, 32, 3) and len(eps[0]) == 7  # final obs appended
    assert eps[0].frames["state"][-1, 0] == 6  # synthetic state[0] = step
    rc = train_critic_cli([f"store={tmp_path / 'store'}", f"out={tmp_path / 'critic'}", "steps=3", "holdout=0.25",
                           "threads=1"])
    assert rc == 0
    model = checkpoint.load_critic(tmp_path / "critic")
    assert model.cfg.image_hw == (32, 32) and model.cfg.cameras == ("front", "wrist")
