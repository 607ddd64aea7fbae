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


def test_controller_cli_runs_one_episode_per_listed_seed(tmp_path):
    """seeds=... runs the listed seeds in order (how `hil-robot run` evaluates fixed and fresh seeds in one
    phase); a seed's scene does not depend on where it sits in the list."""
    common = ["policy=expert", "operator=none", "realtime=false", "keys=false", "sim.image_height=32",
              "sim.image_width=32", "max_steps=5"]
    assert controller([*common, "seeds=11,1000003,7", f"store={tmp_path / 'a'}"]) == 0
    assert controller([*common, "seed=1000003", "episodes=1", f"store={tmp_path / 'b'}"]) == 0
    a = EpisodeStore(tmp_path / "a", read_only=True)
    metas = a.episodes()  # recording order
    assert [m.seed for m in metas] == [11, 1000003, 7]
    (b_meta,) = EpisodeStore(tmp_path / "b", read_only=True).episodes()
    first = lambda store, m: store.read_episode(m.episode_id).columns["obs/task_state"][0]  # noqa: E731 (object poses)
    assert (first(a, metas[1]) == first(EpisodeStore(tmp_path / "b", read_only=True), b_meta)).all()
    assert not (first(a, metas[0]) == first(a, metas[1])).all()


@pytest.mark.parametrize("bad", ["seeds=1,x", "seeds=,", "seeds=-3"])
def test_controller_cli_rejects_bad_seed_lists(tmp_path, bad):
    with pytest.raises(ConfigError, match="seeds=.*e.g. seeds=3,7,11"):
        controller([bad, f"store={tmp_path}", "operator=none"])
