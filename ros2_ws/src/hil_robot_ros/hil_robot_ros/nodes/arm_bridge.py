"""``arm_bridge`` node: adapts a real arm's ROS 2 driver to hil_robot's topics, by configuration.

Driver side (names from a preset in ``arm_presets.PRESETS`` or from parameters): its JointState and
EE PoseStamped in; Cartesian pose targets (impedance controllers, ``command_style=pose``) or
TwistStamped (moveit_servo, ``command_style=twist``) out, plus a Float32 gripper command.
Our side: ``joint_states`` (7 arm joints + ``gripper`` opening) and ``ee_pose`` out; ``cmd/ee_twist``,
``cmd/ee_pose``, ``cmd/gripper`` and the latched ``estop`` in.

Safety here is the last line, not the only one: non-finite commands are dropped, twists are
clamped to the preset's speeds, a stale command (older than robot.safety.watchdog_hold_s) becomes
zero velocity / the measured pose, and a latched e-stop holds until ``estop/reset``.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float32

from hil_robot.config import ConfigError, RootConfig
from hil_robot_ros import convert
from hil_robot_ros.arm_presets import PRESETS, ArmPreset, clamp_twist, gripper_opening, integrate_twist
from hil_robot_ros.node_base import Param, autostart_lifecycle, declare_params, one_of, positive, run_node
from hil_robot_ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

_FIELDS = [f.name for f in dataclasses.fields(ArmPreset)]


def _params() -> dict[str, Param]:
    spec = {
        "preset": Param("franka_cartesian_impedance", "starting values for the fields below",
                        one_of("", *PRESETS)),
        "watchdog_rate_hz": Param(50.0, "how often stale commands are checked", positive),
        "max_target_offset_m": Param(0.05, "pose style: target kept within this distance of the measured pose", positive),
        "autostart": Param(True, "configure and activate on start (no lifecycle manager needed)"),
    }
    # every preset field can be overridden; "" / [] / 0 keep the preset's value
    for name in _FIELDS:
        default = {"joint_names": [""], "gripper_open_position": 0.0, "max_linear_speed_mps": 0.0,
                   "max_angular_speed_rps": 0.0}.get(name, "")
        spec[name] = Param(default, f"override the preset's {name}")
    spec["command_style"] = Param("", "pose | twist (override the preset)", one_of("", "pose", "twist"))
    return spec


def resolve_preset(values: dict) -> ArmPreset:
    base = PRESETS.get(values["preset"])
    fields = {}
    for name in _FIELDS:
        v = values[name]
        if v in ("", 0.0, [""], []) or v is None:
            if base is None:
                raise ConfigError(f"arm_bridge: parameter {name} is required when preset is ''")
            v = getattr(base, name)
        fields[name] = tuple(v) if name == "joint_names" else v
    return ArmPreset(**fields)


class ArmBridgeNode(LifecycleNode):
    def __init__(self, cfg: RootConfig, name: str = "arm_bridge") -> None:
        super().__init__(name)
        self.cfg = cfg
        self.p = declare_params(self, _params())
        self.preset = resolve_preset(self.p)
        self.done, self.exit_code, self.last_error = False, 0, ""
        self._lock = threading.Lock()
        self.measured: tuple[np.ndarray, np.ndarray] | None = None
        self.target: tuple[np.ndarray, np.ndarray] | None = None
        self.last_cmd_s = -np.inf
        self.estopped = False
        self.estopped_at_ns = 0  # node-clock stamp of the latest e-stop; every command stamped later is a hold
        self.commands_out = 0
        self._group = MutuallyExclusiveCallbackGroup()
        if self.p["autostart"]:
            autostart_lifecycle(self)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        pr = self.preset
        self.pub_joints = self.create_lifecycle_publisher(JointState, "joint_states", SENSOR_QOS)
        self.pub_pose = self.create_lifecycle_publisher(PoseStamped, "ee_pose", SENSOR_QOS)
        self.pub_drv_twist = (self.create_lifecycle_publisher(TwistStamped, pr.driver_twist_cmd, COMMAND_QOS)
                              if pr.command_style == "twist" else None)
        self.pub_drv_pose = self.create_lifecycle_publisher(PoseStamped, pr.driver_pose_cmd, COMMAND_QOS)
        self.pub_drv_grip = self.create_lifecycle_publisher(Float32, pr.driver_gripper_cmd, COMMAND_QOS)
        self.create_subscription(JointState, pr.driver_joint_states, self._on_driver_joints, SENSOR_QOS)
        self.create_subscription(PoseStamped, pr.driver_ee_pose, self._on_driver_pose, SENSOR_QOS)
        self.create_subscription(TwistStamped, "cmd/ee_twist", self._on_twist, COMMAND_QOS)
        self.create_subscription(PoseStamped, "cmd/ee_pose", self._on_pose_target, COMMAND_QOS)
        self.create_subscription(JointState, "cmd/gripper", self._on_gripper, COMMAND_QOS)
        self.create_subscription(Bool, "estop", self._on_estop, LATCHED_QOS)
        self.create_subscription(Bool, "estop/reset", self._on_estop_reset, COMMAND_QOS)
        self.get_logger().info(f"bridging {pr.driver_joint_states} + {pr.driver_ee_pose}; commands as {pr.command_style}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.create_timer(1.0 / self.p["watchdog_rate_hz"], self._watchdog, callback_group=self._group)
        return super().on_activate(state)

    # ---------------------------------------------------------------- driver -> us

    def _on_driver_joints(self, msg: JointState) -> None:
        pr = self.preset
        try:
            q = convert.joint_state_positions(msg, pr.joint_names)
            grip = (gripper_opening(convert.joint_state_positions(msg, [pr.gripper_joint])[0], pr.gripper_open_position)
                    if pr.gripper_joint else 0.0)
        except convert.ConversionError as e:
            self.get_logger().error(str(e), throttle_duration_sec=5.0)
            return
        q7 = np.zeros(7)
        q7[: len(q)] = q  # a 6-DoF arm fills the first six
        names = list(convert.DEFAULT_JOINT_NAMES) + [convert.GRIPPER_JOINT]
        out = convert.joint_state_msg(list(q7) + [grip], names, convert.stamp_to_ns(msg.header.stamp))
        self.pub_joints.publish(out)

    def _on_driver_pose(self, msg: PoseStamped) -> None:
        pos, quat = convert.msg_to_pose(msg)
        with self._lock:
            self.measured = (pos, quat)
            if self.target is None:
                self.target = (pos.copy(), quat.copy())
        self.pub_pose.publish(convert.pose_msg(pos, quat, convert.stamp_to_ns(msg.header.stamp), self.preset.base_frame))

    # ---------------------------------------------------------------- us -> driver

    def _stamp(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_twist(self, msg: TwistStamped) -> None:
        if self.estopped:
            return
        pr = self.preset
        v = clamp_twist(convert.msg_to_twist(msg), pr.max_linear_speed_mps, pr.max_angular_speed_rps)
        self.last_cmd_s = time.monotonic()
        if pr.command_style == "twist":
            self.pub_drv_twist.publish(convert.twist_msg(v[:3], v[3:], self._stamp(), pr.base_frame))
        else:
            with self._lock:
                if self.target is None or self.measured is None:
                    self.get_logger().warning(f"no EE pose on {pr.driver_ee_pose} yet: twist ignored",
                                              throttle_duration_sec=2.0)
                    return
                pos, quat = integrate_twist(*self.target, v, 1.0 / self.cfg.robot.control_hz)
                offset = pos - self.measured[0]
                n = float(np.linalg.norm(offset))
                if n > self.p["max_target_offset_m"]:
                    pos = self.measured[0] + offset * (self.p["max_target_offset_m"] / n)
                self.target = (pos, quat)
            self.pub_drv_pose.publish(convert.pose_msg(pos, quat, self._stamp(), pr.base_frame))
        self.commands_out += 1

    def _on_pose_target(self, msg: PoseStamped) -> None:
        if self.estopped:
            return
        pos, quat = convert.msg_to_pose(msg)
        if not (np.isfinite(pos).all() and np.isfinite(quat).all()):
            self.get_logger().warning("non-finite pose target dropped", throttle_duration_sec=2.0)
            return
        with self._lock:
            self.target = (pos, quat)
        self.last_cmd_s = time.monotonic()
        self.pub_drv_pose.publish(convert.pose_msg(pos, quat, self._stamp(), self.preset.base_frame))

    def _on_gripper(self, msg: JointState) -> None:
        if self.estopped or not msg.position or not np.isfinite(msg.position[0]):
            return
        self.pub_drv_grip.publish(Float32(data=float(np.clip(msg.position[0], -1.0, 1.0))))

    def _hold(self) -> None:
        pr = self.preset
        if pr.command_style == "twist":
            self.pub_drv_twist.publish(convert.twist_msg([0, 0, 0], [0, 0, 0], self._stamp(), pr.base_frame))
        else:
            with self._lock:
                if self.measured is None:
                    return
                self.target = (self.measured[0].copy(), self.measured[1].copy())
                pos, quat = self.target
            self.pub_drv_pose.publish(convert.pose_msg(pos, quat, self._stamp(), pr.base_frame))

    def _watchdog(self) -> None:
        stale = time.monotonic() - self.last_cmd_s > self.cfg.robot.safety.watchdog_hold_s
        if stale and np.isfinite(self.last_cmd_s):
            self.last_cmd_s = -np.inf  # hold once per lapse, not every tick
            self._hold()

    def _on_estop(self, msg: Bool) -> None:
        if msg.data and not self.estopped:
            self.estopped_at_ns = self._stamp()
            self.estopped = True
            self.get_logger().warning("E-STOP: holding the arm until estop/reset")
            self._hold()

    def _on_estop_reset(self, msg: Bool) -> None:
        if msg.data and self.estopped:
            self.estopped = False
            self.get_logger().warning("e-stop reset")


def main(argv: list[str] | None = None) -> int:
    return run_node(lambda cfg: ArmBridgeNode(cfg), argv)
