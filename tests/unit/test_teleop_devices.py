"""Device parsing from recorded streams: SpaceMouse HID reports, keyboard bytes through a pty,
gamepad js_event structs through a FIFO."""

from __future__ import annotations

import os
import struct
import time

import numpy as np
import pytest

from teleop.base import DeviceUnavailableError, apply_deadzone, dominant_axis
from teleop.gamepad import JS_AXIS, JS_BUTTON, JS_INIT, Gamepad, js_event
from teleop.keyboard import Keyboard
from teleop.spacemouse import (
    RecordedHid, ReportParser, SpaceMouse, button_report, combined_report, rotation_report, translation_report,
)


def wait_for(pred, timeout_s=2.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.005)
    return False


def test_report_parser_reads_the_three_hid_formats():
    p = ReportParser()
    # bytes as a SpaceNavigator sends them: id 1, int16 LE x=350, y=-20, z=5
    assert p.feed(bytes.fromhex("015e01ecff0500"))
    assert p.axes[:3].tolist() == [350, -20, 5]
    assert p.feed(bytes.fromhex("02" "0a00" "f6ff" "0000"))  # rotation rx=10, ry=-10, rz=0
    assert p.axes[3:].tolist() == [10, -10, 0]
    assert p.feed(combined_report(1, 2, 3, 4, 5, 6))  # SpaceMouse Wireless: all six in report 1
    assert p.axes.tolist() == [1, 2, 3, 4, 5, 6]
    assert p.feed(bytes.fromhex("030200"))  # button 1 down
    assert p.buttons == 2
    assert not p.feed(bytes([7, 1, 2]))  # unknown report id is rejected, state kept
    assert p.axes.tolist() == [1, 2, 3, 4, 5, 6]


def test_spacemouse_maps_axes_applies_deadzone_and_goes_silent():
    # push the cap away from the user (device -y) and twist it, then release and press buttons
    stream = [
        (0.00, translation_report(0, -350, 0)),
        (0.00, rotation_report(0, 0, 175)),
        (0.01, translation_report(0, -350, 0)),
        (0.01, rotation_report(0, 0, 175)),
        (0.02, button_report(0b10)),
    ]
    handle = RecordedHid(stream, realtime=False)
    with SpaceMouse(handle=handle, deadzone=0.1, silence_s=0.6) as sm:  # long enough for a loaded CI box
        assert wait_for(lambda: sm.reports_read >= 5)
        inp = sm.read()
        assert inp.motion[0] == pytest.approx(1.0)  # forward in the base frame
        assert inp.motion[1] == pytest.approx(0.0)
        assert inp.motion[5] == pytest.approx(-(0.5 - 0.1) / 0.9, rel=1e-4)  # device z is down: yaw flips
        assert inp.buttons["cycle"] and not inp.buttons["gripper"]
        time.sleep(0.8)  # no more reports: the lost release must not keep the arm moving
        assert not np.any(sm.read().motion)
    assert handle.closed


def test_spacemouse_dominant_axis_and_zero_release():
    stream = [(0.0, combined_report(300, -100, 0, 0, 0, 40)), (0.0, combined_report(0, 0, 0, 0, 0, 0))]
    handle = RecordedHid(stream[:1], realtime=False)
    with SpaceMouse(handle=handle, deadzone=0.0, use_dominant_axis=True, silence_s=5.0) as sm:
        assert wait_for(lambda: sm.reports_read >= 1)
        m = sm.read().motion
        assert np.count_nonzero(m) == 1 and m[1] == pytest.approx(-300 / 350, rel=1e-5)


def test_spacemouse_missing_device_names_the_udev_rule(monkeypatch):
    import hid

    monkeypatch.setattr(hid, "enumerate", lambda vid=0, pid=0: [])
    with pytest.raises(DeviceUnavailableError, match="99-spacemouse.rules"):
        SpaceMouse().open()


def test_spacemouse_open_permission_denied_names_the_udev_rule(monkeypatch):
    import hid

    entry = {"path": b"/dev/hidraw9", "vendor_id": 0x256F, "product_id": 0xC635}
    monkeypatch.setattr(hid, "enumerate", lambda vid=0, pid=0: [entry] if vid == 0x256F else [])
    with pytest.raises(DeviceUnavailableError, match="udevadm"):
        SpaceMouse().open()  # /dev/hidraw9 does not exist here: hidapi's open fails like EACCES does


def test_deadzone_and_dominant_axis_helpers():
    out = apply_deadzone(np.array([0.04, -0.5, 1.0, -1.0, 0.0, 0.05]), 0.05)
    assert out[0] == 0 and out[4] == 0 and out[2] == pytest.approx(1.0) and out[3] == pytest.approx(-1.0)
    assert out[1] == pytest.approx(-(0.45 / 0.95))
    assert dominant_axis(np.array([0.1, -0.7, 0.3, 0, 0, 0])).tolist() == pytest.approx([0, -0.7, 0, 0, 0, 0])


def test_keyboard_through_a_pty_in_raw_mode():
    master, slave = os.openpty()
    try:
        kb = Keyboard(fd=slave, key_hold_s=0.6)
        with kb:
            os.write(master, b"wj ")
            assert wait_for(lambda: kb.read().motion[0] == 1.0)
            inp = kb.read()
            assert inp.motion[5] == 1.0 and inp.buttons["gripper"]
            time.sleep(0.8)  # no auto-repeat: keys released
            assert not np.any(kb.read().motion)
            os.write(master, b"T")  # upper case works too
            assert wait_for(lambda: kb.read().buttons["takeover"])
        # raw (cbreak) mode restored: echo back on
        import termios

        assert termios.tcgetattr(slave)[3] & termios.ECHO
    finally:
        os.close(master)
        os.close(slave)


def test_keyboard_refuses_a_non_tty():
    r, w = os.pipe()
    try:
        with pytest.raises(DeviceUnavailableError, match="terminal"):
            Keyboard(fd=r).open()
    finally:
        os.close(r)
        os.close(w)


def test_gamepad_parses_js_events_from_a_fifo(tmp_path):
    fifo = tmp_path / "js0"
    os.mkfifo(fifo)
    pad = Gamepad(str(fifo), deadzone=0.1)
    with pad:
        fd = os.open(fifo, os.O_WRONLY)
        try:
            events = [
                js_event(0, 0, JS_BUTTON | JS_INIT, 0),  # initial-state burst
                js_event(0, -32767, JS_AXIS | JS_INIT, 5),  # right trigger released
                js_event(10, -32767, JS_AXIS, 1),  # left stick fully up -> forward
                js_event(11, 16384, JS_AXIS, 3),  # right stick half right -> yaw right
                js_event(12, 32767, JS_AXIS, 5),  # right trigger pulled -> gripper closed
                js_event(13, 1, JS_BUTTON, 0),  # A pressed
            ]
            os.write(fd, b"".join(events))
            assert wait_for(lambda: pad.events_read >= len(events))
            inp = pad.read()
            assert inp.motion[0] == pytest.approx(1.0)
            assert inp.motion[5] == pytest.approx(-(16384 / 32767 - 0.1) / 0.9, rel=1e-4)
            assert inp.gripper == pytest.approx(1.0) and inp.buttons["takeover"]
            assert struct.calcsize("=IhBB") == 8
        finally:
            os.close(fd)


def test_gamepad_missing_device_is_a_clear_error(tmp_path):
    with pytest.raises(DeviceUnavailableError, match="plug one in"):
        Gamepad(str(tmp_path / "nope")).open()
