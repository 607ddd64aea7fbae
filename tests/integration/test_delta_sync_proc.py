"""learner.finetune=lora across real processes: a ``hil-robot learner`` publishes LoRA deltas, a
``hil-robot serve-policy`` follows them (resyncing the base it lacks first); the server is
SIGKILLed, the learner publishes more versions, a restarted server resyncs base + delta and ends
on the learner's newest version."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hil_robot.data import EpisodeStore, Recorder
from hil_robot.data.synthetic import record_episode
from hil_robot.learn import checkpoint as ckpt
from hil_robot.transport.policy_client import PolicyClient

ROOT = Path(__file__).resolve().parents[2]

MODEL = ["policy=vla", "policy.size=small", "policy.action_horizon=4", "policy.n_action_steps=4", "sim.image_height=16", "sim.image_width=16",
         "learner.finetune=lora", "learner.lora_rank=4", "experiment.wandb_mode=disabled"]
LEARNER = ["learner=weighted_bc", "learner.batch_size=8", "learner.min_replay_steps=8", "learner.num_threads=1",
           "learner.publish_every_s=0.2", "learner.checkpoint_every_s=600", "learner.log_every_s=5"]


def make_store(path: Path) -> None:
    rec = Recorder(EpisodeStore(path), pre_intervention_k=2)
    for e in range(3):
        segs = ["demo"] * 8 if e == 0 else ["autonomous"] * 3 + ["recovery"] * 2 + ["correction"] * 3
        record_episode(rec, f"ep{e}", segs, episode=e, hw=(16, 16))
    rec.close()


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "MUJOCO_GL": "egl"}


def serve(policy_port: int, weights_port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hil_robot", "serve-policy", f"port={policy_port}",
                             "transport.subscribe_weights=true", f"transport.weights_port={weights_port}", *MODEL],
                            env=env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def weights_status(client: PolicyClient) -> dict:
    try:
        meta = client.fetch_metadata()
    except Exception:  # the server is still starting
        return {}
    return {"version": meta.get("policy_version", -1), **meta.get("server", {}).get("weights", {})}


def wait_until(cond, timeout_s: float, what: str, *procs: subprocess.Popen):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        for p in procs:
            assert p.poll() is None, f"{p.args[3]} exited (rc {p.returncode}) while waiting for {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_server_killed_and_restarted_resyncs_base_and_ends_on_the_newest_delta(tmp_path, free_port):
    store, run_dir = tmp_path / "store", tmp_path / "learner"
    make_store(store)
    wport, pport = free_port(), free_port()
    learner = subprocess.Popen([sys.executable, "-m", "hil_robot", "learner", f"store={store}", f"run_dir={run_dir}",
                                f"endpoint=tcp://127.0.0.1:{wport}", "wait_s=60", *LEARNER, *MODEL],
                               env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = serve(pport, wport)
    client = PolicyClient(f"tcp://127.0.0.1:{pport}", timeout_s=3.0, retries=0, heartbeat_s=0.2)
    try:
        first = wait_until(lambda: (s := weights_status(client)) and s["counters"]["deltas"] >= 2 and s,
                           240, "the server to follow deltas", learner, server)
        assert first["counters"]["resyncs"] >= 1  # its random base was replaced by the learner's
        assert first["last_update"]["kind"] == "delta" and first["version"] >= 2
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        killed_at = ckpt.published_version(run_dir)
        wait_until(lambda: ckpt.published_version(run_dir) >= killed_at + 3, 120, "more versions", learner)
        client.close()
        server = serve(pport, wport)
        client = PolicyClient(f"tcp://127.0.0.1:{pport}", timeout_s=3.0, retries=0, heartbeat_s=0.2)
        again = wait_until(lambda: (s := weights_status(client)) and s["counters"]["resyncs"] >= 1 and
                           s["version"] > killed_at + 2 and s, 240, "the restarted server to resync", learner, server)
        assert again["rejected"].get("non_finite", 0) == 0
        learner.send_signal(signal.SIGINT)  # publishes its final delta, re-sends it while it lingers
        assert learner.wait(120) == 0, learner.stdout.read() if learner.stdout else ""
        newest = ckpt.published_version(run_dir)
        final = wait_until(lambda: (s := weights_status(client)) and s["version"] == newest and s, 30,
                           "the newest version", server)
        assert final["counters"]["resyncs"] >= 1 and final["last_update"]["kind"] == "delta"
        assert final["last_update"]["bytes"] < 1_000_000  # adapters of a small VLA, not the base
    finally:
        client.close()
        for p in (server, learner):
            if p.poll() is None:
                p.kill()
                p.wait(10)
