"""Shared ROS plumbing: subscribe to an arm's + cameras' observation topics and hand complete
observations to a callback; publish a normalised action as stamped commands."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32MultiArray, String

from hil_robot_ros import convert, topics
from hil_robot_ros.obs_sync import ObservationAssembler
from hil_robot_ros.qos import COMMAND_QOS, SENSOR_QOS


class ObservationSubscriber:
    """Subscribes ``joint_states``, ``ee_pose``, ``camera/<cam>/image_raw`` for each camera and (sim)
    ``sim/task_state`` + ``sim/status``; calls ``on_obs(stamp_ns, parts)`` for each complete
    observation (see obs_sync for the two sync modes). Callbacks run in ``callback_group``."""

    def __init__(self, node: Any, cameras: Sequence[str], on_obs: Callable[[int, dict[str, Any]], None], *,
                 sim: bool, sync: str = "exact", joint_names: Sequence[str] = convert.DEFAULT_JOINT_NAMES,
                 callback_group: Any = None, max_skew_s: float = 0.1, newest_only: bool = True,
                 keep: int = 16, qos: Any = None) -> None:
        self.node = node
        self.on_obs = on_obs
        self.joint_names = list(joint_names) + [convert.GRIPPER_JOINT]
        parts = ["joints", "pose", *(f"images/{c}" for c in cameras)]
        if sim:
            parts += ["task_state", "status"]
        self.assembler = ObservationAssembler(parts, mode=sync, max_skew_s=max_skew_s, newest_only=newest_only,
                                              keep=keep)
        self.errors = 0
        cg = callback_group
        q = SENSOR_QOS if qos is None else qos
        node.create_subscription(JointState, "joint_states", self._on_joints, q, callback_group=cg)
        node.create_subscription(PoseStamped, "ee_pose", self._on_pose, q, callback_group=cg)
        for cam in cameras:
            node.create_subscription(Image, topics.image_topic(cam), self._image_cb(cam), q, callback_group=cg)
        if sim:
            node.create_subscription(Float32MultiArray, "sim/task_state", self._on_task_state, q, callback_group=cg)
            node.create_subscription(String, "sim/status", self._on_status, q, callback_group=cg)

    def _feed(self, part: str, stamp_ns: int, value: Any) -> None:
        done = self.assembler.add(part, stamp_ns, value)
        if done is not None:
            self.on_obs(*done)

    def _on_joints(self, msg: JointState) -> None:
        try:
            q = convert.joint_state_positions(msg, self.joint_names)
        except convert.ConversionError as e:
            self.errors += 1
            self.node.get_logger().error(str(e), throttle_duration_sec=5.0)
            return
        self._feed("joints", convert.stamp_to_ns(msg.header.stamp), q)

    def _on_pose(self, msg: PoseStamped) -> None:
        self._feed("pose", convert.stamp_to_ns(msg.header.stamp), convert.msg_to_pose(msg))

    def _image_cb(self, cam: str) -> Callable[[Image], None]:
        def cb(msg: Image) -> None:
            try:
                img = convert.msg_to_image(msg)
            except convert.ConversionError as e:
                self.errors += 1
                self.node.get_logger().error(f"camera {cam}: {e}", throttle_duration_sec=5.0)
                return
            self._feed(f"images/{cam}", convert.stamp_to_ns(msg.header.stamp), img)
        return cb

    def _on_task_state(self, msg: Float32MultiArray) -> None:
        # the stamp of a Float32MultiArray travels in its first dimension's label (it has no header)
        label = msg.layout.dim[0].label if msg.layout.dim else ""
        if label.startswith("stamp_ns="):
            self._feed("task_state", int(label.split("=", 1)[1]), convert.msg_to_float32_array(msg).reshape(-1))

    def _on_status(self, msg: String) -> None:
        try:
            d = convert.msg_to_json(msg)
        except convert.ConversionError as e:
            self.errors += 1
            self.node.get_logger().error(str(e), throttle_duration_sec=5.0)
            return
        self._feed("status", int(d["stamp_ns"]), d)


class CommandPublisher:
    """Normalised action float32[7] -> ``cmd/ee_twist`` (TwistStamped) + ``cmd/gripper``
    (JointState 'gripper', stamped identically so a lock-step driver can pair them); absolute
    targets -> ``cmd/ee_pose`` + ``cmd/gripper``."""

    def __init__(self, node: Any, robot_cfg: Any, base_frame: str = "base") -> None:
        self.node = node
        self.cfg = robot_cfg
        self.base_frame = base_frame
        self.pub_twist = node.create_publisher(TwistStamped, "cmd/ee_twist", COMMAND_QOS)
        self.pub_pose = node.create_publisher(PoseStamped, "cmd/ee_pose", COMMAND_QOS)
        self.pub_gripper = node.create_publisher(JointState, "cmd/gripper", COMMAND_QOS)

    def send_action(self, action: np.ndarray, stamp_ns: int) -> None:
        c = self.cfg
        twist, grip = convert.action_to_twist(action, c.max_delta_pos_m, c.max_delta_rot_rad, c.control_hz, stamp_ns,
                                              self.base_frame)
        self.pub_gripper.publish(convert.joint_state_msg([grip.data], [convert.GRIPPER_JOINT], stamp_ns))
        self.pub_twist.publish(twist)

    def send_pose(self, pose8: np.ndarray, stamp_ns: int) -> None:
        pose8 = np.asarray(pose8, dtype=np.float64)
        self.pub_gripper.publish(convert.joint_state_msg([pose8[7]], [convert.GRIPPER_JOINT], stamp_ns))
        self.pub_pose.publish(convert.pose_msg(pose8[:3], pose8[3:7], stamp_ns, self.base_frame))


def task_state_msg(task_state: np.ndarray, stamp_ns: int) -> Float32MultiArray:
    msg = convert.float32_array_msg(np.asarray(task_state, dtype=np.float32).reshape(-1))
    msg.layout.dim[0].label = f"stamp_ns={int(stamp_ns)}"
    return msg
