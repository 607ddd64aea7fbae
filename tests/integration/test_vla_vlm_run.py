"""``hil-robot run experiment=sim_pick_cube policy=vla_vlm``: the CI-sized human-in-the-loop run with
the VLM-backbone VLA (tiny random-init Idefics3 + action expert) — the learner trains it with weighted
BC and publishes full weights, the policy server installs them and deployment runs on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hil_robot import run as hil_run
from hil_robot.config import load_config
from hil_robot.data import EpisodeStore

OVERRIDES = [
    "experiment=sim_pick_cube", "policy=vla_vlm", "experiment.demo_episodes=4", "experiment.rounds=1",
    "experiment.episodes_per_round=2", "experiment.eval_episodes=1", "experiment.wandb_mode=disabled",
    "sim.image_height=32", "sim.image_width=32", "sim.max_episode_steps=40", "policy.action_horizon=4",
    "policy.n_action_steps=2", "policy.flow_steps=4", "learner.batch_size=8", "learner.min_replay_steps=32",
    "learner.publish_every_s=0.5",
]


@pytest.mark.slow  # a whole run: ~45-65 s on 2 loaded cores
def test_vlm_vla_run_serves_trained_weights(tmp_path):
    cfg = load_config(OVERRIDES)
    result = hil_run.main(cfg, OVERRIDES, tmp_path / "run", quiet=True)
    assert "error" not in result, result.get("error")
    run = tmp_path / "run"
    deploy = [m for m in EpisodeStore(run / "store", read_only=True).episodes() if "demo" not in m.segment_counts]
    assert len(deploy) == 2
    versions = [max(m.policy_versions, default=-1) for m in deploy]
    assert min(versions) >= 1, f"deployment ran without trained weights: {versions}"
    assert result["weight_version"] >= versions[-1]
    published = json.loads((run / "learner" / "checkpoints" / "published.json").read_text())
    assert published["kind"] == "full"
    log = (run / "logs" / "policy.log").read_text()
    assert "rejected (" not in log, [line for line in log.splitlines() if "rejected (" in line][:3]
    installed = [line for line in log.splitlines() if "(step" in line and "full) installed" in line]
    assert len(installed) >= 2, log[-2000:]
    # the learner's checkpoint of the served weights is a whole VLM VLA (weights + tokenizer)
    from policies.checkpoint import load
    from policies.vla_vlm import VLMVLAModel

    saved = sorted((run / "learner" / "checkpoints").glob("step_*/policy"))
    assert saved, "the learner saved no policy checkpoint"
    policy = load(saved[-1])
    assert isinstance(policy.model, VLMVLAModel) and policy.version >= 1
    h, w = policy.config.image_hw
    obs = {f"images/{c}": np.zeros((h, w, 3), np.uint8) for c in policy.config.cameras}
    obs.update(state=np.zeros(15, np.float32), prompt="pick up the cube", timestamp_s=0.0)
    assert np.isfinite(policy.infer(obs)["actions"]).all()
