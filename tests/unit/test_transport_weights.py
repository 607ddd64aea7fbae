"""Weight bus over the in-process twin: validation of every kind of bad update, chunking, latest wins,
swaps only at boundaries."""

import time

import numpy as np
import pytest

from hil_robot.transport.codec import decode, encode
from hil_robot.transport.links import InProcHub
from hil_robot.transport.null_policy import NullPolicy
from hil_robot.transport.policy_client import PolicyClient
from hil_robot.transport.policy_server import PolicyServer
from hil_robot.transport.weights import (HotSwapPolicy, WeightAssembler, WeightPublisher, WeightSubscriber,
                                         chunk_messages, serialize)


def good(policy, value, **override):
    w = {k: np.full(shape, value, np.dtype(dtype)) for k, (shape, dtype) in policy.weight_spec().items()}
    w.update(override)
    return w


def wait_for(cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return False


@pytest.fixture
def bus():
    hub = InProcHub()
    pub = WeightPublisher(link=hub.bind(), chunk_bytes=1024, heartbeat_s=0.05)
    policy = NullPolicy(horizon=3, n_params=5000)
    sub = WeightSubscriber("inproc", policy, link_factory=hub.connect, heartbeat_s=0.05)
    yield pub, sub, policy
    sub.close()
    pub.close()


def test_update_is_staged_then_installed_only_at_the_boundary(bus):
    pub, sub, policy = bus
    assert wait_for(lambda: sub.publisher_alive)
    info = pub.publish(good(policy, 0.25), version=1, step=100)
    assert info["chunks"] > 5  # 20 kB over 1 kB chunks
    assert wait_for(lambda: sub.counters["accepted"] == 1)
    assert policy.version == 0  # staged, not yet installed: an infer in progress would be untouched
    assert sub.apply_pending() and policy.version == 1
    np.testing.assert_allclose(policy.infer({})["actions"], np.tanh(0.25))
    assert not sub.apply_pending()  # nothing new
    assert sub.status()["applied_version"] == 1 and sub.status()["publisher_alive"]


BAD = {
    "non_finite": lambda p: good(p, 0.1, bias=np.array([0, 0, np.nan, 0, 0, 0, 0], np.float32)),
    "inf": lambda p: good(p, 0.1, body=np.full(p.weights["body"].shape, np.inf, np.float32)),
    "shape": lambda p: good(p, 0.1, bias=np.zeros(8, np.float32)),
    "dtype": lambda p: good(p, 0.1, bias=np.zeros(7, np.float64)),
    "missing": lambda p: {"bias": np.zeros(7, np.float32)},
    "extra": lambda p: good(p, 0.1, head=np.zeros(3, np.float32)),
}
REASON = {"inf": "non_finite", "missing": "names", "extra": "names"}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_updates_are_rejected_and_last_good_weights_keep_serving(bus, kind):
    pub, sub, policy = bus
    assert wait_for(lambda: sub.publisher_alive)
    pub.publish(good(policy, 0.5), version=1, step=1)
    assert wait_for(lambda: sub.apply_pending())
    pub.publish(BAD[kind](policy), version=2, step=2)
    reason = REASON.get(kind, kind)
    assert wait_for(lambda: sub.rejected[reason] == 1), sub.status()
    assert not sub.apply_pending() and policy.version == 1
    np.testing.assert_allclose(policy.infer({})["actions"], np.tanh(0.5))
    assert sub.status()["rejected"] == {reason: 1} and sub.last_error
    pub.publish(good(policy, 0.7), version=3, step=3)  # a good update after a bad one still goes through
    assert wait_for(lambda: sub.apply_pending()) and policy.version == 3


def test_old_or_repeated_versions_are_rejected(bus):
    pub, sub, policy = bus
    assert wait_for(lambda: sub.publisher_alive)
    pub.publish(good(policy, 0.5), version=5, step=1)
    assert wait_for(lambda: sub.apply_pending())
    pub.publish(good(policy, 0.9), version=5, step=2)
    assert wait_for(lambda: sub.rejected["version"] == 1)
    pub.publish(good(policy, 0.9), version=4, step=3)
    assert wait_for(lambda: sub.rejected["version"] == 2)
    assert policy.version == 5 and "not newer" in sub.last_error


def _chunks(policy, version, value=0.1, algo="xxh3_128"):
    return chunk_messages(serialize(good(policy, value)), version=version, step=0, algo=algo, chunk_bytes=4096,
                          publisher="p")


def _feed(sub_link, msgs):
    for m in msgs:
        sub_link.send(m)


def test_checksum_format_and_missing_chunk_are_caught():
    hub = InProcHub()
    link = hub.bind()
    policy = NullPolicy(n_params=5000)
    sub = WeightSubscriber("inproc", policy, link_factory=hub.connect)
    try:
        assert wait_for(lambda: len(hub._clients) == 1)
        # tampered payload, header checksum unchanged
        msgs = _chunks(policy, 1)
        m = decode(msgs[2])
        data = m["data"].copy()
        data[10] ^= 0xFF
        msgs[2] = encode({**m, "data": data}, out_of_band_bytes=0)
        _feed(link, msgs)
        assert wait_for(lambda: sub.rejected["checksum"] == 1)
        # not safetensors at all (but a correct checksum)
        junk = np.frombuffer(b"\x05" * 100, np.uint8)
        _feed(link, chunk_messages(junk, version=2, step=0, algo="sha256", chunk_bytes=64, publisher="p"))
        assert wait_for(lambda: sub.rejected["format"] == 1)
        # a lost chunk: the update never completes, nothing is installed
        msgs = _chunks(policy, 3)
        _feed(link, msgs[:3] + msgs[4:])
        assert wait_for(lambda: sub.assembler.dropped["incomplete"] >= 1)
        assert sub.counters["accepted"] == 0 and policy.version == 0
        # sha256 works as well as xxh3
        _feed(link, _chunks(policy, 4, algo="sha256"))
        assert wait_for(lambda: sub.apply_pending()) and policy.version == 4
    finally:
        sub.close()


def test_latest_wins_when_a_newer_version_interrupts_an_older_one():
    policy = NullPolicy(n_params=5000)
    asm = WeightAssembler(max_total_bytes=10**7)
    old, new = _chunks(policy, 1, 0.1), _chunks(policy, 2, 0.2)
    assert asm.feed(decode(old[0])) is None and asm.feed(decode(old[1])) is None
    done = None
    for frames in new:
        done = asm.feed(decode(frames))
    assert done is not None and done[0]["version"] == 2
    assert asm.dropped["superseded"] == 1
    assert asm.feed(decode(old[2])) is None and asm.dropped["incomplete"] == 1  # an orphan chunk is ignored


def test_oversized_announced_update_is_dropped():
    policy = NullPolicy(n_params=5000)
    asm = WeightAssembler(max_total_bytes=1000)
    assert asm.feed(decode(_chunks(policy, 1)[0])) is None and asm.dropped["too_big"] == 1


def test_trainable_subset_needs_opt_in():
    hub = InProcHub()
    pub = WeightPublisher(link=hub.bind(), heartbeat_s=0.05)
    strict, partial = NullPolicy(n_params=100), NullPolicy(n_params=100)
    s1 = WeightSubscriber("inproc", strict, link_factory=hub.connect, heartbeat_s=0.05)
    s2 = WeightSubscriber("inproc", partial, link_factory=hub.connect, allow_subset=True, heartbeat_s=0.05)
    try:
        assert wait_for(lambda: s1.publisher_alive and s2.publisher_alive)
        pub.publish({"bias": np.full(7, 0.3, np.float32)}, version=1, step=1, subset=True)
        assert wait_for(lambda: s2.apply_pending())
        assert wait_for(lambda: s1.rejected["names"] == 1)
        np.testing.assert_allclose(partial.infer({})["actions"], np.tanh(0.3))
        assert strict.version == 0
    finally:
        for x in (s1, s2, pub):
            x.close()


def test_policy_server_swaps_between_batches_and_reports_the_version(bus):
    pub, sub, policy = bus
    hub = InProcHub()
    server = PolicyServer(policy, link=hub.bind(), weights=sub, heartbeat_s=0.05).start()
    client = PolicyClient("inproc", link_factory=hub.connect, heartbeat_s=None)
    try:
        assert wait_for(lambda: sub.publisher_alive)
        assert client.infer({})["policy_version"] == 0
        pub.publish(good(policy, 0.4), version=7, step=70)
        assert wait_for(lambda: client.infer({})["policy_version"] == 7)
        out = client.infer({})
        np.testing.assert_allclose(out["actions"], np.tanh(0.4), rtol=1e-6)
        meta = client.fetch_metadata()
        assert meta["policy_version"] == 7 and meta["server"]["weights"]["counters"]["applied"] == 1
    finally:
        client.close()
        server.stop()


def test_hot_swap_wrapper_installs_before_infer(bus):
    pub, sub, policy = bus
    wrapped = HotSwapPolicy(policy, sub)
    assert wait_for(lambda: sub.publisher_alive)
    pub.publish(good(policy, 0.2), version=2, step=1)
    assert wait_for(lambda: sub.counters["accepted"] == 1)
    assert wrapped.infer({})["policy_version"] == 2 and wrapped.metadata["policy_version"] == 2


def test_refusing_target_counts_a_load_rejection(bus):
    pub, sub, policy = bus

    def refuse(weights, version):
        raise RuntimeError("optimizer state mismatch")
    policy.load_weights = refuse
    assert wait_for(lambda: sub.publisher_alive)
    pub.publish(good(policy, 0.2), version=2, step=1)
    assert wait_for(lambda: sub.counters["accepted"] == 1)
    assert not sub.apply_pending() and sub.rejected["load"] == 1 and sub.applied_version == 0
