"""Weighted BC: Sirius weights from the real store + replay make BC follow the operator's
corrections instead of the (bad, but more numerous) autonomous steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from hil_robot.config import load_config
from hil_robot.data import EpisodeStore, Recorder, StoreReplay
from hil_robot.learn.weighted_bc import WeightedBC
from hil_robot.types import SEGMENT_INDEX, Segment, StepRecord

torch.set_num_threads(1)
W_GOOD = np.random.default_rng(123).normal(size=(15, 7)).astype(np.float32) / 4.0


def good_action(state: np.ndarray) -> np.ndarray:
    return np.tanh(state @ W_GOOD)


def bad_action(state: np.ndarray) -> np.ndarray:
    """What the failing policy did: consistently off by a large bias."""
    return np.clip(good_action(state) + 0.8, -1, 1)


class TinyPolicy:
    """Follows the Policies interface the learner relies on: ``.model.compute_loss(batch) -> [B]``
    (an L1 chunk loss like the VLA's default head)."""

    def __init__(self, seed: int = 0):
        torch.manual_seed(seed)
        self.model = TinyModel()


class TinyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(15, 7), nn.Tanh())  # can represent the good actions, cannot memorise states

    def compute_loss(self, batch):
        return (self.net(batch["state"]) - batch["actions"][:, 0]).abs().mean(-1)


def tiny_batch_to_torch(batch, device):
    return {"state": torch.as_tensor(batch["obs/state"]), "actions": torch.as_tensor(batch["actions"])}


def record_store(path, episodes: int = 24, seed: int = 0) -> EpisodeStore:
    """Each episode: 30 autonomous steps with bad actions, then the operator takes over for 6
    steps (recovery + correction) with good ones; two full demos. Autonomous ≈ 80% of steps."""
    rng = np.random.default_rng(seed)
    store = EpisodeStore(path)
    rec = Recorder(store, pre_intervention_k=3)
    plans = [["demo"] * 36] * 2 + [["autonomous"] * 30 + ["recovery"] * 2 + ["correction"] * 4] * episodes
    for e, segs in enumerate(plans):
        for t, seg in enumerate(segs):
            state = rng.normal(size=15).astype(np.float32)
            human = seg != "autonomous"
            act = good_action(state) if human else bad_action(state)
            last = t == len(segs) - 1
            rec.add(StepRecord(
                episode_id=f"e{e}", step=t, observation={"state": state, "prompt": "p", "timestamp_s": 0.1 * t},
                action_executed=act, action_policy=np.full(7, np.nan, np.float32) if human else act,
                source="human" if human else "policy", segment=seg, instruction="p", done=last, success=last,
                reward=float(last),
            ))
        rec.end_episode(True, task="synthetic")
    rec.close()
    return store


def train(cfg, replay, algorithm: str, updates: int = 1000) -> tuple[TinyPolicy, list[dict]]:
    cfg = load_config([f"learner={algorithm}", "learner.lr=3e-3", "learner.batch_size=64"]).learner
    policy = TinyPolicy(seed=0)
    algo = WeightedBC(cfg, policy, batch_to_torch=tiny_batch_to_torch)
    rng = np.random.default_rng(1)
    history = [algo.update(replay.sample(64, 1, view="bc", rng=rng)) for _ in range(updates)]
    return policy, history


def action_error(policy: TinyPolicy) -> float:
    states = np.random.default_rng(99).normal(size=(512, 15)).astype(np.float32)
    with torch.no_grad():
        pred = policy.model.net(torch.as_tensor(states)).numpy()
    return float(np.abs(pred - good_action(states)).mean())


def test_weighted_bc_follows_interventions_where_plain_bc_copies_failures(tmp_path):
    record_store(tmp_path / "store")
    replay = StoreReplay([tmp_path / "store"], capacity_steps=5000, seed=0)
    segs = replay.sample(4000, 1, view="bc", rng=np.random.default_rng(0))
    w, seg = segs["weight"], segs["segment"]
    interv = np.isin(seg, [SEGMENT_INDEX[Segment.RECOVERY], SEGMENT_INDEX[Segment.CORRECTION]])
    assert np.mean(seg == SEGMENT_INDEX[Segment.AUTONOMOUS]) > 0.6  # the bad data dominates by count
    assert w[interv].sum() / w.sum() == pytest.approx(0.5, abs=0.05)  # ... but not by weight

    weighted, hist_w = train(None, replay, "weighted_bc")
    plain, hist_p = train(None, replay, "bc")
    err_w, err_p = action_error(weighted), action_error(plain)
    assert err_w < 0.5 * err_p, (err_w, err_p)
    assert err_w < 0.2  # close to the operator's actions
    assert all(k.startswith("wbc/") for k in hist_w[-1]) and all(k.startswith("bc/") for k in hist_p[-1])
    # loss shares are reported per segment and sum to one
    shares = [v for k, v in hist_w[-1].items() if k.startswith("wbc/loss_share_")]
    assert sum(shares) == pytest.approx(1.0, abs=1e-5)


