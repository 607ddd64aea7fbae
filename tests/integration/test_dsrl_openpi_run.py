"""DSRL in front of a flow VLA behind an openpi server, end to end: ``hil-robot run policy=rl_openpi
learner=dsrl`` against our openpi front serving a (random-weight) flow VLA on a loopback
websocket — the stand-in for pi0 behind an openpi server that honours the ``noise`` field. The
policy servers run the SAC noise actor and send each chunk's noise to the remote VLA, the
controller records it, and the learner, which has no VLA weights, trains on those recorded
decisions (chunk-long transitions) and publishes weights the served actor follows."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from hil_robot import run as hil_run
from hil_robot.config import load_config
from hil_robot.config._build import ConfigError
from hil_robot.data import EpisodeStore
from hil_robot.obs_mapping import ObsMapping
from hil_robot.transport.openpi_server import OpenpiPolicyServer

H, STEPS = 4, 2
BASE = [
    "experiment=sim_pick_cube", "experiment.demo_episodes=4", "experiment.rounds=2", "experiment.episodes_per_round=2",
    "experiment.eval_episodes=1", "experiment.eval_fresh_episodes=0", "experiment.wandb_mode=offline",
    "sim.image_height=32", "sim.image_width=32", "sim.max_episode_steps=40",
    "policy=rl_openpi", "learner=dsrl", "learner.batch_size=32", "learner.min_replay_steps=32",
    "learner.publish_every_s=0.5", f"policy.n_action_steps={STEPS}", f"policy.action_horizon={H}",
]


def flow_vla():
    from policies.vla import VLAPolicy, model_config_from
    from policies.vla_model import VLAModel

    cfg = load_config(["experiment=sim_pick_cube", "sim.image_height=32", "sim.image_width=32", "policy.head=flow",
                       "policy.size=small", "policy.flow_steps=4", f"policy.action_horizon={H}",
                       f"policy.n_action_steps={STEPS}"])
    torch.manual_seed(0)
    return VLAPolicy(VLAModel(model_config_from(cfg))), cfg


@pytest.mark.slow
def test_dsrl_steers_a_remote_flow_vla_through_the_openpi_noise_field(tmp_path):
    vla, vcfg = flow_vla()
    seen = []

    class Recording:  # the served VLA, counting the requests that carried noise
        config = vla.config
        metadata = vla.metadata

        def infer(self, obs, noise=None):
            seen.append(noise is not None)
            return vla.infer(obs, noise=noise)

        def reset(self):
            vla.reset()

    mapping = ObsMapping(dict(load_config(["policy=rl_openpi"]).policy.obs_map))
    with OpenpiPolicyServer(Recording(), mapping, host="127.0.0.1", port=0) as server:
        overrides = [*BASE, f"policy.server_url={server.url}"]
        with pytest.raises(ConfigError, match="rl_noise_shape"):
            hil_run.main(load_config(overrides), overrides, tmp_path / "no_shape", quiet=True)
        overrides.append(f"learner.rl_noise_shape=[{H},7]")
        result = hil_run.main(load_config(overrides), overrides, tmp_path / "run", quiet=True)
    assert "error" not in result, result.get("error")
    run_dir = tmp_path / "run"
    log = (run_dir / "logs" / "learner.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    assert seen and all(seen), "every request to the remote VLA carries the actor's noise"
    store = EpisodeStore(run_dir / "store", read_only=True)
    deploy = [m for m in store.episodes() if "demo" not in m.segment_counts]
    assert len(deploy) == 4 and max(max(m.policy_versions, default=-1) for m in deploy) >= 1
    ep = store.read_episode(deploy[-1].episode_id)
    col = ep.columns["policy_noise"]
    has = np.isfinite(col).all(1)
    src = np.asarray(ep.columns["source"])
    assert has.any() and (src[has] == 0).all()  # recorded on policy ticks only
    assert np.abs(col[has]).max() <= 1.5 + 1e-6  # inside learner.rl_noise_bound
    with open(run_dir / "learner" / "metrics.csv") as f:  # long format: step, time_s, metric, value
        rows = [r for r in csv.DictReader(f) if r["metric"].startswith(("dsrl/", "rlpd/updates"))]
    last = {r["metric"]: float(r["value"]) for r in rows}
    assert last.get("rlpd/updates", 0) > 0
    assert 0 < last["dsrl/labelled_frac"] < 1 and last["dsrl/inverted"] == 0  # no weights here: nothing inverted
    assert last["dsrl/span_steps"] > 1  # a decision ran its chunk STEPS ticks
