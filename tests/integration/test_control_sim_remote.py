"""Sim robot + remote policy (a real ``hil-robot serve-policy`` process on a free loopback port) +
simulated operator, several episodes through the controller into a real episode store. Every
stored step's label is checked against the simulated operator's own log."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hil_robot.config import load_config
from hil_robot.control.clock import FakeClock
from hil_robot.control.loop import Controller
from hil_robot.data import EpisodeStore, Recorder
from hil_robot.transport.policy_client import PolicyClient
from hil_robot.types import INTERVENTION_SEGMENTS, Segment, Source

EPISODES = 4
MAX_STEPS = 70


@pytest.fixture
def policy_server(free_port, tmp_path):
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil_robot", "serve-policy", "policy=noisy_expert", "sim.task=pick_cube", f"port={port}",
         "transport.heartbeat_s=0.2"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    yield f"tcp://127.0.0.1:{port}", proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def expected_segments(op_log: list[dict], k: int) -> list[Segment]:
    """What the store must hold, from the operator's log alone: its per-step segment, with the last
    k autonomous steps before each takeover start relabelled pre_intervention."""
    segs = [Segment(e["segment"]) for e in op_log]
    out = list(segs)
    for i in range(1, len(segs)):
        if segs[i] in INTERVENTION_SEGMENTS and segs[i - 1] not in INTERVENTION_SEGMENTS:
            j = i - 1
            while j >= 0 and i - j <= k and segs[j] == Segment.AUTONOMOUS:
                out[j] = Segment.PRE_INTERVENTION
                j -= 1
    return out


def test_remote_policy_sim_operator_episodes_are_labelled_like_the_operator_log(policy_server, tmp_path):
    endpoint, proc = policy_server
    import sim
    from sim.operator import SimulatedOperator

    cfg = load_config(["policy=noisy_expert", "sim.image_height=48", "sim.image_width=48", "robot.control_hz=10"])
    cfg.control = dataclasses.replace(cfg.control, max_policy_wait_s=2.0)  # loaded CI box: wait for each H=1 reply
    k = cfg.learner.pre_intervention_k
    clock = FakeClock()
    client = PolicyClient(endpoint, timeout_s=5.0, heartbeat_s=0.2)
    client.wait_ready(60)
    op = SimulatedOperator(cfg.teleop.sim_operator, "pick_cube", seed=3, robot_cfg=cfg.robot)
    store = EpisodeStore(tmp_path / "store", fsync=False)
    rec = Recorder(store, k)
    robot = sim.SimRobot(cfg.sim, cfg.robot, seed=0, clock=clock.now)
    ctl = Controller(robot, client, op, rec, cfg, clock=clock)
    logs, results, live = [], [], []
    ctl.on_step = lambda r, d: live.append(r)
    try:
        with robot:
            for ep in range(EPISODES):
                res = ctl.run_episode(max_steps=MAX_STEPS, seed=100 + ep)
                results.append(res)
                logs.append(list(op.log))
    finally:
        ctl.close()
        client.close()
        rec.close()
    assert proc.poll() is None, "policy server died"

    store = EpisodeStore(tmp_path / "store", read_only=True)
    assert len(store) == EPISODES
    total_interventions = 0
    for ep in range(EPISODES):
        episode = store.read_episode(ep)
        op_log = logs[ep]
        assert len(episode) == results[ep].steps == len(op_log), "one stored step per tick, one log entry per tick"
        assert [e["step"] for e in op_log] == list(range(len(op_log)))
        stored = list(episode.segments)
        assert stored == expected_segments(op_log, k), f"episode {ep}: stored labels differ from the operator's log"
        ep_records = [r for r in live if r.episode_id == results[ep].episode_id]
        for r, e in zip(ep_records, op_log):
            human = e["mode"] == "takeover"
            assert (r.source == Source.HUMAN) == human
            if human:
                assert r.operator_id == "sim_operator" and r.policy_version == -1
            else:
                assert r.policy_version >= 0, "autonomous step without the remote policy's version"
                assert np.isfinite(r.action_policy).all()
            assert np.isfinite(r.action_executed).all() and (np.abs(r.action_executed) <= 1).all()
        # the episode end agrees with the task status / operator mark
        assert ep_records[-1].done or ep_records[-1].truncated
        assert episode.meta.success == results[ep].success
        total_interventions += sum(
            1 for i, e in enumerate(op_log) if e["mode"] == "takeover" and (i == 0 or op_log[i - 1]["mode"] != "takeover")
        )
    assert total_interventions >= 1, "the noisy policy never needed the operator: the test did not exercise takeovers"
    assert sum(r.interventions for r in results) == total_interventions
    assert ctl.executor.counters["errors"] == 0
