"""``policy_bridge`` node: observation topics -> the policy server (zmq ``PolicyClient``) ->
``policy/chunk`` (JSON: the action chunk, the observation stamp it answers, the policy version).

Inference runs in its own worker thread, one request at a time, woken by each new observation;
observations that arrive while a request is in flight replace each other (the newest wins), so a
slow policy never builds a queue and never blocks the executor.
Parameters: max_rate_hz (0 = every observation), sync, sim, prompt.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import String

from hil_robot.config import RootConfig
from hil_robot_ros import convert
from hil_robot_ros.factories import make_policy_client
from hil_robot_ros.node_base import Param, declare_params, non_negative, one_of, run_node
from hil_robot_ros.obs_sync import observation_from_parts
from hil_robot_ros.qos import COMMAND_QOS
from hil_robot_ros.ros_io import ObservationSubscriber

PARAMS = {
    "max_rate_hz": Param(0.0, "most inferences per second (0 = one per observation)", non_negative),
    "sync": Param("exact", "exact (sim) | latest (independent drivers)", one_of("exact", "latest")),
    "sim": Param(True, "the driver publishes sim/task_state + sim/status"),
    "prompt": Param("", "instruction when the driver publishes none"),
}


class PolicyBridgeNode(Node):
    def __init__(self, cfg: RootConfig, policy: Any = None, name: str = "policy_bridge") -> None:
        super().__init__(name)
        self.cfg = cfg
        self.p = declare_params(self, PARAMS)
        self.done, self.exit_code = False, 0
        self.policy = policy if policy is not None else make_policy_client(cfg)
        self._pending: tuple[int, dict[str, Any]] | None = None
        self._lock = threading.Lock()
        self._last_infer = 0.0
        self.replies = 0
        self.errors = 0
        self.pub = self.create_publisher(String, "policy/chunk", COMMAND_QOS)
        self.obs_sub = ObservationSubscriber(self, cfg.sim.cameras, self._on_obs, sim=self.p["sim"], sync=self.p["sync"],
                                             callback_group=ReentrantCallbackGroup())
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="policy-bridge-infer", daemon=True)
        self._worker.start()

    def _on_obs(self, stamp_ns: int, parts: dict[str, Any]) -> None:
        with self._lock:
            self._pending = (stamp_ns, parts)
        self._wake.set()

    def _work(self) -> None:
        while not self._stop.is_set():
            if self._wake.wait(0.1):
                self._wake.clear()
                self._infer_pending()

    def _infer_pending(self) -> None:
        rate = self.p["max_rate_hz"]
        if rate > 0:
            wait = 1.0 / rate - (time.monotonic() - self._last_infer)
            if wait > 0 and self._stop.wait(wait):
                return
        with self._lock:
            item, self._pending = self._pending, None
        if item is None:
            return
        stamp, parts = item
        obs = observation_from_parts(parts, time.monotonic(), self.p["prompt"])
        self._last_infer = time.monotonic()
        try:
            reply = self.policy.infer(obs)
        except Exception as e:  # noqa: BLE001 - timeouts/server errors: report, keep serving
            self.errors += 1
            self.get_logger().warning(f"policy request failed: {e}", throttle_duration_sec=2.0)
            return
        infer_ms = (time.monotonic() - self._last_infer) * 1e3
        self.pub.publish(convert.chunk_to_msg(reply["actions"], stamp, int(reply.get("policy_version", -1)),
                                              infer_ms=infer_ms))
        self.replies += 1

    def close(self) -> None:
        self._stop.set()
        self._worker.join(timeout=3.0)
        close = getattr(self.policy, "close", None)
        if callable(close):
            close()


def main(argv: list[str] | None = None) -> int:
    return run_node(lambda cfg: PolicyBridgeNode(cfg), argv)
