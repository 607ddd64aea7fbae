"""The real-cell graph (``real_ur``) against a fake UR driver and a fake camera in this process:
only the driver side differs from sim. The runner starts arm_bridge (UR servo preset) and the
controller (independent-driver sync, no sim topics); an operator command on ``teleop/command``
must come out as moveit_servo TwistStamped commands that move the fake arm."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]


def test_real_ur_graph_drives_a_fake_ur_driver(tmp_path):
    import rclpy
    from geometry_msgs.msg import PoseStamped, TwistStamped
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String

    from hil_robot.types import OperatorCommand, OperatorMode
    from hil_robot_ros import convert
    from hil_robot_ros.qos import COMMAND_QOS, SENSOR_QOS

    domain = str(int(os.environ["ROS_DOMAIN_ID"]) + 121)
    overrides = ["graph=real_ur", "sim.cameras=[front]", "sim.max_episode_steps=1000", "teleop.device=keyboard"]
    off = [f"graph.nodes.{n}.enabled=false" for n in
           ("camera_front", "camera_wrist", "policy_server", "policy_bridge", "teleop", "recorder")]
    ctl = ["graph.nodes.controller.parameters.policy_source=none",
           "+graph.nodes.controller.parameters.wait_for_recorder_s=0.0"]
    runner = subprocess.Popen([sys.executable, "-m", "hil_robot", "launch", "real_ur", *overrides[1:], *off, *ctl],
                              cwd=REPO, env=dict(os.environ, ROS_DOMAIN_ID=domain), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(x) for x in runner.stdout], daemon=True).start()

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(domain))
    node = rclpy.create_node("fake_ur", context=ctx)
    names = ["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint", "wrist_2_joint", "wrist_3_joint"]
    pose = {"pos": np.array([0.4, 0.0, 0.3])}
    twists: list[np.ndarray] = []

    def on_twist(msg):
        v = convert.msg_to_twist(msg)
        twists.append(v)
        pose["pos"] = pose["pos"] + v[:3] * 0.01  # the fake servo integrates at 100 Hz

    node.create_subscription(TwistStamped, "/servo_node/delta_twist_cmds", on_twist, COMMAND_QOS)
    js_pub = node.create_publisher(JointState, "/joint_states", SENSOR_QOS)
    pose_pub = node.create_publisher(PoseStamped, "/tcp_pose_broadcaster/pose", SENSOR_QOS)
    img_pub = node.create_publisher(Image, "/hil/camera/front/image_raw", SENSOR_QOS)
    cmd_pub = node.create_publisher(String, "/hil/teleop/command", COMMAND_QOS)
    img = np.zeros((128, 128, 3), np.uint8)

    def publish_world():
        stamp = node.get_clock().now().nanoseconds
        js_pub.publish(convert.joint_state_msg([0.0] * 6, names, stamp))
        pose_pub.publish(convert.pose_msg(pose["pos"], [0.0, 1.0, 0.0, 0.0], stamp, "base_link"))
        img_pub.publish(convert.image_to_msg(img, stamp, "front"))

    node.create_timer(0.01, publish_world)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    start_x = float(pose["pos"][0])
    try:
        end = time.monotonic() + 90
        while time.monotonic() < end and sum(abs(v[0]) > 1e-6 for v in twists) < 15:
            ex.spin_once(timeout_sec=0.01)
            if int(time.monotonic() * 20) % 2 == 0:  # ~10 Hz operator commands: drive +x
                cmd = OperatorCommand(timestamp_s=time.monotonic(), mode=OperatorMode.TAKEOVER,
                                      action=np.array([1.0, 0, 0, 0, 0, 0, -1.0], np.float32), operator_id="test")
                cmd_pub.publish(convert.operator_command_to_msg(cmd))
        moving = [v for v in twists if abs(v[0]) > 1e-6]
        assert len(moving) >= 10, "no servo twists from the controller:\n" + "".join(lines[-40:])
        # the controller's safety filter limits a tick to max_step_m; the UR preset clamps to 0.25 m/s
        assert all(0 < v[0] <= 0.25 + 1e-9 for v in moving) and all(abs(v[1]) < 1e-9 for v in moving)
        assert pose["pos"][0] > start_x + 0.01, "the fake arm did not move along +x"
    finally:
        ex.shutdown()
        rclpy.shutdown(context=ctx)
        if runner.poll() is None:
            os.killpg(runner.pid, 2)
        runner.wait(timeout=30)
    out = "".join(lines)
    assert "arm_bridge: started" in out and "controller: started" in out
