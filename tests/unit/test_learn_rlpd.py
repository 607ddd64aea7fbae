"""RLPD / SAC pieces: networks, DrQ shift, bootstrapping, gripper classes, state round-trip."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from hil_robot.config import load_config
from hil_robot.config._build import ConfigError
from hil_robot.learn.rlpd import RLPD, mix_batches, obs_spec_from_batch
from policies.rl import (
    GRIPPER_CLOSE,
    GRIPPER_OPEN,
    GRIPPER_STAY,
    EnsembleCritic,
    RLPolicy,
    TanhGaussianActor,
    gripper_class,
    gripper_command,
    random_shift,
)

torch.set_num_threads(1)


def fake_batch(b: int, hw: int | None = None, seed: int = 0, task_dim: int = 6) -> dict:
    """A replay batch with the data contract's keys (the real replay is exercised in loop tests)."""
    r = np.random.default_rng(seed)
    out: dict = {}
    for p in ("obs/", "next_obs/"):
        out[p + "state"] = r.normal(size=(b, 15)).astype(np.float32)
        out[p + "task_state"] = r.normal(size=(b, task_dim)).astype(np.float32)
        if hw:
            for cam in ("front", "wrist"):
                out[p + f"images/{cam}"] = r.integers(0, 255, (b, hw, hw, 3), dtype=np.uint8)
    out["action"] = r.uniform(-1, 1, (b, 7)).astype(np.float32)
    out["reward"] = r.random(b).astype(np.float32)
    out["done"] = np.zeros(b, np.float32)
    out["truncated"] = np.zeros(b, np.float32)
    out["instruction"] = ["pick up the red cube"] * b
    return out


def learner_cfg(*overrides: str):
    return load_config(["learner=rlpd", *overrides]).learner


