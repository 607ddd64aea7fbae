"""The learner as a real process: it publishes weights a real subscriber accepts, is SIGKILLed,
and resumes from its checkpoint with the version count continuing (so the subscriber keeps
accepting); ``train-bc`` writes a VLA checkpoint that loads and acts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hil_robot.config import load_config
from hil_robot.data import EpisodeStore, Recorder
from hil_robot.data.synthetic import observation, record_episode
from hil_robot.learn import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[2]
COMMON = ["learner=rlpd", "learner.batch_size=16", "learner.min_replay_steps=8", "learner.num_threads=1",
          "learner.publish_every_s=0.1", "learner.checkpoint_every_updates=5", "learner.log_every_s=1",
          "experiment.wandb_mode=disabled"]


def make_store(path: Path, hw=(16, 16)) -> None:
    store = EpisodeStore(path)
    rec = Recorder(store, pre_intervention_k=2)
    for e in range(3):
        segs = ["demo"] * 8 if e == 0 else ["autonomous"] * 3 + ["recovery"] * 2 + ["correction"] * 3
        record_episode(rec, f"ep{e}", segs, episode=e, hw=hw)
    rec.close()


def learner_cmd(store: Path, run_dir: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hil_robot", "learner", f"store={store}", f"run_dir={run_dir}",
            f"endpoint=tcp://127.0.0.1:{port}", "wait_s=60", *COMMON, *extra]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"learner exited early (rc {proc.returncode}) while waiting for {what}:\n"
                                 f"{proc.stdout.read() if proc.stdout else ''}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def rl_target():
    from hil_robot.learn.rlpd import obs_spec_from_batch
    from policies.rl import RLPolicy

    cfg = load_config(COMMON).learner
    probe = {"obs/state": np.zeros((1, 15), np.float32), "obs/task_state": np.zeros((1, 6), np.float32)}
    return RLPolicy(cfg, obs_spec_from_batch(probe, cfg))


def test_killed_learner_resumes_with_its_version_count_and_subscriber_accepts(tmp_path, free_port):
    from hil_robot.transport.weights import WeightSubscriber

    store, run_dir, port = tmp_path / "store", tmp_path / "run", free_port()
    make_store(store)
    target = rl_target()
    sub = WeightSubscriber(f"tcp://127.0.0.1:{port}", target, initial_version=0)
    first = subprocess.Popen(learner_cmd(store, run_dir, port), env=env(), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        def progressed() -> bool:
            sub.apply_pending()
            last = ckpt.latest(run_dir)
            return last is not None and json.loads((last / "state.json").read_text())["step"] >= 10 and target.version >= 2

        wait_for(progressed, 180, "a checkpoint at step >= 10 and two accepted weight versions", first)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    last = ckpt.latest(run_dir)
    meta = json.loads((last / "state.json").read_text())
    published = ckpt.published_version(run_dir)
    assert published >= meta["version"] >= 1
    seen_before_kill = target.version
    assert 2 <= seen_before_kill <= published

    # the restarted learner resumes from the checkpoint and keeps counting versions
    resume_at = meta["step"]
    second = subprocess.run(learner_cmd(store, run_dir, port, f"learner.max_updates={resume_at + 15}"), env=env(),
                            cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stdout + second.stderr
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert summary["resumed_from"].endswith(f"step_{resume_at:09d}")
    assert summary["step"] == resume_at + 15
    assert summary["version"] > published
    # install whatever is staged, then test the version (an older staged one must not end the wait)
    wait_for(lambda: (sub.apply_pending(), target.version > published)[1], 20, "a post-restart version at the subscriber")
    sub.close()
    assert target.version > published > 0
    assert sub.rejected["version"] == 0, sub.rejected  # never saw a re-used version number
    assert sum(sub.rejected.values()) == 0, sub.last_error


@pytest.mark.slow
def test_train_bc_writes_a_vla_checkpoint_that_loads_and_acts(tmp_path):
    import torch

    from policies.checkpoint import load

    torch.set_num_threads(1)
    make_store(tmp_path / "store", hw=(32, 32))
    out = tmp_path / "bc_policy"
    proc = subprocess.run(
        [sys.executable, "-m", "hil_robot", "train-bc", f"store={tmp_path / 'store'}", f"out={out}", "steps=3",
         f"run_dir={tmp_path / 'run'}", "sim.image_height=32", "sim.image_width=32", "learner.batch_size=8",
         "learner.min_replay_steps=8", "learner.num_threads=1", "experiment.wandb_mode=disabled"],
        env=env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["step"] == 3
    policy = load(out)
    obs = observation(0, hw=(32, 32))
    actions = policy.infer(obs)["actions"]
    assert actions.shape[1] == 7 and np.isfinite(actions).all()
    # norm stats came from the store, not the defaults
    assert policy.checkpoint_step == 3
