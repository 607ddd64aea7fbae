"""The OpenXR path through the real OpenXR loader (the one pyopenxr ships) and a scripted C runtime
compiled here with the system compiler, selected with XR_RUNTIME_JSON."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from hil_robot.config.robot import RobotConfig
from hil_robot.config.teleop import TeleopConfig
from teleop.testing.openxr_runtime import ControllerSample, build_runtime, unavailable_reason, write_script

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))

REST = (0.2, 1.2, -0.3, 1.0, 0.0, 0.0, 0.0)


def at(z_offset: float = 0.0, y_offset: float = 0.0):
    return (REST[0], REST[1] + y_offset, REST[2] + z_offset, *REST[3:])


def teleop_script() -> list[ControllerSample]:
    S = ControllerSample
    s = [S(0.0, pose=at()), S(0.0, hand="left", pose=(-0.2, 1.2, -0.3, 1, 0, 0, 0))]
    s.append(S(0.4, pose=at(), squeeze=1.0))  # grab: take over
    for i in range(1, 11):  # 3 cm away from the operator in 3 mm steps, gripper closing
        s.append(S(0.5 + 0.02 * i, pose=at(-0.003 * i), squeeze=1.0, trigger=1.0))
    s.append(S(1.0, pose=at(-0.03), squeeze=1.0, trigger=1.0, primary=True))  # A: -> correction
    s.append(S(1.2, pose=at(-0.03), squeeze=1.0, trigger=1.0))
    s.append(S(1.4, valid=False, squeeze=1.0, trigger=1.0))  # tracking lost
    s.append(S(1.9, pose=at(-0.03), squeeze=1.0, trigger=1.0))  # back (re-latch, no jump)
    s.append(S(2.2, pose=at(-0.30), squeeze=1.0, trigger=1.0))  # 27 cm glitch: ignored
    s.append(S(2.5, pose=at(-0.30), squeeze=0.0, trigger=1.0, secondary=True))  # B: hand back
    s.append(S(2.8, pose=at(-0.30), trigger=1.0))
    return s


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    return build_runtime(tmp_path_factory.mktemp("xr_runtime"))


def obs():
    state = np.zeros(15, dtype=np.float32)
    state[:7] = [0.5, 0.0, 0.3, 0.0, 1.0, 0.0, 0.0]
    state[7] = 1.0
    return {"state": state, "timestamp_s": time.monotonic(), "prompt": "pick"}


def test_openxr_device_through_the_real_loader(runtime, tmp_path, monkeypatch):
    script = write_script(tmp_path / "poses.txt", teleop_script())
    monkeypatch.setenv("XR_RUNTIME_JSON", str(runtime.manifest))
    monkeypatch.setenv("HIL_XR_SCRIPT", str(script))
    from teleop.openxr_device import OpenXRDevice
    from teleop.operator import DeviceOperator

    device = OpenXRDevice(hand="right", stale_s=1.0)  # a loaded CI box may stall frames
    op = DeviceOperator(device, TeleopConfig(device="openxr"), RobotConfig())
    log = []
    with device:
        assert device.runtime_name == "hil_robot scripted runtime"
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.2:
            c = op.command(obs(), {})
            log.append((time.monotonic() - t0, c, device.read().tracking_valid))
            time.sleep(0.01)
        frames = device.frames
    assert frames > 20, f"only {frames} OpenXR frames in 3.2 s"
    segments = [c.segment.value if c.segment else "autonomous" for _, c, _ in log]
    dedup = [s for i, s in enumerate(segments) if i == 0 or s != segments[i - 1]]
    assert dedup == ["autonomous", "recovery", "correction", "autonomous"], dedup
    driven = [c for _, c, _ in log if c.pose_target is not None]
    xs = np.array([c.pose_target[0] for c in driven])
    assert xs.max() == pytest.approx(0.53, abs=1e-3)  # 3 cm forward in the robot frame, no more
    assert np.all(np.abs([c.pose_target[1] for c in driven]) < 1e-4)
    assert any(c.action[6] > 0.9 for c in driven)  # trigger closed the gripper
    assert any(not valid for _, _, valid in log)  # tracking loss was seen ...
    lost = [c for _, c, valid in log if not valid and c.pose_target is not None]
    assert lost and all(abs(c.pose_target[0] - 0.53) < 1e-3 for c in lost)  # ... and held the arm
    assert op.mapper.jumps >= 1 and xs.max() < 0.531  # the 27 cm glitch moved nothing
    assert log[-1][1].action is None  # handed back


def _subprocess_open(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    code = (
        "from teleop.openxr_device import OpenXRDevice\n"
        "from teleop.base import DeviceUnavailableError\n"
        "try:\n    OpenXRDevice().open()\nexcept DeviceUnavailableError as e:\n    print('UNAVAILABLE:', e)\n"
    )
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_missing_runtime_is_a_clear_error(tmp_path):
    proc = _subprocess_open({"XR_RUNTIME_JSON": str(tmp_path / "no_such_runtime.json")})
    assert "UNAVAILABLE:" in proc.stdout, proc.stdout + proc.stderr
    assert "device=webxr" in proc.stdout and "XR_RUNTIME_JSON" in proc.stdout


def test_runtime_without_headless_is_refused_with_advice(runtime, tmp_path):
    proc = _subprocess_open({"XR_RUNTIME_JSON": str(runtime.manifest), "HIL_XR_NO_HEADLESS": "1"})
    assert "UNAVAILABLE:" in proc.stdout and "XR_MND_headless" in proc.stdout, proc.stdout + proc.stderr
