"""``sim_driver`` node: the MuJoCo robot (``sim.SimRobot``) behind the same topics a real cell's
``arm_bridge`` + ``camera`` nodes publish, so moving to hardware changes only the driver nodes.

Publishes ``joint_states``, ``ee_pose``, ``camera/<cam>/image_raw`` (+ ``camera_info``, optional
``compressed``), and the sim-only ``sim/task_state`` and ``sim/status`` (JSON: task status, prompt,
what was sent); all parts of one physics step carry the same stamp. Subscribes ``cmd/ee_twist`` /
``cmd/ee_pose`` + ``cmd/gripper``, ``sim/reset``, ``estop`` (latched) and ``estop/reset``.

Modes (parameter ``mode``):
* ``realtime`` — physics advances one control period per timer tick at robot.control_hz, applying
  the newest command if it is fresh (robot.safety.watchdog_hold_s), else holding.
* ``lockstep`` — one control period per received command, then the observation is published; the
  last observation is republished every ``republish_s`` until the next command (lossy sensor QoS).
"""

from __future__ import annotations

import concurrent.futures
import math
import threading
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Bool, Float32MultiArray, String

from hil_robot.config import RootConfig
from hil_robot.types import ACTION_DIM, STATE_LAYOUT, camera_names
from hil_robot_ros import convert, topics
from hil_robot_ros.node_base import Param, autostart_lifecycle, declare_params, non_negative, one_of, positive, run_node
from hil_robot_ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS
from hil_robot_ros.ros_io import task_state_msg

PARAMS = {
    "mode": Param("realtime", "realtime (wall-clock physics) or lockstep (one step per command)",
                  one_of("realtime", "lockstep")),
    "backend": Param("mujoco", "mujoco (sim.SimRobot) or kinematic (hil_robot.control.fakes, no physics)",
                     one_of("mujoco", "kinematic")),
    "camera_rate_hz": Param(0.0, "image rate in realtime mode (0 = every control tick)", non_negative),
    "publish_compressed": Param(False, "also publish image_raw/compressed (jpeg)"),
    "base_frame": Param("base", "frame of ee_pose"),
    "fovy_deg": Param(45.0, "vertical field of view of the sim cameras (camera_info)", positive),
    "seed": Param(-1, "seed of the first reset (-1 = experiment.seed)"),
    "republish_s": Param(0.2, "lockstep: republish the last observation this often while idle", positive),
    "autostart": Param(True, "configure and activate on start (no lifecycle manager needed)"),
}


def make_robot(cfg: RootConfig, backend: str, seed: int | None) -> Any:
    if backend == "kinematic":
        from hil_robot.control.fakes import KinematicRobot

        return KinematicRobot(cfg.robot)
    import sim

    return sim.SimRobot(cfg.sim, cfg.robot, seed=seed)


