"""GR00T client: a ``Policy`` whose chunks come from an Isaac-GR00T policy server over its ZeroMQ
request/reply protocol. Torch-free (numpy, msgpack, pyzmq).

    policy = GrootClientPolicy("tcp://gpu-host:5555", ObsMapping(cfg.policy.obs_map),
                               action_keys=("action.eef_delta", "action.gripper"), protocol="n1.6")
    out = policy.infer(obs)    # {"actions": f32[H, sum(d)] (native action space), "policy_version": -1, ...}

Protocol (Isaac-GR00T ``gr00t/policy/server_client.py`` (N1.6) and ``gr00t/eval/service.py`` (N1.5);
encoding in ``groot_codec``): a REQ socket sends ``{"endpoint": str, "data": ..., "api_token": str}``
(``data`` only for endpoints that take input, ``api_token`` only when set) and gets one reply; an
error is the reply ``{"error": str}``. Endpoints: ``ping`` -> ``{"status": "ok", ...}``,
``get_modality_config``, ``get_action``, ``reset`` (N1.6 only).

* ``n1.6``: ``get_action`` data ``{"observation": {"video": {cam: u8[B, T, H, W, 3]}, "state":
  {part: f32[B, T, d]}, "language": {key: [[str]]}}, "options": None}``; reply ``[action, info]``
  with ``action[part]: [B, H, d]``.
* ``n1.5``: data is the flat observation ``{"video.<cam>": u8[T, H, W, 3], "state.<part>": [T, d],
  "annotation.human.task_description": [str]}``; reply ``{"action.<part>": [H, d]}``.

Mapping targets are written flat (``video.front``, ``state.eef``, ``annotation.human.task_description``
or ``language.task``); this client adds the batch/time axes (B = T = 1) and, for N1.6, nests by the
first dot. The chunk is the reply's ``action_keys`` concatenated in order. A REQ socket that timed
out is wedged (it may not send again before a reply), so every timeout closes it and the next call
opens a fresh one.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
import zmq

from hil_robot.obs_mapping import ObsMapping
from hil_robot.transport.codec import CodecError
from hil_robot.transport.groot_codec import packb, unpackb
from hil_robot.transport.openpi_client import check_chunk
from hil_robot.transport.policy_client import RemotePolicyError, TransportTimeout

log = logging.getLogger(__name__)

PROTOCOLS = ("n1.6", "n1.5")


def nest_observation(flat: dict[str, Any]) -> dict[str, Any]:
    """N1.6 layout from flat mapped keys: ``video.front`` -> obs["video"]["front"] with [B=1, T=1, ...];
    strings (``annotation...`` / ``language.*``) -> obs["language"][key] = [[text]]."""
    out: dict[str, dict[str, Any]] = {"video": {}, "state": {}, "language": {}}
    for key, value in flat.items():
        group, _, name = key.partition(".")
        if isinstance(value, str):
            lang_key = name if group == "language" else key
            out["language"][lang_key] = [[value]]
        elif group in ("video", "state") and name:
            out[group][name] = np.asarray(value)[None, None]
        else:
            raise ValueError(f"GR00T N1.6 observation key {key!r} must start with video., state. or language.")
    return out


def flat_observation(flat: dict[str, Any]) -> dict[str, Any]:
    """N1.5 layout: arrays get the time axis T=1, strings become one-element lists."""
    return {k: [v] if isinstance(v, str) else np.asarray(v)[None] for k, v in flat.items()}


def chunk_from_reply(action: dict[str, Any], keys: tuple[str, ...], batched: bool) -> np.ndarray:
    """Concatenate ``action[k]`` for k in keys ("action.x" or "x" both match) -> [H, sum(d)]."""
    parts = []
    for key in keys:
        name = key if key in action else key.removeprefix("action.")
        if name not in action:
            raise RemotePolicyError(f"GR00T reply has no {key!r} (it has: {', '.join(sorted(map(str, action)))}); "
                                    "set policy.action_key to the action parts, comma-separated", "bad_reply")
        arr = np.asarray(action[name])
        if batched:
            if arr.ndim != 3 or arr.shape[0] != 1:
                raise RemotePolicyError(f"GR00T reply {key!r} must be [B=1, H, d], got {arr.dtype} {arr.shape}", "bad_reply")
            arr = arr[0]
        if arr.ndim == 1:
            arr = arr[:, None]  # a scalar-per-step part (e.g. gripper) sent as [H]
        if arr.ndim != 2:
            raise RemotePolicyError(f"GR00T reply {key!r} must be [H, d], got {arr.dtype} {arr.shape}", "bad_reply")
        parts.append(arr)
    horizons = {p.shape[0] for p in parts}
    if len(horizons) != 1:
        shapes = ", ".join(f"{k}: {p.shape}" for k, p in zip(keys, parts))
        raise RemotePolicyError(f"GR00T action parts disagree on the horizon ({shapes})", "bad_reply")
    return np.concatenate(parts, axis=1)


class GrootClientPolicy:
    """A Policy backed by a GR00T ZeroMQ server. Thread-safe (one request at a time)."""

    def __init__(
        self,
        endpoint: str,
        obs_map: ObsMapping,
        *,
        action_keys: tuple[str, ...] = ("action.ee_delta", "action.gripper"),
        protocol: str = "n1.6",
        api_token: str = "",
        timeout_s: float = 10.0,
        native_dim: int = 0,
        max_frame_bytes: int = 256 * 1024 * 1024,
        extra_metadata: dict[str, Any] | None = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"GR00T protocol {protocol!r}; choose one of: {', '.join(PROTOCOLS)}")
        if not endpoint.startswith("tcp://"):
            endpoint = "tcp://" + endpoint
        self.endpoint = endpoint
        self.obs_map = obs_map
        self.action_keys = tuple(action_keys)
        self.protocol = protocol
        self.api_token = api_token
        self.timeout_s = float(timeout_s)
        self.native_dim = int(native_dim)
        self.max_frame_bytes = max_frame_bytes
        self.extra_metadata = dict(extra_metadata or {})
        self.counters = {"requests": 0, "timeouts": 0, "reconnects": 0, "errors": 0}
        self.last_rtt_ms = float("nan")
        self._ctx = zmq.Context.instance()
        self._sock: zmq.Socket | None = None
        self._lock = threading.Lock()
        self._modality: dict[str, Any] | None = None

    # ------------------------------------------------------------------ Policy interface
    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        """obs -> {"actions": f32[H, D], "policy_version": -1, "rtt_ms"}. Raises ObsMappingError,
        TransportTimeout, RemotePolicyError (server error reply, wrong chunk shape, NaN)."""
        flat = self.obs_map.apply(obs)
        data = {"observation": nest_observation(flat), "options": None} if self.protocol == "n1.6" \
            else flat_observation(flat)
        try:
            reply = self.call("get_action", data)
        except RemotePolicyError as e:
            # a server of the other generation fails looking up its own layout's keys
            other = ("'observation'",) if self.protocol == "n1.5" else ("'video.", "'state.", "'annotation.")
            if not any(k in str(e) for k in other):
                raise
            raise RemotePolicyError(f"{e} (a server of the other generation answers like this: check "
                                    f"policy.groot_protocol (this client: {self.protocol}) and the mapped keys "
                                    f"{', '.join(sorted(flat))})", e.kind) from None
        if self.protocol == "n1.6":
            if not (isinstance(reply, (list, tuple)) and len(reply) == 2 and isinstance(reply[0], dict)):
                raise RemotePolicyError(f"GR00T N1.6 get_action must answer [action, info], got {type(reply).__name__}"
                                        " (an N1.5 server? set policy.groot_protocol=n1.5)", "bad_reply")
            action, batched = reply[0], True
        else:
            if not isinstance(reply, dict):
                raise RemotePolicyError(f"GR00T N1.5 get_action must answer an action dict, got {type(reply).__name__}"
                                        " (an N1.6 server? set policy.groot_protocol=n1.6)", "bad_reply")
            action, batched = reply, False
        chunk = chunk_from_reply(action, self.action_keys, batched)
        return {"actions": check_chunk(chunk, "+".join(self.action_keys), self.native_dim), "policy_version": -1,
                "rtt_ms": self.last_rtt_ms}

    def reset(self) -> None:
        if self.protocol == "n1.6":  # N1.5 servers have no reset endpoint
            self.call("reset", {"options": None})

    @property
    def metadata(self) -> dict[str, Any]:
        return {"name": "groot", "remote": self.endpoint, "protocol": self.protocol, "policy_version": -1,
                "obs_keys": sorted(self.obs_map.spec), "action_keys": list(self.action_keys),
                "modality_config": self._modality, **self.extra_metadata}

    # ------------------------------------------------------------------ requests
    def ping(self, timeout_s: float | None = None) -> dict[str, Any]:
        reply = self.call("ping", None, timeout_s=timeout_s)
        if not isinstance(reply, dict) or reply.get("status") != "ok":
            raise RemotePolicyError(f"GR00T ping answered {reply!r}", "bad_reply")
        return reply

    def wait_ready(self, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.ping(timeout_s=min(1.0, max(0.05, deadline - time.monotonic())))
            except TransportTimeout:
                if time.monotonic() > deadline:
                    raise

    def get_modality_config(self) -> dict[str, Any]:
        self._modality = self.call("get_modality_config", None)
        return self._modality

    def call(self, endpoint: str, data: Any, *, timeout_s: float | None = None) -> Any:
        """One request; the decoded reply. ``data=None``: an endpoint without input (no "data" key)."""
        request: dict[str, Any] = {"endpoint": endpoint}
        if data is not None:
            request["data"] = data
        if self.api_token:
            request["api_token"] = self.api_token
        frame = packb(request)
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:
            if self._sock is None:
                self._sock = self._ctx.socket(zmq.REQ)
                self._sock.setsockopt(zmq.LINGER, 0)
                self._sock.setsockopt(zmq.MAXMSGSIZE, self.max_frame_bytes)
                self._sock.connect(self.endpoint)
            self.counters["requests"] += 1
            t0 = time.perf_counter()
            self._sock.send(frame)
            if not self._sock.poll(int(timeout_s * 1000), zmq.POLLIN):
                self.counters["timeouts"] += 1
                self._replace_socket()
                raise TransportTimeout(f"no reply from GR00T server {self.endpoint} within {timeout_s:.3f} s "
                                       f"({endpoint}); is it running there? The next call opens a fresh socket "
                                       "(robot holds meanwhile)")
            raw = self._sock.recv()
            self.last_rtt_ms = (time.perf_counter() - t0) * 1e3
        if raw == b"ERROR":
            raise RemotePolicyError(f"GR00T server {self.endpoint} answered ERROR (not a policy server?)", "policy_error")
        try:
            reply = unpackb(raw, self.max_frame_bytes)
        except CodecError as e:
            raise RemotePolicyError(f"GR00T server {self.endpoint} sent an undecodable reply: {e}", "bad_reply") from None
        if isinstance(reply, dict) and "error" in reply:
            self.counters["errors"] += 1
            raise RemotePolicyError(f"GR00T server {self.endpoint} ({endpoint}): {reply['error']}", "policy_error")
        return reply

    def _replace_socket(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
        self._sock = None
        self.counters["reconnects"] += 1

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close(linger=0)
                self._sock = None

    def __enter__(self) -> "GrootClientPolicy":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_groot_policy(cfg: Any) -> GrootClientPolicy:
    """``policy=groot``: the client for ``policy.server_url`` (tcp://HOST:PORT)."""
    from hil_robot.config import ConfigError
    from hil_robot.obs_mapping import ObsMappingError

    p = cfg.policy
    if not p.server_url:
        raise ConfigError("policy=groot needs policy.server_url=tcp://HOST:PORT (an Isaac-GR00T policy server)")
    keys = tuple(k.strip() for k in p.action_key.split(",") if k.strip())
    if not keys or keys == ("actions",):
        raise ConfigError("policy=groot needs policy.action_key: the action parts to concatenate, comma-separated "
                          "(e.g. action.eef_delta,action.gripper; see the server's modality config)")
    try:
        mapping = ObsMapping(p.obs_map)
    except ObsMappingError as e:
        raise ConfigError(str(e)) from None
    return GrootClientPolicy(p.server_url, mapping, action_keys=keys, protocol=p.groot_protocol, api_token=p.api_key,
                             timeout_s=p.server_timeout_s, native_dim=p.native_action_dim,
                             extra_metadata={"action_horizon": p.action_horizon, "action_dim": p.native_action_dim or None})
