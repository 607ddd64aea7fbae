"""Config-level errors of the openpi/groot backends and fronts say what to set."""

from __future__ import annotations

import pytest

from hil_robot.config import ConfigError, load_config
from hil_robot.transport.cli import front_obs_map, serve_policy
from policies.registry import make_policy


def test_presets_build_their_mappings_and_clients_without_connecting():
    for name in ("openpi", "openpi_sim", "openpi_droid", "openpi_libero", "groot"):
        policy = make_policy(load_config([f"policy={name}"]))  # no server is running: nothing connects yet
        assert policy.metadata["name"] in ("openpi", "groot")
        policy.close()


def test_missing_server_or_mapping_or_action_keys():
    with pytest.raises(ConfigError, match="policy.server_url=ws://HOST:PORT"):
        make_policy(load_config(["policy=openpi", "policy.server_url="]))
    with pytest.raises(ConfigError, match="unknown state slice"):
        make_policy(load_config(["policy=openpi", "policy.obs_map={a: state.elbow}"]))
    with pytest.raises(ConfigError, match="policy.action_key"):
        make_policy(load_config(["policy=groot", "policy.action_key=actions"]))


def test_front_mapping_presets_and_protocol_choice():
    cfg = load_config(["policy=expert"])
    assert "observation/joint_position" in front_obs_map("openpi", "droid", cfg).spec
    assert "observation/task_state" in front_obs_map("openpi", "sim", cfg).spec
    assert "video.front" in front_obs_map("groot", "", cfg).spec
    with pytest.raises(ConfigError, match=r"presets: openpi, openpi_droid"):
        front_obs_map("openpi", "nope", cfg)
    with pytest.raises(ConfigError, match="protocol='zmq'; choose one of: hil, openpi, groot"):
        serve_policy(["protocol=zmq", "policy=expert"])
    with pytest.raises(ConfigError, match="api_key"):
        serve_policy(["protocol=openpi", "policy=expert", "transport.bind_host=0.0.0.0", "transport.curve_keys_dir=k"])
