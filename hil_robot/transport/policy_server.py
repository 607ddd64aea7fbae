"""Policy server: hosts any ``types.Policy`` behind a ROUTER endpoint (DESIGN §2, §5).

Requests (msgpack dicts, see ``codec``), each with a client-chosen ``id`` echoed in the reply:

    {"type": "infer", "id": 7, "obs": {...}}  -> {"type": "result", "id": 7, "actions": f32[H, D],
                                                   "policy_version": int, "timing": {...}, ...}
    {"type": "metadata", "id": 8}             -> {"type": "metadata", "id": 8, "metadata": {...}}
    {"type": "ping", "id": 9}                 -> {"type": "pong", "id": 9, "policy_version": int, ...}
    {"type": "reset", "id": 10}               -> {"type": "ok", "id": 10}

Anything else — junk frames, unknown types, oversized frames, a policy exception — gets
``{"type": "error", "id", "kind", "message"}`` and the server carries on. Requests queued at the
same moment (several robots) are served together: with ``policy.infer_batch(list[obs]) -> list[dict]``
in one call, otherwise one after another. Weight updates staged by a ``WeightSubscriber`` are
installed only between batches, so an ``infer`` never sees half of an update.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Callable

import numpy as np

from hil_robot.transport.codec import CodecError, decode, encode, error_message
from hil_robot.transport.links import Link, ZmqLink
from hil_robot.transport.liveness import Liveness
from hil_robot.transport.security import CurveKeys
from hil_robot.transport.serving import BackgroundServing

log = logging.getLogger(__name__)

REQUEST_TYPES = frozenset({"infer", "metadata", "ping", "reset"})


class PolicyService:
    """The socket-free core of the server: request frames in, reply frames out.

    weights: an optional ``WeightSubscriber`` (or anything with ``apply_pending() -> bool`` and
    ``status()``) whose staged updates are installed at batch boundaries.
    """

    def __init__(self, policy: Any, *, weights: Any = None, max_frame_bytes: int = 256 * 1024 * 1024,
                 max_batch: int = 8) -> None:
        self.policy = policy
        self.weights = weights
        self.max_frame_bytes = max_frame_bytes
        self.max_batch = max_batch
        self.can_batch = callable(getattr(policy, "infer_batch", None))
        self.counters = {"requests": 0, "infers": 0, "batches": 0, "batched_infers": 0, "errors": 0, "bad_frames": 0}
        self.started_s = time.time()
        meta = _safe_metadata(policy)
        self.version = int(meta.get("policy_version", -1))

    # ------------------------------------------------------------------ boundary between batches
    def apply_weights(self) -> bool:
        """Install a staged weight update (if any) — called only between batches."""
        if self.weights is None:
            return False
        applied = bool(self.weights.apply_pending())
        if applied:
            self.version = int(getattr(self.weights, "applied_version", self.version))
        return applied

    # ------------------------------------------------------------------ request handling
    def handle(self, requests: list[tuple[bytes, list[Any], float]]) -> list[tuple[bytes, list[Any]]]:
        """requests: (peer, frames, t_recv) -> replies: (peer, frames). Never raises."""
        replies: list[tuple[bytes, list[Any]]] = []
        infers: list[tuple[bytes, Any, dict[str, Any], float]] = []
        for peer, frames, t_recv in requests:
            self.counters["requests"] += 1
            try:
                msg = decode(frames, max_frame_bytes=self.max_frame_bytes, allowed_types=REQUEST_TYPES)
            except CodecError as e:
                self.counters["bad_frames"] += 1
                replies.append((peer, self._error(_peek_id(frames), str(e), "bad_request")))
                continue
            rid = msg.get("id")
            mtype = msg["type"]
            if mtype == "infer":
                obs = msg.get("obs")
                problem = "infer needs 'obs': a dict observation" if not isinstance(obs, dict) else _obs_problem(obs)
                if problem:
                    replies.append((peer, self._error(rid, problem, "bad_request")))
                else:
                    infers.append((peer, rid, obs, t_recv))
            elif mtype == "ping":
                replies.append((peer, encode({"type": "pong", "id": rid, "policy_version": self.version,
                                              "server_time_s": time.time()})))
            elif mtype == "metadata":
                replies.append((peer, self._reply(rid, {"type": "metadata", "id": rid, "metadata": self.metadata()})))
            elif mtype == "reset":
                try:
                    self.policy.reset()
                    replies.append((peer, encode({"type": "ok", "id": rid})))
                except Exception as e:  # the policy's own failure goes back to the caller
                    replies.append((peer, self._error(rid, f"reset failed: {type(e).__name__}: {e}", "policy_error")))
        if infers:
            replies += self._infer(infers)
        return replies

    def _infer(self, infers: list[tuple[bytes, Any, dict[str, Any], float]]) -> list[tuple[bytes, list[Any]]]:
        self.counters["batches"] += 1
        n = len(infers)
        t0 = time.perf_counter()
        results: list[Any]
        if n > 1 and self.can_batch:
            self.counters["batched_infers"] += n
            try:
                results = list(self.policy.infer_batch([obs for _, _, obs, _ in infers]))
                if len(results) != n:
                    raise RuntimeError(f"infer_batch returned {len(results)} results for {n} observations")
            except Exception as e:
                results = [e] * n
            per_item_ms = [(time.perf_counter() - t0) * 1e3] * n
        else:
            results, per_item_ms = [], []
            for _, _, obs, _ in infers:
                t = time.perf_counter()
                try:
                    results.append(self.policy.infer(obs))
                except Exception as e:
                    results.append(e)
                per_item_ms.append((time.perf_counter() - t) * 1e3)
        out = []
        for (peer, rid, _, t_recv), res, infer_ms in zip(infers, results, per_item_ms):
            self.counters["infers"] += 1
            if isinstance(res, Exception):
                out.append((peer, self._error(rid, f"policy raised {type(res).__name__}: {res}", "policy_error")))
                continue
            if not isinstance(res, dict) or "actions" not in res:
                out.append((peer, self._error(rid, "policy returned no 'actions' (expected a dict with float32[H, D])",
                                              "policy_error")))
                continue
            reply = dict(res)
            reply["actions"] = np.asarray(res["actions"], dtype=np.float32)
            reply["policy_version"] = int(res.get("policy_version", self.version))
            reply.update(type="result", id=rid)
            reply["timing"] = {"infer_ms": infer_ms, "batch_size": n,
                               "server_ms": (time.perf_counter() - t_recv) * 1e3}
            out.append((peer, self._reply(rid, reply)))
        return out

    def _reply(self, rid: Any, msg: dict[str, Any]) -> list[Any]:
        try:
            return encode(msg)
        except CodecError as e:
            return self._error(rid, f"reply cannot be encoded: {e}", "policy_error")

    def _error(self, rid: Any, text: str, kind: str) -> list[Any]:
        self.counters["errors"] += 1
        log.debug("error reply (%s): %s", kind, text)
        return encode(error_message(rid, text, kind))

    def metadata(self) -> dict[str, Any]:
        meta = dict(_safe_metadata(self.policy))
        meta["policy_version"] = self.version
        meta["server"] = {"batching": self.can_batch, "max_batch": self.max_batch,
                          "uptime_s": round(time.time() - self.started_s, 3), "counters": dict(self.counters)}
        if self.weights is not None:
            meta["server"]["weights"] = self.weights.status()
        return meta


def _obs_problem(obs: dict[str, Any], depth: int = 0, where: str = "obs") -> str:
    """Why an observation must not reach the policy ("" if it may): non-finite numbers anywhere in it
    (a policy fed NaN answers NaN), or nesting deeper than a real observation has."""
    if depth > 8:
        return f"{where} is nested too deeply; send images, state, prompt and plain context values"
    for key, value in obs.items():
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "f" and value.size and not np.isfinite(value).all():
                return f"{where}[{key!r:.40}] contains NaN/Inf; send finite values (the robot side holds instead)"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return f"{where}[{key!r:.40}] is {value}; send finite values"
        elif isinstance(value, (dict, list)):
            items = value if isinstance(value, dict) else dict(enumerate(value))
            problem = _obs_problem(items, depth + 1, f"{where}[{key!r:.40}]")
            if problem:
                return problem
    return ""


def _safe_metadata(policy: Any) -> dict[str, Any]:
    try:
        meta = policy.metadata
        return dict(meta) if isinstance(meta, dict) else {}
    except Exception:
        return {}


def _peek_id(frames: list[Any]) -> Any:
    """Best-effort request id from a frame that failed validation (so the client can match the error)."""
    try:
        import msgpack

        msg = msgpack.unpackb(bytes(getattr(frames[0], "buffer", frames[0]))[:4096], raw=False,
                              strict_map_key=False, ext_hook=lambda c, d: None)
        return msg.get("id") if isinstance(msg, dict) else None
    except Exception:
        return None


class PolicyServer(BackgroundServing):
    """Serve ``policy`` on ``endpoint`` (ROUTER, bound; default loopback) until ``stop()``.

    Use ``serve_forever()`` in the main thread (the CLI) or ``start()`` for a background thread
    (``stop()`` ends either and closes the endpoint; ``with PolicyServer(...) as s`` starts and stops).
    ``link`` replaces the zmq socket (e.g. an ``InProcHub().bind()`` in unit tests).
    """

    def __init__(
        self,
        policy: Any,
        endpoint: str = "tcp://127.0.0.1:5555",
        *,
        curve: CurveKeys | None = None,
        weights: Any = None,
        max_frame_bytes: int = 256 * 1024 * 1024,
        max_batch: int = 8,
        batch_window_s: float = 0.0,
        heartbeat_s: float = 0.5,
        link: Link | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.service = PolicyService(policy, weights=weights, max_frame_bytes=max_frame_bytes, max_batch=max_batch)
        self.link: Link = link or ZmqLink("router", endpoint, curve=curve, max_frame_bytes=max_frame_bytes,
                                          heartbeat_s=heartbeat_s, hwm=10000)
        self.endpoint = getattr(self.link, "bound_endpoint", endpoint)
        self.batch_window_s = batch_window_s
        self.heartbeat_s = heartbeat_s
        self._serve_poll_s, self._thread_name = heartbeat_s / 2, "policy-server"
        self.clients = Liveness("policy client", 3 * heartbeat_s)
        self.on_idle = on_idle
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        log.info("policy server on %s (batching=%s)", self.endpoint, self.service.can_batch)

    def poll_once(self, timeout_s: float) -> int:
        """Wait up to timeout_s for requests; serve what arrived. Returns the number served."""
        got = self.link.recv(timeout_s)
        self.service.apply_weights()  # boundary: nothing is mid-infer here
        if got is None:
            self.clients.check()
            if self.on_idle is not None:
                self.on_idle()
            return 0
        t_recv = time.perf_counter()
        batch = [(got[0], got[1], t_recv)]
        deadline = t_recv + self.batch_window_s
        while len(batch) < self.service.max_batch:
            more = self.link.recv(deadline - time.perf_counter() if self.batch_window_s > 0 else 0.0)
            if more is None:
                break
            batch.append((more[0], more[1], time.perf_counter()))
        for peer, _, _ in batch:
            self.clients.beat(peer.hex())
        for peer, frames in self.service.handle(batch):
            try:
                self.link.send(frames, peer=peer)
            except Exception as e:  # a vanished peer must never take the server down
                log.warning("reply to %s dropped: %s", peer.hex(), e)
        return len(batch)

    def status(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "policy_version": self.service.version,
                "counters": dict(self.service.counters), "clients": self.clients.status(),
                "weights": self.service.weights.status() if self.service.weights is not None else None}