class SimDriverNode(LifecycleNode):
    def __init__(self, cfg: RootConfig, name: str = "sim_driver") -> None:
        super().__init__(name)
        self.cfg = cfg
        self.p = declare_params(self, PARAMS)
        self.done, self.exit_code, self.last_error = False, 0, ""
        self.robot: Any = None
        self._robot_lock = threading.Lock()  # the tick, commands, resets and the e-stop share the robot
        # MuJoCo's GL context belongs to one thread: every robot call runs on this single worker
        self._sim_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim")
        self._closing = False
        self._step_group = MutuallyExclusiveCallbackGroup()  # physics + rendering: the slow work
        self._estop_group = MutuallyExclusiveCallbackGroup()  # never queued behind a physics step
        self.estopped = False
        self.reset_id = 0
        self.steps = 0
        self.last_sent = np.zeros(ACTION_DIM, np.float32)
        self.last_limits: tuple[str, ...] = ()
        self._twist: dict[int, Any] = {}  # stamp -> twist msg (lockstep pairing)
        self._grip: dict[int, float] = {}
        self._pose: dict[int, Any] = {}
        self._latest_cmd: tuple[float, str, Any, float] | None = None  # (received monotonic, kind, value, gripper)
        self._last_obs: tuple[int, dict[str, Any], dict[str, Any]] | None = None
        self._last_pub_s = 0.0
        self.published = 0
        if self.p["autostart"]:
            autostart_lifecycle(self)

    # ---------------------------------------------------------------- lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        seed = self.p["seed"] if self.p["seed"] >= 0 else self.cfg.experiment.seed
        try:
            def start() -> dict[str, Any]:
                self.robot = make_robot(self.cfg, self.p["backend"], seed)
                self.robot.connect()
                return self.robot.reset(seed=seed)

            obs = self._call(start)
        except Exception as e:  # noqa: BLE001 - report what failed and stay unconfigured
            self.last_error = f"sim robot could not start: {e}"
            self.get_logger().error(self.last_error)
            return TransitionCallbackReturn.FAILURE
        self.cameras = camera_names(obs)
        self.pub_joints = self.create_lifecycle_publisher(JointState, "joint_states", SENSOR_QOS)
        self.pub_pose = self.create_lifecycle_publisher(PoseStamped, "ee_pose", SENSOR_QOS)
        self.pub_task = self.create_lifecycle_publisher(Float32MultiArray, "sim/task_state", SENSOR_QOS)
        self.pub_status = self.create_lifecycle_publisher(String, "sim/status", SENSOR_QOS)
        self.pub_img = {c: self.create_lifecycle_publisher(Image, topics.image_topic(c), SENSOR_QOS) for c in self.cameras}
        self.pub_info = {c: self.create_lifecycle_publisher(CameraInfo, topics.info_topic(c), SENSOR_QOS) for c in self.cameras}
        self.pub_jpg = ({c: self.create_lifecycle_publisher(CompressedImage, topics.compressed_topic(c), SENSOR_QOS)
                         for c in self.cameras} if self.p["publish_compressed"] else {})
        g = self._step_group
        self.create_subscription(TwistStamped, "cmd/ee_twist", self._on_twist, COMMAND_QOS, callback_group=g)
        self.create_subscription(PoseStamped, "cmd/ee_pose", self._on_pose, COMMAND_QOS, callback_group=g)
        self.create_subscription(JointState, "cmd/gripper", self._on_gripper, COMMAND_QOS, callback_group=g)
        self.create_subscription(String, "sim/reset", self._on_reset, COMMAND_QOS, callback_group=g)
        self.create_subscription(Bool, "estop", self._on_estop, LATCHED_QOS, callback_group=self._estop_group)
        self.create_subscription(Bool, "estop/reset", self._on_estop_reset, COMMAND_QOS, callback_group=self._estop_group)
        self._initial_obs = obs
        self.get_logger().info(f"sim robot ready ({self.p['backend']}, {self.p['mode']}, cameras {self.cameras}, "
                               f"{self.cfg.robot.control_hz:g} Hz)")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        ret = super().on_activate(state)
        period = 1.0 / self.cfg.robot.control_hz
        if self.p["mode"] == "realtime":
            cam_hz = self.p["camera_rate_hz"] or self.cfg.robot.control_hz
            self._image_every = max(1, round(self.cfg.robot.control_hz / cam_hz))
            self.create_timer(period, self._tick, callback_group=self._step_group)
        else:
            self._image_every = 1
            self.create_timer(self.p["republish_s"], self._republish, callback_group=self._step_group)
        self._call(self._publish, self._initial_obs)
        return ret

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def _call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn`` on the sim thread (serialised with every other robot call) and wait for it."""
        try:
            return self._sim_thread.submit(fn, *args).result()
        except RuntimeError:  # shutting down: no new work is accepted
            if self._closing:
                return None
            raise

    def close(self) -> None:
        if self._closing:
            return
        if self.robot is not None:
            self._call(self._close_robot)
        self._closing = True
        self._sim_thread.shutdown(wait=True)

    def _close_robot(self) -> None:
        with self._robot_lock:
            if self.robot is not None:
                try:
                    self.robot.stop()
                finally:
                    close = getattr(self.robot, "close", None)
                    if callable(close):
                        close()
                    self.robot = None

    # ---------------------------------------------------------------- publishing

    def _status(self, obs: dict[str, Any]) -> dict[str, Any]:
        status = self.robot.task_status() if hasattr(self.robot, "task_status") else {}
        return {"reset_id": self.reset_id, "step": self.steps, "prompt": str(obs.get("prompt", "")),
                "task_status": status, "sent": self.last_sent, "limits": list(self.last_limits),
                "estopped": self.estopped}

    def _publish(self, obs: dict[str, Any], images: bool = True, status: dict[str, Any] | None = None,
                 stamp_ns: int | None = None) -> None:
        stamp = self.get_clock().now().nanoseconds if stamp_ns is None else stamp_ns
        status = self._status(obs) if status is None else status
        js, pose = convert.state_to_msgs(obs["state"], stamp, self.p["base_frame"])
        if images:
            for cam in self.cameras:
                img = obs[f"images/{cam}"]
                frame = f"{cam}_optical_frame"
                self.pub_img[cam].publish(convert.image_to_msg(img, stamp, frame))
                self.pub_info[cam].publish(convert.camera_info_msg(img.shape[0], img.shape[1], stamp, frame,
                                                                   fovy_deg=self.p["fovy_deg"]))
                if cam in self.pub_jpg:
                    self.pub_jpg[cam].publish(convert.image_to_compressed_msg(img, stamp, frame))
        # always published (empty without privileged state) so subscribers can wait for it by stamp
        self.pub_task.publish(task_state_msg(obs.get("task_state", np.zeros(0, np.float32)), stamp))
        self.pub_status.publish(convert.json_msg({"stamp_ns": stamp, **status}))
        self.pub_joints.publish(js)
        self.pub_pose.publish(pose)
        self._last_obs = (stamp, obs, status)
        self._last_pub_s = time.monotonic()
        self.published += 1

    # ---------------------------------------------------------------- stepping

    def _apply(self, kind: str, value: Any, gripper: float) -> None:
        """One control period of physics with a twist (as a normalised action) or a pose target."""
        if self.estopped:
            sent = self.robot.send_action(self._hold_action())
        elif kind == "pose":
            pos, quat = value
            sent = self.robot.send_pose_target(np.concatenate([pos, quat, [gripper]]).astype(np.float32))
        else:
            c = self.cfg.robot
            action = convert.twist_to_action(value, gripper, c.max_delta_pos_m, c.max_delta_rot_rad, c.control_hz)
            if not np.isfinite(action).all():
                action = self._hold_action()  # NaN never reaches physics
                self.last_limits = ("nan_hold",)
            sent = self.robot.send_action(action)
        self.last_sent = np.asarray(sent.action, np.float32)
        self.last_limits = tuple(sent.limits)
        self.steps += 1

    def _hold_action(self) -> np.ndarray:
        a = np.zeros(ACTION_DIM, np.float32)
        a[6] = self.last_sent[6]
        return a

    def _tick(self) -> None:  # realtime mode
        self._call(self._tick_sim)

    def _tick_sim(self) -> None:
        with self._robot_lock:
            if self.robot is None:
                return
            cmd = self._latest_cmd
            fresh = cmd is not None and time.monotonic() - cmd[0] <= self.cfg.robot.safety.watchdog_hold_s + 1.0 / self.cfg.robot.control_hz
            if fresh:
                self._apply(cmd[1], cmd[2], cmd[3])
            else:
                self.robot.send_action(self._hold_action())
                self.steps += 1
            obs = self.robot.observe()
            self._publish(obs, images=self.steps % self._image_every == 0)

    def _republish(self) -> None:  # lockstep mode: the last observation again, same stamp
        self._call(self._republish_sim)

    def _republish_sim(self) -> None:
        with self._robot_lock:
            if self._last_obs is not None and time.monotonic() - self._last_pub_s >= self.p["republish_s"]:
                stamp, obs, status = self._last_obs
                self._publish(obs, status=status, stamp_ns=stamp)

    def _lockstep_try(self, stamp: int) -> None:
        if stamp not in self._grip or (stamp not in self._twist and stamp not in self._pose):
            return
        grip = self._grip.pop(stamp)
        kind, value = ("twist", self._twist.pop(stamp)) if stamp in self._twist else ("pose", self._pose.pop(stamp))
        for d in (self._twist, self._grip, self._pose):  # older halves will never be completed
            for s in [s for s in d if s < stamp]:
                del d[s]
        self._call(self._step_and_publish, kind, value, grip)

    def _step_and_publish(self, kind: str, value: Any, grip: float) -> None:
        with self._robot_lock:
            if self.robot is None:
                return
            self._apply(kind, value, grip)
            self._publish(self.robot.observe())

    def _command(self, kind: str, stamp: int, value: Any) -> None:
        if self.p["mode"] == "lockstep":
            {"twist": self._twist, "pose": self._pose, "grip": self._grip}[kind][stamp] = value
            self._lockstep_try(stamp)
            return
        now = time.monotonic()
        prev = self._latest_cmd
        grip = value if kind == "grip" else (prev[3] if prev else float(self.last_sent[6]))
        if kind == "grip":
            if prev is not None:
                self._latest_cmd = (prev[0], prev[1], prev[2], grip)
            return
        self._latest_cmd = (now, kind, value, grip)

    def _on_twist(self, msg: TwistStamped) -> None:
        self._command("twist", convert.stamp_to_ns(msg.header.stamp), msg)

    def _on_pose(self, msg: PoseStamped) -> None:
        self._command("pose", convert.stamp_to_ns(msg.header.stamp), convert.msg_to_pose(msg))

    def _on_gripper(self, msg: JointState) -> None:
        if not msg.position:
            return
        g = float(msg.position[0])
        self._command("grip", convert.stamp_to_ns(msg.header.stamp), g if math.isfinite(g) else float(self.last_sent[6]))

    def _on_reset(self, msg: String) -> None:
        try:
            req = convert.msg_to_json(msg)
            reset_id, seed = int(req["reset_id"]), req.get("seed")
        except (convert.ConversionError, KeyError, ValueError) as e:
            self.get_logger().error(f"bad sim/reset request ({e}); send JSON {{\"reset_id\": int, \"seed\": int|null}}")
            return
        if self.estopped:  # a reset moves the arm: not while the e-stop is latched
            self.get_logger().warning("sim/reset ignored: e-stop latched (publish estop/reset first)",
                                      throttle_duration_sec=2.0)
            return
        self._call(self._reset_sim, reset_id, seed)

    def _reset_sim(self, reset_id: int, seed: Any) -> None:
        with self._robot_lock:
            if self.robot is None or reset_id == self.reset_id:
                return
            obs = self.robot.reset(seed=None if seed is None else int(seed))
            self.reset_id, self.steps = reset_id, 0
            self.last_sent = np.zeros(ACTION_DIM, np.float32)
            self.last_sent[6] = -1.0 if obs["state"][STATE_LAYOUT["gripper"][0]] > 0.5 else 1.0
            self.last_limits = ()
            self._latest_cmd = None
            self._twist.clear(), self._grip.clear(), self._pose.clear()
            self._publish(obs)

    def _on_estop(self, msg: Bool) -> None:
        if not msg.data or self.estopped:
            return
        self.estopped = True  # the next physics step holds even if the sim thread is busy right now
        self._call(self._estop_sim)

    def _estop_sim(self) -> None:
        with self._robot_lock:
            if self.robot is None:
                return
            self.robot.stop()
            self.get_logger().warning("E-STOP: holding until estop/reset")
            self._publish(self.robot.observe(), images=False)

    def _on_estop_reset(self, msg: Bool) -> None:
        if msg.data and self.estopped:
            self.estopped = False
            self._latest_cmd = None  # commands from before the stop are not resumed
            self.get_logger().warning("e-stop reset")


def main(argv: list[str] | None = None) -> int:
    return run_node(lambda cfg: SimDriverNode(cfg), argv)
