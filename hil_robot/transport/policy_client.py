"""Policy client: a ``types.Policy`` whose ``infer`` runs on a remote ``PolicyServer`` (wrap, don't fork).

    client = PolicyClient("tcp://gpu-host:5555", timeout_s=0.5)
    out = client.infer(obs)        # {"actions": f32[H, 7], "policy_version": int, "timing": {...}, "rtt_ms": float}

Every request carries an id; replies with another id (late answers to timed-out requests) are
dropped. A request unanswered within ``timeout_s`` raises ``TransportTimeout`` (a TimeoutError) and
the socket is replaced, so a restarted server is picked up by the next call; with ``retries`` the
client re-sends after an exponentially growing pause (capped by ``backoff_max_s``). Error replies
are raised as ``RemotePolicyError`` carrying the server's message. A background heartbeat pings an
idle server every ``heartbeat_s`` and logs when it goes silent or comes back (``status()``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from hil_robot.transport.codec import CodecError, decode, encode
from hil_robot.transport.links import Link, LinkBusy, ZmqLink
from hil_robot.transport.liveness import Liveness
from hil_robot.transport.security import CurveKeys
from hil_robot.types import ContractError

log = logging.getLogger(__name__)

REPLY_TYPES = frozenset({"result", "metadata", "pong", "ok", "error"})


class TransportTimeout(TimeoutError):
    """No reply in time: the server is down, overloaded or unreachable."""


class RemotePolicyError(RuntimeError):
    """The server answered with an error reply; ``kind`` and the server's message are kept."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class PolicyClient:
    """A Policy backed by a remote server (DEALER). Thread-safe: one request at a time.

    link_factory: builds a fresh Link (default: a zmq DEALER connected to ``endpoint``); used
    again after every timeout. Unit tests pass ``InProcHub().connect``.
    """

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5555",
        *,
        timeout_s: float = 2.0,
        retries: int = 0,
        backoff_max_s: float = 2.0,
        curve: CurveKeys | None = None,
        heartbeat_s: float | None = 0.5,
        max_frame_bytes: int = 256 * 1024 * 1024,
        link_factory: Callable[[], Link] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s, self.retries, self.backoff_max_s = timeout_s, retries, backoff_max_s
        self.max_frame_bytes = max_frame_bytes
        self._factory = link_factory or (lambda: ZmqLink(
            "dealer", endpoint, curve=curve, max_frame_bytes=max_frame_bytes,
            heartbeat_s=heartbeat_s or 0.5, reconnect_ivl_max_s=backoff_max_s))
        self._link: Link | None = self._factory()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self.server = Liveness("policy server", 3 * (heartbeat_s or 0.5))
        self.counters = {"requests": 0, "timeouts": 0, "reconnects": 0, "errors": 0, "stale_replies": 0}
        self.last_rtt_ms = float("nan")
        self.policy_version = -1
        self._last_traffic = 0.0
        self._closed = threading.Event()
        self._hb: threading.Thread | None = None
        if heartbeat_s:
            self._hb = threading.Thread(target=self._heartbeat, args=(heartbeat_s,), name="policy-client-hb", daemon=True)
            self._hb.start()

    # ------------------------------------------------------------------ Policy interface
    def infer(self, obs: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        """obs (observation dict) -> {"actions": f32[H, D], "policy_version", "timing", "rtt_ms", ...}.

        timeout_s: this request's deadline (default: the client's ``timeout_s``)."""
        reply = self.request({"type": "infer", "obs": obs}, timeout_s=timeout_s)
        try:  # any width: the controller's action-space adapter checks it against policy.action_space
            actions = np.asarray(reply["actions"])
            if actions.dtype.kind not in "fiu" or actions.ndim != 2 or min(actions.shape) < 1:
                raise ContractError(f"'actions' must be a numeric chunk [H, D], got {actions.dtype} {actions.shape}")
            actions = actions.astype(np.float32, copy=False)
        except (KeyError, ContractError) as e:
            raise RemotePolicyError(f"server sent a malformed result: {e}", "bad_reply") from None
        if not np.isfinite(actions).all():
            raise RemotePolicyError("server sent non-finite actions (NaN/Inf); refusing to pass them on", "bad_reply")
        reply["actions"] = actions
        reply.pop("type", None)
        reply.pop("id", None)
        self.policy_version = int(reply.get("policy_version", -1))
        return reply

    def reset(self) -> None:
        self.request({"type": "reset"})

    @property
    def metadata(self) -> dict[str, Any]:
        """The server's metadata, fetched once (``fetch_metadata()`` refreshes); policy_version is the latest seen."""
        if self._metadata is None:
            self._metadata = self.fetch_metadata()
        if self.policy_version >= 0:
            self._metadata["policy_version"] = self.policy_version
        return self._metadata

    def infer_batch(self, observations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self.infer(o) for o in observations]

    # ------------------------------------------------------------------ extra requests
    def fetch_metadata(self) -> dict[str, Any]:
        """Ask the server for {"name", "action_horizon", "action_dim", "policy_version", "server": {...}}."""
        meta = self.request({"type": "metadata"})["metadata"]
        meta["remote_endpoint"] = self.endpoint
        self._metadata = meta
        return meta

    def health(self, timeout_s: float | None = None) -> dict[str, Any]:
        """Ping: {"policy_version", "server_time_s", "rtt_ms"}; raises TransportTimeout if silent."""
        return self.request({"type": "ping"}, timeout_s=timeout_s, retries=0)

    def wait_ready(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Block until the server answers (pinging with backoff), then return its metadata."""
        deadline = time.monotonic() + timeout_s
        pause = 0.05
        while True:
            left = deadline - time.monotonic()
            try:
                self.health(timeout_s=max(min(left, 1.0), 0.01))
                return self.fetch_metadata()
            except TransportTimeout:
                if time.monotonic() + pause > deadline:
                    raise TransportTimeout(f"policy server at {self.endpoint} not answering after {timeout_s:.1f} s; "
                                           "is `hil-robot serve-policy` running there?") from None
                time.sleep(pause)
                pause = min(pause * 2, self.backoff_max_s)

    def request(self, msg: dict[str, Any], *, timeout_s: float | None = None, retries: int | None = None) -> dict[str, Any]:
        """Send one request; return the reply dict (raises TransportTimeout / RemotePolicyError)."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        retries = self.retries if retries is None else retries
        pause = 0.05
        for attempt in range(retries + 1):
            try:
                return self._round_trip(msg, timeout_s)
            except TransportTimeout:
                if attempt == retries:
                    raise
                time.sleep(pause)  # back off before re-sending on the fresh socket
                pause = min(pause * 2, self.backoff_max_s)
        raise AssertionError("unreachable")

    def _round_trip(self, msg: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        with self._lock:
            if self._closed.is_set():
                raise RuntimeError("PolicyClient is closed")
            if self._link is None:
                self._link = self._factory()
            rid = next(self._ids)
            frames = encode({**msg, "id": rid})  # CodecError here: the caller sent something unsendable
            self.counters["requests"] += 1
            t0 = time.perf_counter()
            try:
                self._link.send(frames)
            except LinkBusy:
                self.counters["timeouts"] += 1
                self._replace_link()
                raise TransportTimeout(f"cannot send to policy server {self.endpoint}: not connected") from None
            deadline = t0 + timeout_s
            while True:
                left = deadline - time.perf_counter()
                got = self._link.recv(left) if left > 0 else None
                if got is None:
                    self.counters["timeouts"] += 1
                    self._replace_link()
                    raise TransportTimeout(f"no reply from policy server {self.endpoint} within {timeout_s:.3f} s "
                                           f"({msg['type']} request {rid}); the client reconnects on the next call")
                try:
                    reply = decode(got[1], max_frame_bytes=self.max_frame_bytes, allowed_types=REPLY_TYPES)
                except CodecError as e:
                    log.warning("malformed reply from %s dropped: %s", self.endpoint, e)
                    continue
                if reply.get("id") != rid:
                    if reply.get("type") == "error" and reply.get("id") is None:
                        self._note_traffic()
                        self.counters["errors"] += 1
                        raise RemotePolicyError(f"policy server: {reply.get('message')}", str(reply.get("kind")))
                    self.counters["stale_replies"] += 1
                    continue
                self.last_rtt_ms = (time.perf_counter() - t0) * 1e3
                self._note_traffic()
                if reply["type"] == "error":
                    self.counters["errors"] += 1
                    raise RemotePolicyError(f"policy server: {reply.get('message')}", str(reply.get("kind")))
                reply["rtt_ms"] = self.last_rtt_ms
                return reply

    def _note_traffic(self) -> None:
        self._last_traffic = time.monotonic()
        self.server.beat(self.endpoint)

    def _replace_link(self) -> None:
        """Drop the socket (and whatever it queued) after a timeout; the next call connects afresh."""
        if self._link is not None:
            self._link.close()
        self._link = None
        self.counters["reconnects"] += 1

    def _heartbeat(self, period_s: float) -> None:
        while not self._closed.wait(period_s):
            if time.monotonic() - self._last_traffic < period_s or self._lock.locked():
                self.server.check()
                continue
            try:
                self.request({"type": "ping"}, timeout_s=period_s, retries=0)
            except (TransportTimeout, RemotePolicyError, CodecError, RuntimeError):
                pass
            self.server.check()

    def status(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "server_alive": self.server.alive(self.endpoint),
                "last_reply_age_s": self.server.age_s(self.endpoint), "last_rtt_ms": self.last_rtt_ms,
                "policy_version": self.policy_version, "counters": dict(self.counters)}

    def close(self) -> None:
        self._closed.set()
        if self._hb is not None:
            self._hb.join(2.0)
        with self._lock:
            if self._link is not None:
                self._link.close()
                self._link = None

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
