"""RLPD's progress-critic reward from a served critic: a tiny VLM critic behind a real
``hil-robot serve-critic`` process on a loopback port gives the learner its rewards (equal to the
in-process scores), and a learner pointed at a port nobody serves stops at once with a clear error."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from hil_robot.config import load_config
from hil_robot.data import EpisodeStore, Recorder
from hil_robot.data.synthetic import record_episode
from hil_robot.learn.critic import label_rewards
from hil_robot.learn.loop import Learner
from policies.critic_vlm import VLMCriticBackend, VLMCriticConfig, VLMProgressCritic, load_vlm_critic


def _store(path):
    rec = Recorder(EpisodeStore(path), pre_intervention_k=2)
    for e in range(3):
        segs = ["demo"] * 8 if e == 0 else ["autonomous"] * 3 + ["recovery"] * 2 + ["correction"] * 3
        record_episode(rec, f"ep{e}", segs, episode=e, hw=(16, 16))
    rec.close()


def _cfg(endpoint: str, *extra: str):
    return load_config(["learner=rlpd", "learner.reward=critic", f"critic.endpoint={endpoint}", "critic.timeout_s=20",
                        "learner.batch_size=16", "learner.min_replay_steps=8", "experiment.wandb_mode=disabled", *extra])


def test_rlpd_rewards_come_from_a_served_vlm_critic(tmp_path, free_port, spawn_process):
    torch.set_num_threads(1)
    _store(tmp_path / "store")
    model = VLMProgressCritic.tiny(VLMCriticConfig(image_hw=(16, 16), head_hidden=32), seed=5)
    path = model.save_pretrained(tmp_path / "vlm_critic")
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = spawn_process([sys.executable, "-m", "hil_robot", "serve-critic", "critic.kind=vlm",
                          f"critic.vlm_path={path}", f"port={port}", "max_seconds=120"], stdout=log, stderr=log)
    try:
        learner = Learner(_cfg(f"tcp://127.0.0.1:{port}"), [tmp_path / "store"], tmp_path / "run", wait_for_data_s=60)
    except Exception:
        print((tmp_path / "serve.log").read_text()[-2000:], proc.poll())
        raise
    local = VLMCriticBackend(load_vlm_critic(path))
    try:
        for _ in range(3):
            batch = learner.sample()
            want = label_rewards(local, batch)["reward"]
            np.testing.assert_allclose(batch["reward"], want, atol=1e-5)
        assert learner.reward_cache_stats["scored"] > 0
        assert float(np.std(batch["reward"])) > 0  # the served critic's numbers, not a constant
        # the critic dies mid-run: the next transitions to score stop the learner with what to do
        proc.kill()
        proc.wait(10)
        learner._reward_cache.clear()
        learner._critic().client.timeout_s = 1.0
        learner._critic().client.retries = 0
        with pytest.raises(RuntimeError, match="did not answer.*serve-critic"):
            learner.sample()
    finally:
        learner.close()


def test_a_dead_critic_endpoint_stops_the_learner_with_what_to_do(tmp_path, free_port):
    _store(tmp_path / "store")
    with pytest.raises(RuntimeError, match=r"no progress critic answers at critic.endpoint=.*serve-critic"):
        Learner(_cfg(f"tcp://127.0.0.1:{free_port()}"), [tmp_path / "store"], tmp_path / "run", wait_for_data_s=2)
