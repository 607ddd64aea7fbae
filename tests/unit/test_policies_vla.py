"""VLA policy: shapes/ranges, both heads learn a tiny dataset, weight swaps, batch conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hil_robot.types import Policy, WeightUpdatable
from policies.vla import batch_to_torch, obs_to_batch
from policies_testing import make_obs, replay_batch, tiny_policy

torch.set_num_threads(1)


def test_infer_shapes_ranges_and_protocols():
    policy = tiny_policy()
    assert isinstance(policy, Policy) and isinstance(policy, WeightUpdatable)
    out = policy.infer(make_obs(np.random.default_rng(0)))
    assert out["actions"].shape == (4, 7) and out["actions"].dtype == np.float32
    assert np.all(np.abs(out["actions"]) <= 1.0) and out["policy_version"] == 0
    assert policy.metadata["cameras"] == ["front", "wrist"] and policy.metadata["action_horizon"] == 4


def test_outputs_are_clipped_even_with_huge_action_stats():
    policy = tiny_policy()
    policy.set_norm_stats({"state_mean": np.zeros(15), "state_std": np.ones(15),
                           "action_mean": np.full(7, 50.0), "action_std": np.full(7, 100.0)})
    acts = policy.infer(make_obs(np.random.default_rng(1)))["actions"]
    assert np.all(acts <= 1.0) and np.all(acts >= -1.0) and np.isclose(np.abs(acts).max(), 1.0)


def test_infer_rejects_missing_camera_and_wrong_size():
    policy = tiny_policy()
    obs = make_obs(np.random.default_rng(0))
    del obs["images/wrist"]
    with pytest.raises(ValueError, match="wrist"):
        policy.infer(obs)
    with pytest.raises(ValueError, match="built for 64x64"):
        policy.infer(make_obs(np.random.default_rng(0), hw=32))


@pytest.mark.parametrize("head", ["l1", "flow"])
def test_both_heads_loss_decreases_on_tiny_dataset(head):
    policy = tiny_policy(head)
    model = policy.model
    batch = batch_to_torch(replay_batch(np.random.default_rng(0)), "cpu")

    def eval_loss() -> float:
        torch.manual_seed(123)  # same noise/t draws for the flow head before and after
        model.eval()
        with torch.no_grad():
            return float(model.compute_loss(batch).mean())

    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(80):
        loss = model.compute_loss(batch)
        assert loss.shape == (8,)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    after = eval_loss()
    assert after < 0.5 * before, (before, after)
    if head == "l1":  # predictions approach the (unpadded) targets
        pred = model.sample_actions(batch)
        err = (pred - batch["actions"]).abs()[~batch["action_is_pad"]].mean()
        assert float(err) < 0.2


def test_padded_steps_do_not_contribute_to_loss():
    policy = tiny_policy()
    batch = batch_to_torch(replay_batch(np.random.default_rng(0)), "cpu")
    policy.model.eval()
    with torch.no_grad():
        base = policy.model.compute_loss(batch)
        batch["actions"][0, -1] = 1e3  # padded for sample 0 only
        changed = policy.model.compute_loss(batch)
    assert torch.allclose(base, changed)


def test_batch_to_torch_shapes_and_text():
    batch = batch_to_torch(replay_batch(np.random.default_rng(0), b=6, t=3), "cpu")
    assert batch["images"]["front"].dtype == torch.uint8 and batch["images"]["front"].shape == (6, 64, 64, 3)
    assert batch["state"].shape == (6, 15) and batch["text"].shape == (6, 384)
    assert batch["actions"].shape == (6, 3, 7) and batch["action_is_pad"].dtype == torch.bool
    assert batch["next_state"].shape == (6, 15) and set(batch["next_images"]) == {"front", "wrist"}
    assert torch.allclose(batch["text"][0], batch["text"][2]) and not torch.allclose(batch["text"][0], batch["text"][5])
    # horizon shorter than the model's H: padded internally, loss is still per sample
    assert tiny_policy().model.compute_loss(batch).shape == (6,)


def test_weight_swap_changes_actions_and_version():
    a, b = tiny_policy(), tiny_policy()
    torch.manual_seed(5)
    for p in b.model.parameters():
        p.data.add_(torch.randn_like(p) * 0.1)
    obs = make_obs(np.random.default_rng(2))
    spec = a.weight_spec()
    assert "norm.action_mean" in spec and spec["norm.action_mean"] == ((7,), "float32")
    a.load_weights(b.state_numpy(), version=3)
    assert a.version == 3 and a.infer(obs)["policy_version"] == 3
    np.testing.assert_allclose(a.infer(obs)["actions"], b.infer(obs)["actions"], atol=1e-6)


def test_weight_swap_rejects_bad_updates_and_keeps_old_weights():
    policy = tiny_policy()
    obs = make_obs(np.random.default_rng(3))
    before = policy.infer(obs)["actions"]
    good = policy.state_numpy()
    name = "action_out.1.weight"
    bad_nan = dict(good, **{name: np.full_like(good[name], np.nan)})
    with pytest.raises(ValueError, match="NaN"):
        policy.load_weights(bad_nan, version=1)
    bad_shape = dict(good, **{name: np.zeros((3, 3), np.float32)})
    with pytest.raises(ValueError, match="shape"):
        policy.load_weights(bad_shape, version=1)
    missing = {k: v for k, v in good.items() if k != name}
    with pytest.raises(ValueError, match="missing"):
        policy.load_weights(missing, version=1)
    assert policy.version == 0
    np.testing.assert_array_equal(policy.infer(obs)["actions"], before)


def test_norm_stats_from_replay_are_used():
    policy = tiny_policy()
    raw = replay_batch(np.random.default_rng(4), b=16)
    stats = policy.fit_norm_stats(raw)
    assert np.allclose(policy.model.norm.state_mean.numpy(), raw["obs/state"].mean(0), atol=1e-5)
    assert stats["count"] == 16 and policy.metadata["norm_stats_count"] == 16


def test_random_shift_only_in_training():
    policy = tiny_policy(augment_shift_px=4)
    batch = obs_to_batch(make_obs(np.random.default_rng(0)))
    model = policy.model
    model.eval()
    with torch.no_grad():
        a, b = model.encode(batch), model.encode(batch)
        assert torch.equal(a, b)
        model.train()
        outs = [model.encode(batch) for _ in range(4)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])


def test_pretrained_backbone_loads_from_local_safetensors(tmp_path):
    from safetensors.torch import save_file

    from hil_robot.config import PolicyConfig, RootConfig
    from policies.vision import ResNet18Encoder
    from policies.vla import make_vla_policy

    torch.manual_seed(7)
    donor = ResNet18Encoder()
    for name, t in donor.state_dict().items():
        t.copy_(torch.rand_like(t) + 0.5 if "running_var" in name else torch.randn_like(t) * 0.05)
    weights = {k: v.clone() for k, v in donor.state_dict().items()}
    weights["fc.weight"] = torch.zeros(1000, 512)  # a classifier head is ignored
    save_file(weights, str(tmp_path / "resnet18.safetensors"))
    cfg = RootConfig(policy=PolicyConfig(backbone="resnet18", pretrained_backbone=str(tmp_path / "resnet18.safetensors")))
    cfg.sim.image_height = cfg.sim.image_width = 64
    policy = make_vla_policy(cfg)
    got = policy.model.backbone.state_dict()
    assert all(torch.equal(got[k], weights[k]) for k in got)
    assert policy.infer(make_obs(np.random.default_rng(0)))["actions"].shape == (10, 7)

    bad = dict(weights, **{"conv1.weight": torch.zeros(64, 3, 3, 3)})
    save_file(bad, str(tmp_path / "bad.safetensors"))
    cfg.policy.pretrained_backbone = str(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="conv1.weight"):
        make_vla_policy(cfg)
    cfg.policy.pretrained_backbone = str(tmp_path / "weights.pt")
    with pytest.raises(FileNotFoundError, match="safetensors"):
        make_vla_policy(cfg)


def test_infer_batch_matches_single_infer():
    policy = tiny_policy()
    rng = np.random.default_rng(9)
    obs = [make_obs(rng, prompt=p) for p in ("pick up the red cube", "push the puck", "stack the cubes")]
    batched = policy.infer_batch(obs)
    assert len(batched) == 3
    for o, b in zip(obs, batched):
        np.testing.assert_allclose(b["actions"], policy.infer(o)["actions"], atol=1e-5)


def test_warm_up_leaves_the_policy_as_a_fresh_one():
    warmed, fresh = tiny_policy("flow"), tiny_policy("flow")  # flow head: actions depend on the noise generator
    assert warmed.warm_up() > 0.0
    obs = make_obs(np.random.default_rng(3))
    fresh.reset()
    np.testing.assert_array_equal(warmed.infer(obs)["actions"], fresh.infer(obs)["actions"])
