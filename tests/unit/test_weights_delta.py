"""Delta weight sync (learner.finetune=lora) on real loopback sockets: a subscriber without the base
resyncs base + delta over the publisher's resync endpoint, then applies deltas; a delta round trip
reproduces the learner's outputs; deltas for another base or rank, NaN deltas and stale versions
are rejected, counted, and the last good weights keep serving."""

import time

import numpy as np
import pytest
import torch

from hil_robot.transport.weights import WeightPublisher, WeightSubscriber, serialize
from policies.vla import VLAPolicy
from policies.vla_model import VLAModel, VLAModelConfig

HW = (32, 32)


def lora_policy(seed: int, rank: int = 4) -> VLAPolicy:
    torch.manual_seed(seed)  # each seed is another random base
    return VLAPolicy(VLAModel(VLAModelConfig(image_hw=HW, d_model=32, n_heads=2, vision_channels=(8, 8, 16, 16),
                                             dropout=0.0, head="l1", finetune="lora", lora_rank=rank)))


def obs() -> dict:
    rng = np.random.default_rng(0)
    o = {f"images/{c}": rng.integers(0, 255, (*HW, 3), dtype=np.uint8) for c in ("front", "wrist")}
    o.update(state=rng.normal(size=15).astype(np.float32), prompt="pick up the cube", timestamp_s=0.0)
    return o


def train_step(policy: VLAPolicy, scale: float) -> None:
    """Stand-in for an optimiser step: new adapter values (B non-zero, so outputs change)."""
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if ".lora_" in n:
                p.add_(torch.randn_like(p) * scale)


def wait_applied(sub: WeightSubscriber, version: int, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sub.apply_pending()  # the owner's boundary (between chunks)
        if sub.applied_version == version:
            return True
        time.sleep(0.01)
    return False


def wait_for(cond, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def bus(free_port):
    learner = lora_policy(0)
    pub = WeightPublisher(f"tcp://127.0.0.1:{free_port()}", heartbeat_s=0.05)
    pub.close_linger_s = 0.0  # no late subscriber to wait for
    pub.set_base(learner.base_numpy(), learner.base_id(), learner.adapter_info())
    subs: list[WeightSubscriber] = []

    def subscribe(target: VLAPolicy) -> WeightSubscriber:
        subs.append(WeightSubscriber(pub.endpoint, target, heartbeat_s=0.05))
        return subs[-1]

    yield learner, pub, subscribe
    for s in subs:
        s.close()
    pub.close()


def test_late_joiner_resyncs_base_then_follows_deltas_exactly(bus):
    learner, pub, subscribe = bus
    train_step(learner, 0.3)
    info = pub.publish_delta(learner.delta_numpy(), version=1, step=10)
    assert info["bytes"] < len(serialize(learner.state_numpy())) / 4  # only the adapters travel
    served = lora_policy(1)  # joins late, holding another base
    assert served.base_id() != learner.base_id()
    sub = subscribe(served)
    assert wait_applied(sub, 1), sub.status()
    assert sub.counters["resyncs"] == 1 and served.base_id() == learner.base_id()
    np.testing.assert_allclose(served.infer(obs())["actions"], learner.infer(obs())["actions"], atol=1e-6)
    for v in (2, 3):  # now deltas only: no further resync, outputs still the learner's
        train_step(learner, 0.3)
        pub.publish_delta(learner.delta_numpy(), version=v, step=10 * v)
        assert wait_applied(sub, v), sub.status()
    assert sub.counters["resyncs"] == 1 and sub.counters["deltas"] >= 1
    np.testing.assert_allclose(served.infer(obs())["actions"], learner.infer(obs())["actions"], atol=1e-6)


def test_bad_deltas_are_rejected_counted_and_the_last_good_keeps_serving(bus):
    learner, pub, subscribe = bus
    train_step(learner, 0.3)
    pub.publish_delta(learner.delta_numpy(), version=1, step=1)
    served = lora_policy(1)
    sub = subscribe(served)
    assert wait_applied(sub, 1), sub.status()
    good = served.infer(obs())["actions"]
    adapter = learner.adapter_info()
    base_id = learner.base_id()
    train_step(learner, 0.3)
    delta = learner.delta_numpy()
    nan = {k: v.copy() for k, v in delta.items()}
    next(iter(nan.values())).flat[0] = np.nan
    other_rank = lora_policy(0, rank=8)
    bad = [  # (reason, payload, header extras, version)
        ("base_mismatch", delta, {"base_id": "0" * 32, "adapter": adapter}, 2),
        ("rank_mismatch", other_rank.delta_numpy(), {"base_id": other_rank.base_id(),
                                                      "adapter": other_rank.adapter_info()}, 3),
        ("non_finite", nan, {"base_id": base_id, "adapter": adapter}, 4),
        ("version", delta, {"base_id": base_id, "adapter": adapter}, 0),  # stale
    ]
    for reason, payload, extra, version in bad:
        before = sub.rejected[reason]  # (joining with another base counted one base_mismatch)
        pub._send(serialize(payload), version, 0, extra={"kind": "delta", "prev_version": 1, **extra})
        assert wait_for(lambda: sub.rejected[reason] == before + 1), (reason, sub.status())
        time.sleep(0.2)  # the bus re-sends it on a few heartbeats: judged once
        assert sub.rejected[reason] == before + 1, (reason, sub.status())
        sub.apply_pending()
        assert sub.applied_version == 1 and served.version == 1, reason
        np.testing.assert_array_equal(served.infer(obs())["actions"], good)
    pub.publish_delta(delta, version=5, step=5)  # a good delta still goes through afterwards
    assert wait_applied(sub, 5), sub.status()
    np.testing.assert_allclose(served.infer(obs())["actions"], learner.infer(obs())["actions"], atol=1e-6)
    assert sub.counters["resyncs"] == 1  # the base-mismatch request was answered with the base it holds


def test_a_full_weights_server_refuses_deltas_by_name(bus):
    learner, pub, subscribe = bus
    torch.manual_seed(0)
    full = VLAPolicy(VLAModel(VLAModelConfig(image_hw=HW, d_model=32, n_heads=2, vision_channels=(8, 8, 16, 16),
                                             dropout=0.0, head="l1")))
    sub = subscribe(full)
    pub.publish_delta(learner.delta_numpy(), version=1, step=1)
    assert wait_for(lambda: sub.rejected["rank_mismatch"] >= 1), sub.status()
    assert "learner.finetune" in sub.last_error and sub.applied_version == 0


def test_a_flood_of_resync_requests_costs_one_serialisation_per_interval(bus):
    from hil_robot.transport.codec import encode
    from hil_robot.transport.links import ZmqLink

    learner, pub, _ = bus
    pub.publish_delta(learner.delta_numpy(), version=1, step=1)
    pub.resync_min_interval_s = 60.0
    peer = ZmqLink("dealer", f"tcp://127.0.0.1:{pub.resync_port}")
    try:
        for _ in range(20):
            peer.send(encode({"type": "resync"}))
        peer.send([b"\x00garbage"])
        got = peer.recv(10.0)
        assert got is not None  # the first request is answered with base + delta
        assert wait_for(lambda: pub.resync_counters["requests"] == 20 and pub.resync_counters["bad_requests"] == 1)
        assert pub.resync_counters["served"] == 1 and pub.resync_counters["throttled"] == 19
    finally:
        peer.close()
