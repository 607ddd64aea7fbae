"""Weight swaps through the real weight bus (zmq PUB/SUB on loopback) reach a local policy only at
chunk boundaries of the running controller: every executed chunk comes from one set of weights."""

from __future__ import annotations

import threading
import time

import numpy as np

from hil_robot.config import PolicyConfig, RootConfig
from hil_robot.control.clock import MonotonicClock
from hil_robot.control.fakes import KinematicRobot
from hil_robot.control.loop import Controller
from hil_robot.transport.null_policy import NullPolicy
from hil_robot.transport.weights import WeightPublisher, WeightSubscriber


def test_weight_updates_are_installed_between_chunks(free_port):
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    cfg = RootConfig(policy=PolicyConfig(name="vla", action_horizon=8, n_action_steps=4))
    cfg.robot.control_hz = 50.0
    cfg.robot.safety.watchdog_hold_s = 0.1
    policy = NullPolicy(horizon=8, n_params=64)
    pub = WeightPublisher(endpoint, heartbeat_s=0.2)
    sub = WeightSubscriber(endpoint, policy, heartbeat_s=0.2)
    installs: list[str] = []

    def hook() -> None:  # runs in the inference worker right before infer
        if sub.apply_pending():
            installs.append(threading.current_thread().name)

    clock = MonotonicClock()
    robot = KinematicRobot(cfg.robot, clock=clock.now)
    ctl = Controller(robot, policy, None, None, cfg, clock=clock, on_chunk_boundary=hook)
    records = []
    ctl.on_step = lambda r, d: records.append(r)
    biases = {v: 0.1 * v for v in (1, 2, 3)}

    def publish() -> None:
        deadline = time.monotonic() + 20
        while not sub.publisher_alive and time.monotonic() < deadline:  # SUB connected (heartbeats seen)
            time.sleep(0.05)
        time.sleep(0.3)
        for v, b in biases.items():
            w = dict(policy.weights)
            w["bias"] = np.full(7, b, np.float32)
            pub.publish(w, version=v, step=v * 100)
            time.sleep(0.4)
        ctl.request_stop()

    th = threading.Thread(target=publish, daemon=True)
    try:
        th.start()
        ctl.run_episode(max_steps=2500)  # until the publisher is done (request_stop), at most 50 s
        th.join(5)
    finally:
        ctl.close()
        sub.close()
        pub.close()
    assert len(installs) == 3 and all(n.startswith("policy-infer") for n in installs)
    versions = [r.policy_version for r in records if r.policy_version >= 0]
    assert versions == sorted(versions) and {1, 2, 3} <= set(versions)
    for r in records:
        if r.policy_version >= 0:  # each executed action matches the weights of the version it reports
            want = np.tanh(biases.get(r.policy_version, 0.0))
            assert np.allclose(r.action_policy, want, atol=1e-6), (r.step, r.policy_version, r.action_policy)
