"""Transition stream over the in-process twin: ordering, acknowledgements, de-duplication, backpressure
and drop counters, rejection of bad records, and persistence through the real Recorder."""

import time

import numpy as np
import pytest

from hil_robot.data import EpisodeStore, Recorder
from hil_robot.data.synthetic import observation, step_record
from hil_robot.transport.codec import decode, encode
from hil_robot.transport.links import InProcHub
from hil_robot.transport.transitions import TransitionReceiver, TransitionSender


class ListSink:
    def __init__(self, fail_on_step=None):
        self.steps, self.episodes, self.flushes = [], [], 0
        self.fail_on_step = fail_on_step

    def add(self, step):
        if step.step == self.fail_on_step:
            raise ValueError(f"step {step.step} breaks the store contract")
        self.steps.append(step)

    def end_episode(self, success, **meta):
        self.episodes.append((success, meta))

    def flush(self):
        self.flushes += 1


def small_step(ep, i):
    return step_record(ep, i, hw=(8, 8))


def pair(sink, **kw):
    hub = InProcHub()
    rx = TransitionReceiver(sink, link=hub.bind(), heartbeat_s=0.05).start()
    tx = TransitionSender("inproc", link_factory=hub.connect, heartbeat_s=0.05, **kw)
    return hub, rx, tx


def test_steps_arrive_in_order_acknowledged_and_flushed():
    sink = ListSink()
    hub, rx, tx = pair(sink)
    try:
        for i in range(50):
            assert tx.add(small_step("ep", i))
        assert tx.end_episode(True, task="pick_cube")
        assert tx.flush(5.0)
        assert [s.step for s in sink.steps] == list(range(50))
        assert sink.episodes == [(True, {"task": "pick_cube"})] and sink.flushes >= 1
        np.testing.assert_array_equal(sink.steps[7].observation["images/front"], small_step("ep", 7).observation["images/front"])
        st = tx.status()
        assert st["acked_upto"] == 50 and st["counters"]["acked"] == 51 and st["counters"]["dropped"] == 0
        assert rx.status()["counters"]["persisted_steps"] == 50
    finally:
        tx.close()
        rx.stop()


def test_receiver_restart_loses_nothing_unacknowledged():
    sink = ListSink()
    hub = InProcHub()
    tx = TransitionSender("inproc", link_factory=hub.connect, heartbeat_s=0.05, ack_timeout_s=0.1)
    try:
        for i in range(20):
            tx.add(small_step("ep", i))
        time.sleep(0.1)  # sent into the void: no receiver bound yet
        assert tx.status()["acked_upto"] == -1
        rx = TransitionReceiver(sink, link=hub.bind(), heartbeat_s=0.05).start()
        assert tx.flush(5.0)
        rx.stop()
        assert [s.step for s in sink.steps] == list(range(20))
        assert tx.status()["counters"]["resent"] >= 20
    finally:
        tx.close()


def test_duplicates_and_gaps_are_not_persisted_twice():
    sink = ListSink()
    hub = InProcHub()
    rx = TransitionReceiver(sink, link=hub.bind())
    link = hub.connect()

    def item(seq, base=0):
        return [*encode({"type": "step", "session": "s", "seq": seq, "base": base}),
                *encode({"type": "payload", "record": small_step("ep", seq).to_dict()})]
    for seq in (0, 1, 1, 3, 2):  # a re-sent 1, and 3 before 2
        link.send(item(seq))
    rx.poll_once(1.0)
    assert [s.step for s in sink.steps] == [0, 1, 2]
    c = rx.status()["counters"]
    assert c["duplicates"] == 1 and c["out_of_order"] == 1
    assert decode(link.recv(1.0)[1])["upto"] == 2


def test_a_record_the_sink_rejects_is_reported_and_the_stream_goes_on():
    sink = ListSink(fail_on_step=3)
    hub, rx, tx = pair(sink)
    try:
        for i in range(6):
            tx.add(small_step("ep", i))
        assert tx.flush(5.0)
        assert [s.step for s in sink.steps] == [0, 1, 2, 4, 5]
        assert tx.status()["counters"]["rejected_by_receiver"] == 1
        assert "breaks the store contract" in tx.status()["last_rejection"]
        assert rx.status()["counters"]["rejected"] == 1
    finally:
        tx.close()
        rx.stop()


@pytest.mark.parametrize("on_full", ["drop_newest", "drop_oldest", "block"])
def test_full_queue_applies_the_configured_policy_and_counts(on_full):
    hub = InProcHub()
    hub.bind()  # nobody reads: nothing is ever acknowledged
    tx = TransitionSender("inproc", link_factory=hub.connect, queue_size=4, window=2, on_full=on_full, block_s=0.05,
                          ack_timeout_s=10.0)
    try:
        results = [tx.add(small_step("ep", i)) for i in range(12)]
        c = tx.status()["counters"]
        assert c["dropped"] >= 12 - 4 - 2 - 1  # queue + window (+1 the thread may hold) absorb the rest
        if on_full == "drop_oldest":
            assert all(results) and c["enqueued"] == 12  # the newest always gets in, an older one goes
        else:
            assert c["enqueued"] + c["dropped"] == 12
            assert not all(results) and results[0]
        if on_full == "block":
            assert c["blocked"] >= c["dropped"] and c["blocked_s"] >= 0.05 * c["dropped"] * 0.9
    finally:
        tx.close(timeout_s=0.1)


def test_unsendable_items_fail_in_the_callers_thread_and_the_stream_goes_on():
    sink = ListSink()
    hub, rx, tx = pair(sink)
    try:
        from hil_robot.transport.codec import CodecError

        with pytest.raises(CodecError, match="cannot send objects"):
            tx.end_episode(True, callback=print)
        bad = small_step("ep", 0)
        bad.observation["images/front"] = np.array([object()])
        with pytest.raises(CodecError, match="dtype object"):
            tx.add(bad)
        tx.add(small_step("ep", 0))
        assert tx.flush(5.0) and [s.step for s in sink.steps] == [0]
    finally:
        tx.close()
        rx.stop()


def test_sender_reports_receiver_liveness():
    sink = ListSink()
    hub, rx, tx = pair(sink)
    try:
        deadline = time.monotonic() + 3
        while not tx.status()["receiver_alive"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert tx.status()["receiver_alive"]  # heartbeats alone keep it alive
        assert "inproc" not in rx.status()["senders"] and len(rx.status()["senders"]) == 1
    finally:
        tx.close()
        rx.stop()


def test_streamed_episode_lands_in_a_real_episode_store(tmp_path):
    store = EpisodeStore(tmp_path / "learner_store", image_codec="png")
    recorder = Recorder(store, pre_intervention_k=2)
    hub, rx, tx = pair(recorder)
    segments = ["autonomous"] * 4 + ["recovery", "correction", "correction"]
    try:
        for i, seg in enumerate(segments):
            tx.add(step_record("ep_remote", i, seg, last=i == len(segments) - 1))
        tx.end_episode(True, final_observation=observation(len(segments)), task="pick_cube")
        assert tx.flush(10.0)
    finally:
        tx.close()
        rx.stop()
        recorder.close()
    reread = EpisodeStore(tmp_path / "learner_store", read_only=True)
    (meta,) = reread.episodes()
    assert meta.num_steps == len(segments) and meta.success
    assert meta.segment_counts == {"autonomous": 2, "pre_intervention": 2, "recovery": 1, "correction": 2}
