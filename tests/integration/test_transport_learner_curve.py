"""The weight bus of a real ``hil-robot learner`` process, wired from the transport config:
with ``transport.curve_keys_dir`` it binds ``transport.bind_host`` with CURVE and only authorised
subscribers hear it (wrong keys / no keys receive nothing); by default it stays plain on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from hil_robot.config import ConfigError, load_config
from hil_robot.data import EpisodeStore, Recorder
from hil_robot.data.synthetic import record_episode
from hil_robot.transport.security import CurveKeys, generate_keys
from hil_robot.transport.weights import WeightSubscriber

ROOT = Path(__file__).resolve().parents[2]
LEARNER = ["learner=rlpd", "learner.batch_size=16", "learner.min_replay_steps=8", "learner.num_threads=1",
           "learner.publish_every_s=0.1", "learner.checkpoint_every_updates=1000", "learner.log_every_s=5",
           "learner.max_updates=400", "experiment.wandb_mode=disabled"]


def make_store(path: Path) -> None:
    rec = Recorder(EpisodeStore(path), pre_intervention_k=2)
    for e in range(2):
        record_episode(rec, f"ep{e}", ["demo"] * 6 if e == 0 else ["autonomous"] * 3 + ["correction"] * 3,
                       episode=e, hw=(16, 16))
    rec.close()


def rl_target():
    from hil_robot.learn.rlpd import obs_spec_from_batch
    from policies.rl import RLPolicy

    cfg = load_config(LEARNER).learner
    probe = {"obs/state": np.zeros((1, 15), np.float32), "obs/task_state": np.zeros((1, 6), np.float32)}
    return RLPolicy(cfg, obs_spec_from_batch(probe, cfg))


def start_learner(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen:
    store = tmp_path / "store"
    make_store(store)
    cmd = [sys.executable, "-m", "hil_robot", "learner", f"store={store}", f"run_dir={tmp_path / 'run'}", "wait_s=60",
           f"transport.weights_port={port}", *LEARNER, *extra]  # no endpoint=: the config decides
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def listening_on(proc: subprocess.Popen, port: int) -> str:
    """The local address the learner process listens on for ``port`` ('' if none yet)."""
    try:
        for c in psutil.Process(proc.pid).net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port:
                return c.laddr.ip
    except psutil.Error:
        pass
    return ""


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"learner exited (rc {proc.returncode}) while waiting for {what}:\n{proc.stdout.read()}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@pytest.fixture
def keydirs(tmp_path):
    good, rogue = tmp_path / "keys", tmp_path / "rogue"
    generate_keys(good, ["server", "client"])
    generate_keys(rogue, ["client"])  # well-formed, never authorised by the learner
    shutil.copy(good / "public" / "server.key", rogue / "public" / "server.key")
    return good, rogue


def test_curve_learner_reaches_only_authorised_subscribers(tmp_path, free_port, keydirs):
    good, rogue = keydirs
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"  # subscribers connect to transport.host
    subs = {name: WeightSubscriber(endpoint, rl_target(), curve=curve, initial_version=0, heartbeat_s=0.1)
            for name, curve in (("authorised", CurveKeys.for_client(good, "client")),
                                ("wrong_keys", CurveKeys.for_client(rogue, "client")), ("no_keys", None))}
    proc = start_learner(tmp_path, port, f"transport.curve_keys_dir={good}", "transport.bind_host=0.0.0.0")
    try:
        ok = subs["authorised"]
        wait_for(lambda: (ok.apply_pending(), ok.applied_version >= 2)[1], 180, "two versions at the authorised subscriber",
                 proc)
        assert listening_on(proc, port) == "0.0.0.0"  # transport.bind_host, not transport.host
        time.sleep(0.5)  # a few more publishes and heartbeats the others could have heard
    finally:
        stop(proc)
        for sub in subs.values():
            sub.close()
    assert sum(ok.rejected.values()) == 0, ok.last_error
    assert ok.counters["accepted"] >= 2 and ok.applied_version >= 2
    for name in ("wrong_keys", "no_keys"):
        sub = subs[name]
        assert set(sub.counters.values()) == {0}, (name, sub.status())  # heard nothing at all: no update, delta or resync
        assert sub.applied_version == 0 and not sub.publisher.status(), (name, sub.status())


def test_default_learner_bus_is_plain_on_loopback(tmp_path, free_port, keydirs):
    good, _ = keydirs
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    plain = WeightSubscriber(endpoint, rl_target(), initial_version=0, heartbeat_s=0.1)
    curved = WeightSubscriber(endpoint, rl_target(), curve=CurveKeys.for_client(good, "client"), initial_version=0,
                              heartbeat_s=0.1)  # expects encryption the learner does not speak
    proc = start_learner(tmp_path, port)
    try:
        wait_for(lambda: (plain.apply_pending(), plain.applied_version >= 1)[1], 180, "a version at the plain subscriber",
                 proc)
        assert listening_on(proc, port) == "127.0.0.1"
        time.sleep(0.5)
    finally:
        stop(proc)
        plain.close()
        curved.close()
    assert curved.counters["updates_received"] == 0 and curved.applied_version == 0, curved.status()


def test_learner_refuses_an_explicit_public_endpoint_without_keys(tmp_path):
    from hil_robot.learn.cli import learner

    make_store(tmp_path / "store")
    with pytest.raises(ConfigError, match="curve_keys_dir"):
        learner([f"store={tmp_path / 'store'}", f"run_dir={tmp_path / 'run'}", "endpoint=tcp://0.0.0.0:5999", *LEARNER])


def test_controller_weight_subscriber_uses_the_configured_curve_keys(tmp_path, free_port, keydirs, monkeypatch):
    """``hil-robot controller subscribe_weights=true`` with transport.curve_keys_dir hears a CURVE publisher."""
    import threading

    import hil_robot.control.cli as control_cli
    import hil_robot.transport.weights as weights_mod
    from hil_robot.transport.null_policy import NullPolicy
    from hil_robot.transport.weights import WeightPublisher

    good, _ = keydirs
    port = free_port()
    policy = NullPolicy(horizon=10, action_dim=7, n_params=64)
    monkeypatch.setattr(control_cli, "build_policy", lambda cfg, endpoint: (policy, None))
    made = []

    class WaitingSubscriber(weights_mod.WeightSubscriber):  # the real one, held until it heard an update
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)
            deadline = time.monotonic() + 20
            while self.counters["accepted"] == 0 and time.monotonic() < deadline:
                time.sleep(0.02)

    monkeypatch.setattr(weights_mod, "WeightSubscriber", WaitingSubscriber)
    pub = WeightPublisher(f"tcp://127.0.0.1:{port}", curve=CurveKeys.for_server(good), heartbeat_s=0.1)
    done = threading.Event()

    def publish() -> None:
        v = 0
        while not done.wait(0.05):
            v += 1
            pub.publish({"bias": np.full(7, 0.1 * v, np.float32), "body": np.zeros(57, np.float32)}, version=v, step=v)
    t = threading.Thread(target=publish, daemon=True)
    t.start()
    try:
        rc = control_cli.controller([
            "policy=noisy_expert", "operator=none", "episodes=1", "store=none", "realtime=false", "keys=false",
            "sim.image_height=32", "sim.image_width=32", "max_steps=30", "subscribe_weights=true",
            f"transport.weights_port={port}", f"transport.curve_keys_dir={good}", "transport.heartbeat_s=0.1"])
    finally:
        done.set()
        t.join(5)
        pub.close()
    assert rc == 0 and len(made) == 1
    assert made[0].counters["accepted"] >= 1, made[0].status()
    assert policy.version >= 1  # installed at a chunk boundary during the run
