"""Nodes in-process over real DDS (loopback): the camera node with a mock capture, arm_bridge with
both presets against a fake arm driver, parameter validation, and the JSON record adapters."""

from __future__ import annotations

import itertools
import os
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

import rclpy  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402

from hil_robot.config import ConfigError, load_config  # noqa: E402
from hil_robot_ros import convert  # noqa: E402
from hil_robot_ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS  # noqa: E402


def ros_args(*args):
    return pytest.mark.parametrize("ros", [args], indirect=True, ids=["params"])


_DOMAIN_OFFSETS = itertools.cycle(range(1, 10))  # each test's domain: ROS_DOMAIN_ID + 1..9 (the graph tests use +101 and up)


@pytest.fixture
def ros(request):
    """rclpy.init with the test's ``--ros-args`` (``ros_args(...)`` parametrizes it), an executor, cleanup."""
    extra = getattr(request, "param", ())
    args = ["--ros-args", *extra] if extra else []
    # each test in its own DDS domain: a latched message (the previous test's e-stop) from a
    # participant that has not finished going away cannot reach this test's nodes
    rclpy.init(args=["test", *args], domain_id=int(os.environ["ROS_DOMAIN_ID"]) + next(_DOMAIN_OFFSETS))
    ex = MultiThreadedExecutor(num_threads=3)
    nodes = []

    class Env:
        def add(self, node):
            nodes.append(node)
            ex.add_node(node)
            return node

        def spin_until(self, pred, timeout_s=10.0):
            end = time.monotonic() + timeout_s
            while time.monotonic() < end:
                ex.spin_once(timeout_sec=0.02)
                if pred():
                    return True
            return False

    yield Env()
    for n in nodes:
        close = getattr(n, "close", None)
        if callable(close):
            close()
    ex.shutdown(timeout_sec=5.0)
    for n in nodes:  # the DDS entities go now, not when the garbage collector gets to them
        n.destroy_node()
    rclpy.shutdown()


def _cfg():
    return load_config(["robot.control_hz=10"])


class MockCapture:
    def __init__(self):
        self.n = 0

    def isOpened(self):
        return True

    def read(self):
        self.n += 1
        img = np.zeros((48, 64, 3), np.uint8)
        img[..., 2] = 200  # red in BGR
        return True, img

    def set(self, *a):
        return True

    def get(self, *a):
        return 0.0

    def release(self):
        pass


@ros_args("-p", "camera_name:=wrist", "-p", "width:=64", "-p", "height:=48", "-p", "rate_hz:=30.0",
                      "-p", "fovy_deg:=60.0")
def test_camera_node_publishes_image_info_and_compressed(ros):
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from hil_robot_ros.nodes.camera import CameraNode

    cam = ros.add(CameraNode(_cfg(), opener=lambda dev: MockCapture()))
    sub = ros.add(rclpy.create_node("cam_sub"))
    got = {"img": [], "info": [], "jpg": []}
    sub.create_subscription(Image, "camera/wrist/image_raw", got["img"].append, SENSOR_QOS)
    sub.create_subscription(CameraInfo, "camera/wrist/camera_info", got["info"].append, SENSOR_QOS)
    sub.create_subscription(CompressedImage, "camera/wrist/image_raw/compressed", got["jpg"].append, SENSOR_QOS)
    assert ros.spin_until(lambda: all(len(v) >= 3 for v in got.values())), {k: len(v) for k, v in got.items()}
    img = convert.msg_to_image(got["img"][-1])
    assert img.shape == (48, 64, 3) and img[0, 0].tolist() == [200, 0, 0]  # BGR capture -> RGB message
    assert got["img"][-1].header.frame_id == "wrist_optical_frame"
    intr = convert.camera_info_intrinsics(got["info"][-1])
    assert intr["width"] == 64 and intr["fy"] == pytest.approx(24 / np.tan(np.radians(30)))
    assert np.abs(convert.compressed_msg_to_image(got["jpg"][-1]).astype(int) - img).mean() < 3
    assert cam.frames >= 3


@ros_args("-p", "device:=/dev/video_does_not_exist_7")
def test_camera_node_names_the_missing_device(ros):
    from hil_robot_ros.nodes.camera import CameraNode

    with pytest.raises(RuntimeError, match="/dev/video_does_not_exist_7 does not exist"):
        CameraNode(_cfg())


