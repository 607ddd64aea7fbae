"""Terminal keyboard as a twist device, for people without a SpaceMouse or headset.

The terminal is put in cbreak mode (no echo, no line buffering) and a reader thread drains the
bytes. Terminals report key presses, not releases, so a key counts as held for ``key_hold_s`` after
its last byte; holding a key auto-repeats (~30/s) and keeps it held.

    w/s  +x/-x (forward/back)      a/d  +y/-y (left/right)     r/f  +z/-z (up/down)
    i/k  pitch +/-                 j/l  yaw +/-                u/o  roll +/-
    space  gripper toggle          t  takeover / hand back     c  recovery -> correction
    p  perturbation toggle         y  mark success             n  mark failure
    x  e-stop (latched; Esc is not used: arrow keys send it)
"""

from __future__ import annotations

import os
import select
import termios
import threading
import time
import tty

import numpy as np

from teleop.base import Clock, Device, DeviceUnavailableError, OperatorInput, dominant_axis

# key -> (axis index, sign); axes are base-frame [vx, vy, vz, wx, wy, wz]
MOTION_KEYS = {
    "w": (0, 1), "s": (0, -1), "a": (1, 1), "d": (1, -1), "r": (2, 1), "f": (2, -1),
    "u": (3, 1), "o": (3, -1), "i": (4, 1), "k": (4, -1), "j": (5, 1), "l": (5, -1),
}
BUTTON_KEYS = {
    " ": "gripper", "t": "takeover", "c": "correction", "p": "perturbation",
    "y": "success", "n": "failure", "x": "estop",
}


class Keyboard(Device):
    """Reads keys from ``fd`` (default: stdin). Any tty works, so tests drive it through a pty."""

    kind = "keyboard"

    def __init__(
        self, fd: int | None = None, *, key_hold_s: float = 0.12, use_dominant_axis: bool = False,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.fd = fd
        self.key_hold_s = key_hold_s
        self.use_dominant_axis = use_dominant_axis
        self._last_seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved_attrs: list | None = None

    def open(self) -> None:
        fd = self.fd if self.fd is not None else 0
        if not os.isatty(fd):
            raise DeviceUnavailableError(
                "the keyboard device needs an interactive terminal (stdin is not a tty); run "
                "`hil-robot teleop device=keyboard` in a terminal, or pick device=spacemouse|gamepad|webxr"
            )
        self.fd = fd
        self._saved_attrs = termios.tcgetattr(fd)
        tty.setcbreak(fd, termios.TCSANOW)
        self._stop.clear()
        self._thread = threading.Thread(target=self._reader, name="keyboard-reader", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        assert self.fd is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.02)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 64)
            except OSError:
                return
            if not data:
                return
            self.feed(data.decode("latin-1"))

    def feed(self, chars: str) -> None:
        """Register key bytes as seen now (the reader thread calls this; recorded streams too)."""
        now = self.clock()
        with self._lock:
            for ch in chars:
                key = ch if ch == " " else ch.lower()
                if key in MOTION_KEYS or key in BUTTON_KEYS:
                    self._last_seen[key] = now

    def _held(self, now: float) -> set[str]:
        with self._lock:
            return {k for k, t in self._last_seen.items() if now - t <= self.key_hold_s}

    def read(self) -> OperatorInput:
        now = self.clock()
        held = self._held(now)
        motion = np.zeros(6, dtype=np.float32)
        for key in held:
            if key in MOTION_KEYS:
                axis, sign = MOTION_KEYS[key]
                motion[axis] += sign
        motion = np.clip(motion, -1.0, 1.0)
        if self.use_dominant_axis:
            motion = dominant_axis(motion)
        buttons: dict[str, bool] = {}
        for key, name in BUTTON_KEYS.items():
            buttons[name] = buttons.get(name, False) or key in held
        return OperatorInput(timestamp_s=now, motion=motion, buttons=buttons)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._saved_attrs is not None and self.fd is not None:
            try:
                termios.tcsetattr(self.fd, termios.TCSANOW, self._saved_attrs)
            except termios.error:
                pass
            self._saved_attrs = None
