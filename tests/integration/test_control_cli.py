"""``hil-robot controller`` end to end (in-process, simulated clock): sim robot, local policy,
simulated operator, episode store; and its error messages."""

from __future__ import annotations

import json

import pytest

from hil_robot.config import ConfigError
from hil_robot.control.cli import controller
from hil_robot.data import EpisodeStore


def test_controller_cli_writes_labelled_episodes(tmp_path):
    store = tmp_path / "store"
    summary = tmp_path / "summary.json"
    rc = controller([
        "policy=noisy_expert", "operator=sim_operator", "episodes=2", f"store={store}", "realtime=false", "keys=false",
        "sim.image_height=32", "sim.image_width=32", "max_steps=40", f"summary_json={summary}", "seed=5",
    ])
    assert rc == 0
    s = EpisodeStore(store, read_only=True)
    assert len(s) == 2
    out = json.loads(summary.read_text())
    assert out["episodes"] == 2 and out["steps"] == s.total_steps() and out["safety/ticks"] == out["steps"]
    assert all(ep.meta.extra.get("end_reason") in ("success", "failure", "max_steps", "operator_success", "operator_failure")
               for ep in s)


def test_controller_cli_rejects_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="operator='joystick' is not allowed; choose one of: sim_operator"):
        controller(["operator=joystick", f"store={tmp_path}"])
    with pytest.raises(ConfigError, match="needs realtime=true"):
        controller(["operator=keyboard", "realtime=false", f"store={tmp_path}"])
