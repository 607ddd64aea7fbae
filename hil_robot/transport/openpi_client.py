"""openpi client: a ``Policy`` whose chunks come from an openpi policy server (π0 / π0.5) over its
websocket protocol. Torch-free (numpy, msgpack, websockets).

    policy = OpenpiClientPolicy("ws://gpu-host:8000", ObsMapping(cfg.policy.obs_map), api_key="...")
    out = policy.infer(obs)    # {"actions": f32[H, D] (native action space), "policy_version", "rtt_ms", ...}

Protocol (openpi-client 0.1.2, ``openpi.serving.websocket_policy_server``):

* connect (optional header ``Authorization: Api-Key <key>``); the server's first frame is its
  metadata (a msgpack map);
* each request is one binary frame: the observation dict (``hil_robot.transport.openpi_codec``);
  the reply is one binary frame: a dict with the chunk under ``actions`` (plus ``server_timing``);
* a server-side error is a *text* frame (its traceback) followed by close code 1011;
* ``GET /healthz`` on the same port answers 200 ``OK``.

State is sent unnormalised (the server's checkpoint carries the statistics). The client keeps one
connection; any failure (refused, timed out, closed, error frame) drops it and the next ``infer``
connects again (after a short back-off), so a restarted server is picked up. While it is away the
controller gets no chunk and holds the robot (``ChunkExecutor`` counts the errors).
"""

from __future__ import annotations

import http.client
import inspect
import logging
import threading
import time
import urllib.parse
from typing import Any

import numpy as np

from hil_robot.obs_mapping import ObsMapping
from hil_robot.transport.codec import CodecError
from hil_robot.transport.openpi_codec import packb, unpackb
from hil_robot.transport.policy_client import RemotePolicyError, TransportTimeout

log = logging.getLogger(__name__)


class ServerUnreachable(TransportTimeout):
    """No connection to the server (refused, DNS, handshake timeout). A TimeoutError, so callers that
    retry timeouts (``ChunkExecutor.prime``) retry this too."""


def check_chunk(actions: Any, key: str, native_dim: int = 0) -> np.ndarray:
    """A backend's chunk -> float32[H, D]; RemotePolicyError naming key and shape if wrong or non-finite."""
    arr = np.asarray(actions)
    if arr.dtype.kind not in "biuf" or arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise RemotePolicyError(f"server reply {key!r} must be a numeric chunk [H, D], got {arr.dtype} {arr.shape}",
                                "bad_reply")
    if native_dim and arr.shape[1] != native_dim:
        raise RemotePolicyError(f"server reply {key!r} has shape {arr.shape}; policy.native_action_dim={native_dim} "
                                f"expects [H, {native_dim}] (wrong checkpoint or action_key?)", "bad_reply")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise RemotePolicyError(f"server reply {key!r} {arr.shape} has non-finite values (first at row {bad[0]}, "
                                f"column {bad[1]}); refusing the chunk, the robot holds", "bad_reply")
    return arr