@ros_args("-p", "rate_hz:=-1.0")
def test_bad_parameter_is_rejected_with_its_name(ros):
    from hil_robot_ros.nodes.camera import CameraNode

    with pytest.raises(ConfigError, match=r"camera.rate_hz=-1.0 must be > 0"):
        CameraNode(_cfg(), opener=lambda dev: MockCapture())


def _fake_franka(ros):
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import JointState

    drv = ros.add(rclpy.create_node("fake_franka"))
    js_pub = drv.create_publisher(JointState, "/franka/joint_states", SENSOR_QOS)
    pose_pub = drv.create_publisher(PoseStamped, "/franka_robot_state_broadcaster/current_pose", SENSOR_QOS)
    names = [f"fr3_joint{i}" for i in range(1, 8)] + ["fr3_finger_joint1"]

    def publish():
        stamp = drv.get_clock().now().nanoseconds
        js_pub.publish(convert.joint_state_msg([0.1 * i for i in range(7)] + [0.02], names, stamp))
        pose_pub.publish(convert.pose_msg([0.5, 0.0, 0.3], [0.0, 1.0, 0.0, 0.0], stamp, "fr3_link0"))

    return drv, publish


@ros_args("-p", "preset:=franka_cartesian_impedance")
def test_arm_bridge_franka_pose_targets_and_estop(ros):
    from geometry_msgs.msg import PoseStamped, TwistStamped
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool

    from hil_robot_ros.nodes.arm_bridge import ArmBridgeNode

    bridge = ros.add(ArmBridgeNode(_cfg()))
    drv, publish = _fake_franka(ros)
    got = {"js": [], "pose": [], "target": []}
    drv.create_subscription(JointState, "joint_states", got["js"].append, SENSOR_QOS)
    drv.create_subscription(PoseStamped, "ee_pose", got["pose"].append, SENSOR_QOS)
    drv.create_subscription(PoseStamped, "/cartesian_impedance_controller/equilibrium_pose", got["target"].append, COMMAND_QOS)
    twist_pub = drv.create_publisher(TwistStamped, "cmd/ee_twist", COMMAND_QOS)
    estop_pub = drv.create_publisher(Bool, "estop", LATCHED_QOS)
    assert ros.spin_until(lambda: (publish(), len(got["js"]) >= 2 and len(got["pose"]) >= 2)[1])
    q = convert.joint_state_positions(got["js"][-1], list(convert.DEFAULT_JOINT_NAMES) + ["gripper"])
    assert q[:7] == pytest.approx([0.1 * i for i in range(7)]) and q[7] == pytest.approx(0.5)  # 0.02 of 0.04 open
    assert got["pose"][-1].header.frame_id == "fr3_link0"
    # a twist of 0.1 m/s in x for one 10 Hz tick moves the impedance target 1 cm (wait for a moved
    # target: a watchdog hold at the measured pose can arrive first while DDS is still matching)
    def moved() -> list:
        return [m for m in got["target"] if abs(convert.msg_to_pose(m)[0][0] - 0.5) > 1e-6]

    assert ros.spin_until(lambda: (twist_pub.publish(convert.twist_msg([0.1, 0, 0], [0, 0, 0], 0, "base")), moved())[1])
    pos, _ = convert.msg_to_pose(moved()[0])
    assert pos[0] == pytest.approx(0.51) and pos[2] == pytest.approx(0.3)
    # a huge twist is clamped to 0.25 m/s: at most 2.5 cm per tick further
    n = len(got["target"])
    twist_pub.publish(convert.twist_msg([100.0, 0, 0], [0, 0, 0], 0, "base"))
    assert ros.spin_until(lambda: len(got["target"]) > n)
    assert convert.msg_to_pose(got["target"][-1])[0][0] - pos[0] <= 0.025 + 1e-9
    # e-stop: the target snaps back to the measured pose and twists are ignored
    estop_pub.publish(Bool(data=True))
    assert ros.spin_until(lambda: bridge.estopped)

    def after_estop() -> list:
        # targets the bridge stamped after its e-stop flag was set (earlier ones, even a watchdog hold at the
        # same pose, can still be in flight under load); the e-stop hold is the first of them
        return [m for m in got["target"] if convert.stamp_to_ns(m.header.stamp) >= bridge.estopped_at_ns]

    assert ros.spin_until(lambda: after_estop(), 5.0), "no hold after the e-stop"
    assert convert.msg_to_pose(after_estop()[0])[0] == pytest.approx([0.5, 0.0, 0.3])
    twist_pub.publish(convert.twist_msg([0.1, 0, 0], [0, 0, 0], 0, "base"))
    ros.spin_until(lambda: False, 0.5)
    assert all(convert.msg_to_pose(m)[0] == pytest.approx([0.5, 0.0, 0.3]) for m in after_estop())


