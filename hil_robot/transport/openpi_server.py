"""openpi-compatible server front: any of our policies behind openpi's websocket protocol, so a
program written against ``openpi-client`` (``WebsocketClientPolicy``) can drive it.

    server = OpenpiPolicyServer(policy, ObsMapping(obs_map), host="127.0.0.1", port=8000, api_key="")
    server.serve_forever()          # or .start() / .stop() on a background thread

What the front does, as openpi's own server: sends a metadata frame when a client connects; answers
each binary observation frame with a binary reply ``{"actions": f32[H, D], "policy_version",
"server_timing": {"infer_ms", "prev_total_ms"}}``; answers ``GET /healthz`` with 200 ``OK``; on an
error sends a text frame (the message and traceback) and closes with 1011. A request may carry
``noise`` f32[H, D]: the initial noise of a flow-matching policy (ours: ``policy.head=flow``), which
then integrates from it instead of a random draw (DSRL steering); other policies refuse it. With ``api_key`` set, a
handshake without ``Authorization: Api-Key <key>`` is refused with HTTP 401.

Incoming openpi observations are turned back into ours by inverting the mapping the clients use
(``ObsMapping.invert``); ``timestamp_s`` is the arrival time. Each new connection resets the policy
(openpi has no reset message: a new client is a new episode). One inference at a time.
"""

from __future__ import annotations

import hmac
import http
import inspect
import logging
import threading
import time
import traceback
from typing import Any

import numpy as np

from hil_robot.obs_mapping import ObsMapping
from hil_robot.transport.openpi_codec import packb, unpackb

log = logging.getLogger(__name__)

CLOSE_REASON = "Internal server error. Traceback included in previous frame."


def _plain(value: Any, depth: int = 0) -> Any:
    """Metadata made msgpack-safe: numbers, strings, lists, dicts (others become strings)."""
    if depth > 6:
        return str(value)
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


class OpenpiPolicyServer:
    def __init__(self, policy: Any, obs_map: ObsMapping | None, *, host: str = "127.0.0.1", port: int = 8000,
                 api_key: str = "", max_frame_bytes: int = 256 * 1024 * 1024) -> None:
        from websockets.sync.server import serve

        self.policy = policy
        self.obs_map = obs_map
        self.api_key = api_key
        self.counters = {"connections": 0, "infers": 0, "errors": 0, "refused": 0}
        self._takes_noise = "noise" in inspect.signature(policy.infer).parameters  # the openpi noise field
        self._infer_lock = threading.Lock()
        self._warned_unfilled = False
        self._server = serve(self._handle, host, port, process_request=self._process_request, compression=None,
                             max_size=max_frame_bytes)
        self.port = self._server.socket.getsockname()[1]
        self.host = host
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def metadata(self) -> dict[str, Any]:
        try:
            meta = _plain(dict(getattr(self.policy, "metadata", {}) or {}))
        except Exception:  # a policy whose metadata fails still serves
            meta = {}
        meta["protocol"] = "openpi"
        meta["obs_keys"] = sorted(self.obs_map.spec) if self.obs_map is not None else None
        return meta

    # ------------------------------------------------------------------ handshake: /healthz and the api key
    def _process_request(self, connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        got = request.headers.get("Authorization", "")
        if self.api_key and not hmac.compare_digest(got.encode(), f"Api-Key {self.api_key}".encode()):
            self.counters["refused"] += 1
            return connection.respond(http.HTTPStatus.UNAUTHORIZED,
                                      "missing or wrong 'Authorization: Api-Key <key>' header\n")
        return None

    # ------------------------------------------------------------------ one connection
    def _handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        self.counters["connections"] += 1
        peer = ws.remote_address
        log.info("openpi client %s connected", peer)
        try:
            with self._infer_lock:
                self.policy.reset()
            ws.send(packb(self.metadata()))
            prev_total_ms = None
            while True:
                frame = ws.recv()
                t0 = time.monotonic()
                reply = self._infer(frame)
                if prev_total_ms is not None:
                    reply["server_timing"]["prev_total_ms"] = prev_total_ms
                ws.send(packb(reply))
                prev_total_ms = (time.monotonic() - t0) * 1e3
        except ConnectionClosed:
            log.info("openpi client %s disconnected", peer)
        except Exception as e:  # openpi's convention: the error as a text frame, then close 1011
            self.counters["errors"] += 1
            log.warning("openpi request failed: %s: %s", type(e).__name__, e)
            try:
                ws.send(f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
                ws.close(1011, CLOSE_REASON)
            except ConnectionClosed:
                pass

    def _infer(self, frame: Any) -> dict[str, Any]:
        if isinstance(frame, str):
            raise ValueError("expected a binary msgpack observation frame, got a text frame")
        msg = unpackb(frame)
        if not isinstance(msg, dict):
            raise ValueError(f"an observation must be a msgpack map, got {type(msg).__name__}")
        noise = msg.pop("noise", None)  # optional: the flow's initial noise [H, D] (DSRL steering)
        if noise is not None:
            noise = np.asarray(noise, np.float32)
            if not self._takes_noise:
                raise ValueError(f"the request has a 'noise' field but this policy ({type(self.policy).__name__}) takes "
                                 "no noise: serve a flow-matching VLA (policy=vla policy.head=flow) or drop the field")
        if self.obs_map is not None:
            obs, filled = self.obs_map.invert(msg)
            if not filled.all() and not self._warned_unfilled:
                self._warned_unfilled = True
                log.warning("the openpi mapping leaves state indices %s unset (served as 0)",
                            np.flatnonzero(~filled).tolist())
        else:
            obs = dict(msg)
        obs.setdefault("prompt", "")
        obs["timestamp_s"] = time.monotonic()
        t0 = time.perf_counter()
        with self._infer_lock:
            out = self.policy.infer(obs) if noise is None else self.policy.infer(obs, noise=noise)
        infer_ms = (time.perf_counter() - t0) * 1e3
        self.counters["infers"] += 1
        if not isinstance(out, dict) or "actions" not in out:
            raise ValueError("policy returned no 'actions'")
        reply = {k: _plain(v) for k, v in out.items() if k != "actions"}
        reply["actions"] = np.ascontiguousarray(out["actions"], dtype=np.float32)
        reply["policy_version"] = int(out.get("policy_version", -1))
        reply["server_timing"] = {"infer_ms": infer_ms}
        return reply

    # ------------------------------------------------------------------ lifecycle
    def serve_forever(self) -> None:
        self._server.serve_forever()

    def start(self) -> "OpenpiPolicyServer":
        self._thread = threading.Thread(target=self.serve_forever, name="openpi-server", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def status(self) -> dict[str, Any]:
        return {"url": self.url, "counters": dict(self.counters)}

    def __enter__(self) -> "OpenpiPolicyServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
