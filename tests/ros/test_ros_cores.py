"""Plain-Python pieces of hil_robot_ros: camera capture (mock following cv2.VideoCapture), arm
preset math, observation assembly."""

from __future__ import annotations

import numpy as np
import pytest

from hil_robot_ros.capture import CameraError, Capture


class MockCapture:
    """cv2.VideoCapture's interface: isOpened, read, set, get, release."""

    def __init__(self, frames, opened=True):
        self.frames, self.opened, self.props, self.released = list(frames), opened, {}, False

    def isOpened(self):
        return self.opened

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return self.props.get(prop, 0.0)

    def release(self):
        self.released = True


def test_capture_bgr_to_rgb_resize_and_failures():
    bgr = np.zeros((240, 320, 3), np.uint8)
    bgr[..., 0] = 255  # blue in BGR
    mock = MockCapture([bgr] + [None] * 0)
    cap = Capture("/dev/video9", 160, 120, 30.0, opener=lambda dev: mock, max_failures=2)
    rgb = cap.read()
    assert rgb.shape == (120, 160, 3) and rgb[0, 0].tolist() == [0, 0, 255]
    with pytest.raises(CameraError, match="/dev/video9 returned no frame"):
        cap.read()
    with pytest.raises(CameraError, match="2 times in a row"):
        cap.read()
    assert cap.dead
    cap.close()
    assert mock.released


def test_missing_and_unopenable_devices_are_named():
    with pytest.raises(CameraError, match="/dev/video_missing_42 does not exist"):
        Capture("/dev/video_missing_42", 64, 64, 30.0)
    with pytest.raises(CameraError, match="device 3 could not be opened"):
        Capture("3", 64, 64, 30.0, opener=lambda dev: MockCapture([], opened=False))


def test_arm_presets_and_twist_math():
    pytest.importorskip("hil_robot.rotations")
    from hil_robot_ros.arm_presets import PRESETS, clamp_twist, gripper_opening, integrate_twist

    assert PRESETS["franka_cartesian_impedance"].command_style == "pose"
    assert PRESETS["ur_servo_twist"].driver_twist_cmd == "/servo_node/delta_twist_cmds"
    v = clamp_twist(np.array([1.0, 0, 0, 0, 0, 4.0]), 0.25, 1.0)
    assert v[0] == pytest.approx(0.25) and v[5] == pytest.approx(1.0)
    assert not clamp_twist(np.array([np.nan, 0, 0, 0, 0, 0]), 1, 1).any()
    pos, quat = integrate_twist(np.zeros(3), np.array([1.0, 0, 0, 0]), np.array([0.1, 0, 0, 0, 0, np.pi]), 0.5)
    assert pos[0] == pytest.approx(0.05) and quat == pytest.approx([np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    assert gripper_opening(0.02, 0.04) == pytest.approx(0.5)


def test_assembler_exact_and_latest():
    from hil_robot_ros.obs_sync import ObservationAssembler

    a = ObservationAssembler(["joints", "pose", "images/front"], mode="exact")
    assert a.add("joints", 10, 1) is None and a.add("pose", 10, 2) is None
    assert a.add("joints", 20, 3) is None
    stamp, parts = a.add("images/front", 10, 4)
    assert stamp == 10 and parts == {"joints": 1, "pose": 2, "images/front": 4}
    assert a.add("pose", 10, 5) is None  # a republished part of a delivered observation
    b = ObservationAssembler(["joints", "pose"], mode="latest", max_skew_s=0.05)
    assert b.add("joints", 1_000_000_000, 1) is None
    assert b.add("pose", 1_200_000_000, 2) is None  # 200 ms apart: too skewed
    stamp, parts = b.add("joints", 1_190_000_000, 3)
    assert stamp == 1_190_000_000 and parts == {"joints": 3, "pose": 2}