def test_random_shift_is_a_bounded_replicate_shift():
    img = torch.arange(12 * 12, dtype=torch.int32).reshape(1, 12, 12, 1).repeat(64, 1, 1, 3).to(torch.uint8)
    out = random_shift(img, pad=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == img.shape and out.dtype == torch.uint8
    src = img[0, :, :, 0].long()
    shifts = set()
    for i in range(64):
        o = out[i, :, :, 0].long()
        # the centre pixel came from a source pixel at most 2 rows/cols away, and every channel moved together
        (r, c), = ((src == o[6, 6]).nonzero().tolist())
        assert abs(r - 6) <= 2 and abs(c - 6) <= 2
        dy, dx = r - 6, c - 6
        expect = src[np.clip(np.arange(12) + dy, 0, 11)][:, np.clip(np.arange(12) + dx, 0, 11)]
        assert torch.equal(o, expect)
        assert torch.equal(out[i, :, :, 0], out[i, :, :, 2])
        shifts.add((dy, dx))
    assert len(shifts) > 10  # offsets really are random per sample
    assert torch.equal(random_shift(img, pad=0), img)


def test_ensemble_critic_members_are_independent_and_actor_is_squashed():
    critic = EnsembleCritic(10, 6, (32, 32), ensemble=4)
    feat, act = torch.randn(5, 10), torch.rand(5, 6) * 2 - 1
    q = critic(feat, act)
    assert q.shape == (4, 5)
    assert not torch.allclose(q[0], q[1])  # different initialisations
    actor = TanhGaussianActor(10, 6, (32,))
    a, logp = actor(feat)
    assert a.shape == (5, 6) and logp.shape == (5,) and a.abs().max() < 1
    a_det, _ = actor(feat, deterministic=True)
    assert torch.equal(a_det, actor(feat, deterministic=True)[0])


def test_gripper_classes_round_trip():
    opening = torch.tensor([1.0, 1.0, 0.3, 0.3])  # open, open, closed, closed
    command = torch.tensor([1.0, -1.0, 1.0, -1.0])  # close, open, close, open
    cls = gripper_class(command, opening, closed_below=0.8)
    assert cls.tolist() == [GRIPPER_CLOSE, GRIPPER_STAY, GRIPPER_STAY, GRIPPER_OPEN]
    assert torch.equal(gripper_command(cls, opening, 0.8), command)


def test_rate_limited_gripper_step_is_the_decision_to_move():
    """The safety filter limits the gripper to 1.0 per tick at 10 Hz: a served close (-1 -> +1)
    executes as 0 first. That tick is the policy's close (recorded 'stay', the gripper critic never
    saw a close in the run's own data: lock-step RLPD with the filter fell from 0.9 to 0.3)."""
    opening = torch.tensor([1.0, 0.3, 1.0, 0.3, 1.0, 0.3])
    command = torch.tensor([0.0, 0.0, -0.6, 0.6, -0.4, 0.4])
    cls = gripper_class(command, opening, closed_below=0.8)
    assert cls.tolist() == [GRIPPER_CLOSE, GRIPPER_OPEN, GRIPPER_STAY, GRIPPER_STAY, GRIPPER_CLOSE, GRIPPER_OPEN]
    from hil_robot.config.robot import RobotConfig
    from hil_robot.control.safety import SafetyFilter

    sf = SafetyFilter(RobotConfig(), 0.1)
    state = np.zeros(15, np.float32)
    state[0:3], state[3], state[7] = (0.5, 0.0, 0.2), 1.0, 1.0  # open jaw
    sf.reset(0.0, state)
    executed = sf.filter(np.array([0, 0, 0, 0, 0, 0, 1.0], np.float32), 0.0, 0.0, state).action[6]
    assert executed < 1.0  # rate-limited
    assert gripper_class(torch.tensor([float(executed)]), torch.tensor([1.0]), 0.8).item() == GRIPPER_CLOSE


def test_gripper_target_bootstraps_from_the_ensemble_value_never_its_own_max():
    """The gripper critic's target is the continuous critic's target minus the toggle penalty: it
    cannot climb above the returns the ensemble believes in (a double-DQN target on its own max
    drifted to 1.9 with rewards <= 1 in a 30-min run)."""
    cfg = learner_cfg()
    b = fake_batch(32)
    b["action"][:8, 6] = 1.0  # some closes from an open jaw: toggles
    agent = RLPD(cfg, obs_spec_from_batch(b, cfg))
    seen: dict = {}
    step = agent.critic_step

    def spy(state, images, action, y, g_cls, y_g):
        seen.update(y=y, g_cls=g_cls, y_g=y_g)
        return step(state, images, action, y, g_cls, y_g)

    agent.critic_step = spy
    with torch.no_grad():  # the gripper critic's own values may be anything: they must not matter
        agent.gripper_critic.net.net[-1].bias.fill_(50.0)
    agent.update(b)
    toggles = (seen["g_cls"] != GRIPPER_STAY).float()
    assert toggles.sum() > 0
    assert torch.allclose(seen["y_g"], seen["y"] - cfg.rl_gripper_penalty * toggles)


def _target_after_one_update(cfg, batch):
    agent = RLPD(cfg, obs_spec_from_batch(batch, cfg))
    return agent.update(batch)["rlpd/target_mean"]


def test_bootstrap_stops_on_done_but_not_on_truncation():
    cfg = learner_cfg("learner.rl_gripper=continuous", "learner.rl_backup_entropy=false")
    b = fake_batch(32)
    b["reward"][:] = 0.0
    torch.manual_seed(0)
    base = _target_after_one_update(cfg, b)
    assert abs(base) > 1e-4  # zero reward: the target is γ·Q'(s', a') only
    done = dict(b, done=np.ones(32, np.float32))
    torch.manual_seed(0)
    assert _target_after_one_update(cfg, done) == pytest.approx(0.0, abs=1e-7)
    trunc = dict(b, truncated=np.ones(32, np.float32))
    torch.manual_seed(0)
    assert _target_after_one_update(cfg, trunc) == pytest.approx(base, rel=1e-6)
    both = dict(b, done=np.ones(32, np.float32), truncated=np.ones(32, np.float32))  # time limit wins
    torch.manual_seed(0)
    assert _target_after_one_update(cfg, both) == pytest.approx(base, rel=1e-6)


@pytest.mark.parametrize("overrides", [
    ("learner=rlpd",),
    ("learner=rlpd_image", "learner.utd_ratio=2"),
    ("learner=rlpd", "learner.num_critics=10", "learner.rl_gripper=continuous"),
])
def test_update_trains_and_state_dict_round_trips_exactly(overrides):
    cfg = load_config(list(overrides)).learner
    hw = 16 if cfg.rl_obs == "image" else None
    batches = [fake_batch(16 * cfg.utd_ratio, hw, seed=i) for i in range(4)]
    spec = obs_spec_from_batch(batches[0], cfg)
    torch.manual_seed(1)
    a = RLPD(cfg, spec)
    before = {k: v.clone() for k, v in a.actor.state_dict().items()}
    m = a.update(batches[0])
    assert all(k.startswith("rlpd/") for k in m) and np.isfinite(list(m.values())).all()
    assert any(not torch.equal(before[k], v) for k, v in a.actor.state_dict().items())
    b = RLPD(cfg, spec)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as from disk: no tensors shared with `a`
    rng = torch.get_rng_state()
    a.update(batches[1])
    torch.set_rng_state(rng)
    b.update(batches[1])
    for (k, va), vb in zip(a.critic_loss.state_dict().items(), b.critic_loss.state_dict().values()):
        assert torch.equal(va, vb), k
    assert a.num_updates == b.num_updates == 2


def test_published_weights_drive_an_rl_policy_like_the_learner():
    cfg = learner_cfg()
    batch = fake_batch(8)
    agent = RLPD(cfg, obs_spec_from_batch(batch, cfg))
    agent.update(batch)
    policy = RLPolicy(cfg, obs_spec_from_batch(batch, cfg))
    policy.load_weights(agent.publish_weights(), version=7)
    obs = {"state": batch["obs/state"][0], "task_state": batch["obs/task_state"][0], "prompt": "", "timestamp_s": 0.0}
    out = policy.infer(obs)
    assert out["policy_version"] == 7 and out["actions"].shape == (1, 7)
    np.testing.assert_allclose(out["actions"], agent.act({k: v[:1] for k, v in batch.items()}), atol=1e-6)
    bad = agent.publish_weights()
    bad["actor.mean.weight"] = bad["actor.mean.weight"] * np.nan
    with pytest.raises(ValueError, match="non-finite"):
        policy.load_weights(bad, version=8)
    assert policy.version == 7


def test_residual_mode_needs_base_actions_and_adds_them():
    cfg = learner_cfg("learner.rl_actor=residual", "learner.rl_residual_scale=0.1", "learner.rl_gripper=continuous")
    batch = fake_batch(8)
    agent = RLPD(cfg, obs_spec_from_batch(batch, cfg))
    with pytest.raises(KeyError, match="base_action"):
        agent.update(batch)
    base = np.full((8, 7), 0.5, np.float32)
    batch["obs/base_action"], batch["next_obs/base_action"] = base, base
    agent.update(batch)
    act = agent.act(batch)
    assert np.all(np.abs(act - 0.5) <= 0.1 + 1e-6)  # within the residual scale of the base action


def test_mix_batches_concatenates_matching_keys():
    a, b = fake_batch(4, seed=1), fake_batch(6, seed=2)
    m = mix_batches(a, b)
    assert m["action"].shape == (10, 7) and len(m["instruction"]) == 10
    np.testing.assert_array_equal(m["reward"][:4], a["reward"])
    assert m["is_offline"].tolist() == [1.0] * 4 + [0.0] * 6


def _actor_gap(cfg, batch, updates: int) -> float:
    """Mean squared distance between the actor's mean action and the recorded one after ``updates``."""
    torch.manual_seed(0)
    agent = RLPD(cfg, obs_spec_from_batch(batch, cfg))
    for _ in range(updates):
        agent.update(batch)
    return float(((agent.act(batch)[:, :6] - batch["action"][:, :6]) ** 2).mean())


def test_bc_term_pulls_the_actor_to_recorded_actions_on_offline_rows_only():
    batch = fake_batch(64, seed=3)
    batch["action"][:, :6] = 0.6  # one recorded action everywhere: easy to imitate
    off = dict(batch, is_offline=np.ones(64, np.float32))
    on = dict(batch, is_offline=np.zeros(64, np.float32))
    sac = learner_cfg("learner.rl_bc_weight=0")
    bc = learner_cfg("learner.rl_bc_weight=5", "learner.rl_bc_q_filter=false")
    gap_sac = _actor_gap(sac, off, 40)
    gap_bc = _actor_gap(bc, off, 40)
    assert gap_bc < 0.3 * gap_sac  # BC moved the actor onto the demo action; pure SAC did not
    assert _actor_gap(bc, on, 40) == pytest.approx(gap_sac, rel=0.3)  # online rows are never imitated
    torch.manual_seed(0)
    agent = RLPD(learner_cfg("learner.rl_bc_weight=1"), obs_spec_from_batch(off, sac))
    m = agent.update(off)
    assert 0.0 <= m["rlpd/bc_frac"] <= 1.0 and np.isfinite(m["rlpd/bc_loss"])


# ----------------------------------------------------------------------------- online critic (reward=critic_online)


@pytest.fixture()
def online_replay(tmp_path):
    from hil_robot.data import EpisodeStore, Recorder, StoreReplay
    from hil_robot.data.synthetic import record_episode

    store = EpisodeStore(tmp_path / "store", image_codec="png")
    rec = Recorder(store, pre_intervention_k=2)
    kw = dict(hw=(16, 16))
    for i in range(3):
        record_episode(rec, f"demo{i}", ["demo"] * 6, episode=i, **kw)
    # the policy drives 5 steps, the operator takes over for 4, the policy finishes: a success
    record_episode(rec, "deploy_ok", ["autonomous"] * 5 + ["recovery"] * 2 + ["correction"] * 2 + ["autonomous"] * 3,
                   episode=3, **kw)
    record_episode(rec, "deploy_fail", ["autonomous"] * 8, episode=4, terminal=False, success=False, **kw)
    rec.close()
    store.close()
    return StoreReplay([str(tmp_path / "store")], 10_000, seed=0)


def test_online_critic_labels_spans_from_outcomes_and_takeovers(online_replay):
    from hil_robot.learn.critic import CriticTrainSettings
    from hil_robot.learn.online_critic import ReplaySampler

    s = ReplaySampler(online_replay.buffer, CriticTrainSettings(), seed=0)
    succ = sorted(s.lengths[s.succ_ids].tolist())
    fail = sorted(s.lengths[s.fail_ids].tolist())
    # 3 demos (6 steps + final obs), the deploy success from its takeover on (4 + 3 + final);
    # failures: the policy's 5 steps before the takeover, the failed episode (8 + final)
    assert succ == [7, 7, 7, 8] and fail == [5, 9]
    group = s.sample()
    frames = s.gather(group["idx"], torch.device("cpu"))
    assert frames["images"]["front"].shape[1:] == (16, 16, 3) and len(frames["state"]) == len(group["idx"])


def test_online_critic_relabels_reward_and_terminal_and_caches_per_version(online_replay):
    from hil_robot.learn.online_critic import OnlineCritic

    batch = online_replay.sample(32, 1, view="all", rng=np.random.default_rng(0))
    never = learner_cfg("learner.reward=critic_online", "learner.critic_online_warmup_steps=2",
                        "learner.critic_online_done_threshold=1.0")
    oc = OnlineCritic(never, online_replay.buffer)
    assert oc.maybe_train() and oc.version == 1
    out = oc.relabel(dict(batch))
    assert np.isfinite(out["reward"]).all() and out["reward"].max() <= 1.0 + 1e-6  # Δ ≤ 1 minus a spread, no bonus
    # no member is ever that sure: the only terminals left are the stored non-success ones (none here)
    assert out["done"].sum() == 0 and (out["truncated"] == batch["truncated"]).all()
    scored = oc.stats["scored"]
    oc.relabel(dict(batch))
    assert oc.stats["scored"] == scored  # same critic version: every transition from the cache
    oc.train(1)
    oc.relabel(dict(batch))
    assert oc.stats["scored"] > scored  # a new version rescores
    distinct = len(set(zip(batch["store_index"].tolist(), batch["episode_index"].tolist(), batch["step_index"].tolist())))
    for budget, expect in ((3, 3), (-1, distinct)):  # older-version scores refreshed up to the budget per batch
        oc.lc = learner_cfg("learner.reward=critic_online", f"learner.critic_online_rescore_per_batch={budget}")
        oc.train(1)
        before = oc.stats["scored"]
        oc.relabel(dict(batch))
        assert oc.stats["scored"] - before == expect
    with pytest.raises(ConfigError, match="rescore_per_batch=-2"):
        learner_cfg("learner.critic_online_rescore_per_batch=-2")
    always = learner_cfg("learner.reward=critic_online", "learner.critic_online_done_threshold=0.0",
                         "learner.critic_online_warmup_steps=1", "learner.critic_online_penalty=0")
    oc = OnlineCritic(always, online_replay.buffer)
    oc.maybe_train()
    out = oc.relabel(dict(batch))
    assert (out["done"] == 1).all() and (out["truncated"] == 0).all() and (out["reward"] >= 0).all()  # Δ + bonus 1


def test_online_critic_scores_a_state_only_batch_from_the_replays_frames(online_replay):
    """A batch sampled without cameras (what the learner samples from state) gets the same rewards
    and terminals as the same rows with their images: the critic reads the scored rows' frames."""
    from hil_robot.learn.online_critic import OnlineCritic

    lc = learner_cfg("learner.reward=critic_online", "learner.critic_online_warmup_steps=2",
                     "learner.critic_online_done_threshold=0.3")
    full = online_replay.sample(48, 1, view="all", rng=np.random.default_rng(4))
    lean = online_replay.sample(48, 1, view="all", rng=np.random.default_rng(4), images=False)
    assert not any(k.startswith(("obs/images", "next_obs/images")) for k in lean)
    oc = OnlineCritic(lc, online_replay.buffer)
    oc.maybe_train()
    rows = np.arange(48)
    for x, y in zip(oc.score(full, rows), oc.score(lean, rows)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # the frames it read are the batch's own: next_obs is the row's successor in the replay
    for prefix in ("obs", "next_obs"):
        for c in oc.models[0].cfg.cameras:
            np.testing.assert_array_equal(oc._frames(lean, prefix, rows)[c].numpy(), full[f"{prefix}/images/{c}"])


def test_online_critic_follows_the_experiment_seed(online_replay):
    """Same experiment.seed: the same initial members and sample streams; another seed: others.
    Building the ensemble leaves the learner's own torch RNG where it was."""
    from hil_robot.learn.online_critic import OnlineCritic

    lc = learner_cfg("learner.reward=critic_online", "learner.critic_online_ensemble=2")

    def members(seed: int) -> tuple[list[torch.Tensor], list]:
        oc = OnlineCritic(lc, online_replay.buffer, seed=seed)
        return [next(iter(m.parameters())).detach().clone() for m in oc.models], [oc._stream(k) for k in (-1, 0, 1)]

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, streams_a = members(0)
    assert torch.equal(torch.rand(1), before)
    b, streams_b = members(0)
    c, streams_c = members(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and streams_a == streams_b
    assert not torch.equal(a[0], c[0]) and streams_a != streams_c
    assert not torch.equal(a[0], a[1])  # the members differ from each other


def test_q_filter_on_the_offline_rows_alone_equals_the_full_batch_filter():
    from hil_robot.learn.rlpd import compose_action, q_filter_mask, to_torch

    batch = fake_batch(64, seed=5)
    batch["is_offline"] = (np.arange(64) % 3 == 0).astype(np.float32)  # a third of the rows
    cfg = learner_cfg("learner.rl_bc_weight=1")
    torch.manual_seed(0)
    agent = RLPD(cfg, obs_spec_from_batch(batch, cfg))
    for _ in range(3):
        agent.update(batch)  # critics that are not at their initial weights
    mb = to_torch(batch, agent.device)
    with torch.no_grad():
        state, images = agent._inputs(mb, "obs/")
        feat = agent.featurizer(state, images)
        a_rec = mb["action"].float()[:, : agent.action_dim]
        a_pi = compose_action(agent.actor(agent._actor_input(feat, None), deterministic=True)[0], None, cfg.rl_residual_scale)
        full = mb["is_offline"] * (agent.critic(feat, a_rec).mean(0) > agent.critic(feat, a_pi).mean(0)).float()
    got = q_filter_mask(agent.critic, feat, a_rec, a_pi, mb["is_offline"])
    # the same decisions (a Q difference within float rounding of 0 could flip; none here)
    assert torch.equal(got, full)
    assert 0 < float(got.sum()) < float(mb["is_offline"].sum())  # the filter keeps some rows, drops others
    assert float(got[mb["is_offline"] == 0].abs().sum()) == 0.0
    zeros = torch.zeros(64)
    assert float(q_filter_mask(agent.critic, feat, a_rec, a_pi, zeros).sum()) == 0.0  # no offline rows: nothing


def test_actor_sample_with_mean_is_the_sample_and_the_deterministic_action_of_one_pass():
    from policies.rl import TanhGaussianActor

    torch.manual_seed(0)
    actor = TanhGaussianActor(12, 6, (32, 32))
    feat = torch.randn(16, 12)
    torch.manual_seed(7)
    a, logp = actor(feat)
    torch.manual_seed(7)
    a2, logp2, mean = actor.sample_with_mean(feat)
    assert torch.equal(a, a2) and torch.equal(logp, logp2)
    assert torch.allclose(mean, actor(feat, deterministic=True)[0], atol=1e-6)


def test_bc_term_trains_the_actor_mean_toward_the_recorded_actions_it_is_allowed_to():
    """With a BC weight and the filter off, the actor's mean moves toward the offline rows' actions."""
    from hil_robot.learn.rlpd import to_torch

    batch = fake_batch(64, seed=9)
    batch["is_offline"] = np.ones(64, np.float32)
    cfg = learner_cfg("learner.rl_bc_weight=10", "learner.rl_bc_q_filter=false")
    torch.manual_seed(0)
    agent = RLPD(cfg, obs_spec_from_batch(batch, cfg))
    mb = to_torch(batch, agent.device)

    def bc_err() -> float:
        with torch.no_grad():
            feat = agent.featurizer(*agent._inputs(mb, "obs/"))
            mean = agent.actor(feat, deterministic=True)[0]
            return float((mean - mb["action"].float()[:, : agent.action_dim]).pow(2).sum(-1).mean())

    before = bc_err()
    metrics = [agent.update(batch) for _ in range(30)]
    assert bc_err() < 0.8 * before
    assert all(m["rlpd/bc_frac"] == 1.0 for m in metrics)
