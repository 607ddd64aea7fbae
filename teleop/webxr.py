"""WebXR device: a standalone headset (Quest) opens the node's HTTPS page and streams its
controllers over WSS at display rate. No PC VR runtime needed.

Message from the page (JSON, one per XR frame)::

    {"type": "xr", "seq": int, "t_ms": epoch ms when the frame sampled the poses,
     "controllers": {"right": {"grip": [x,y,z,qw,qx,qy,qz] | null, "aim": [...] | null,
                               "tracked": false when the position is only inferred (emulatedPosition),
                               "buttons": [[pressed, value], ...], "axes": [...]}, "left": {...}}}

``buttons``/``axes`` follow the WebXR ``xr-standard`` gamepad mapping: buttons 0 trigger,
1 squeeze, 3 thumbstick press, 4 A/X, 5 B/Y; axes 2, 3 thumbstick.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import numpy as np

from teleop.base import Clock, Device, OperatorInput
from teleop.vr import ControllerState, vr_input
from teleop.web.server import TeleopWebServer

log = logging.getLogger(__name__)


def _pose(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (7,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"pose must be 7 finite numbers [x,y,z,qw,qx,qy,qz], got {value!r}")
    return arr


def parse_controller(d: dict[str, Any], require_tracked: bool = True) -> ControllerState:
    """One controller of a page message. require_tracked: a pose whose position is only inferred
    (WebXR ``emulatedPosition``, e.g. the controller left the cameras' view) counts as lost."""
    buttons = d.get("buttons") or []
    axes = d.get("axes") or []

    def value(i: int) -> float:
        if i >= len(buttons) or buttons[i] is None:
            return 0.0
        v = float(buttons[i][1])
        return v if math.isfinite(v) else 0.0

    def pressed(i: int) -> bool:
        return i < len(buttons) and buttons[i] is not None and bool(buttons[i][0])

    grip = _pose(d.get("grip"))
    return ControllerState(
        grip=grip, aim=_pose(d.get("aim")), trigger=value(0), squeeze=value(1), stick_click=pressed(3),
        primary=pressed(4), secondary=pressed(5),
        thumbstick=(float(axes[2]), float(axes[3])) if len(axes) >= 4 else (0.0, 0.0),
        valid=grip is not None and (bool(d.get("tracked", True)) or not require_tracked),
    )


class WebXRDevice(Device):
    """Latest headset sample from a :class:`TeleopWebServer`. Samples older than ``stale_s`` count
    as lost tracking (the mapping holds the arm). require_tracked=False accepts inferred positions
    (the iwer emulator marks every pose ``emulatedPosition``; a real headset only while tracking is lost)."""

    kind = "webxr"
    pose_based = True

    def __init__(
        self, server: TeleopWebServer, *, hand: str = "right", stale_s: float = 0.1, require_tracked: bool = True,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.server = server
        self.hand = hand
        self.stale_s = stale_s
        self.require_tracked = require_tracked
        self._lock = threading.Condition()
        self._controllers: dict[str, ControllerState] = {}
        self._recv_s = -math.inf
        self.sample_t_ms = math.nan  # page clock (epoch ms) of the latest sample
        self.recv_epoch_ms = math.nan  # wall clock when it arrived here (latency accounting)
        self.seq = -1
        self.samples = 0
        self.bad_samples = 0
        self._owns_server = False

    def open(self) -> None:
        self.server.xr_listeners.append(self._on_message)
        if self.server._thread is None:
            self.server.start()
            self._owns_server = True
        self.device_id = f"webxr:{self.hand}"

    def _on_message(self, msg: dict[str, Any], recv_s: float) -> None:
        try:
            ctrls = {h: parse_controller(c, self.require_tracked) for h, c in (msg.get("controllers") or {}).items() if h in ("left", "right")}
        except (TypeError, ValueError, IndexError) as e:
            self.bad_samples += 1
            log.warning("WebXR sample rejected: %s", e)
            return
        with self._lock:
            self._controllers = ctrls
            self._recv_s = recv_s
            self.sample_t_ms = float(msg.get("t_ms", math.nan))
            self.recv_epoch_ms = time.time() * 1000.0
            self.seq = int(msg.get("seq", self.seq + 1))
            self.samples += 1
            self._lock.notify_all()

    def wait_sample(self, after_seq: int, timeout_s: float) -> bool:
        """Block until a sample newer than ``after_seq`` arrives (benchmarks, tests)."""
        with self._lock:
            return self._lock.wait_for(lambda: self.seq > after_seq, timeout_s)

    def read(self) -> OperatorInput:
        now = self.clock()
        with self._lock:
            ctrls, recv = dict(self._controllers), self._recv_s
        inp = vr_input(ctrls, self.hand, recv if math.isfinite(recv) else now)
        if now - recv > self.stale_s:  # page stopped streaming: no pose, no clutch
            inp = OperatorInput(timestamp_s=inp.timestamp_s, gripper=inp.gripper, tracking_valid=False,
                                buttons={k: False for k in inp.buttons})
        return inp

    def close(self) -> None:
        if self._on_message in self.server.xr_listeners:
            self.server.xr_listeners.remove(self._on_message)
        if self._owns_server:
            self.server.stop()
