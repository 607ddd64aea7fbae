"""The device contract every operator input speaks, plus helpers shared by the devices.

A device is a context manager (``open`` on enter, ``close`` on exit) whose ``read()`` returns the
latest :class:`OperatorInput`. Devices never decide who drives the robot: they report motion, poses
and *logical* buttons; :mod:`teleop.intervention` turns button edges into modes and segments, and
:mod:`teleop.operator` turns everything into ``OperatorCommand`` s.

Logical buttons (``OperatorInput.buttons`` keys, level-triggered, True while held):

    clutch        VR deadman (grip): while held, controller motion drives the robot
    takeover      toggle autonomous <-> takeover (hand back when pressed during takeover)
    correction    recovery -> correction
    cycle         autonomous -> recovery -> correction -> autonomous (one-button devices)
    perturbation  toggle perturbation mode
    gripper       toggle the gripper (devices without an analog gripper input)
    success       mark the episode successful
    failure       mark the episode failed
    estop         latch the emergency stop
"""

from __future__ import annotations

import abc
import dataclasses
import time
from typing import Callable

import numpy as np

LOGICAL_BUTTONS = (
    "clutch", "takeover", "correction", "cycle", "perturbation", "gripper", "success", "failure", "estop",
)

Clock = Callable[[], float]


class DeviceUnavailableError(RuntimeError):
    """The device is missing, busy or not permitted. The message says what to do about it."""


@dataclasses.dataclass
class OperatorInput:
    """One sample of an operator device.

    motion:   float32[6] normalised twist ``[vx, vy, vz, wx, wy, wz]`` in [-1, 1], robot base frame
              (twist devices: SpaceMouse, keyboard, gamepad), or None.
    pose:     float32[7] absolute controller pose ``[x, y, z, qw, qx, qy, qz]`` (metres, tracking
              space of the headset; VR devices), or None.
    gripper:  absolute gripper command in [-1 open, +1 closed], or None when the device has none.
    buttons:  logical button -> held (see module docstring).
    tracking_valid: False when a VR controller lost tracking (pose must not be used).
    """

    timestamp_s: float
    motion: np.ndarray | None = None
    pose: np.ndarray | None = None
    gripper: float | None = None
    buttons: dict[str, bool] = dataclasses.field(default_factory=dict)
    tracking_valid: bool = True
    text: str = ""  # a typed language correction that arrived with this sample

    def __post_init__(self) -> None:
        if self.motion is not None:
            self.motion = np.asarray(self.motion, dtype=np.float32).reshape(6)
        if self.pose is not None:
            self.pose = np.asarray(self.pose, dtype=np.float32).reshape(7)
        unknown = set(self.buttons) - set(LOGICAL_BUTTONS)
        if unknown:
            raise ValueError(f"unknown logical buttons {sorted(unknown)}; allowed: {', '.join(LOGICAL_BUTTONS)}")


class Device(abc.ABC):
    """One abstract base for every operator device. Subclasses set ``kind`` and implement
    ``open``/``close``/``read``. ``read`` never blocks for long: it returns the latest state."""

    kind: str = "device"
    pose_based: bool = False  # True for VR devices (absolute poses + clutch)

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.device_id = self.kind

    @abc.abstractmethod
    def open(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> OperatorInput: ...

    def __enter__(self) -> "Device":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def apply_deadzone(motion: np.ndarray, deadzone: float) -> np.ndarray:
    """Zero axes with |v| < deadzone and rescale the rest so output stays continuous in [-1, 1]."""
    m = np.clip(np.asarray(motion, dtype=np.float32), -1.0, 1.0)
    if deadzone <= 0:
        return m
    mag = np.abs(m)
    out = np.where(mag < deadzone, 0.0, np.sign(m) * (mag - deadzone) / (1.0 - deadzone))
    return out.astype(np.float32)


def dominant_axis(motion: np.ndarray) -> np.ndarray:
    """Keep only the largest-magnitude axis (helps novices move in straight lines)."""
    m = np.asarray(motion, dtype=np.float32)
    out = np.zeros_like(m)
    if np.any(m):
        i = int(np.argmax(np.abs(m)))
        out[i] = m[i]
    return out
