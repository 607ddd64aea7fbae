"""Real devices, when plugged in (marker ``hardware``: skipped in CI)."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.hardware


def test_real_spacemouse_streams_reports():
    from teleop.spacemouse import SpaceMouse

    with SpaceMouse() as sm:
        time.sleep(1.0)  # touch the cap during this second
        inp = sm.read()
        assert inp.motion is not None and inp.motion.shape == (6,)
        assert sm.error is None


def test_real_gamepad_sends_its_initial_state():
    from teleop.gamepad import Gamepad

    with Gamepad() as pad:
        time.sleep(0.5)
        assert pad.events_read > 0  # the driver replays every axis and button on open
