"""3Dconnexion SpaceMouse over hidapi, parsing the HID reports directly.

Report formats (little-endian int16 axes, about ±350 full scale):

* id 1, 6 bytes  : translation x, y, z           (SpaceNavigator, SpaceMouse Pro, older firmware)
* id 2, 6 bytes  : rotation rx, ry, rz
* id 1, 12 bytes : translation + rotation in one report (SpaceMouse Wireless/Compact, newer firmware)
* id 3, n bytes  : button bitmask, bit i = button i

Device axes: x right, y towards the user, z down; rx/ry/rz about those. They are converted to the
robot base frame for an operator standing behind the robot (x forward, y left, z up).

A reader thread drains reports as fast as they come; ``read()`` returns the latest state. A
displaced cap streams reports every few ms, so silence longer than ``silence_s`` means the release
report was lost (or the device went away) and the motion reads as zero.

Buttons: 0 (left) toggles the gripper, 1 (right) cycles autonomous -> recovery -> correction ->
hand-back. Extra buttons on Pro/Enterprise models: 2 perturbation, 3 success, 4 failure.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from typing import Any, Protocol

import numpy as np

from teleop.base import Clock, Device, DeviceUnavailableError, OperatorInput, apply_deadzone, dominant_axis

log = logging.getLogger(__name__)

VENDOR_IDS = (0x046D, 0x256F)  # Logitech-era 3Dconnexion, 3Dconnexion
PRODUCT_IDS = {
    0xC626: "SpaceNavigator", 0xC627: "SpaceExplorer", 0xC628: "SpaceNavigator for Notebooks",
    0xC629: "SpacePilot Pro", 0xC62B: "SpaceMouse Pro", 0xC62E: "SpaceMouse Wireless (cabled)",
    0xC62F: "SpaceMouse Wireless", 0xC631: "SpaceMouse Pro Wireless (cabled)", 0xC632: "SpaceMouse Pro Wireless",
    0xC633: "SpaceMouse Enterprise", 0xC635: "SpaceMouse Compact", 0xC652: "Universal Receiver",
}
FULL_SCALE = 350.0
BUTTON_MAP = {0: "gripper", 1: "cycle", 2: "perturbation", 3: "success", 4: "failure"}
# device axes (x right, y toward user, z down) -> base frame (x forward, y left, z up)
DEVICE_TO_BASE = np.array([[0, -1, 0], [-1, 0, 0], [0, 0, -1]], dtype=np.float32)

UDEV_HELP = (
    "add a udev rule so your user can read the SpaceMouse: create /etc/udev/rules.d/99-spacemouse.rules with\n"
    '  KERNEL=="hidraw*", ATTRS{idVendor}=="256f", MODE="0660", TAG+="uaccess"\n'
    '  KERNEL=="hidraw*", ATTRS{idVendor}=="046d", ATTRS{idProduct}=="c6[0-9a-f][0-9a-f]", MODE="0660", TAG+="uaccess"\n'
    "then run `sudo udevadm control --reload-rules && sudo udevadm trigger` and re-plug the device "
    "(see docs/teleop.md)"
)


class HidHandle(Protocol):
    """The part of ``hid.device`` this module uses (the recorded mock implements the same)."""

    def read(self, max_length: int, timeout_ms: int = 0) -> list[int]: ...

    def close(self) -> None: ...


class ReportParser:
    """Accumulates SpaceMouse HID reports into raw axes (int) and a button bitmask."""

    def __init__(self) -> None:
        self.axes = np.zeros(6, dtype=np.float32)  # x, y, z, rx, ry, rz (device frame, raw counts)
        self.buttons = 0
        self.reports = 0

    def feed(self, report: bytes | list[int]) -> bool:
        """Parse one report; return True if it was understood."""
        data = bytes(report)
        if not data:
            return False
        rid, body = data[0], data[1:]
        if rid == 1 and len(body) >= 12:
            self.axes[:] = struct.unpack_from("<6h", body)
        elif rid == 1 and len(body) >= 6:
            self.axes[:3] = struct.unpack_from("<3h", body)
        elif rid == 2 and len(body) >= 6:
            self.axes[3:] = struct.unpack_from("<3h", body)
        elif rid == 3 and body:
            self.buttons = int.from_bytes(body, "little")
        else:
            return False
        self.reports += 1
        return True


def find_spacemouse(path: str = "") -> dict[str, Any]:
    """Return the hidapi enumeration entry of the SpaceMouse to open (``path`` picks one)."""
    try:
        import hid
    except ImportError as e:  # pragma: no cover - hidapi is a core teleop dependency
        raise DeviceUnavailableError("the 'hidapi' package is missing: pip install 'hil-robot[teleop]'") from e
    found = [d for vid in VENDOR_IDS for d in hid.enumerate(vid, 0) if d["product_id"] in PRODUCT_IDS]
    if path:
        found = [d for d in found if d["path"] in (path, path.encode())] or [{"path": path.encode(), "product_id": 0}]
    if not found:
        raise DeviceUnavailableError(
            "no 3Dconnexion SpaceMouse found over hidraw. Plug it in (the wireless receiver counts); if it is "
            "plugged in and still not listed, your user cannot see it: " + UDEV_HELP
        )
    return found[0]


def open_hid(path: str = "") -> tuple[HidHandle, str]:
    import hid

    entry = find_spacemouse(path)
    dev = hid.device()
    try:
        dev.open_path(entry["path"])
    except OSError as e:
        p = entry["path"].decode() if isinstance(entry["path"], bytes) else entry["path"]
        raise DeviceUnavailableError(f"cannot open the SpaceMouse at {p} ({e}): permission denied? " + UDEV_HELP) from e
    return dev, PRODUCT_IDS.get(entry["product_id"], "SpaceMouse")


class SpaceMouse(Device):
    """SpaceMouse device. ``handle`` injects an already-open HID handle (tests: RecordedHid)."""

    kind = "spacemouse"

    def __init__(
        self,
        path: str = "",
        *,
        deadzone: float = 0.05,
        use_dominant_axis: bool = False,
        silence_s: float = 0.05,
        handle: HidHandle | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.path = path
        self.deadzone = deadzone
        self.use_dominant_axis = use_dominant_axis
        self.silence_s = silence_s
        self._handle = handle
        self._parser = ReportParser()
        self._lock = threading.Lock()
        self._last_motion_s = -1e9
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reports_read = 0
        self.error: Exception | None = None

    def open(self) -> None:
        if self._handle is None:
            self._handle, name = open_hid(self.path)
            self.device_id = f"spacemouse:{name}"
        self._stop.clear()
        self._thread = threading.Thread(target=self._reader, name="spacemouse-reader", daemon=True)
        self._thread.start()

    def _reader(self) -> None:
        assert self._handle is not None
        while not self._stop.is_set():
            try:
                data = self._handle.read(64, 10)
            except (OSError, ValueError) as e:  # unplugged mid-run: motion goes silent -> zero
                self.error = e
                log.error("SpaceMouse read failed (%s); motion is zero until it is back", e)
                return
            if not data:
                continue
            with self._lock:
                if self._parser.feed(data) and data[0] in (1, 2):
                    self._last_motion_s = self.clock()
                self.reports_read += 1

    def read(self) -> OperatorInput:
        now = self.clock()
        with self._lock:
            raw = self._parser.axes.copy()
            bits = self._parser.buttons
            fresh = now - self._last_motion_s <= self.silence_s
        motion = np.zeros(6, dtype=np.float32)
        if fresh:
            dev = np.clip(raw / FULL_SCALE, -1.0, 1.0)
            motion[:3] = DEVICE_TO_BASE @ dev[:3]
            motion[3:] = DEVICE_TO_BASE @ dev[3:]
            motion = apply_deadzone(motion, self.deadzone)
            if self.use_dominant_axis:
                motion = dominant_axis(motion)
        buttons = {name: bool(bits >> i & 1) for i, name in BUTTON_MAP.items()}
        return OperatorInput(timestamp_s=now, motion=motion, buttons=buttons)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class RecordedHid:
    """Replays recorded SpaceMouse HID reports through the ``hid.device`` read interface.

    reports: list of (t_s, report bytes) with t_s relative to the first ``read``; ``realtime=False``
    returns them back to back (read-loop benchmark); ``loop=True`` starts over at the end.
    """

    def __init__(self, reports: list[tuple[float, bytes]], *, realtime: bool = True, loop: bool = False) -> None:
        self.reports = list(reports)
        self.realtime = realtime
        self.loop = loop
        self._i = 0
        self._t0: float | None = None
        self.closed = False

    def read(self, max_length: int, timeout_ms: int = 0) -> list[int]:
        if self.closed:
            raise ValueError("read on a closed device")
        if self._t0 is None:
            self._t0 = time.monotonic()
        if self._i >= len(self.reports):
            if not self.loop:
                time.sleep(timeout_ms / 1000.0)
                return []
            self._i = 0
            self._t0 = time.monotonic()
        t, data = self.reports[self._i]
        if self.realtime:
            wait = self._t0 + t - time.monotonic()
            if wait > timeout_ms / 1000.0:
                time.sleep(timeout_ms / 1000.0)
                return []
            if wait > 0:
                time.sleep(wait)
        self._i += 1
        return list(data[:max_length])

    def close(self) -> None:
        self.closed = True


def translation_report(x: int, y: int, z: int) -> bytes:
    return bytes([1]) + struct.pack("<3h", x, y, z)


def rotation_report(rx: int, ry: int, rz: int) -> bytes:
    return bytes([2]) + struct.pack("<3h", rx, ry, rz)


def combined_report(x: int, y: int, z: int, rx: int, ry: int, rz: int) -> bytes:
    return bytes([1]) + struct.pack("<6h", x, y, z, rx, ry, rz)


def button_report(bits: int, nbytes: int = 2) -> bytes:
    return bytes([3]) + bits.to_bytes(nbytes, "little")
