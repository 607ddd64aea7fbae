"""Policy registry and the network-free policies."""

from __future__ import annotations

import numpy as np
import pytest

from hil_robot.config import PolicyConfig, RootConfig
from policies.registry import POLICIES, make_policy, resolve
from policies.scripted import NoisyPolicy, RandomPolicy


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(KeyError) as e:
        resolve("transformer9000")
    for name in ("vla", "expert", "noisy_expert", "random"):
        assert name in str(e.value)


def test_registry_is_lazy_plain_dict():
    assert isinstance(POLICIES, dict) and all(":" in target for target in POLICIES.values())


def test_random_policy_chunks_in_range_and_reproducible():
    policy = make_policy(RootConfig(policy=PolicyConfig(name="random", action_horizon=3, n_action_steps=3)))
    a = policy.infer({})["actions"]
    assert a.shape == (3, 7) and a.dtype == np.float32 and np.all(np.abs(a) <= 1)
    policy.reset()
    np.testing.assert_array_equal(policy.infer({})["actions"], a)


class _Const:
    metadata = {"name": "const", "action_horizon": 1}

    def infer(self, obs):
        return {"actions": np.full((1, 7), 0.9, np.float32), "policy_version": 4}

    def reset(self):
        pass


def test_noisy_policy_adds_noise_and_clips():
    noisy = NoisyPolicy(_Const(), noise_std=0.5, seed=0)
    outs = np.stack([noisy.infer({})["actions"][0] for _ in range(200)])
    assert np.all(outs <= 1.0) and np.all(outs >= -1.0)
    assert 0.2 < outs.std() < 0.6 and noisy.metadata["name"] == "noisy_const"
    assert NoisyPolicy(_Const(), 0.0).infer({})["actions"][0, 0] == pytest.approx(0.9)


def test_vla_from_registry_uses_sim_cameras_and_size():
    cfg = RootConfig(policy=PolicyConfig(name="vla", action_horizon=6))
    cfg.sim.cameras = ("front",)
    cfg.sim.image_height = cfg.sim.image_width = 64
    policy = make_policy(cfg)
    assert policy.metadata["cameras"] == ["front"] and policy.metadata["action_horizon"] == 6
    assert policy.config.image_hw == (64, 64)


def test_expert_policies_wrap_sim_expert():
    pytest.importorskip("sim.expert")
    cfg = RootConfig(policy=PolicyConfig(name="noisy_expert", noise_std=0.3, action_horizon=1, n_action_steps=1))
    policy = make_policy(cfg)
    assert isinstance(policy, NoisyPolicy) and policy.noise_std == 0.3


def test_remote_policy_is_a_policy_client(free_port):
    from hil_robot.transport.policy_client import PolicyClient

    cfg = RootConfig(policy=PolicyConfig(name="remote"))
    cfg.transport.policy_port = free_port()
    client = make_policy(cfg)
    try:
        assert isinstance(client, PolicyClient) and str(cfg.transport.policy_port) in client.endpoint
    finally:
        client.close()