@ros_args("-p", "preset:=ur_servo_twist", "-p", "max_linear_speed_mps:=0.2")
def test_arm_bridge_ur_servo_twist_and_watchdog(ros):
    from geometry_msgs.msg import TwistStamped

    from hil_robot_ros.nodes.arm_bridge import ArmBridgeNode

    bridge = ros.add(ArmBridgeNode(_cfg()))
    assert bridge.preset.max_linear_speed_mps == 0.2 and bridge.preset.command_style == "twist"
    test = ros.add(rclpy.create_node("ur_side"))
    out = []
    test.create_subscription(TwistStamped, "/servo_node/delta_twist_cmds", out.append, COMMAND_QOS)
    pub = test.create_publisher(TwistStamped, "cmd/ee_twist", COMMAND_QOS)
    # the first forwarded commands can go out before DDS has matched the driver-side subscription,
    # and a watchdog hold (zero twist) can arrive first: wait for a forwarded (moving) command
    def moving() -> list:
        return [m for m in out if np.any(convert.msg_to_twist(m) != 0.0)]

    assert ros.spin_until(lambda: (pub.publish(convert.twist_msg([1.0, 0, 0], [0, 0, 0.5], 0, "base")), moving())[1])
    first = moving()[0]
    v = convert.msg_to_twist(first)
    assert v[0] == pytest.approx(0.2) and v[5] == pytest.approx(0.5) and first.header.frame_id == "base_link"
    # no fresh command for watchdog_hold_s -> a zero twist goes out
    assert ros.spin_until(lambda: np.allclose(convert.msg_to_twist(out[-1]), 0.0), 2.0)


def test_step_labels_round_trip_into_a_step_record():
    from hil_robot.types import Segment, Source, StepRecord
    from hil_robot_ros.topic_robot import StampIndex, StepPublisher, labels_to_record

    stamps = StampIndex()
    obs = {"state": np.arange(15, dtype=np.float32), "prompt": "p", "timestamp_s": 12.5}
    stamps.put(12.5, 777)
    rec = StepRecord(episode_id="ep", step=0, observation=obs, action_executed=np.full(7, 0.25, np.float32),
                     action_policy=np.full(7, np.nan, np.float32), source=Source.HUMAN, segment=Segment.RECOVERY,
                     instruction="lift", policy_version=3, safety_flags=("step_pos",), obs_timestamp_s=12.5)
    sent = []
    StepPublisher(lambda d: sent.append(convert.msg_to_json(convert.json_msg(d))), stamps).add(rec)
    assert sent[0]["event"] == "step" and sent[0]["obs_stamp_ns"] == 777
    back = labels_to_record(sent[0]["labels"], obs)
    assert back.segment == Segment.RECOVERY and back.source == Source.HUMAN and back.safety_flags == ("step_pos",)
    assert np.array_equal(back.action_executed, rec.action_executed) and np.isnan(back.action_policy).all()
    assert back.policy_noise is None
    import dataclasses  # DSRL: a policy tick carries the noise its chunk was integrated from

    noisy = dataclasses.replace(rec, source=Source.POLICY, segment=Segment.AUTONOMOUS, action_policy=rec.action_executed,
                                policy_noise=np.linspace(-1.5, 1.5, 28, dtype=np.float32))
    StepPublisher(lambda d: sent.append(convert.msg_to_json(convert.json_msg(d))), stamps).add(noisy)
    np.testing.assert_array_equal(labels_to_record(sent[1]["labels"], obs).policy_noise, noisy.policy_noise)


