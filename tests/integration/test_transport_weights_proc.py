"""Weight bus between real processes: the learner (publisher) is killed and restarted while a policy
server keeps serving its last good weights; bad updates of every kind arrive over real sockets."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hil_robot.transport.policy_client import PolicyClient

LEARNER = r"""
import sys, time, numpy as np
from hil_robot.transport.weights import WeightPublisher
port, first, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
pub = WeightPublisher(f"tcp://127.0.0.1:{port}", heartbeat_s=0.1, chunk_bytes=1024)
spec = {"bias": ((7,), "float32"), "body": ((1017,), "float32")}
def weights(v, **kw):
    w = {k: np.full(s, v, d) for k, (s, d) in spec.items()}
    w.update(kw)
    return w
time.sleep(1.0)  # let the subscriber (re)connect: PUB/SUB does not replay
bad = [weights(0.9, bias=np.array([np.nan] * 7, np.float32)), weights(0.9, bias=np.zeros(6, np.float32)),
       weights(0.9, bias=np.zeros(7, np.float64)), {"bias": np.zeros(7, np.float32)},
       weights(0.9, extra=np.zeros(2, np.float32))]
v = first
while True:
    if mode == "bad":
        pub.publish(weights(v / 100), version=v, step=0)
        time.sleep(0.3)
        for w in bad:
            v += 1
            pub.publish(w, version=v, step=v); time.sleep(0.2)
        pub.publish(weights(0.9), version=first, step=0)  # not newer than what is installed
        time.sleep(0.2)
        v += 1
        mode = "good"
    pub.publish(weights(v / 100), version=v, step=10 * v)
    print("published", v, flush=True)
    v += 1
    time.sleep(0.3)
"""


def spawn(args, tmp_path, name):
    log = open(tmp_path / f"{name}_{time.monotonic_ns()}.log", "w")
    return subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def kill(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def wait_version(client, pred, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    out = None
    while time.monotonic() < deadline:
        out = client.infer({"state": np.zeros(15, np.float32)})
        if pred(out["policy_version"]):
            return out
        time.sleep(0.02)
    raise AssertionError(f"policy_version never satisfied the condition; last reply {out and out['policy_version']}")


@pytest.fixture
def policy_server(free_port, tmp_path):
    pport, wport = free_port(), free_port()
    proc = spawn(["-m", "hil_robot", "serve-policy", "policy_factory=hil_robot.transport.null_policy:make_null_policy",
                  f"port={pport}", f"transport.weights_port={wport}", "transport.subscribe_weights=true",
                  "transport.heartbeat_s=0.1"], tmp_path, "server")
    client = PolicyClient(f"tcp://127.0.0.1:{pport}", timeout_s=2.0, heartbeat_s=None)
    client.wait_ready(30)
    yield client, wport
    client.close()
    kill(proc)


def test_server_keeps_last_good_weights_while_the_learner_is_down(policy_server, tmp_path):
    client, wport = policy_server
    learner = spawn(["-c", LEARNER, str(wport), "1", "good"], tmp_path, "learner")
    try:
        out = wait_version(client, lambda v: v >= 2)
        kill(learner)
        last = out["policy_version"]
        time.sleep(0.5)  # publisher silent for > 3 heartbeats
        for _ in range(20):
            out = client.infer({})
            assert out["policy_version"] >= last
        last = out["policy_version"]
        np.testing.assert_allclose(out["actions"], np.tanh(last / 100), rtol=1e-5)  # weights match the version
        weights = client.fetch_metadata()["server"]["weights"]
        assert not weights["publisher_alive"] and weights["applied_version"] == last
        learner = spawn(["-c", LEARNER, str(wport), str(last + 100), "good"], tmp_path, "learner")
        out = wait_version(client, lambda v: v >= last + 100)
        np.testing.assert_allclose(out["actions"], np.tanh(out["policy_version"] / 100), rtol=1e-5)
        assert client.fetch_metadata()["server"]["weights"]["publisher_alive"]
    finally:
        kill(learner)


def test_bad_updates_over_the_wire_are_all_rejected(policy_server, tmp_path):
    client, wport = policy_server
    learner = spawn(["-c", LEARNER, str(wport), "1", "bad"], tmp_path, "learner")
    try:
        wait_version(client, lambda v: v == 1)
        out = wait_version(client, lambda v: v >= 7)  # the first good version after the bad ones
        np.testing.assert_allclose(out["actions"], np.tanh(out["policy_version"] / 100), rtol=1e-5)
        rejected = client.fetch_metadata()["server"]["weights"]["rejected"]
        assert rejected == {"non_finite": 1, "shape": 1, "dtype": 1, "names": 2, "version": 1}, rejected
    finally:
        kill(learner)
