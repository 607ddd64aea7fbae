"""A teleop ``Device`` fed by ``sensor_msgs/Joy`` (any ROS joystick driver, e.g. ``joy_node``), so
the teleop node can use a gamepad that another ROS node owns. Axis and button indices are node
parameters; the mapping below matches a common Xbox-style layout under joy_node."""

from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

import numpy as np

from teleop.base import LOGICAL_BUTTONS, Device, OperatorInput

DEFAULT_AXES = (1, 0, 4, -1, -1, 3)  # vx <- left stick up, vy <- left stick left, vz <- right stick up, wz <- right x
DEFAULT_BUTTONS = {"takeover": 0, "correction": 1, "gripper": 2, "success": 7, "failure": 6, "estop": 8}


class JoyDevice(Device):
    kind = "joy"

    def __init__(self, axes: Sequence[int] = DEFAULT_AXES, buttons: dict[str, int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        if len(axes) != 6:
            raise ValueError(f"joy axes mapping needs 6 indices (vx vy vz wx wy wz, -1 = unused), got {list(axes)}")
        self.axes_map = [int(a) for a in axes]
        self.buttons_map = dict(DEFAULT_BUTTONS if buttons is None else buttons)
        unknown = set(self.buttons_map) - set(LOGICAL_BUTTONS)
        if unknown:
            raise ValueError(f"unknown logical buttons {sorted(unknown)}; allowed: {', '.join(LOGICAL_BUTTONS)}")
        self._lock = threading.Lock()
        self._axes = np.zeros(0, np.float32)
        self._buttons = np.zeros(0, np.int32)
        self._stamp = -1.0

    def on_joy(self, axes: np.ndarray, buttons: np.ndarray) -> None:
        with self._lock:
            self._axes, self._buttons, self._stamp = axes, buttons, self.clock()

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def read(self) -> OperatorInput:
        with self._lock:
            axes, buttons, stamp = self._axes, self._buttons, self._stamp
        motion = np.zeros(6, np.float32)
        for i, a in enumerate(self.axes_map):
            if 0 <= a < len(axes):
                motion[i] = float(np.clip(axes[a], -1.0, 1.0))
        pressed = {name: bool(0 <= idx < len(buttons) and buttons[idx]) for name, idx in self.buttons_map.items()}
        return OperatorInput(timestamp_s=stamp if stamp >= 0 else self.clock(), motion=motion, buttons=pressed)
