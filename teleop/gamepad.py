"""Gamepad through the Linux joystick API (``/dev/input/js*``), parsing ``struct js_event``.

    struct js_event { __u32 time_ms; __s16 value; __u8 type; __u8 number; }   (8 bytes, native endian)
    type: 0x01 button, 0x02 axis, | 0x80 for the initial-state burst sent on open

Layout (Xbox-style pads under the xpad driver; most others follow it):

    left stick      x/y translation            right stick  up/down = z, left/right = yaw
    d-pad           roll (left/right), pitch (up/down)
    right trigger   gripper (analog: released open, pulled closed)
    A  takeover / hand back    B  recovery -> correction    X  perturbation toggle
    Start  success    Back  failure    Guide (Xbox)  e-stop
"""

from __future__ import annotations

import errno
import os
import select
import struct
import threading
import time

import numpy as np

from teleop.base import Clock, Device, DeviceUnavailableError, OperatorInput, apply_deadzone, dominant_axis

JS_EVENT = struct.Struct("=IhBB")
JS_BUTTON, JS_AXIS, JS_INIT = 0x01, 0x02, 0x80
AXIS_MAX = 32767.0
# axis numbers
LX, LY, LT, RX, RY, RT, DPAD_X, DPAD_Y = range(8)
BUTTON_MAP = {0: "takeover", 1: "correction", 2: "perturbation", 7: "success", 6: "failure", 8: "estop"}


def js_event(time_ms: int, value: int, kind: int, number: int) -> bytes:
    """Pack one joystick event (recorded streams and tests)."""
    return JS_EVENT.pack(time_ms & 0xFFFFFFFF, value, kind, number)


class Gamepad(Device):
    kind = "gamepad"

    def __init__(
        self, path: str = "/dev/input/js0", *, deadzone: float = 0.1, use_dominant_axis: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.path = path
        self.deadzone = deadzone
        self.use_dominant_axis = use_dominant_axis
        self.axes = np.zeros(8, dtype=np.float32)
        self.axes[LT] = self.axes[RT] = -1.0  # triggers rest at -1 under xpad
        self.buttons: dict[int, bool] = {}
        self.events_read = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None

    def open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError as e:
            raise DeviceUnavailableError(
                f"no gamepad at {self.path}: plug one in (the kernel joystick driver creates /dev/input/js0) "
                "or set teleop.gamepad_path"
            ) from e
        except PermissionError as e:
            raise DeviceUnavailableError(
                f"no permission to read {self.path}: add your user to the 'input' group "
                "(sudo usermod -aG input $USER, then log in again)"
            ) from e
        self.device_id = f"gamepad:{self.path}"
        self._stop.clear()
        self._thread = threading.Thread(target=self._reader, name="gamepad-reader", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        assert self._fd is not None
        buf = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.02)
            if not ready:
                continue
            try:
                chunk = os.read(self._fd, JS_EVENT.size * 64)
            except OSError as e:
                if e.errno == errno.EAGAIN:
                    continue
                return
            if not chunk:  # writer gone (recorded FIFO finished) or device unplugged
                time.sleep(0.01)
                continue
            buf += chunk
            n = len(buf) // JS_EVENT.size
            for i in range(n):
                self.feed(buf[i * JS_EVENT.size : (i + 1) * JS_EVENT.size])
            buf = buf[n * JS_EVENT.size :]

    def feed(self, event: bytes) -> None:
        _, value, kind, number = JS_EVENT.unpack(event)
        kind &= ~JS_INIT
        with self._lock:
            if kind == JS_AXIS and number < len(self.axes):
                self.axes[number] = max(-1.0, value / AXIS_MAX)
            elif kind == JS_BUTTON:
                self.buttons[number] = bool(value)
            self.events_read += 1

    def read(self) -> OperatorInput:
        now = self.clock()
        with self._lock:
            a = self.axes.copy()
            pressed = dict(self.buttons)
        sticks = apply_deadzone(np.array([a[LX], a[LY], a[RX], a[RY]]), self.deadzone)
        motion = np.array(
            [-sticks[1], -sticks[0], -sticks[3], a[DPAD_X], -a[DPAD_Y], -sticks[2]], dtype=np.float32
        )
        if self.use_dominant_axis:
            motion = dominant_axis(motion)
        buttons = {name: pressed.get(i, False) for i, name in BUTTON_MAP.items()}
        return OperatorInput(timestamp_s=now, motion=motion, gripper=float(a[RT]), buttons=buttons)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
