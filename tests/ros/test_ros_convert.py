"""Round trips for every message type hil_robot_ros uses (DESIGN §8: standard messages only)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

from hil_robot.types import STATE_DIM, OperatorCommand, OperatorMode, Segment  # noqa: E402
from hil_robot_ros import convert  # noqa: E402

STAMP = 1_700_000_123_456_789_012


def _rgb(h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_stamp_round_trip():
    t = convert.stamp_from_ns(STAMP)
    assert convert.stamp_to_ns(t) == STAMP
    assert abs(convert.stamp_to_s(t) - STAMP * 1e-9) < 1e-6


def test_image_round_trip_exact_and_metadata():
    img = _rgb()
    msg = convert.image_to_msg(img, STAMP, "front_optical_frame")
    assert (msg.height, msg.width, msg.encoding, msg.step) == (48, 64, "rgb8", 64 * 3)
    assert msg.header.frame_id == "front_optical_frame" and convert.stamp_to_ns(msg.header.stamp) == STAMP
    back = convert.msg_to_image(msg)
    assert back.dtype == np.uint8 and np.array_equal(back, img)


def test_image_bgr_mono_and_padded_rows():
    from sensor_msgs.msg import Image

    img = _rgb(4, 5)
    bgr = convert.image_to_msg(img[:, :, ::-1].copy(), 0, "f")
    bgr.encoding = "bgr8"
    assert np.array_equal(convert.msg_to_image(bgr), img)
    mono = Image(height=2, width=3, encoding="mono8", step=4, data=bytes([1, 2, 3, 0, 4, 5, 6, 0]))
    out = convert.msg_to_image(mono)
    assert out.shape == (2, 3, 3) and out[1, 2].tolist() == [6, 6, 6]


def test_image_errors_say_what_is_wrong():
    with pytest.raises(convert.ConversionError, match=r"uint8 \[H, W, 3\]"):
        convert.image_to_msg(np.zeros((4, 4), np.uint8), 0, "f")
    msg = convert.image_to_msg(_rgb(4, 4), 0, "f")
    msg.encoding = "32FC1"
    with pytest.raises(convert.ConversionError, match="rgb8"):
        convert.msg_to_image(msg)


def test_compressed_png_lossless_jpeg_close():
    img = _rgb(32, 32)
    png = convert.image_to_compressed_msg(img, STAMP, "f", "png")
    assert "png" in png.format and np.array_equal(convert.compressed_msg_to_image(png), img)
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    jpg = convert.image_to_compressed_msg(smooth, STAMP, "f", "jpeg", quality=95)
    assert np.abs(convert.compressed_msg_to_image(jpg).astype(int) - smooth).mean() < 3.0


def test_camera_info_round_trip():
    msg = convert.camera_info_msg(128, 160, STAMP, "front", fovy_deg=45.0)
    intr = convert.camera_info_intrinsics(msg)
    assert intr["height"] == 128 and intr["width"] == 160
    assert intr["fy"] == pytest.approx(64 / np.tan(np.radians(22.5)))
    assert intr["cx"] == pytest.approx(79.5) and intr["cy"] == pytest.approx(63.5)
    msg2 = convert.camera_info_msg(10, 10, 0, "f", fx=100.0, fy=120.0, cx=4.0, cy=5.0)
    assert convert.camera_info_intrinsics(msg2) == {"height": 10, "width": 10, "fx": 100.0, "fy": 120.0, "cx": 4.0, "cy": 5.0}


def test_state_round_trip_through_joint_state_and_pose():
    state = np.random.default_rng(1).normal(size=STATE_DIM).astype(np.float32)
    js, pose = convert.state_to_msgs(state, STAMP, "base")
    assert js.name[-1] == "gripper" and len(js.name) == 8 and pose.header.frame_id == "base"
    back = convert.msgs_to_state(js, pose)
    assert back.dtype == np.float32 and np.array_equal(back, state)


def test_joint_state_subset_and_missing_joint_message():
    js = convert.joint_state_msg([1.0, 2.0, 3.0], ["a", "b", "c"], 0)
    assert convert.joint_state_positions(js, ["c", "a"]).tolist() == [3.0, 1.0]
    with pytest.raises(convert.ConversionError, match="joint_names"):
        convert.joint_state_positions(js, ["z"])


def test_pose_and_twist_round_trip():
    pose = convert.pose_msg([0.1, 0.2, 0.3], [0.9, 0.1, 0.2, 0.3], STAMP, "base")
    pos, quat = convert.msg_to_pose(pose)
    assert pos.tolist() == [0.1, 0.2, 0.3] and quat.tolist() == [0.9, 0.1, 0.2, 0.3]
    assert pose.pose.orientation.w == 0.9  # wxyz mapped by name, not by position
    tw = convert.twist_msg([1, 2, 3], [4, 5, 6], STAMP, "base")
    assert convert.msg_to_twist(tw).tolist() == [1, 2, 3, 4, 5, 6]


def test_action_twist_round_trip_exact_in_float32():
    rng = np.random.default_rng(2)
    for _ in range(50):
        a = rng.uniform(-1, 1, 7).astype(np.float32)
        tw, grip = convert.action_to_twist(a, 0.02, 0.15, 10.0, STAMP, "base")
        assert tw.twist.linear.x == pytest.approx(a[0] * 0.02 * 10.0)
        back = convert.twist_to_action(tw, grip.data, 0.02, 0.15, 10.0)
        assert np.array_equal(back, a)


def test_float32_array_and_bool_and_joy():
    arr = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    msg = convert.float32_array_msg(arr, "task_state")
    assert [d.size for d in msg.layout.dim] == [3, 4]
    assert np.array_equal(convert.msg_to_float32_array(msg), arr)
    assert convert.msg_to_float32_array(convert.float32_array_msg(np.zeros(0))).shape == (0,)
    assert convert.bool_msg(True).data is True
    joy = convert.joy_msg([0.5, -1.0], [1, 0, 1], STAMP)
    axes, buttons = convert.msg_to_joy(joy)
    assert axes.tolist() == [0.5, -1.0] and buttons.tolist() == [1, 0, 1]


def test_json_records_keep_float32_exactly_and_nan():
    chunk = np.random.default_rng(3).uniform(-1, 1, (4, 7)).astype(np.float32)
    chunk[1, 2] = np.nan
    d = convert.msg_to_chunk(convert.chunk_to_msg(chunk, STAMP, 7, infer_ms=3.5))
    assert d["obs_stamp_ns"] == STAMP and d["policy_version"] == 7 and d["infer_ms"] == 3.5
    np.testing.assert_array_equal(d["actions"], chunk)  # NaN == NaN for assert_array_equal
    with pytest.raises(convert.ConversionError, match="JSON"):
        convert.msg_to_json(convert.String(data="not json"))


def test_operator_command_round_trip():
    cmd = OperatorCommand(timestamp_s=12.5, mode=OperatorMode.TAKEOVER,
                          action=np.array([0.1, -0.2, 0.3, 0, 0, 0.5, 1.0], np.float32),
                          pose_target=np.array([0.5, 0, 0.3, 1, 0, 0, 0, -1], np.float32),
                          dof_mask=np.array([1, 1, 1, 0, 0, 0, 1], bool), segment=Segment.CORRECTION,
                          mark="success", language_correction="grab the red one", estop=True,
                          operator_id="op1", device_id="spacemouse")
    back = convert.msg_to_operator_command(convert.operator_command_to_msg(cmd))
    assert back.mode == cmd.mode and back.segment == cmd.segment and back.mark == "success"
    assert np.array_equal(back.action, cmd.action) and np.array_equal(back.pose_target, cmd.pose_target)
    assert np.array_equal(back.dof_mask, cmd.dof_mask) and back.estop and back.device_id == "spacemouse"
    plain = convert.msg_to_operator_command(convert.operator_command_to_msg(OperatorCommand(timestamp_s=1.0)))
    assert plain.action is None and plain.segment is None and plain.mode == OperatorMode.AUTONOMOUS
