"""Transition stream into a learner process that persists into its own episode store: the learner is
killed and restarted between episodes (nothing acknowledged is lost, the rest is re-sent), and the
sender's backpressure/drop counters while nobody receives."""

import os
import signal
import subprocess
import sys
import time

import numpy as np

from hil_robot.data import EpisodeStore
from hil_robot.data.synthetic import observation, step_record
from hil_robot.transport.transitions import TransitionSender


def start_learner(port, store, tmp_path):
    log = open(tmp_path / f"learner_{time.monotonic_ns()}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "hil_robot", "receive-transitions", f"store={store}", f"port={port}",
                             "pre_intervention_k=2", "image_codec=png", "transport.heartbeat_s=0.1"],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def kill(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def send_episode(tx, name, n, episode):
    segs = ["autonomous"] * (n - 3) + ["recovery", "correction", "correction"]
    for i, seg in enumerate(segs):
        assert tx.add(step_record(name, i, seg, episode=episode, last=i == n - 1, hw=(64, 64)))
    tx.end_episode(True, final_observation=observation(n, episode, hw=(64, 64)), task="pick_cube")


def test_learner_restart_loses_nothing_acknowledged(free_port, tmp_path):
    port, store = free_port(), tmp_path / "learner_store"
    learner = start_learner(port, store, tmp_path)
    tx = TransitionSender(f"tcp://127.0.0.1:{port}", heartbeat_s=0.1, ack_timeout_s=0.3, queue_size=4096)
    try:
        send_episode(tx, "ep_a", 40, 0)
        assert tx.flush(30.0), tx.status()
        kill(learner)  # SIGKILL: whatever it acknowledged must already be on disk
        send_episode(tx, "ep_b", 60, 1)  # streamed while the learner is down
        time.sleep(0.5)
        st = tx.status()
        assert st["in_flight"] + st["queued"] == 61 and not st["receiver_alive"]
        learner = start_learner(port, store, tmp_path)
        assert tx.flush(30.0), tx.status()
        assert tx.status()["counters"]["resent"] >= 61 and tx.status()["counters"]["dropped"] == 0
    finally:
        tx.close(1.0)
        kill(learner)
    reread = EpisodeStore(store, read_only=True)
    metas = {m.episode_id: m for m in reread.episodes()}
    assert set(metas) == {"ep_a", "ep_b"}
    assert metas["ep_a"].num_steps == 40 and metas["ep_b"].num_steps == 60
    assert metas["ep_b"].segment_counts["pre_intervention"] == 2


def test_backpressure_and_drop_counters_while_nobody_receives(free_port):
    port = free_port()
    blocking = TransitionSender(f"tcp://127.0.0.1:{port}", queue_size=8, window=4, on_full="block", block_s=0.02,
                                ack_timeout_s=5.0)
    dropping = TransitionSender(f"tcp://127.0.0.1:{port}", queue_size=8, window=4, on_full="drop_newest",
                                ack_timeout_s=5.0)
    try:
        t0 = time.monotonic()
        ok_b = [blocking.add(step_record("ep", i, hw=(8, 8))) for i in range(40)]
        ok_d = [dropping.add(step_record("ep", i, hw=(8, 8))) for i in range(40)]
        assert time.monotonic() - t0 < 10
        b, d = blocking.status()["counters"], dropping.status()["counters"]
        assert b["blocked"] >= b["dropped"] >= 40 - 8 - 4 - 1 and b["blocked_s"] > 0.02 * 20
        assert d["dropped"] >= 40 - 8 - 4 - 1 and d["blocked"] == 0
        assert sum(ok_b) == b["enqueued"] and sum(ok_d) == d["enqueued"]
        assert np.all(ok_b[:8]) and np.all(ok_d[:8])
    finally:
        blocking.close(0.1)
        dropping.close(0.1)
