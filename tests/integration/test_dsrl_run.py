"""``hil-robot run ... policy=rl learner=dsrl`` end to end (separate processes on loopback): the
policy server steers a (random-weight) flow VLA checkpoint with the SAC noise actor, the learner
inverts the recorded steps — the operator's takeovers included — to noise labels and trains, and
the served actor follows the published weights."""

from __future__ import annotations

import pytest
import torch

from hil_robot import run as hil_run
from hil_robot.config import load_config
from hil_robot.config._build import ConfigError
from hil_robot.data import EpisodeStore

OVERRIDES = [
    "experiment=sim_pick_cube", "experiment.demo_episodes=4", "experiment.rounds=2", "experiment.episodes_per_round=2",
    "experiment.eval_episodes=1", "experiment.eval_fresh_episodes=0", "experiment.wandb_mode=offline",
    "sim.image_height=32", "sim.image_width=32", "sim.max_episode_steps=40",
    "policy=rl", "learner=dsrl", "learner.batch_size=32", "learner.min_replay_steps=32", "learner.publish_every_s=0.5",
]


def flow_checkpoint(path):
    from policies import checkpoint
    from policies.vla import VLAPolicy, model_config_from
    from policies.vla_model import VLAModel

    cfg = load_config(["experiment=sim_pick_cube", "sim.image_height=32", "sim.image_width=32", "policy.head=flow",
                       "policy.size=small", "policy.flow_steps=4"])
    torch.manual_seed(0)
    checkpoint.save(path, VLAPolicy(VLAModel(model_config_from(cfg))))
    return path


@pytest.mark.slow
def test_dsrl_run_steers_the_vla_and_learns_from_takeovers(tmp_path):
    with pytest.raises(ConfigError, match="policy.checkpoint"):
        hil_run.main(load_config(OVERRIDES), OVERRIDES, tmp_path / "no_ckpt", quiet=True)
    overrides = [*OVERRIDES, f"policy.checkpoint={flow_checkpoint(tmp_path / 'vla')}"]
    result = hil_run.main(load_config(overrides), overrides, tmp_path / "run", quiet=True)
    assert "error" not in result, result.get("error")
    run_dir = tmp_path / "run"
    log = (run_dir / "logs" / "learner.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    for rnd in result["rounds"][1:]:
        assert rnd["learner_updates"] > 0
    metas = EpisodeStore(run_dir / "store", read_only=True).episodes()
    deploy = [m for m in metas if "demo" not in m.segment_counts]
    assert len(deploy) == 4
    assert max(max(m.policy_versions, default=-1) for m in deploy) >= 1, "the served actor never got trained weights"
    assert sum(m.num_interventions for m in deploy) >= 1  # takeovers recorded; they are in the noise labels too
    import csv

    with open(run_dir / "learner" / "metrics.csv") as f:  # long format: step, time_s, metric, value
        rows = [r for r in csv.DictReader(f) if r["metric"].startswith("dsrl/")]
    inverted = [float(r["value"]) for r in rows if r["metric"] == "dsrl/inverted"]
    assert inverted and inverted[-1] > 0 and any(r["metric"] == "dsrl/noise_clipped_frac" for r in rows)
