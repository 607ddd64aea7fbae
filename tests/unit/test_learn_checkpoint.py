"""Learner checkpoints: pickle-free round trip of nested state, atomic LATEST, exact resume."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from hil_robot.config import load_config
from hil_robot.data import EpisodeStore, Recorder
from hil_robot.data.synthetic import record_episode
from hil_robot.learn import checkpoint as ckpt
from hil_robot.learn.loop import Learner

torch.set_num_threads(1)


def test_nested_state_with_optimizer_round_trips(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"net": net.state_dict(), "opt": opt.state_dict(), "n": 3, "t": (1, "a", None), "arr": np.arange(5)}
    path = ckpt.save(tmp_path, {"algo": state, "rng": ckpt.rng_state()}, {"step": 12, "version": 4})
    loaded, meta = ckpt.load(path)
    assert meta["step"] == 12 and meta["version"] == 4
    got = loaded["algo"]
    assert got["n"] == 3 and got["t"] == (1, "a", None)
    np.testing.assert_array_equal(got["arr"], np.arange(5))
    assert set(got["opt"]["state"]) == {0, 1}  # int keys survive (JSON would make them strings)
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    opt2.load_state_dict(got["opt"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    # no pickle anywhere: the JSON is plain and the tensors are safetensors
    doc = json.loads((path / "state.json").read_text())
    assert doc["format"] == "hil_robot.learner/1"


def test_rng_state_restores_all_generators():
    saved = ckpt.rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.set_rng_state(saved)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_latest_switches_only_to_complete_checkpoints_and_old_ones_are_pruned(tmp_path):
    for step in (1, 2, 3):
        ckpt.save(tmp_path, {"x": torch.tensor([step])}, {"step": step, "version": step})
    assert ckpt.latest(tmp_path).name == "step_000000003"
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_000000002", "step_000000003"]
    # a crash mid-write leaves a temp dir that LATEST never points to
    (tmp_path / "checkpoints" / ".tmp-step_000000004-1").mkdir()
    assert ckpt.latest(tmp_path).name == "step_000000003"
    (tmp_path / "checkpoints" / "LATEST").write_text("step_000000009\n")
    with pytest.raises(ckpt.CheckpointError, match="incomplete"):
        ckpt.latest(tmp_path)


def test_published_version_is_remembered(tmp_path):
    assert ckpt.published_version(tmp_path) == 0
    ckpt.record_published(tmp_path, 17, step=300)
    assert ckpt.published_version(tmp_path) == 17


def _store(path):
    store = EpisodeStore(path)
    rec = Recorder(store, pre_intervention_k=2)
    for e in range(3):
        segs = ["demo"] * 8 if e == 0 else ["autonomous"] * 3 + ["recovery"] * 2 + ["correction"] * 3
        record_episode(rec, f"ep{e}", segs, episode=e, hw=(16, 16))
    rec.close()


def _learner(tmp_path, run: str, max_updates: int, resume: bool = True) -> Learner:
    cfg = load_config(["learner=rlpd", "learner.batch_size=16", f"learner.max_updates={max_updates}",
                       "learner.min_replay_steps=8", "learner.checkpoint_every_s=1000", "experiment.wandb_mode=disabled"])
    return Learner(cfg, [tmp_path / "store"], tmp_path / run, resume=resume)


def _weights(learner: Learner) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in learner.algo.critic_loss.state_dict().items()}


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path):
    _store(tmp_path / "store")
    straight = _learner(tmp_path, "a", max_updates=6)
    straight.run()
    # the same run, stopped after 3 updates (checkpoint), then resumed by a new learner
    first = _learner(tmp_path, "b", max_updates=3)
    assert first.run()["step"] == 3
    second = _learner(tmp_path, "b", max_updates=6)
    assert second.state.step == 3 and second.resumed_from.endswith("step_000000003")
    summary = second.run()
    assert summary["step"] == 6
    for (k, va), vb in zip(_weights(straight).items(), _weights(second).values()):
        assert torch.equal(va, vb), f"{k} differs after resume"
    rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,time_s,metric,value" and any(r.startswith("6,") for r in rows)
    assert (tmp_path / "b" / "metrics.png").stat().st_size > 1000


def test_bc_learner_with_ema_resumes_it_and_saves_the_ema_for_serving(tmp_path):
    """learner.ema_decay: the average survives a resume exactly, and the checkpoint's serving
    policy holds the averaged weights (what the policy server was sent), not the raw ones."""
    from policies import checkpoint as policy_ckpt

    _store(tmp_path / "store")

    def bc(run: str, max_updates: int) -> Learner:
        cfg = load_config(["learner=weighted_bc", "learner.batch_size=4", f"learner.max_updates={max_updates}",
                           "learner.min_replay_steps=8", "learner.checkpoint_every_s=1000", "learner.ema_decay=0.9",
                           "sim.image_height=16", "sim.image_width=16", "policy.size=small",
                           "experiment.wandb_mode=disabled"])
        return Learner(cfg, [tmp_path / "store"], tmp_path / run)

    straight = bc("a", 4)
    straight.run()
    bc("b", 2).run()
    resumed = bc("b", 4)
    assert resumed.state.step == 2
    resumed.run()
    want, got = straight.algo.publish_weights(), resumed.algo.publish_weights()
    for k in want:
        np.testing.assert_array_equal(want[k], got[k], err_msg=f"EMA {k} differs after resume")
    raw = {k: v.detach().numpy() for k, v in resumed.algo.model.state_dict().items()}
    assert any(not np.array_equal(raw[k], got[k]) for k in got)  # the average is not the raw weights
    served = policy_ckpt.load(ckpt.latest(tmp_path / "b") / "policy")
    for k, v in served.model.state_dict().items():
        np.testing.assert_array_equal(v.detach().numpy(), got[k], err_msg=k)


def test_critic_reward_scores_each_stored_transition_once(tmp_path):
    """learner.reward=critic: rewards equal the critic's Δ(obs, next_obs) for every sample, and a
    transition sampled again is not re-scored (the critic is frozen, stored steps never change)."""
    from policies.checkpoint import save_critic
    from policies.critic import CriticNetConfig, ProgressCritic

    _store(tmp_path / "store")
    torch.manual_seed(0)
    net = ProgressCritic(CriticNetConfig(cameras=("front", "wrist"), image_hw=(16, 16), vision_channels=(8, 8, 16, 16),
                                         feature_dim=16, hidden_dim=16))
    save_critic(tmp_path / "critic", net)
    cfg = load_config(["learner=rlpd", "learner.reward=critic", f"learner.critic_checkpoint={tmp_path / 'critic'}",
                       "learner.batch_size=16", "learner.min_replay_steps=8", "experiment.wandb_mode=disabled"])
    learner = Learner(cfg, [tmp_path / "store"], tmp_path / "run")
    from hil_robot.learn.critic import label_rewards

    total_steps = learner.replay.num_steps
    for _ in range(20):
        batch = learner.sample()
        want = label_rewards(learner._critic(), batch)["reward"]
        np.testing.assert_allclose(batch["reward"], want, rtol=1e-5, atol=1e-6)
    stats = learner.reward_cache_stats
    assert 0 < stats["scored"] <= total_steps  # each distinct transition scored at most once
    assert stats["hits"] >= 20 * 16 - total_steps
    learner.close()


def test_rl_from_state_with_the_online_critics_samples_no_images_and_still_updates(tmp_path):
    """learner.reward=critic_online from state: the batch leaves the cameras out (the critics read the
    frames of the rows they score from the replay), the rewards are the critics', updates run."""
    _store(tmp_path / "store")
    cfg = load_config(["learner=rlpd", "learner.batch_size=16", "learner.max_updates=3", "learner.min_replay_steps=8",
                       "learner.reward=critic_online", "learner.critic_online_warmup_steps=2",
                       "learner.checkpoint_every_s=1000", "experiment.wandb_mode=disabled"])
    learner = Learner(cfg, [tmp_path / "store"], tmp_path / "run")
    try:
        batch = learner.sample()
        assert not any("/images/" in k for k in batch)
        assert learner.online_critic is not None and learner.online_critic.stats["scored"] > 0
        assert np.isfinite(batch["reward"]).all() and float(np.std(batch["reward"])) > 0  # scored, not the stored 0/1
        assert learner.run()["step"] == 3
    finally:
        learner.close()


def test_n_step_rl_samples_span_targets_and_updates(tmp_path):
    _store(tmp_path / "store")
    cfg = load_config(["learner=rlpd", "learner.batch_size=16", "learner.max_updates=3", "learner.min_replay_steps=8",
                       "learner.rl_n_step=3", "learner.checkpoint_every_s=1000", "experiment.wandb_mode=disabled"])
    learner = Learner(cfg, [tmp_path / "store"], tmp_path / "run")
    try:
        batch = learner.sample()
        g = cfg.learner.gamma
        d = batch["discount"].astype(np.float64)[:, None]
        assert len(batch["reward"]) == 16 and (np.abs(d - [g, g ** 2, g ** 3]).min(1) < 1e-6).all()  # spans of 1-3 steps
        assert (np.abs(d - g ** 3) < 1e-6).any()
        assert learner.run()["step"] == 3
    finally:
        learner.close()
