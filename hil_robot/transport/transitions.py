"""Transition stream: controller/recorder -> learner on another machine (DESIGN §2, §5).

``TransitionSender`` (robot side, DEALER, connects) has the episode-sink interface itself —
``add(step)``, ``end_episode(success, **meta)``, ``close()`` — so the controller can record into it
like into a ``hil_robot.data.Recorder``. Calls only enqueue (a bounded queue); a background thread
numbers each item (``seq``), sends up to ``window`` unacknowledged items and keeps them until the
receiver acknowledges. Unacknowledged items are re-sent (go-back-N, on a fresh socket) after
``ack_timeout_s``, so a receiver restart loses nothing that was not yet acknowledged. When the
queue is full the configured policy applies — ``block`` (backpressure: the caller waits up to
``block_s``, counted as ``blocked`` / ``blocked_s``, then the item is dropped), ``drop_newest`` or
``drop_oldest`` — and every drop is counted in ``counters["dropped"]``.

Wire: every message is a control frame ``{"type": "step" | "end_episode" | "ping", "seq", "session",
"base"}`` followed by the payload's frames (``{"type": "payload", "record": StepRecord.to_dict()}`` or
``{"type": "payload", "success", "meta"}``). The payload is encoded once, in the caller's thread
(so an unsendable record raises ``CodecError`` right there), and re-sends reuse its frames.

``TransitionReceiver`` (learner side, ROUTER, binds) persists items *in order* into its sink (a
``Recorder`` over the learner's own ``EpisodeStore``: ``add(StepRecord)``,
``end_episode(success, **meta)``), calls ``sink.flush()`` if it has one, and only then acknowledges them (cumulative ack per sender
session), so anything acknowledged is in the store. Duplicates (re-sends) are acknowledged again
but not persisted twice. An item the sink rejects (bad record) is acknowledged as rejected with the
sink's message, counted on both sides and logged — it cannot be fixed by re-sending.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
import uuid
from typing import Any, Callable, Protocol

from hil_robot.transport.codec import CodecError, decode, encode, error_message
from hil_robot.transport.links import Link, LinkBusy, ZmqLink
from hil_robot.transport.liveness import Liveness
from hil_robot.transport.security import CurveKeys
from hil_robot.transport.serving import BackgroundServing
from hil_robot.types import ContractError, StepRecord

log = logging.getLogger(__name__)

STREAM_TYPES = frozenset({"step", "end_episode", "ping"})
ACK_TYPES = frozenset({"ack", "error"})


class EpisodeSink(Protocol):
    """What the receiver writes into (``hil_robot.data.Recorder`` has this shape)."""

    def add(self, step: StepRecord) -> Any: ...

    def end_episode(self, success: bool, **meta: Any) -> Any: ...


class TransitionSender:
    """Robot-side end of the stream. Thread-safe ``add`` / ``end_episode``; see module doc."""

    def __init__(self, endpoint: str = "tcp://127.0.0.1:5557", *, curve: CurveKeys | None = None,
                 queue_size: int = 1024, window: int = 256, on_full: str = "block", block_s: float = 1.0,
                 ack_timeout_s: float = 1.0, heartbeat_s: float = 0.5, link_factory: Callable[[], Link] | None = None) -> None:
        if on_full not in ("block", "drop_newest", "drop_oldest"):
            raise ValueError(f"on_full={on_full!r}; choose block, drop_newest or drop_oldest")
        self.endpoint = endpoint
        self._factory = link_factory or (lambda: ZmqLink("dealer", endpoint, curve=curve, hwm=window * 2,
                                                         heartbeat_s=heartbeat_s))
        self.on_full, self.block_s, self.window = on_full, block_s, window
        self.ack_timeout_s, self.heartbeat_s = ack_timeout_s, heartbeat_s
        self.session = uuid.uuid4().hex[:16]
        self._queue: queue.Queue = queue.Queue(queue_size)
        self._inflight: collections.OrderedDict[int, tuple[str, list[Any]]] = collections.OrderedDict()
        self._next_seq = 0
        self.acked_upto = -1  # every seq <= this is persisted by the receiver
        self.counters = {"enqueued": 0, "sent": 0, "acked": 0, "resent": 0, "dropped": 0, "blocked": 0,
                         "blocked_s": 0.0, "rejected_by_receiver": 0, "bytes_sent": 0, "reconnects": 0}
        self.last_rejection = ""
        self.receiver = Liveness("transition receiver", 3 * heartbeat_s)
        self._count_lock = threading.Lock()
        self._closed = threading.Event()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name="transition-sender", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ sink interface
    def add(self, step: StepRecord) -> bool:
        """Queue one step record; False if it was dropped (queue full)."""
        if not isinstance(step, StepRecord):
            raise TypeError(f"add() takes a hil_robot.types.StepRecord, got {type(step).__name__}")
        return self._put("step", {"type": "payload", "record": step.to_dict()})

    def end_episode(self, success: bool, **meta: Any) -> bool:
        """Queue the end of the episode; ``meta`` must be msgpack-able (numpy arrays are fine)."""
        return self._put("end_episode", {"type": "payload", "success": bool(success), "meta": meta})

    def _put(self, kind: str, payload: dict[str, Any]) -> bool:
        if self._closed.is_set():
            raise RuntimeError("TransitionSender is closed")
        # encoded here, in the caller's thread: an unsendable record fails now, with a clear
        # CodecError, instead of wedging the stream later; re-sends reuse these frames
        item = (kind, encode(payload))
        return self._enqueue(item)

    def _enqueue(self, item: tuple[str, list[Any]]) -> bool:
        self._idle.clear()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            if self.on_full == "drop_newest":
                return self._drop("queue full, newest item dropped")
            if self.on_full == "drop_oldest":
                try:
                    self._queue.get_nowait()
                    self._drop("queue full, oldest item dropped")
                except queue.Empty:
                    pass
                return self._enqueue(item)
            t0 = time.monotonic()
            with self._count_lock:
                self.counters["blocked"] += 1
            try:
                self._queue.put(item, timeout=self.block_s)
            except queue.Full:
                return self._drop(f"queue full for {self.block_s:.2f} s (receiver too slow or gone), item dropped")
            finally:
                with self._count_lock:
                    self.counters["blocked_s"] += time.monotonic() - t0
        with self._count_lock:
            self.counters["enqueued"] += 1
        return True

    def _drop(self, why: str) -> bool:
        with self._count_lock:
            self.counters["dropped"] += 1
            n = self.counters["dropped"]
        if n == 1 or n % 100 == 0:
            log.warning("transition stream: %s (%d dropped so far)", why, n)
        return False

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued so far is acknowledged. True on success."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._queue.empty() and not self._inflight:
                return True
            time.sleep(0.002)
        return self._queue.empty() and not self._inflight

    # ------------------------------------------------------------------ background thread
    def _run(self) -> None:
        link: Link | None = self._factory()
        last_send = last_progress = time.monotonic()
        while not self._closed.is_set() or (not self._queue.empty() or self._inflight) and time.monotonic() < self._close_by:
            if link is None:
                link = self._factory()
                self.counters["reconnects"] += 1
            moved = False
            while len(self._inflight) < self.window:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                seq, self._next_seq = self._next_seq, self._next_seq + 1
                self._inflight[seq] = item
                self._send(link, seq, item)
                moved = True
            now = time.monotonic()
            if moved:
                last_send = now
                if len(self._inflight) == 1:
                    last_progress = now
            got = link.recv(0.0 if moved else 0.01)
            while got is not None:
                if self._on_reply(got[1]):
                    last_progress = time.monotonic()
                got = link.recv(0.0)
            now = time.monotonic()
            if self._inflight and now - last_progress > self.ack_timeout_s:
                # nothing acknowledged for a while: reconnect and re-send everything unacknowledged
                link.close()
                link = self._factory()
                self.counters["reconnects"] += 1
                for seq, item in self._inflight.items():
                    self._send(link, seq, item)
                    self.counters["resent"] += 1
                last_progress = last_send = now
            elif now - last_send > self.heartbeat_s:
                try:
                    link.send(encode({"type": "ping", "session": self.session, "seq": -1, "base": self.acked_upto + 1}))
                except LinkBusy:
                    pass
                last_send = now
            self.receiver.check()
            if self._queue.empty() and not self._inflight:
                self._idle.set()
        if link is not None:
            link.close()

    _close_by = float("inf")

    def _send(self, link: Link, seq: int, item: tuple[str, list[Any]]) -> None:
        kind, payload = item
        # control frame + the payload's frames; "base": where a fresh receiver starts expecting
        frames = [*encode({"type": kind, "seq": seq, "session": self.session, "base": self.acked_upto + 1}), *payload]
        try:
            link.send(frames)
        except LinkBusy:
            return  # stays in flight; re-sent after ack_timeout_s
        self.counters["sent"] += 1
        self.counters["bytes_sent"] += sum(memoryview(f).nbytes for f in frames)

    def _on_reply(self, frames: list[Any]) -> bool:
        try:
            msg = decode(frames, allowed_types=ACK_TYPES)
        except CodecError as e:
            log.warning("transition stream: malformed reply dropped: %s", e)
            return False
        self.receiver.beat(self.endpoint)
        if msg["type"] == "error":
            log.warning("transition receiver error: %s", msg.get("message"))
            return False
        for seq, why in msg.get("rejected", []) or []:
            self.counters["rejected_by_receiver"] += 1
            self.last_rejection = f"seq {seq}: {why}"
            log.error("transition receiver rejected item %s: %s", seq, why)
        upto = msg.get("upto")
        if msg.get("session") != self.session or not isinstance(upto, int) or upto <= self.acked_upto:
            return False
        while self._inflight and next(iter(self._inflight)) <= upto:
            self._inflight.popitem(last=False)
            self.counters["acked"] += 1
        self.acked_upto = upto
        return True

    def status(self) -> dict[str, Any]:
        with self._count_lock:
            counters = dict(self.counters)
        return {"endpoint": self.endpoint, "session": self.session, "queued": self._queue.qsize(),
                "in_flight": len(self._inflight), "acked_upto": self.acked_upto,
                "receiver_alive": self.receiver.alive(self.endpoint), "counters": counters,
                "last_rejection": self.last_rejection}

    def close(self, timeout_s: float = 5.0) -> None:
        """Try for up to timeout_s to get everything acknowledged, then stop."""
        self._close_by = time.monotonic() + timeout_s
        self._closed.set()
        self._thread.join(timeout_s + 2.0)
        if self._inflight or not self._queue.empty():
            log.warning("transition stream closed with %d unacknowledged and %d queued items",
                        len(self._inflight), self._queue.qsize())

    def __enter__(self) -> "TransitionSender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class TransitionReceiver(BackgroundServing):
    """Learner-side end: persists into ``sink`` in order, then acknowledges (see module doc)."""

    def __init__(self, sink: EpisodeSink, endpoint: str = "tcp://127.0.0.1:5557", *, curve: CurveKeys | None = None,
                 heartbeat_s: float = 0.5, max_frame_bytes: int = 256 * 1024 * 1024, flush_before_ack: bool = True,
                 link: Link | None = None) -> None:
        self.sink = sink
        self.flush_before_ack = flush_before_ack
        self.link: Link = link or ZmqLink("router", endpoint, curve=curve, hwm=10000, heartbeat_s=heartbeat_s,
                                          max_frame_bytes=max_frame_bytes)
        self.endpoint = getattr(self.link, "bound_endpoint", endpoint)
        self.max_frame_bytes = max_frame_bytes
        self.expected: collections.OrderedDict[str, int] = collections.OrderedDict()  # session -> next seq to persist
        self.max_sessions = 1024  # oldest-heard sessions beyond this are forgotten (peers name them)
        self.episode_owner: str | None = None  # the session whose episode is open in the sink
        self.senders = Liveness("transition sender", 3 * heartbeat_s)
        self.counters = {"received": 0, "persisted_steps": 0, "episodes": 0, "duplicates": 0, "out_of_order": 0,
                         "rejected": 0, "bad_frames": 0, "bytes_received": 0}
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_name = "transition-receiver"

    def poll_once(self, timeout_s: float) -> int:
        """Receive what arrives within timeout_s, persist it, acknowledge. Returns items persisted."""
        got = self.link.recv(timeout_s)
        if got is None:
            self.senders.check()
            return 0
        acks: dict[tuple[bytes, str], list[Any]] = {}
        persisted = 0
        while got is not None:
            peer, frames = got
            self.counters["received"] += 1
            self.counters["bytes_received"] += sum(memoryview(getattr(f, "buffer", f)).nbytes for f in frames)
            try:
                msg = decode(frames[:1], allowed_types=STREAM_TYPES, max_frame_bytes=self.max_frame_bytes)
                session, seq = msg["session"], msg["seq"]
                if type(session) is not str or not 0 < len(session) <= 64:
                    raise CodecError("'session' must be a non-empty string of at most 64 characters")
                if type(seq) is not int or type(msg.get("base", 0)) is not int or not -1 <= seq < 2**62 \
                        or not 0 <= msg.get("base", 0) < 2**62:
                    raise CodecError("'seq' and 'base' must be integers in [0, 2**62) (seq -1 for a ping)")
                if msg["type"] != "ping":
                    msg["payload"] = decode(frames[1:], allowed_types={"payload"}, max_frame_bytes=self.max_frame_bytes)
            except (CodecError, KeyError) as e:
                self.counters["bad_frames"] += 1
                self.link.send(encode(error_message(None, f"bad transition message: {e}", "bad_request")), peer=peer)
                got = self.link.recv(0.0)
                continue
            self.senders.beat(session)
            entry = acks.setdefault((peer, session), [])
            if msg["type"] != "ping":
                persisted += self._persist(session, seq, msg, entry)
            got = self.link.recv(0.0) if persisted < 512 else None
        if persisted and self.flush_before_ack and callable(getattr(self.sink, "flush", None)):
            try:
                self.sink.flush()  # make what we acknowledge durable (the store buffers writes)
            except Exception as e:
                log.error("sink flush failed, not acknowledging: %s", e)
                self.last_error = f"flush failed: {e}"
                return persisted
        for (peer, session), rejected in acks.items():
            self.link.send(encode({"type": "ack", "session": session, "upto": self.expected.get(session, 0) - 1,
                                   "rejected": rejected}), peer=peer)
        return persisted

    def _persist(self, session: str, seq: int, msg: dict[str, Any], rejected: list[Any]) -> int:
        expected = self.expected.get(session)
        if expected is None:
            expected = self.expected[session] = int(msg.get("base", 0))
            while len(self.expected) > self.max_sessions:  # forget the longest-silent other session
                old = next(s for s in self.expected if s != self.episode_owner)
                del self.expected[old]
        self.expected.move_to_end(session)
        if seq < expected:
            self.counters["duplicates"] += 1
            return 0
        if seq > expected:  # a gap: wait for the sender's go-back-N re-send
            self.counters["out_of_order"] += 1
            return 0
        payload = msg["payload"]
        try:
            if self.episode_owner is not None and session != self.episode_owner:
                # one episode at a time goes into the store: another sender cannot add to, or end,
                # the episode a sender has open
                raise ContractError(f"sender session {self.episode_owner} has an episode open in this store; "
                                    "a second robot needs its own receiver and store")
            if msg["type"] == "step":
                record = payload["record"]
                if not isinstance(record, dict):
                    raise ContractError(f"'record' must be a step record dict, got {type(record).__name__}")
                self.sink.add(StepRecord.from_dict(record))
                self.counters["persisted_steps"] += 1
                self.episode_owner = session
            else:
                meta = payload.get("meta") or {}
                if not isinstance(meta, dict):
                    raise ContractError(f"'meta' must be a dict, got {type(meta).__name__}")
                self.sink.end_episode(payload.get("success") is True, **meta)
                self.counters["episodes"] += 1
                self.episode_owner = None
        except Exception as e:  # a bad record: report it, do not wedge the stream
            self.counters["rejected"] += 1
            self.last_error = f"{type(e).__name__}: {e}"
            rejected.append([seq, self.last_error[:500]])
            log.error("transition %s/%d rejected by the sink: %s", session, seq, self.last_error)
        self.expected[session] = seq + 1
        return 1

    def status(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "counters": dict(self.counters), "senders": self.senders.status(),
                "last_error": self.last_error}
