"""Policy server/client over the in-process twin (no sockets): protocol, errors, batching, timeouts."""

import threading
import time

import msgpack
import numpy as np
import pytest

from hil_robot.config import ConfigError, load_config
from hil_robot.transport.codec import decode, encode
from hil_robot.transport.links import InProcHub
from hil_robot.transport.liveness import Liveness
from hil_robot.transport.null_policy import NullPolicy
from hil_robot.transport.policy_client import PolicyClient, RemotePolicyError, TransportTimeout
from hil_robot.transport.policy_server import PolicyServer
from hil_robot.types import Policy

OBS = {"images/front": np.zeros((8, 8, 3), np.uint8), "state": np.zeros(15, np.float32), "prompt": "go",
       "timestamp_s": 1.0}


class Failing(NullPolicy):
    def infer(self, obs):
        raise ValueError("camera 'front' missing from observation")


class NaNPolicy(NullPolicy):
    def infer(self, obs):
        return {"actions": np.full((2, 7), np.nan, np.float32)}


class BatchRecorder(NullPolicy):
    def __init__(self):
        super().__init__(horizon=4)
        self.batches = []

    def infer(self, obs):
        return {"actions": np.full((4, 7), obs["state"][0], np.float32)}

    def infer_batch(self, observations):
        self.batches.append(len(observations))
        return [self.infer(o) for o in observations]


@pytest.fixture
def served():
    """(policy, server, hub) running in a background thread; client factory via hub.connect."""
    made = []

    def make(policy, **kw):
        hub = InProcHub()
        server = PolicyServer(policy, link=hub.bind(), heartbeat_s=0.05, **kw).start()
        made.append(server)
        return server, hub
    yield make
    for s in made:
        s.stop()


def test_client_is_a_policy_and_round_trips(served):
    policy = NullPolicy(horizon=50)
    policy.load_weights({"bias": np.full(7, 0.5, np.float32)}, version=4)
    server, hub = served(policy)
    with PolicyClient("inproc", link_factory=hub.connect, timeout_s=2.0, heartbeat_s=None) as client:
        assert isinstance(client, Policy)
        out = client.infer(OBS)
        assert out["actions"].shape == (50, 7) and out["actions"].dtype == np.float32
        np.testing.assert_allclose(out["actions"], np.tanh(0.5), rtol=1e-6)
        assert out["policy_version"] == 4
        assert out["timing"]["batch_size"] == 1 and out["timing"]["server_ms"] >= out["timing"]["infer_ms"] >= 0
        assert out["rtt_ms"] > 0
        meta = client.fetch_metadata()
        assert meta["name"] == "null" and meta["action_horizon"] == 50 and meta["policy_version"] == 4
        assert meta["server"]["counters"]["infers"] == 1
        assert client.health()["policy_version"] == 4
        client.reset()
        assert policy.resets == 1


def test_server_errors_are_raised_client_side_with_the_server_message(served):
    server, hub = served(Failing())
    client = PolicyClient("inproc", link_factory=hub.connect, heartbeat_s=None)
    with pytest.raises(RemotePolicyError, match="camera 'front' missing") as info:
        client.infer(OBS)
    assert info.value.kind == "policy_error"
    assert client.health()["policy_version"] == 0  # the server carries on


def test_non_finite_actions_never_leave_the_client(served):
    server, hub = served(NaNPolicy())
    client = PolicyClient("inproc", link_factory=hub.connect, heartbeat_s=None)
    with pytest.raises(RemotePolicyError, match="non-finite"):
        client.infer(OBS)


def test_unknown_types_and_junk_get_error_replies_with_the_request_id(served):
    server, hub = served(NullPolicy())
    link = hub.connect()
    link.send([msgpack.packb({"type": "shutdown", "id": 41})])
    reply = decode(link.recv(2.0)[1])
    assert reply["type"] == "error" and reply["id"] == 41 and "unknown message type" in reply["message"]
    link.send([b"\x00\xff garbage"])
    reply = decode(link.recv(2.0)[1])
    assert reply["type"] == "error" and reply["kind"] == "bad_request"
    link.send(encode({"type": "infer", "id": 5, "obs": [1, 2]}))
    assert "dict observation" in decode(link.recv(2.0)[1])["message"]
    assert server.status()["counters"]["bad_frames"] == 2


def test_unsendable_observation_fails_before_sending(served):
    server, hub = served(NullPolicy())
    client = PolicyClient("inproc", link_factory=hub.connect, heartbeat_s=None)
    from hil_robot.transport.codec import CodecError

    with pytest.raises(CodecError, match="dtype object"):
        client.infer({"state": np.array([object()])})
    assert client.infer(OBS)["actions"].shape == (50, 7)


