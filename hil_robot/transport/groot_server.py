"""GR00T-protocol server front: one of our policies behind Isaac-GR00T's ZeroMQ REQ/REP protocol
(see ``groot_client`` for the message shapes). Used by ``hil-robot serve-policy protocol=groot``, by
the tests of our GR00T client and by ``scripts/bench_byo_vla.py``.

    server = GrootPolicyServer(policy, ObsMapping(obs_map), "tcp://127.0.0.1:5555", protocol="n1.6").start()

Endpoints: ``ping``, ``get_modality_config``, ``get_action``, ``reset`` (``kill`` is refused: a
remote peer does not get to stop the server). Errors, a wrong ``api_token`` included, are answered
``{"error": str}`` and the server keeps serving. Our chunk f32[H, 7] is answered as the parts
``action.ee_delta`` [H, 6] and ``action.gripper`` [H, 1] (N1.6: without the ``action.`` prefix and
with a batch axis, as GR00T N1.6 servers do).
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from typing import Any

import numpy as np
import zmq

from hil_robot.obs_mapping import ObsMapping
from hil_robot.transport.groot_codec import MODALITY_KEY, packb, unpackb
from hil_robot.transport.serving import BackgroundServing

log = logging.getLogger(__name__)

ACTION_PARTS = (("ee_delta", slice(0, 6)), ("gripper", slice(6, 7)))


def flatten_observation(data: Any, protocol: str) -> dict[str, Any]:
    """A get_action request's observation -> flat mapped keys, latest time step, no batch axis."""
    if protocol == "n1.6":
        if not isinstance(data, dict) or not isinstance(data.get("observation"), dict):
            raise ValueError("N1.6 get_action data must be {'observation': {video, state, language}, 'options': ...}")
        flat: dict[str, Any] = {}
        for group, items in data["observation"].items():
            if not isinstance(items, dict):
                raise ValueError(f"observation[{group!r}] must be a map")
            for name, value in items.items():
                if group == "language":
                    text = value
                    while isinstance(text, (list, tuple)) and text:
                        text = text[0]
                    key = name if name.startswith("annotation.") else f"language.{name}"
                    flat[key] = str(text)
                else:
                    arr = np.asarray(value)
                    if arr.ndim < 3:
                        raise ValueError(f"observation[{group!r}][{name!r}] must be [B, T, ...], got shape {arr.shape}")
                    flat[f"{group}.{name}"] = arr[0, -1]
        return flat
    if not isinstance(data, dict):
        raise ValueError("N1.5 get_action data must be the flat observation map")
    flat = {}
    for key, value in data.items():
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
            flat[key] = value[0]
        else:
            arr = np.asarray(value)
            if arr.ndim < 1:
                raise ValueError(f"{key!r} must be [T, ...], got shape {arr.shape}")
            flat[key] = arr[-1]
    return flat


class GrootPolicyServer(BackgroundServing):
    _thread_name = "groot-server"

    def __init__(self, policy: Any, obs_map: ObsMapping, endpoint: str, *, api_token: str = "",
                 protocol: str = "n1.6") -> None:
        self.policy = policy
        self.obs_map = obs_map
        self.api_token = api_token
        self.protocol = protocol
        self.counters = {"requests": 0, "infers": 0, "errors": 0}
        self._sock = zmq.Context.instance().socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(endpoint)
        self.link = self._sock  # what BackgroundServing closes (LINGER 0)
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def handle(self, frame: bytes) -> bytes:
        """One request frame -> one reply frame (never raises)."""
        self.counters["requests"] += 1
        try:
            request = unpackb(frame)
            if not isinstance(request, dict):
                raise ValueError("a request must be a map {endpoint, data, api_token}")
            token = request.get("api_token")
            if self.api_token and not (isinstance(token, str) and hmac.compare_digest(token.encode(), self.api_token.encode())):
                return packb({"error": "Unauthorized: Invalid API token"})
            endpoint = request.get("endpoint", "get_action")
            if endpoint == "ping":
                return packb({"status": "ok", "message": "Server is running"})
            if endpoint == "get_modality_config":
                return packb(self._modality_config())
            if endpoint == "reset":
                self.policy.reset()
                return packb({})
            if endpoint == "get_action":
                return packb(self._get_action(request.get("data")))
            raise ValueError(f"Unknown endpoint: {endpoint}")
        except Exception as e:  # GR00T's convention: {"error": str}, and keep serving
            self.counters["errors"] += 1
            return packb({"error": f"{type(e).__name__}: {e}"})

    def _get_action(self, data: Any) -> Any:
        obs, _ = self.obs_map.invert(flatten_observation(data, self.protocol))
        obs.setdefault("prompt", "")
        obs["timestamp_s"] = time.monotonic()
        out = self.policy.infer(obs)
        self.counters["infers"] += 1
        chunk = np.asarray(out["actions"], dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[1] != 7:
            raise ValueError(f"policy chunk must be [H, 7], got {chunk.shape}")
        if self.protocol == "n1.6":
            return [{name: chunk[None, :, cols] for name, cols in ACTION_PARTS},
                    {"policy_version": int(out.get("policy_version", -1))}]
        return {f"action.{name}": chunk[:, cols] for name, cols in ACTION_PARTS}

    def _modality_config(self) -> dict[str, Any]:
        def cfg(keys: list[str]) -> dict[str, Any]:
            return {MODALITY_KEY: True, "as_json": {"delta_indices": [0], "modality_keys": keys}}

        groups: dict[str, list[str]] = {"video": [], "state": [], "language": []}
        for key in self.obs_map.spec:
            group = key.partition(".")[0]
            groups["language" if group in ("annotation", "language") else group].append(key.partition(".")[2])
        groups["action"] = [name for name, _ in ACTION_PARTS]
        return {g: cfg(k) for g, k in groups.items() if k}

    def poll_once(self, timeout_s: float) -> int:
        if not self._sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            return 0
        self._sock.send(self.handle(self._sock.recv()))
        return 1

    def status(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "protocol": self.protocol, "counters": dict(self.counters)}
