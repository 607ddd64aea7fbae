"""Both openpi ends as real processes: `hil-robot controller policy=openpi_sim` (our openpi client)
drives the sim against `hil-robot serve-policy protocol=openpi policy=expert` (the scripted expert
behind our openpi front) and succeeds; with no server the robot holds and nothing is recorded as a
policy action. Every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hil_robot.data import EpisodeStore
from hil_robot.transport.openpi_client import OpenpiClientPolicy
from hil_robot.transport.policy_client import TransportTimeout

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
SIM = ["sim.task=pick_cube", "sim.image_height=48", "sim.image_width=48"]


def controller(tmp_path, url, *extra):
    cmd = [sys.executable, "-m", "hil_robot", "controller", "policy=openpi_sim", f"policy.server_url={url}",
           "operator=none", "episodes=1", "realtime=false", "keys=false", f"store={tmp_path / 'store'}",
           f"summary_json={tmp_path / 'summary.json'}", *SIM, *extra]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=ENV)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads((tmp_path / "summary.json").read_text()), EpisodeStore(tmp_path / "store").read_episode(0)


@pytest.fixture
def front(tmp_path, free_port):
    port = free_port()
    log = open(tmp_path / "front.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "hil_robot", "serve-policy", "protocol=openpi", "obs_map=sim",
                             "policy=expert", f"port={port}", *SIM], stdout=log, stderr=subprocess.STDOUT, env=ENV)
    url = f"ws://127.0.0.1:{port}"
    probe = OpenpiClientPolicy(url, None)
    deadline = time.monotonic() + 120
    while True:
        try:
            assert probe.health()
            break
        except TransportTimeout:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "front.log").read_text()
            time.sleep(0.2)
    yield url
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def test_controller_with_openpi_client_succeeds_against_the_openpi_front(front, tmp_path):
    summary, ep = controller(tmp_path, front, "max_steps=100")
    assert summary["episodes"] == 1 and summary["successes"] == 1, summary
    assert summary["chunks/replies"] >= summary["steps"] > 5 and summary.get("chunks/errors", 0) == 0
    assert np.isfinite(ep.columns["action_policy"]).all()
    assert (ep.columns["policy_version"] == 0).all()  # the expert's version, carried through the front


def test_controller_holds_when_the_openpi_server_is_unreachable(tmp_path, free_port):
    summary, ep = controller(tmp_path, f"ws://127.0.0.1:{free_port()}", "max_steps=6",
                             "control.first_chunk_timeout_s=0.5", "policy.server_timeout_s=0.5")
    assert summary["steps"] == 6 and summary["successes"] == 0
    assert summary["safety/hold"] == 6 and summary["chunks/errors"] >= 1
    assert np.isnan(ep.columns["action_policy"]).all()  # nothing recorded as a policy action
    assert (ep.columns["action_executed"][:, :6] == 0).all()  # no motion


def test_a_wrong_mapping_is_named_at_the_first_request_and_the_robot_holds(tmp_path, free_port):
    cmd = [sys.executable, "-m", "hil_robot", "controller", "policy=openpi_sim",
           f"policy.server_url=ws://127.0.0.1:{free_port()}", "policy.obs_map={observation/image: images/side}",
           "operator=none", "episodes=1", "realtime=false", "keys=false", "store=none", "max_steps=3",
           "control.first_chunk_timeout_s=0.5", f"summary_json={tmp_path / 'summary.json'}", *SIM]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=ENV)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "obs_map['observation/image'] <- 'images/side': the observation has no 'images/side'" in run.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["safety/hold"] == 3 and summary["chunks/errors"] >= 1
