"""``teleop`` node: an operator source -> ``teleop/command`` (JSON OperatorCommand) at ``rate_hz``,
plus ``estop`` (latched std_msgs/Bool) when the operator hits the e-stop.

``input`` parameter: ``device`` = the configured ``teleop.device`` (the simulated operator, a
SpaceMouse, keyboard, VR, ... through the teleop package), ``joy`` = a ``sensor_msgs/Joy`` topic
(``teleop/joy``) from any ROS joystick driver. Sources that watch the scene (the simulated
operator, the operator screen) get observations from the driver topics and the policy's current
action from ``policy/chunk``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Joy
from std_msgs.msg import Bool, String

from hil_robot.config import RootConfig
from hil_robot_ros import convert
from hil_robot_ros.factories import make_operator
from hil_robot_ros.node_base import Param, declare_params, one_of, positive, run_node
from hil_robot_ros.obs_sync import observation_from_parts
from hil_robot_ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS
from hil_robot_ros.ros_io import ObservationSubscriber

PARAMS = {
    "input": Param("device", "device (teleop.device) | joy (sensor_msgs/Joy on teleop/joy)", one_of("device", "joy")),
    "rate_hz": Param(10.0, "command rate", positive),
    "sync": Param("exact", "exact (sim) | latest (independent drivers)", one_of("exact", "latest")),
    "sim": Param(True, "the driver publishes sim/task_state + sim/status"),
    "joy_axes": Param([1, 0, 4, -1, -1, 3], "Joy axis index for vx vy vz wx wy wz (-1 = unused)"),
    "seed": Param(-1, "seed of the simulated operator (-1 = experiment.seed)"),
}


class TeleopRosNode(Node):
    def __init__(self, cfg: RootConfig, operator: Any = None, name: str = "teleop") -> None:
        super().__init__(name)
        self.cfg = cfg
        self.p = p = declare_params(self, PARAMS)
        self.done, self.exit_code = False, 0
        self.joy = None
        if operator is None and p["input"] == "joy":
            from teleop.operator import DeviceOperator

            from hil_robot_ros.joy_device import JoyDevice

            self.joy = JoyDevice(axes=list(p["joy_axes"]))
            operator = DeviceOperator(self.joy, cfg.teleop, cfg.robot, operator_id="joy")
            self.create_subscription(Joy, "teleop/joy", self._on_joy, SENSOR_QOS)
        self.operator = operator if operator is not None else make_operator(
            cfg, p["seed"] if p["seed"] >= 0 else cfg.experiment.seed)
        if self.operator is None:
            raise ValueError("teleop.device=none: nothing to run; choose a device or input:=joy")
        self._lock = threading.Lock()
        self._obs: tuple[int, dict[str, Any]] | None = None
        self._policy_action = None
        self._task_status: dict[str, Any] = {}
        self._reset_id = None
        self.step = 0
        self.sent = 0
        self.errors = 0
        self.pub = self.create_publisher(String, "teleop/command", COMMAND_QOS)
        self.pub_estop = self.create_publisher(Bool, "estop", LATCHED_QOS)
        data = ReentrantCallbackGroup()
        ObservationSubscriber(self, cfg.sim.cameras, self._on_obs, sim=p["sim"], sync=p["sync"], callback_group=data)
        self.create_subscription(String, "policy/chunk", self._on_chunk, COMMAND_QOS, callback_group=data)
        self.create_timer(1.0 / p["rate_hz"], self._tick, callback_group=MutuallyExclusiveCallbackGroup())

    def _on_joy(self, msg: Joy) -> None:
        self.joy.on_joy(*convert.msg_to_joy(msg))

    def _on_obs(self, stamp: int, parts: dict[str, Any]) -> None:
        with self._lock:
            self._obs = (stamp, parts)
            status = parts.get("status") or {}
            self._task_status = dict(status.get("task_status") or {})
            rid = status.get("reset_id")
            if rid is not None and rid != self._reset_id:  # a new episode: the operator starts fresh
                self._reset_id = rid
                self.step = 0
                self.operator.reset()

    def _on_chunk(self, msg: String) -> None:
        try:
            self._policy_action = convert.msg_to_chunk(msg)["actions"][0]
        except convert.ConversionError:
            pass

    def _tick(self) -> None:
        with self._lock:
            item = self._obs
            context = {"policy_action": self._policy_action, "step": self.step, "task_status": self._task_status}
        if item is None:
            return
        obs = observation_from_parts(item[1], time.monotonic())
        try:
            cmd = self.operator.command(obs, context)
        except Exception as e:  # noqa: BLE001 - a failing source sends nothing (the controller sees hands-off)
            self.errors += 1
            self.get_logger().error(f"operator source failed: {e!r}", throttle_duration_sec=2.0)
            return
        self.step += 1
        if cmd is None:
            return
        self.pub.publish(convert.operator_command_to_msg(cmd))
        self.sent += 1
        if cmd.estop:
            self.pub_estop.publish(Bool(data=True))

    def close(self) -> None:
        close = getattr(self.operator, "close", None)
        if callable(close):
            close()


def main(argv: list[str] | None = None) -> int:
    return run_node(lambda cfg: TeleopRosNode(cfg), argv)