@ros_args("-p", "input:=joy", "-p", "sim:=false", "-p", "sync:=latest", "-p", "rate_hz:=20.0")
def test_teleop_node_turns_joy_into_operator_commands_and_estop(ros):
    from geometry_msgs.msg import PoseStamped  # noqa: F401
    from sensor_msgs.msg import Image, JointState, Joy  # noqa: F401
    from std_msgs.msg import Bool, String

    from hil_robot.types import OperatorMode
    from hil_robot_ros.nodes.teleop import TeleopRosNode

    cfg = load_config(["sim.cameras=[front]", "teleop.device=keyboard"])
    ros.add(TeleopRosNode(cfg))
    arm = ros.add(rclpy.create_node("fake_arm"))
    pubs = {"js": arm.create_publisher(JointState, "joint_states", SENSOR_QOS),
            "pose": arm.create_publisher(PoseStamped, "ee_pose", SENSOR_QOS),
            "img": arm.create_publisher(Image, "camera/front/image_raw", SENSOR_QOS),
            "joy": arm.create_publisher(Joy, "teleop/joy", SENSOR_QOS)}
    cmds, estops = [], []
    arm.create_subscription(String, "teleop/command", lambda m: cmds.append(convert.msg_to_operator_command(m)), COMMAND_QOS)
    arm.create_subscription(Bool, "estop", lambda m: estops.append(m.data), LATCHED_QOS)
    state = np.zeros(15, np.float32)
    state[:7] = [0.5, 0, 0.3, 1, 0, 0, 0]
    buttons = [0] * 10

    def feed():
        stamp = arm.get_clock().now().nanoseconds
        js, pose = convert.state_to_msgs(state, stamp, "base")
        pubs["js"].publish(js)
        pubs["pose"].publish(pose)
        pubs["img"].publish(convert.image_to_msg(np.zeros((8, 8, 3), np.uint8), stamp, "front"))
        pubs["joy"].publish(convert.joy_msg([0.0, 1.0, 0, 0, 0, 0, 0, 0], buttons, stamp))  # left stick up: +x

    def driving():
        feed()
        return any(c.mode == OperatorMode.TAKEOVER and c.action is not None and c.action[0] > 0.5 for c in cmds)

    assert ros.spin_until(driving), [(c.mode, c.action) for c in cmds[-3:]]
    buttons[8] = 1  # the e-stop button
    assert ros.spin_until(lambda: (feed(), True in estops)[1]), "no latched estop from the e-stop button"


def test_topic_operator_and_policy_semantics():
    import threading

    from hil_robot.types import OperatorCommand, OperatorMode
    from hil_robot_ros.topic_robot import StampIndex, TopicOperator, TopicPolicy

    now = [100.0]
    op = TopicOperator(lambda: now[0], max_age_s=0.5)
    assert op.command({}, {}) is None  # nothing received: hands off
    op.on_command(OperatorCommand(timestamp_s=0.0, mode=OperatorMode.TAKEOVER, action=np.ones(7, np.float32)))
    op.on_command(OperatorCommand(timestamp_s=0.0, mark="success"))
    op.on_command(OperatorCommand(timestamp_s=0.0, mode=OperatorMode.TAKEOVER))
    assert op.command({}, {}).mark == "success"  # a mark between two ticks is not lost
    assert op.command({}, {}).mode == OperatorMode.TAKEOVER
    now[0] += 1.0
    assert op.command({}, {}) is None  # stale: the controller sees hands-off

    stamps = StampIndex()
    stamps.put(5.0, 1000)
    pol = TopicPolicy(stamps, timeout_s=2.0)
    pol.on_chunk({"obs_stamp_ns": 900, "actions": np.zeros((2, 7), np.float32), "policy_version": 1})
    threading.Timer(0.1, pol.on_chunk, args=({"obs_stamp_ns": 1000, "actions": np.ones((2, 7), np.float32),
                                             "policy_version": 2},)).start()
    out = pol.infer({"timestamp_s": 5.0})  # waits for the chunk that answers this observation
    assert out["policy_version"] == 2 and out["actions"].shape == (2, 7)
    with pytest.raises(TimeoutError, match="policy_bridge"):
        TopicPolicy(stamps, timeout_s=0.1).infer({"timestamp_s": 5.0})
