"""``controller`` node: ``hil_robot.control.Controller`` — the same loop as the embedded run —
with observations from topics, commands to topics, and the latched ``estop`` topic.

Parameters: policy_source (bridge: ``policy/chunk`` from policy_bridge | inproc: make_policy here |
remote: a PolicyClient here | none: teleoperation only), operator_source (topic: ``teleop/command``
| inproc: the configured operator here | none), episodes (0 = until stopped), seed, lockstep (wait
for the driver's observation after every command: pairs with sim_driver mode=lockstep), sync
(exact | latest), prompt (instruction when the driver does not publish one), timeout_s.

The loop runs in its own thread (it sleeps to the tick schedule); subscriptions run in the
executor, each kind in its own callback group, and only hand data over. ``estop`` (std_msgs/Bool,
transient-local) latches the controller's safety filter; only ``estop/reset`` clears it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Bool, String

from hil_robot.config import RootConfig
from hil_robot_ros import convert
from hil_robot_ros.factories import make_inproc_policy, make_operator, make_policy_client
from hil_robot_ros.node_base import Param, declare_params, non_negative, one_of, positive, run_node
from hil_robot_ros.qos import COMMAND_QOS, LATCHED_QOS, RECORD_QOS
from hil_robot_ros.ros_io import CommandPublisher, ObservationSubscriber
from hil_robot_ros.topic_robot import StepPublisher, TopicOperator, TopicPolicy, TopicRobot

PARAMS = {
    "policy_source": Param("bridge", "bridge | inproc | remote | none", one_of("bridge", "inproc", "remote", "none")),
    "operator_source": Param("topic", "topic | inproc | none", one_of("topic", "inproc", "none")),
    "episodes": Param(0, "episodes to run, 0 = until stopped", non_negative),
    "seed": Param(-1, "seed of the first episode (-1 = experiment.seed); episode i uses seed + i"),
    "lockstep": Param(False, "wait for the driver's observation after each command (sim lock-step)"),
    "sync": Param("exact", "observation sync: exact (one stamp, sim) | latest (independent drivers)",
                  one_of("exact", "latest")),
    "sim": Param(True, "the driver publishes sim/task_state + sim/status and accepts sim/reset"),
    "prompt": Param("", "instruction when the driver publishes none"),
    "base_frame": Param("base", "frame of outgoing commands"),
    "timeout_s": Param(5.0, "longest wait for an observation / chunk before the episode fails", positive),
    "operator_max_age_s": Param(0.5, "teleop/command older than this counts as hands-off", positive),
    "wait_for_recorder_s": Param(10.0, "before the first episode, wait this long for recorder/ready "
                                 "(0 = do not wait)", non_negative),
}


class ControllerNode(Node):
    def __init__(self, cfg: RootConfig, name: str = "controller") -> None:
        super().__init__(name)
        from hil_robot.control.loop import Controller

        self.cfg = cfg
        self.p = p = declare_params(self, PARAMS)
        self.done, self.exit_code = False, 0
        self.results: list[Any] = []
        obs_group = ReentrantCallbackGroup()
        ctl_group = MutuallyExclusiveCallbackGroup()
        safety_group = MutuallyExclusiveCallbackGroup()  # e-stop is never queued behind data callbacks
        self.commands = CommandPublisher(self, cfg.robot, p["base_frame"])
        reset_pub = self.create_publisher(String, "sim/reset", COMMAND_QOS) if p["sim"] else None
        meta = {"name": f"ros:{cfg.robot.name}", "cameras": list(cfg.sim.cameras), "control_hz": cfg.robot.control_hz,
                "image_hw": (cfg.sim.image_height, cfg.sim.image_width), "action_dim": 7}
        self.robot = TopicRobot(self.commands, (lambda d: reset_pub.publish(convert.json_msg(d))) if reset_pub else None,
                                lambda: self.get_clock().now().nanoseconds, time.monotonic, meta,
                                lockstep=p["lockstep"], timeout_s=p["timeout_s"], prompt=p["prompt"])
        self.obs_sub = ObservationSubscriber(self, cfg.sim.cameras, self.robot.on_obs, sim=p["sim"], sync=p["sync"],
                                             callback_group=obs_group)
        seed0 = p["seed"] if p["seed"] >= 0 else cfg.experiment.seed
        self.seed0 = seed0

        self.policy: Any = None
        if p["policy_source"] == "bridge":
            self.policy = TopicPolicy(self.robot.stamps, timeout_s=p["timeout_s"])
            self.create_subscription(String, "policy/chunk", self._on_chunk, COMMAND_QOS, callback_group=ctl_group)
        elif p["policy_source"] == "inproc":
            self.policy = make_inproc_policy(cfg)
        elif p["policy_source"] == "remote":
            self.policy = make_policy_client(cfg)

        self.operator: Any = None
        if p["operator_source"] == "topic":
            self.operator = TopicOperator(time.monotonic, p["operator_max_age_s"])
            self.create_subscription(String, "teleop/command", self._on_teleop, COMMAND_QOS, callback_group=ctl_group)
        elif p["operator_source"] == "inproc":
            self.operator = make_operator(cfg, seed0)

        step_pub = self.step_pub = self.create_publisher(String, "controller/step", RECORD_QOS)
        self.recorder = StepPublisher(lambda d: step_pub.publish(convert.json_msg(d)), self.robot.stamps)
        self.controller = Controller(self.robot, self.policy, self.operator, self.recorder, cfg)
        self.create_subscription(Bool, "estop", self._on_estop, LATCHED_QOS, callback_group=safety_group)
        self.create_subscription(Bool, "estop/reset", self._on_estop_reset, COMMAND_QOS, callback_group=safety_group)
        self._recorder_ready = threading.Event()
        self.create_subscription(Bool, "recorder/ready", lambda m: m.data and self._recorder_ready.set(), LATCHED_QOS,
                                 callback_group=ctl_group)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="control-loop", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- callbacks (hand-over only)

    def _on_chunk(self, msg: String) -> None:
        try:
            self.policy.on_chunk(convert.msg_to_chunk(msg))
        except convert.ConversionError as e:
            self.get_logger().error(f"bad policy/chunk: {e}", throttle_duration_sec=5.0)

    def _on_teleop(self, msg: String) -> None:
        try:
            self.operator.on_command(convert.msg_to_operator_command(msg))
        except convert.ConversionError as e:
            self.get_logger().error(f"bad teleop/command: {e}", throttle_duration_sec=5.0)

    def _on_estop(self, msg: Bool) -> None:
        if msg.data:
            self.controller.estop("estop topic")
            self.robot.stop()

    def _on_estop_reset(self, msg: Bool) -> None:
        if msg.data:
            self.controller.reset_estop()

    # ---------------------------------------------------------------- the loop

    def _loop(self) -> None:
        log = self.get_logger()
        try:
            self.robot.connect()
            if self.p["wait_for_recorder_s"] > 0:  # the first steps need a recorder that already sees everything
                if not self._recorder_ready.wait(self.p["wait_for_recorder_s"]):
                    log.warning("no recorder/ready: episodes may not be recorded (is the recorder node running?)")
            i = 0
            while not self._stop.is_set() and (self.p["episodes"] == 0 or i < self.p["episodes"]):
                if self.controller.safety.estopped:  # no new episode (and no reset motion) while latched
                    self._stop.wait(0.1)
                    continue
                res = self.controller.run_episode(seed=self.seed0 + i)
                self.results.append(res)
                log.info(f"episode {i}: {res.steps} steps, {res.end_reason}, {res.interventions} interventions")
                i += 1
        except Exception as e:  # noqa: BLE001 - the node reports and exits non-zero; the runner decides
            log.error(f"control loop stopped: {e}")
            self.exit_code = 1
        finally:
            self.done = True

    def close(self) -> None:
        self._stop.set()
        self.controller.request_stop()
        self._thread.join(timeout=5.0)
        self.controller.close()
        for part in (self.operator, self.policy):
            close = getattr(part, "close", None)
            if callable(close):
                close()


def main(argv: list[str] | None = None) -> int:
    return run_node(lambda cfg: ControllerNode(cfg), argv)
