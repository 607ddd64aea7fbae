"""``hil-robot run experiment=sim_pick_cube policy=lerobot`` with a random-weight LeRobot ACT: the
policy server runs in the LeRobot environment, the controller, simulated operator and recorder are
the usual ones; the learner fine-tunes the ACT (LoRA, Sirius-weighted BC) in the LeRobot environment and
its deltas reach the served policy (the deployment runs on weights newer than the checkpoint); one
round completes with operator takeovers recorded, and ``hil-robot export --format lerobot`` writes a
dataset that the LeRobot environment's own LeRobotDataset loads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hil_robot import run as hil_run
from hil_robot.config import load_config
from hil_robot.data import EpisodeStore

REPO = Path(__file__).resolve().parents[2]
LEROBOT_PY = REPO / ".venv-lerobot" / "bin" / "python"
pytestmark = pytest.mark.skipif(not LEROBOT_PY.is_file(),
                                reason=f"no LeRobot environment at {LEROBOT_PY}: run make lerobot-env")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MUJOCO_GL": "egl"}

# LeRobot's own loader, run in its environment: prints what it read as JSON
LOAD = r"""
import json, sys
from lerobot.datasets.lerobot_dataset import LeRobotDataset
ds = LeRobotDataset("local/hil_run", root=sys.argv[1], video_backend="pyav")
sources = [int(ds.hf_dataset[i]["source"]) for i in range(len(ds.hf_dataset))]
item = ds[len(ds) - 1]
print(json.dumps({"episodes": ds.num_episodes, "frames": ds.num_frames, "fps": ds.fps,
                  "features": sorted(ds.features), "human_frames": sum(s == 1 for s in sources),
                  "image_shape": list(item["observation.images.front"].shape), "action_shape": list(item["action"].shape),
                  "task": item["task"]}))
"""


def test_run_with_a_lerobot_policy_records_takeovers_and_exports(tmp_path):
    ckpt = tmp_path / "act_tiny"
    built = subprocess.run([str(LEROBOT_PY), "-m", "policies.lerobot_tiny", f"out={ckpt}", "type=act"], cwd=REPO,
                           env=ENV, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, f"building a tiny ACT failed:\n{built.stderr[-3000:]}"
    overrides = ["experiment=sim_pick_cube", "policy=lerobot", f"policy.checkpoint={ckpt}", "experiment.rounds=1",
                 "experiment.demo_episodes=2", "experiment.episodes_per_round=2", "experiment.eval_episodes=1",
                 "experiment.wandb_mode=offline", "sim.image_height=64", "sim.image_width=64",
                 "sim.max_episode_steps=40", "learner.batch_size=8", "learner.min_replay_steps=16",
                 "learner.finetune=lora", "learner.lora_rank=4"]
    cfg = load_config(overrides)
    result = hil_run.main(cfg, overrides, tmp_path / "run", quiet=True)
    assert "error" not in result, result.get("error")
    run_dir = tmp_path / "run"
    assert "lerobot" in (run_dir / "logs" / "policy.log").read_text()

    store = EpisodeStore(run_dir / "store", read_only=True)
    deploy = [m for m in store.episodes() if "demo" not in m.segment_counts]
    assert len(deploy) == 2
    assert sum(m.num_interventions for m in deploy) >= 1, "the simulated operator never took over the random ACT"
    human = sum(m.segment_counts.get("recovery", 0) + m.segment_counts.get("correction", 0) for m in deploy)
    policy_steps = sum(m.segment_counts.get("autonomous", 0) + m.segment_counts.get("pre_intervention", 0) for m in deploy)
    assert human > 0 and policy_steps > 0
    # the learner trained (in .venv-lerobot) and its LoRA deltas landed in the served policy
    assert result["learner_updates"] > 0 and result["weight_version"] >= 1, result
    assert all(max(m.policy_versions, default=-1) >= 1 for m in deploy), [m.policy_versions for m in deploy]
    assert "wbc/loss" in (run_dir / "logs" / "learner.log").read_text()  # Sirius-weighted BC ran
    policy_log = (run_dir / "logs" / "policy.log").read_text()
    # LoRA deltas were installed: the install line, or the status the server prints (periodically and
    # at close; a short run may end before the periodic one)
    assert re.search(r"weights version \d+ \(step \d+, delta\) installed", policy_log) or "'kind': 'delta'" in policy_log, policy_log[-2000:]
    assert EpisodeStore(run_dir / "eval_store", read_only=True).episodes()  # the operator-free evaluation ran too

    out = tmp_path / "lerobot_ds"
    exported = subprocess.run([sys.executable, "-m", "hil_robot", "export", str(run_dir / "store"), "--format", "lerobot",
                               "--out", str(out)], env=ENV, capture_output=True, text=True, timeout=300)
    assert exported.returncode == 0, exported.stdout[-2000:] + exported.stderr[-2000:]
    loaded = subprocess.run([str(LEROBOT_PY), "-c", LOAD, str(out)], cwd=tmp_path, env=ENV, capture_output=True,
                            text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    info = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert info["episodes"] == len(store.episodes())
    assert info["frames"] == sum(m.num_steps for m in store.episodes())
    assert {"action", "observation.state", "observation.images.front", "source", "segment"} <= set(info["features"])
    assert info["human_frames"] > 0
    assert info["image_shape"] == [3, 64, 64] and info["action_shape"] == [7] and info["task"]