class OpenpiClientPolicy:
    """A Policy backed by an openpi websocket server. Thread-safe (one request at a time)."""

    def __init__(
        self,
        url: str,
        obs_map: ObsMapping | None,
        *,
        api_key: str = "",
        timeout_s: float = 10.0,
        connect_timeout_s: float | None = None,
        action_key: str = "actions",
        native_dim: int = 0,
        backoff_max_s: float = 2.0,
        max_frame_bytes: int = 256 * 1024 * 1024,
        extra_metadata: dict[str, Any] | None = None,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            url = "ws://" + url
        parsed = urllib.parse.urlparse(url)
        if not parsed.hostname or not parsed.port:
            raise ValueError(f"openpi server url {url!r} needs a host and a port, e.g. ws://gpu-host:8000")
        self.url = url
        self.obs_map = obs_map
        self.api_key = api_key
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s if connect_timeout_s is not None else min(timeout_s, 5.0))
        self.action_key = action_key
        self.native_dim = int(native_dim)
        self.backoff_max_s = backoff_max_s
        self.max_frame_bytes = max_frame_bytes
        self.extra_metadata = dict(extra_metadata or {})
        self.server_metadata: dict[str, Any] | None = None
        self.counters = {"requests": 0, "connects": 0, "connect_failures": 0, "timeouts": 0, "errors": 0}
        self.last_rtt_ms = float("nan")
        self._ws: Any = None
        self._lock = threading.Lock()
        self._backoff_s = 0.0
        self._next_connect_s = 0.0

    # ------------------------------------------------------------------ Policy interface
    def infer(self, obs: dict[str, Any], noise: Any = None) -> dict[str, Any]:
        """obs -> {"actions": f32[H, D], "policy_version", "rtt_ms", "server_timing"}. Raises
        ObsMappingError (bad mapping), ServerUnreachable / TransportTimeout, RemotePolicyError.

        noise: the flow's initial noise f32[H, D] (a leading batch dim of 1 is dropped), sent as the
        request's ``noise`` field, for servers whose policy takes it (DSRL steering; our front does)."""
        request = self.obs_map.apply(obs) if self.obs_map is not None else dict(obs)
        if noise is not None:
            arr = np.asarray(noise, np.float32)
            arr = arr[0] if arr.ndim == 3 and arr.shape[0] == 1 else arr
            if arr.ndim != 2 or not np.isfinite(arr).all():
                raise ValueError(f"noise must be a finite float array [H, D], got shape {arr.shape}")
            request["noise"] = np.ascontiguousarray(arr)
        frame = packb(request)
        with self._lock:
            ws = self._connected()
            self.counters["requests"] += 1
            t0 = time.perf_counter()
            try:
                ws.send(frame)
                reply = ws.recv(timeout=self.timeout_s)
            except TimeoutError:
                self.counters["timeouts"] += 1
                self._drop()  # a late reply would answer the next request: start a fresh connection
                raise TransportTimeout(f"openpi server {self.url} sent no reply within {self.timeout_s:.3f} s; "
                                       "the client reconnects on the next call (robot holds meanwhile)") from None
            except Exception as e:
                self._drop()
                raise self._closed_error(e) from None
            self.last_rtt_ms = (time.perf_counter() - t0) * 1e3
            if isinstance(reply, str):  # openpi servers send their traceback as text, then close with 1011
                self.counters["errors"] += 1
                self._drop()
                last = reply.strip().splitlines()[-1] if reply.strip() else "(empty message)"
                raise RemotePolicyError(f"openpi server {self.url} failed: {last}\n--- server message ---\n{reply.strip()}",
                                        "policy_error")
        try:
            msg = unpackb(reply, self.max_frame_bytes)
        except CodecError as e:
            raise RemotePolicyError(f"openpi server {self.url} sent an undecodable reply: {e}", "bad_reply") from None
        if not isinstance(msg, dict) or self.action_key not in msg:
            keys = sorted(map(str, msg)) if isinstance(msg, dict) else type(msg).__name__
            raise RemotePolicyError(f"openpi reply has no {self.action_key!r} (got {keys}); set policy.action_key",
                                    "bad_reply")
        actions = check_chunk(msg[self.action_key], self.action_key, self.native_dim)
        meta = self.server_metadata or {}
        version = msg.get("policy_version", meta.get("policy_version", -1))
        out: dict[str, Any] = {"actions": actions, "policy_version": int(version) if isinstance(version, (int, np.integer)) else -1,
                               "rtt_ms": self.last_rtt_ms}
        if isinstance(msg.get("server_timing"), dict):
            out["server_timing"] = msg["server_timing"]
        return out

    def reset(self) -> None:
        """openpi's protocol has no reset (its policies are stateless between requests)."""

    @property
    def metadata(self) -> dict[str, Any]:
        return {"name": "openpi", "remote": self.url, "policy_version": -1, "server": self.server_metadata,
                "obs_keys": sorted(self.obs_map.spec) if self.obs_map is not None else None, **self.extra_metadata}

    # ------------------------------------------------------------------ connection
    def wait_ready(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Connect (retrying until ``timeout_s``) and return the server's metadata."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with self._lock:
                    self._next_connect_s = 0.0
                    self._connected()
                    return dict(self.server_metadata or {})
            except ServerUnreachable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def health(self, timeout_s: float = 2.0) -> bool:
        """``GET /healthz``: True on 200; raises ServerUnreachable / RemotePolicyError otherwise."""
        p = urllib.parse.urlparse(self.url)
        conn_cls = http.client.HTTPSConnection if p.scheme == "wss" else http.client.HTTPConnection
        conn = conn_cls(p.hostname, p.port, timeout=timeout_s)
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            body = resp.read(256)
        except OSError as e:
            raise ServerUnreachable(f"openpi server {self.url} health check failed: {type(e).__name__}: {e}") from None
        finally:
            conn.close()
        if resp.status != 200:
            raise RemotePolicyError(f"openpi server {self.url} /healthz answered {resp.status}: {body!r}", "unhealthy")
        return True

    def _connected(self) -> Any:
        if self._ws is not None:
            return self._ws
        now = time.monotonic()
        if now < self._next_connect_s:
            raise ServerUnreachable(f"openpi server {self.url} unreachable; next connection attempt in "
                                    f"{self._next_connect_s - now:.2f} s (robot holds meanwhile)")
        from websockets.exceptions import InvalidStatus, WebSocketException
        from websockets.sync.client import connect

        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        # websockets >= 16 asks for an explicit opt-in to a connection that outlives a `with` block
        extra = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
        try:
            ws = connect(self.url, additional_headers=headers, compression=None, max_size=self.max_frame_bytes,
                         open_timeout=self.connect_timeout_s, close_timeout=1.0, **extra)
        except InvalidStatus as e:
            self._failed_connect()
            status = e.response.status_code
            hint = " (check policy.api_key)" if status in (401, 403) else ""
            raise RemotePolicyError(f"openpi server {self.url} refused the connection: HTTP {status}{hint}",
                                    "refused") from None
        except (OSError, TimeoutError, WebSocketException) as e:
            self._failed_connect()
            raise ServerUnreachable(f"cannot connect to openpi server {self.url}: {type(e).__name__}: {e}; is it "
                                    "running there? (robot holds until it answers)") from None
        try:
            first = ws.recv(timeout=self.connect_timeout_s)
            meta = unpackb(first, self.max_frame_bytes) if isinstance(first, bytes) else None
        except (TimeoutError, CodecError, WebSocketException, OSError) as e:
            ws.close()
            self._failed_connect()
            raise ServerUnreachable(f"openpi server {self.url} sent no metadata frame after connecting "
                                    f"({type(e).__name__}: {e}); is this an openpi policy server?") from None
        if not isinstance(meta, dict):
            ws.close()
            self._failed_connect()
            raise RemotePolicyError(f"openpi server {self.url}: first frame is not a metadata map ({first!r:.200})",
                                    "bad_reply")
        self.server_metadata = meta
        self.counters["connects"] += 1
        self._backoff_s = 0.0
        if self.counters["connects"] > 1:
            log.info("reconnected to openpi server %s", self.url)
        self._ws = ws
        return ws

    def _failed_connect(self) -> None:
        self.counters["connect_failures"] += 1
        self._backoff_s = min(max(0.05, 2 * self._backoff_s), self.backoff_max_s)
        self._next_connect_s = time.monotonic() + self._backoff_s

    def _closed_error(self, e: Exception) -> Exception:
        from websockets.exceptions import ConnectionClosed

        if isinstance(e, ConnectionClosed):
            rcvd = e.rcvd
            why = f"code {rcvd.code}{': ' + rcvd.reason if rcvd.reason else ''}" if rcvd is not None else "no close frame"
            return TransportTimeout(f"openpi server {self.url} closed the connection ({why}); reconnecting on the next call")
        return TransportTimeout(f"openpi server {self.url} connection failed: {type(e).__name__}: {e}")

    def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except Exception:  # already broken: nothing to tell the peer
                pass

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> "OpenpiClientPolicy":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_openpi_policy(cfg: Any) -> OpenpiClientPolicy:
    """``policy=openpi`` (or openpi_droid / openpi_libero): the client for ``policy.server_url``."""
    from hil_robot.config import ConfigError

    p = cfg.policy
    if not p.server_url:
        raise ConfigError("policy=openpi needs policy.server_url=ws://HOST:PORT (an openpi policy server)")
    if not p.obs_map:
        raise ConfigError("policy=openpi needs policy.obs_map (openpi key -> our observation key); "
                          "see configs/policy/openpi_droid.yaml and docs/byo_vla.md")
    from hil_robot.obs_mapping import ObsMappingError

    try:
        mapping = ObsMapping(p.obs_map)
    except ObsMappingError as e:
        raise ConfigError(str(e)) from None
    return OpenpiClientPolicy(p.server_url, mapping, api_key=p.api_key, timeout_s=p.server_timeout_s,
                              action_key=p.action_key, native_dim=p.native_action_dim,
                              extra_metadata={"action_horizon": p.action_horizon,
                                              "action_dim": p.native_action_dim or None})
