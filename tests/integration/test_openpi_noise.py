"""The openpi ``noise`` field on real loopback sockets: our openpi client sends the flow's initial
noise, our openpi front hands it to a flow-matching VLA (same noise -> same chunk), and a policy
that takes no noise refuses it with an error naming the field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hil_robot.transport.openpi_client import OpenpiClientPolicy
from hil_robot.transport.openpi_server import OpenpiPolicyServer
from hil_robot.transport.policy_client import RemotePolicyError
from policies.vla import VLAPolicy
from policies.vla_model import VLAModel, VLAModelConfig

torch.set_num_threads(1)


def observation(seed: int = 0) -> dict:
    r = np.random.default_rng(seed)
    obs = {f"images/{c}": r.integers(0, 255, (16, 16, 3), dtype=np.uint8) for c in ("front", "wrist")}
    obs.update(state=r.normal(size=15).astype(np.float32), prompt="pick up the red cube", timestamp_s=0.0)
    return obs


class NoNoise:
    metadata = {"name": "no_noise", "action_horizon": 2, "action_dim": 7}

    def infer(self, obs):
        return {"actions": np.zeros((2, 7), np.float32), "policy_version": 1}

    def reset(self):
        pass


def test_noise_field_steers_a_flow_vla_through_the_openpi_front():
    torch.manual_seed(0)
    model = VLAModel(VLAModelConfig(head="flow", image_hw=(16, 16), action_horizon=4, vision_channels=(8, 8, 16, 16),
                                    d_model=32, n_heads=2, enc_layers=1, dec_layers=1, flow_steps=4))
    vla = VLAPolicy(model)
    w = np.random.default_rng(1).normal(size=(4, 7)).astype(np.float32)
    with OpenpiPolicyServer(vla, None, host="127.0.0.1", port=0) as server, \
            OpenpiClientPolicy(server.url, None, timeout_s=10) as client:
        a = client.infer(observation(), noise=w)["actions"]
        assert a.shape == (4, 7)
        assert np.array_equal(a, client.infer(observation(), noise=w[None])["actions"])  # [1, H, D] accepted too
        np.testing.assert_allclose(a, vla.infer(observation(), noise=w)["actions"], atol=1e-6)  # as in-process
        assert np.abs(a - client.infer(observation(), noise=w + 1.0)["actions"]).max() > 1e-3
        with pytest.raises(ValueError, match=r"noise must be a finite float array \[H, D\]"):
            client.infer(observation(), noise=np.full((4, 7), np.nan))
    with OpenpiPolicyServer(NoNoise(), None, host="127.0.0.1", port=0) as server, \
            OpenpiClientPolicy(server.url, None, timeout_s=10) as client:
        assert client.infer(observation())["actions"].shape == (2, 7)  # no field: served as always
        with pytest.raises(RemotePolicyError, match="'noise' field but this policy"):
            client.infer(observation(), noise=w)
