"""``hil-robot run experiment=sim_pick_cube learner.finetune=lora``: the CI-sized human-in-the-loop
run trains LoRA adapters and serves them through delta updates — the server's weight versions
advance during deployment and each published update is the adapters' size, not the model's."""

from __future__ import annotations

import json

import pytest

from hil_robot import run as hil_run
from hil_robot.config import load_config
from hil_robot.data import EpisodeStore

OVERRIDES = [
    "experiment=sim_pick_cube", "experiment.demo_episodes=6", "experiment.rounds=2", "experiment.episodes_per_round=2",
    "experiment.eval_episodes=1", "experiment.wandb_mode=disabled", "sim.image_height=32", "sim.image_width=32",
    "sim.max_episode_steps=60", "learner.batch_size=16", "learner.min_replay_steps=32", "learner.publish_every_s=0.5",
    "learner.finetune=lora", "learner.lora_rank=8",
]


@pytest.mark.slow
def test_lora_run_serves_deltas_and_versions_advance(tmp_path):
    cfg = load_config(OVERRIDES)
    result = hil_run.main(cfg, OVERRIDES, tmp_path / "run", quiet=True)
    assert "error" not in result, result.get("error")
    run = tmp_path / "run"
    deploy = [m for m in EpisodeStore(run / "store", read_only=True).episodes() if "demo" not in m.segment_counts]
    versions = [max(m.policy_versions, default=-1) for m in deploy]
    assert min(versions) >= 1 and versions[-1] > versions[0], versions
    published = json.loads((run / "learner" / "checkpoints" / "published.json").read_text())
    assert published["kind"] == "delta"
    from policies.vla import make_vla_policy

    served = make_vla_policy(cfg)  # same config: the adapters are all a delta carries
    delta_bytes = sum(a.nbytes for a in served.delta_numpy().values())
    full_bytes = sum(a.nbytes for a in served.state_numpy().values())
    assert delta_bytes <= published["bytes"] < delta_bytes + 64 * 1024 < full_bytes / 4, (published, full_bytes)
    log = (run / "logs" / "policy.log").read_text()
    assert "rejected (rank_mismatch)" not in log and "rejected (non_finite)" not in log