def test_timeout_raises_then_reconnects_when_the_server_returns():
    hub = InProcHub()
    server_link = hub.bind()  # bound but nobody serves: requests go unanswered
    client = PolicyClient("inproc", link_factory=hub.connect, timeout_s=0.1, heartbeat_s=None)
    t0 = time.monotonic()
    with pytest.raises(TransportTimeout, match="within 0.100 s"):
        client.infer(OBS)
    assert time.monotonic() - t0 < 1.0
    assert client.counters == {**client.counters, "timeouts": 1, "reconnects": 1}
    t0 = time.monotonic()
    with pytest.raises(TransportTimeout, match="within 0.020 s"):
        client.infer(OBS, timeout_s=0.02)  # a per-request deadline
    assert time.monotonic() - t0 < 0.5
    server = PolicyServer(NullPolicy(), link=server_link, heartbeat_s=0.05).start()
    try:
        assert client.infer(OBS)["actions"].shape == (50, 7)  # late reply to the first request was skipped
    finally:
        server.stop()


def test_stale_replies_are_dropped_by_request_id():
    hub = InProcHub()
    server_link = hub.bind()
    client = PolicyClient("inproc", link_factory=hub.connect, timeout_s=1.0, heartbeat_s=None)

    def answer():
        peer, frames = server_link.recv(2.0)
        rid = decode(frames)["id"]
        server_link.send(encode({"type": "pong", "id": rid - 1, "policy_version": 9}), peer=peer)  # stale
        server_link.send(encode({"type": "pong", "id": rid, "policy_version": 2}), peer=peer)
    t = threading.Thread(target=answer)
    t.start()
    assert client.health()["policy_version"] == 2
    t.join()
    assert client.counters["stale_replies"] == 1


def test_simultaneous_requests_are_batched_through_infer_batch():
    policy = BatchRecorder()
    hub = InProcHub()
    server = PolicyServer(policy, link=hub.bind(), max_batch=8)
    links = [hub.connect() for _ in range(5)]
    for i, link in enumerate(links):
        obs = dict(OBS, state=np.full(15, i, np.float32))
        link.send(encode({"type": "infer", "id": 100 + i, "obs": obs}))
    assert server.poll_once(1.0) == 5
    assert policy.batches == [5]
    for i, link in enumerate(links):
        reply = decode(link.recv(1.0)[1])
        assert reply["id"] == 100 + i and reply["timing"]["batch_size"] == 5
        np.testing.assert_array_equal(reply["actions"], np.full((4, 7), i, np.float32))


def test_concurrent_clients_each_get_their_own_replies(served):
    policy = BatchRecorder()
    server, hub = served(policy, max_batch=4)
    errors = []

    def robot(i):
        c = PolicyClient("inproc", link_factory=hub.connect, heartbeat_s=None)
        for _ in range(30):
            out = c.infer(dict(OBS, state=np.full(15, i, np.float32)))
            if not np.all(out["actions"] == i):
                errors.append(i)
    threads = [threading.Thread(target=robot, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert server.status()["counters"]["infers"] == 120
    assert len(server.status()["clients"]) == 4


def test_client_heartbeat_reports_server_gone_and_back():
    hub = InProcHub()
    link = hub.bind()
    server = PolicyServer(NullPolicy(), link=link, heartbeat_s=0.05).start()
    client = PolicyClient("inproc", link_factory=hub.connect, heartbeat_s=0.05, timeout_s=0.2)
    try:
        deadline = time.monotonic() + 3
        while not client.status()["server_alive"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.status()["server_alive"]
        server.stop()
        deadline = time.monotonic() + 3
        while client.status()["server_alive"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not client.status()["server_alive"]
        assert [e[2] for e in client.server.events] == ["up", "gone"]
    finally:
        client.close()


def test_liveness_logs_up_and_gone_with_an_injected_clock():
    now = [0.0]
    live = Liveness("peer", timeout_s=1.0, clock=lambda: now[0])
    live.beat("a")
    now[0] = 0.5
    assert live.alive("a")
    now[0] = 2.0
    assert not live.alive("a") and live.status()["a"]["alive"] is False
    live.beat("a")
    assert [e[2] for e in live.events] == ["up", "gone", "up"]


def test_config_refuses_unencrypted_remote_bind():
    with pytest.raises(ConfigError, match="curve_keys_dir"):
        load_config(["transport.bind_host=0.0.0.0"])
    cfg = load_config(["transport.bind_host=0.0.0.0", "transport.allow_insecure=true"])
    assert cfg.transport.bind_host == "0.0.0.0"
    with pytest.raises(ConfigError, match="transport.transition_on_full"):
        load_config(["transport.transition_on_full=explode"])


def test_serve_until_stopped_polls_logs_status_and_honours_max_seconds(caplog):
    import logging

    from hil_robot.transport.serving import serve_until_stopped

    polls = []
    log = logging.getLogger("test.serving")
    with caplog.at_level(logging.INFO, logger="test.serving"):
        t0 = time.monotonic()
        serve_until_stopped(lambda: (polls.append(1), time.sleep(0.01)), max_seconds=0.3,
                            status=lambda: {"served": len(polls)}, status_every_s=0.1, logger=log)
    assert 0.3 <= time.monotonic() - t0 < 2.0
    assert len(polls) >= 10
    assert sum("status {'served'" in r.getMessage() for r in caplog.records) >= 1


def test_policy_server_stop_without_start_closes_the_endpoint():
    hub = InProcHub()
    server = PolicyServer(NullPolicy(), link=hub.bind())
    assert hub.bound
    server.stop()
    assert not hub.bound  # the endpoint is closed
    hub.bind()  # and the address can be bound again
