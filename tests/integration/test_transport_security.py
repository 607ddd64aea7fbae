"""CURVE on real sockets: keys from `hil-robot keys`, authorised peers accepted, everyone else rejected
(policy server in its own process, weight bus and transition stream in this one)."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hil_robot.config import ConfigError
from hil_robot.transport.cli import keys as keys_cli
from hil_robot.transport.null_policy import NullPolicy
from hil_robot.transport.policy_client import PolicyClient, TransportTimeout
from hil_robot.transport.security import CurveKeys, KeyFileError, generate_keys
from hil_robot.transport.transitions import TransitionReceiver, TransitionSender
from hil_robot.transport.weights import WeightPublisher, WeightSubscriber


@pytest.fixture
def keydirs(tmp_path):
    good = tmp_path / "keys"
    assert keys_cli([f"dir={good}", "names=server,client"]) == 0
    assert (good / "public" / "server.key").is_file() and (good / "private" / "client.key_secret").is_file()
    assert oct((good / "private" / "client.key_secret").stat().st_mode)[-3:] == "600"
    rogue = tmp_path / "rogue"
    generate_keys(rogue, ["client"])  # a well-formed key the server never authorised
    shutil.copy(good / "public" / "server.key", rogue / "public" / "server.key")
    (rogue / "public" / "client.key").unlink()
    return good, rogue


def test_keys_cli_refuses_to_overwrite(keydirs):
    good, _ = keydirs
    with pytest.raises(ConfigError, match="overwrite=true"):
        keys_cli([f"dir={good}", "names=server"])
    with pytest.raises(KeyFileError, match="hil-robot keys"):
        CurveKeys.for_client(good, "robot7")


def test_policy_server_accepts_only_authorised_clients(keydirs, free_port, tmp_path):
    good, rogue = keydirs
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "hil_robot", "serve-policy",
                             "policy_factory=hil_robot.transport.null_policy:make_null_policy", f"port={port}",
                             f"transport.curve_keys_dir={good}"], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    endpoint = f"tcp://127.0.0.1:{port}"
    try:
        with PolicyClient(endpoint, curve=CurveKeys.for_client(good, "client"), timeout_s=2.0, heartbeat_s=None) as ok:
            ok.wait_ready(30)
            assert ok.infer({"state": np.zeros(15, np.float32)})["actions"].shape == (10, 7)
        for curve in (CurveKeys.for_client(rogue, "client"), None):  # unknown key, and no encryption at all
            with PolicyClient(endpoint, curve=curve, timeout_s=0.5, heartbeat_s=None) as intruder:
                with pytest.raises(TransportTimeout):
                    intruder.infer({"state": np.zeros(15, np.float32)})
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def _wait(cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_weight_bus_and_transition_stream_with_curve(keydirs, free_port):
    good, rogue = keydirs
    wep = f"tcp://127.0.0.1:{free_port()}"
    pub = WeightPublisher(wep, curve=CurveKeys.for_server(good), heartbeat_s=0.05)
    ok_policy, rogue_policy = NullPolicy(n_params=100), NullPolicy(n_params=100)
    ok = WeightSubscriber(wep, ok_policy, curve=CurveKeys.for_client(good), heartbeat_s=0.05)
    bad = WeightSubscriber(wep, rogue_policy, curve=CurveKeys.for_client(rogue), heartbeat_s=0.05)
    try:
        assert _wait(lambda: ok.publisher_alive)
        pub.publish({k: np.full(s, 0.1, d) for k, (s, d) in ok_policy.weight_spec().items()}, version=1, step=1)
        assert _wait(lambda: ok.apply_pending()) and ok_policy.version == 1
        time.sleep(0.3)
        assert not bad.publisher_alive and bad.counters["accepted"] == 0 and rogue_policy.version == 0
    finally:
        for x in (ok, bad, pub):
            x.close()

    from hil_robot.data.synthetic import step_record

    class Sink:
        steps = []

        def add(self, s):
            self.steps.append(s)

        def end_episode(self, success, **meta):
            pass
    tep = f"tcp://127.0.0.1:{free_port()}"
    rx = TransitionReceiver(Sink(), tep, curve=CurveKeys.for_server(good), heartbeat_s=0.05).start()
    tx_ok = TransitionSender(tep, curve=CurveKeys.for_client(good), heartbeat_s=0.05)
    tx_bad = TransitionSender(tep, curve=CurveKeys.for_client(rogue), heartbeat_s=0.05, ack_timeout_s=0.2)
    try:
        tx_bad.add(step_record("rogue", 0, hw=(8, 8)))
        tx_ok.add(step_record("ep", 0, hw=(8, 8)))
        assert tx_ok.flush(5.0)
        assert not tx_bad.flush(0.5) and tx_bad.status()["acked_upto"] == -1
        assert [s.episode_id for s in Sink.steps] == ["ep"]
    finally:
        tx_ok.close(0.5)
        tx_bad.close(0.1)
        rx.stop()
