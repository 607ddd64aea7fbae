"""The multi-device path: the learner under torchrun with 2 CPU processes (gloo) and
DistributedDataParallel. Ranks must stay in sync (checked at every checkpoint) and rank 0 alone
writes checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hil_robot.data import EpisodeStore, Recorder
from hil_robot.data.synthetic import record_episode
from hil_robot.learn import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[2]


def make_store(path: Path) -> None:
    rec = Recorder(EpisodeStore(path), pre_intervention_k=2)
    for e in range(3):
        segs = ["demo"] * 8 if e == 0 else ["autonomous"] * 3 + ["recovery"] * 2 + ["correction"] * 3
        record_episode(rec, f"ep{e}", segs, episode=e, hw=(16, 16))
    rec.close()


def test_learner_trains_with_ddp_on_two_gloo_processes(tmp_path, free_port):
    store, run_dir = tmp_path / "store", tmp_path / "run"
    make_store(store)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "hil_robot", "learner", f"store={store}", f"run_dir={run_dir}",
           "endpoint=none", "wait_s=60", "learner=rlpd", "learner.device=cpu", "learner.batch_size=16",
           "learner.max_updates=4", "learner.checkpoint_every_updates=2", "learner.min_replay_steps=8",
           "learner.num_threads=1", "experiment.wandb_mode=disabled"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1  # only rank 0 reports
    assert summaries[0]["world_size"] == 2 and summaries[0]["step"] == 4
    last = ckpt.latest(run_dir)
    meta = json.loads((last / "state.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] == 4
    # each rank sampled half of the global batch
    state, _ = ckpt.load(last)
    assert state["algo"]["num_updates"] == 4
    assert Path(run_dir, "metrics.csv").is_file()
