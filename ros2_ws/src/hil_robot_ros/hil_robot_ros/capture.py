"""Camera capture core (no ROS): open a V4L2/USB camera with OpenCV, read RGB frames, and fail
with an error that names the device and what to check. ``opener`` follows ``cv2.VideoCapture``'s
interface (``isOpened``, ``read``, ``set``, ``get``, ``release``) so tests pass a mock capture.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np


class CameraError(RuntimeError):
    """The camera cannot be opened or stopped delivering frames; the text names the device."""


def _default_opener(device: str | int) -> Any:
    import cv2

    return cv2.VideoCapture(device, cv2.CAP_V4L2) if isinstance(device, str) else cv2.VideoCapture(device)


def parse_device(device: str) -> str | int:
    """'/dev/video2' stays a path; '2' becomes the integer index OpenCV expects."""
    return int(device) if device.isdigit() else device


class Capture:
    """One opened camera. ``read()`` -> uint8 [H, W, 3] RGB, resized to (height, width) if needed."""

    def __init__(self, device: str, width: int, height: int, fps: float,
                 opener: Callable[[str | int], Any] = _default_opener, max_failures: int = 5) -> None:
        self.device = device
        self.width, self.height, self.fps = int(width), int(height), float(fps)
        self.max_failures = max_failures
        self._failures = 0
        dev = parse_device(device)
        if isinstance(dev, str) and dev.startswith("/dev/") and not os.path.exists(dev) and opener is _default_opener:
            raise CameraError(f"camera device {device} does not exist; check the cable and `ls /dev/video*`, "
                              "or set the node's `device` parameter")
        self._cap = opener(dev)
        if self._cap is None or not self._cap.isOpened():
            raise CameraError(f"camera device {device} could not be opened (busy, no permission, or not a capture "
                              "device); check `v4l2-ctl --list-devices` and that you are in the 'video' group")
        import cv2

        self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self._cap.set(cv2.CAP_PROP_FPS, self.fps)

    def read(self) -> np.ndarray:
        import cv2

        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._failures += 1
            if self._failures >= self.max_failures:
                raise CameraError(f"camera device {self.device} returned no frame {self._failures} times in a row; "
                                  "it was unplugged or another process took it")
            raise CameraError(f"camera device {self.device} returned no frame")
        self._failures = 0
        frame = np.asarray(frame)
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if frame.shape[:2] != (self.height, self.width):
            frame = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(frame[:, :, ::-1])  # BGR -> RGB

    @property
    def dead(self) -> bool:
        return self._failures >= self.max_failures

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
