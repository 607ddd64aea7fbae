"""Policy server in a real process on a free loopback port: restart mid-stream, several robots at
once, and a fuzz run of thousands of malformed frames. Every wait is bounded."""

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from hil_robot.transport.codec import encode
from hil_robot.transport.policy_client import PolicyClient, RemotePolicyError, TransportTimeout

OBS = {"images/front": np.zeros((128, 128, 3), np.uint8), "images/wrist": np.ones((128, 128, 3), np.uint8),
       "state": np.zeros(32, np.float32), "prompt": "pick the cube", "timestamp_s": 0.0}


def start_server(port, tmp_path, *extra):
    log = open(tmp_path / f"server_{port}_{time.monotonic_ns()}.log", "w")
    cmd = [sys.executable, "-m", "hil_robot", "serve-policy",
           "policy_factory=hil_robot.transport.null_policy:make_null_policy", f"port={port}",
           "transport.heartbeat_s=0.2", "policy.action_horizon=50", "policy.n_action_steps=5", *extra]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@pytest.fixture
def server(free_port, tmp_path):
    port = free_port()
    proc = start_server(port, tmp_path, "transport.max_frame_bytes=1000000")
    yield port, proc
    stop(proc)


def test_client_survives_a_server_restart_mid_stream(free_port, tmp_path):
    port = free_port()
    proc = start_server(port, tmp_path)
    client = PolicyClient(f"tcp://127.0.0.1:{port}", timeout_s=0.5, heartbeat_s=0.2)
    try:
        client.wait_ready(30)
        for _ in range(20):
            assert client.infer(OBS)["actions"].shape == (50, 7)
        stop(proc)  # SIGKILL mid-stream
        t0 = time.monotonic()
        with pytest.raises(TransportTimeout):
            client.infer(OBS)
        assert time.monotonic() - t0 < 2.0  # bounded by the request timeout, never a hang
        proc = start_server(port, tmp_path)
        deadline, served = time.monotonic() + 30, False
        while time.monotonic() < deadline and not served:
            try:
                served = client.infer(OBS)["actions"].shape == (50, 7)
            except TransportTimeout:
                pass
        assert served, "client never reconnected to the restarted server"
        for _ in range(20):  # and keeps working
            client.infer(OBS)
        assert client.counters["reconnects"] >= 1 and client.status()["server_alive"]
    finally:
        client.close()
        stop(proc)


def test_several_robots_are_served_concurrently(server):
    port, _ = server
    clients = [PolicyClient(f"tcp://127.0.0.1:{port}", timeout_s=2.0, heartbeat_s=None) for _ in range(4)]
    clients[0].wait_ready(30)
    failures = []

    def robot(c):
        try:
            for _ in range(50):
                assert c.infer(OBS)["actions"].shape == (50, 7)
        except Exception as e:  # collected and asserted below
            failures.append(repr(e))
    threads = [threading.Thread(target=robot, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    meta = clients[0].fetch_metadata()
    assert meta["server"]["counters"]["infers"] >= 200
    for c in clients:
        c.close()


def _fuzz_frames(rng, valid):
    kind = rng.randrange(7)
    if kind == 0:
        return [rng.randbytes(rng.randrange(1, 300))]
    if kind == 1:  # truncated valid request
        return [valid[0][: rng.randrange(len(valid[0]))], *valid[1:]]
    if kind == 2:  # bit flips in the header
        h = bytearray(valid[0])
        for _ in range(rng.randrange(1, 8)):
            h[rng.randrange(len(h))] = rng.randrange(256)
        return [bytes(h), *valid[1:]]
    if kind == 3:  # header without its image frames, or with extra ones
        return [valid[0]] if rng.random() < 0.5 else [*valid, b"extra"]
    if kind == 4:
        return [msgpack.packb({"type": rng.choice(["infer", "reboot", "metadata", 7]), "id": rng.randrange(10),
                               "obs": rng.choice([None, [], {"state": "x"}, 3])})]
    if kind == 5:  # image frame too short for its header
        return [valid[0], valid[1][:100], valid[2]]
    return [rng.randbytes(rng.randrange(1, 50)) for _ in range(rng.randrange(1, 6))]


def test_fuzzed_frames_never_crash_the_server_and_good_clients_are_served(server):
    port, proc = server
    endpoint = f"tcp://127.0.0.1:{port}"
    good = PolicyClient(endpoint, timeout_s=3.0, heartbeat_s=None)
    good.wait_ready(30)
    rng = random.Random(0)
    valid = [bytes(f) for f in encode({"type": "infer", "id": 1, "obs": OBS})]
    ctx = zmq.Context()
    fuzzers = [ctx.socket(zmq.DEALER) for _ in range(3)]
    for s in fuzzers:
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDTIMEO, 2000)
        s.connect(endpoint)
    t0 = time.monotonic()
    try:
        n = 6000
        for i in range(n):
            fuzzers[i % 3].send_multipart(_fuzz_frames(rng, valid))
            if i % 500 == 0:
                assert good.infer(OBS)["actions"].shape == (50, 7)
                for s in fuzzers:  # drain error replies so the fuzzers' queues never fill
                    while s.poll(0):
                        s.recv_multipart()
        big = np.zeros(2_000_000, np.uint8)  # over transport.max_frame_bytes=1e6: libzmq drops the peer
        fuzzers[0].send_multipart([msgpack.packb({"type": "infer", "id": 1}), big])
        for _ in range(50):  # raw TCP garbage: not even the zmq handshake
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                raw.sendall(rng.randbytes(rng.randrange(1, 200)))
        assert good.infer(OBS)["actions"].shape == (50, 7)
        with pytest.raises(RemotePolicyError, match="dict observation"):
            good.request({"type": "infer", "obs": 5})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            counters = good.fetch_metadata()["server"]["counters"]
            if counters["requests"] >= n:
                break
            time.sleep(0.1)
        assert counters["bad_frames"] > n // 3 and counters["errors"] >= counters["bad_frames"]
        assert proc.poll() is None, "server process died under fuzzing"
        assert time.monotonic() - t0 < 90
    finally:
        for s in fuzzers:
            s.close()
        ctx.term()
        good.close()


def test_serve_policy_builds_a_registry_policy_and_forwards_reset(free_port, tmp_path):
    port = free_port()
    log = open(tmp_path / "registry_server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "hil_robot", "serve-policy", "policy.name=random",
                             "policy.action_horizon=4", "policy.n_action_steps=1", f"port={port}"],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    client = PolicyClient(f"tcp://127.0.0.1:{port}", timeout_s=5.0, heartbeat_s=None)
    try:
        meta = client.wait_ready(60)
        assert meta["name"] == "random" and meta["action_horizon"] == 4
        client.reset()
        first = client.infer(OBS)["actions"]
        assert first.shape == (4, 7) and np.all(np.abs(first) <= 1)
        assert not np.array_equal(client.infer(OBS)["actions"], first)
        client.reset()  # forwarded to the hosted policy: its random stream restarts
        np.testing.assert_array_equal(client.infer(OBS)["actions"], first)
    finally:
        client.close()
        stop(proc)
