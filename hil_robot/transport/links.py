"""The tiny interface every transport piece talks through, its zmq implementation and an in-process twin.

A ``Link`` moves lists of frames (bytes-like) between peers:

    link.send(frames, peer=b"")            # peer: routing id on a server link, ignored elsewhere
    link.recv(timeout_s) -> (peer, frames) | None
    link.close()

Server-side links (``ROUTER``, ``PUB``) bind, client-side links (``DEALER``, ``SUB``) connect. The
policy server/client, weight bus and transition stream only ever see a Link, so unit tests run them
over ``InProcHub`` (queues, no sockets) and integration tests over real zmq sockets.

``ZmqLink`` owns its own ``zmq.Context`` (and CURVE authenticator when it is a CURVE server) so
closing one component never disturbs another in the same process.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from typing import Any, Protocol, Sequence

import zmq

from hil_robot.transport.security import CurveKeys

log = logging.getLogger(__name__)

Frames = list[Any]


class LinkClosed(RuntimeError):
    """The link was closed (by this process)."""


class LinkBusy(OSError):
    """A send could not be queued in time (no connected peer, or its queue is full)."""


class Link(Protocol):
    def send(self, frames: Sequence[Any], peer: bytes = b"") -> None: ...

    def recv(self, timeout_s: float) -> tuple[bytes, Frames] | None: ...

    def close(self) -> None: ...


_SNDMORE = zmq.SNDMORE
_SERVER_KINDS = {"router": zmq.ROUTER, "pub": zmq.PUB}
_CLIENT_KINDS = {"dealer": zmq.DEALER, "sub": zmq.SUB}


class ZmqLink:
    """A zmq socket behind the Link interface.

    kind: router | pub (bind ``endpoint``) or dealer | sub (connect ``endpoint``).
    curve: CURVE keys; servers then accept only peers whose public key is authorised.
    hwm: send/receive high-water marks (messages). For PUB, the newest messages win when full.
    """

    def __init__(
        self,
        kind: str,
        endpoint: str,
        *,
        curve: CurveKeys | None = None,
        hwm: int = 1000,
        max_frame_bytes: int = 256 * 1024 * 1024,
        reconnect_ivl_s: float = 0.05,
        reconnect_ivl_max_s: float = 2.0,
        heartbeat_s: float = 0.5,
    ) -> None:
        if kind not in _SERVER_KINDS and kind not in _CLIENT_KINDS:
            raise ValueError(f"link kind {kind!r} unknown; use router, pub, dealer or sub")
        self.kind, self.endpoint = kind, endpoint
        self.is_server = kind in _SERVER_KINDS
        self.ctx = zmq.Context(io_threads=1)
        self._auth = None
        self.sock = self.ctx.socket(_SERVER_KINDS.get(kind) or _CLIENT_KINDS[kind])
        s = self.sock
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDHWM, hwm)
        s.setsockopt(zmq.RCVHWM, hwm)
        # libzmq drops a peer whose frame exceeds this before it is even buffered (fuzz / DoS guard)
        s.setsockopt(zmq.MAXMSGSIZE, int(max_frame_bytes) + 1024)
        # Dead TCP peers (half-open connections) are found by TCP keepalive, generous so that a
        # live-but-starved connection is not dropped with what is in flight on it. Not by ZMTP
        # heartbeats: in libzmq <= 4.3.5 a heartbeat timeout on a connection whose input is stopped
        # at the receive high-water mark aborts the whole process (assert !_io_error, libzmq
        # issues 3937/4364/4767) — a peer flooding an endpoint could kill it. Prompt "peer gone"
        # reports come from the application heartbeats (liveness.py). Reconnects back off
        # exponentially up to the max.
        s.setsockopt(zmq.TCP_KEEPALIVE, 1)
        s.setsockopt(zmq.TCP_KEEPALIVE_IDLE, max(int(10 * heartbeat_s), 5))
        s.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 1)
        s.setsockopt(zmq.TCP_KEEPALIVE_CNT, 5)
        s.setsockopt(zmq.RECONNECT_IVL, max(int(reconnect_ivl_s * 1000), 1))
        s.setsockopt(zmq.RECONNECT_IVL_MAX, max(int(reconnect_ivl_max_s * 1000), 1))
        if kind == "router":
            s.setsockopt(zmq.ROUTER_MANDATORY, 0)  # replies to a vanished peer are dropped, never block
        if kind == "sub":
            s.setsockopt(zmq.SUBSCRIBE, b"")
        if kind == "dealer":
            s.setsockopt(zmq.SNDTIMEO, 1000)  # a send never wedges its thread; raises LinkBusy instead
        if curve is not None:
            if self.is_server:
                self._auth = curve.start_authenticator(self.ctx)
                curve.apply_server(s)
            else:
                curve.apply_client(s)
        try:
            if self.is_server:
                s.bind(endpoint)
            else:
                s.connect(endpoint)
        except zmq.ZMQError as e:
            self.close()
            raise OSError(f"cannot {'bind' if self.is_server else 'connect'} {endpoint}: {e}") from None
        self._closed = False
        self._rcvtimeo_ms = -1  # the RCVTIMEO currently set on the socket (-1: libzmq's default)

    @property
    def bound_endpoint(self) -> str:
        return self.sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def send(self, frames: Sequence[Any], peer: bytes = b"") -> None:
        # one send() per frame instead of send_multipart (which re-checks every part's type first);
        # copy=False: pyzmq still copies frames under its copy threshold (64 kB), big ones go zero-copy
        send = self.sock.send
        try:
            if self.kind == "router":
                send(peer, _SNDMORE)
            last = len(frames) - 1
            for i, f in enumerate(frames):
                send(f, _SNDMORE if i < last else 0, copy=False)
        except zmq.Again:
            raise LinkBusy(f"{self.endpoint}: send queue full (peer not connected or not reading)") from None

    def recv(self, timeout_s: float) -> tuple[bytes, Frames] | None:
        sock = self.sock
        if timeout_s <= 0:
            # a message already queued needs no wait (the common case when batching)
            if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return None
        else:
            # wait inside libzmq's blocking receive (RCVTIMEO) rather than zmq_poll() + receive: on
            # loopback the poll path costs tens of microseconds more per message. The option is set
            # only when the timeout changes.
            ms = max(int(timeout_s * 1000), 1)
            if ms != self._rcvtimeo_ms:
                sock.setsockopt(zmq.RCVTIMEO, ms)
                self._rcvtimeo_ms = ms
        try:
            f = sock.recv(copy=False)
        except zmq.Again:
            return None
        frames = [f]
        while f.more:  # the rest of a multipart message is already here (zmq delivers it whole)
            f = sock.recv(copy=False)
            frames.append(f)
        if self.kind == "router":
            return frames[0].bytes, frames[1:]
        return b"", frames

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        try:
            self.sock.close(linger=0)
        finally:
            if self._auth is not None:
                self._auth.stop()
            self.ctx.term()


# ----------------------------------------------------------------------------- in-process twin


class InProcHub:
    """An in-process stand-in for one bound zmq endpoint: ``bind()`` once, ``connect()`` many times.

    Frames are copied to ``bytes`` on the way (as a wire would), so senders may reuse buffers.
    Server links address clients by peer id; for PUB/SUB semantics call ``send(frames)`` on the
    server link with ``peer=b""`` and every connected client receives it.
    """

    def __init__(self, maxsize: int = 0) -> None:
        self._server_inbox: queue.Queue = queue.Queue(maxsize)
        self._clients: dict[bytes, queue.Queue] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.bound = False
        self.maxsize = maxsize

    def bind(self) -> "_InProcServerLink":
        if self.bound:
            raise OSError("InProcHub: address already in use")
        self.bound = True
        return _InProcServerLink(self)

    def connect(self) -> "_InProcClientLink":
        peer = b"peer-%d" % next(self._ids)
        with self._lock:
            self._clients[peer] = queue.Queue(self.maxsize)
        return _InProcClientLink(self, peer)


def _copy(frames: Sequence[Any]) -> Frames:
    return [bytes(getattr(f, "buffer", f)) for f in frames]


def _get(q: queue.Queue, timeout_s: float) -> Any:
    try:
        return q.get(timeout=timeout_s) if timeout_s > 0 else q.get_nowait()
    except queue.Empty:
        return None


class _InProcServerLink:
    def __init__(self, hub: InProcHub) -> None:
        self.hub = hub

    def send(self, frames: Sequence[Any], peer: bytes = b"") -> None:
        with self.hub._lock:
            targets = list(self.hub._clients.values()) if not peer else [self.hub._clients.get(peer)]
        for q in targets:
            if q is not None:
                try:
                    q.put_nowait(_copy(frames))
                except queue.Full:
                    pass  # like a zmq PUB at its high-water mark

    def recv(self, timeout_s: float) -> tuple[bytes, Frames] | None:
        return _get(self.hub._server_inbox, timeout_s)

    def close(self) -> None:
        self.hub.bound = False


class _InProcClientLink:
    def __init__(self, hub: InProcHub, peer: bytes) -> None:
        self.hub, self.peer = hub, peer

    def send(self, frames: Sequence[Any], peer: bytes = b"") -> None:
        if self.hub.bound:
            self.hub._server_inbox.put((self.peer, _copy(frames)))

    def recv(self, timeout_s: float) -> tuple[bytes, Frames] | None:
        q = self.hub._clients.get(self.peer)
        if q is None:
            raise LinkClosed("link closed")
        got = _get(q, timeout_s)
        return None if got is None else (b"", got)

    def close(self) -> None:
        with self.hub._lock:
            self.hub._clients.pop(self.peer, None)


def tcp_endpoint(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