def test_advantage_weights_pick_the_better_of_two_behaviours():
    """exp(A/β) weights: equal numbers of good (A=+1) and bad (A=-1) samples, uniform class weights."""
    rng = np.random.default_rng(0)
    cfg = load_config(["learner=bc", "learner.lr=3e-3", "learner.advantage_beta=0.25"]).learner
    policy = TinyPolicy(seed=0)
    algo = WeightedBC(cfg, policy, batch_to_torch=tiny_batch_to_torch)
    for _ in range(400):
        s = rng.normal(size=(64, 15)).astype(np.float32)
        good = rng.random(64) < 0.5
        act = np.where(good[:, None], good_action(s), bad_action(s)).astype(np.float32)
        m = algo.update({"obs/state": s, "actions": act[:, None], "advantage": np.where(good, 1.0, -1.0)})
    assert m["bc/adv_weight_mean"] > 1.0
    assert action_error(policy) < 0.2


def test_bad_weights_are_refused_with_a_clear_error():
    cfg = load_config(["learner=weighted_bc"]).learner
    algo = WeightedBC(cfg, TinyPolicy(), batch_to_torch=tiny_batch_to_torch)
    s = np.zeros((4, 15), np.float32)
    batch = {"obs/state": s, "actions": np.zeros((4, 1, 7), np.float32), "weight": np.array([1, np.nan, 1, 1], np.float32)}
    with pytest.raises(ValueError, match="weight"):
        algo.update(batch)
    with pytest.raises(KeyError, match="weight"):
        algo.update({"obs/state": s, "actions": np.zeros((4, 1, 7), np.float32)})
    cfg_adv = load_config(["learner=weighted_bc", "learner.advantage_beta=1.0"]).learner
    with pytest.raises(KeyError, match="advantage"):
        WeightedBC(cfg_adv, TinyPolicy(), batch_to_torch=tiny_batch_to_torch).update(dict(batch, weight=np.ones(4, np.float32)))


def test_ema_weights_are_published_and_served_while_raw_weights_train():
    rng = np.random.default_rng(0)
    cfg = load_config(["learner=bc", "learner.lr=1e-2", "learner.ema_decay=0.9"]).learner
    policy = TinyPolicy(seed=0)
    algo = WeightedBC(cfg, policy, batch_to_torch=tiny_batch_to_torch)
    expected = {k: v.detach().clone() for k, v in policy.model.state_dict().items()}
    for n in range(60):
        s = rng.normal(size=(64, 15)).astype(np.float32)
        algo.update({"obs/state": s, "actions": good_action(s)[:, None]})
        d = min(0.9, (1.0 + n + 1) / (10.0 + n + 1))  # the ramp, then the configured decay
        expected = {k: d * expected[k] + (1 - d) * v.detach() for k, v in policy.model.state_dict().items()}
    published = algo.publish_weights()
    raw = {k: v.detach().clone() for k, v in policy.model.state_dict().items()}
    for k, v in expected.items():
        np.testing.assert_allclose(published[k], v.numpy(), rtol=1e-5, atol=1e-6)
        assert not np.allclose(published[k], raw[k].numpy())  # the average lags the raw weights
    # serving_weights() swaps the EMA in for saving and restores the raw weights after
    with algo.serving_weights() as model:
        for k, v in model.state_dict().items():
            np.testing.assert_allclose(v.numpy(), published[k])
    for k, v in policy.model.state_dict().items():
        assert torch.equal(v, raw[k])
    # the EMA survives a checkpoint round trip; a no-EMA checkpoint starts the average at its weights
    other = WeightedBC(cfg, TinyPolicy(seed=1), batch_to_torch=tiny_batch_to_torch)
    other.load_state_dict(algo.state_dict())
    for k, v in other.publish_weights().items():
        np.testing.assert_array_equal(v, published[k])
    plain_cfg = load_config(["learner=bc", "learner.lr=1e-2"]).learner
    plain = WeightedBC(plain_cfg, TinyPolicy(seed=2), batch_to_torch=tiny_batch_to_torch)
    other.load_state_dict(plain.state_dict())
    for k, v in other.publish_weights().items():
        np.testing.assert_array_equal(v, plain.publish_weights()[k])
    with pytest.raises(Exception, match="ema_decay"):
        load_config(["learner.ema_decay=1.0"])
