"""``recorder`` node: joins the controller's step labels (``controller/step``, JSON) with the
observations on the driver's topics and writes episodes with ``hil_robot.data.Recorder`` into an
``EpisodeStore`` — the same store format as a run without ROS.

Parameters: store_path, sync (exact | latest), sim (driver publishes sim/task_state + sim/status),
keep_observations (how many recent observations wait for their labels), label_timeout_s.
Disk writes happen in their own callback group so slow flushes never block observation intake.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Bool, String

from hil_robot.config import RootConfig
from hil_robot_ros import convert
from hil_robot_ros.node_base import Param, declare_params, one_of, positive, run_node
from hil_robot_ros.obs_sync import observation_from_parts
from hil_robot_ros.qos import LATCHED_QOS, RECORD_QOS, SENSOR_ARCHIVE_QOS
from hil_robot_ros.ros_io import ObservationSubscriber
from hil_robot_ros.topic_robot import labels_to_record

PARAMS = {
    "store_path": Param("runs/ros_episodes", "episode store folder (created if missing)",
                        lambda v: None if v else "must not be empty"),
    "sync": Param("exact", "exact (sim, one stamp) | latest (independent drivers)", one_of("exact", "latest")),
    "sim": Param(True, "the driver publishes sim/task_state + sim/status"),
    "keep_observations": Param(512, "recent observations kept for joining with labels", positive),
    "label_timeout_s": Param(2.0, "a step whose observation has not arrived by then is dropped (counted)", positive),
    "image_codec": Param("jpeg", "image codec of the store", one_of("jpeg", "png", "zstd", "raw")),
}


class RecorderNode(Node):
    def __init__(self, cfg: RootConfig, name: str = "recorder") -> None:
        super().__init__(name)
        from hil_robot.data import EpisodeStore, Recorder
        from hil_robot.data.recorder import recorder_options

        self.cfg = cfg
        self.p = p = declare_params(self, PARAMS)
        self.done, self.exit_code = False, 0
        self.store = EpisodeStore(p["store_path"], image_codec=p["image_codec"])
        self.recorder = Recorder(self.store, **recorder_options(cfg.learner), robot=cfg.robot.name)
        self._obs: collections.OrderedDict[int, dict[str, Any]] = collections.OrderedDict()
        self._events: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()
        self._lock = threading.Lock()
        self.counters = collections.Counter()
        self.obs_sub = ObservationSubscriber(self, cfg.sim.cameras, self._on_obs, sim=p["sim"], sync=p["sync"],
                                             callback_group=ReentrantCallbackGroup(), newest_only=False, keep=64,
                                             qos=SENSOR_ARCHIVE_QOS)
        disk = MutuallyExclusiveCallbackGroup()
        self.create_subscription(String, "controller/step", self._on_event, RECORD_QOS, callback_group=disk)
        # latched: true once a complete observation arrived, i.e. every sensor subscription is matched;
        # the controller waits for it so the first steps of the first episode are not lost
        self.pub_ready = self.create_publisher(Bool, "recorder/ready", LATCHED_QOS)
        self._ready = False
        self.create_timer(0.05, self._drain, callback_group=disk)
        self.get_logger().info(f"recording into {p['store_path']}")

    def _on_obs(self, stamp_ns: int, parts: dict[str, Any]) -> None:
        if not self._ready:
            self._ready = True
            self.pub_ready.publish(Bool(data=True))
        with self._lock:
            self._obs[stamp_ns] = parts
            while len(self._obs) > self.p["keep_observations"]:
                self._obs.popitem(last=False)

    def _on_event(self, msg: String) -> None:
        try:
            ev = convert.msg_to_json(msg)
        except convert.ConversionError as e:
            self.get_logger().error(f"bad controller/step message: {e}")
            return
        self._events.append((time.monotonic(), ev))
        self._drain()

    def _observation(self, stamp: int | None, ts: float) -> dict[str, Any] | None:
        if stamp is None:
            return None
        with self._lock:
            parts = self._obs.get(int(stamp))
        return None if parts is None else observation_from_parts(parts, ts)

    def _drain(self) -> None:
        """Handle events in order; a step waits (up to label_timeout_s) for its observation."""
        while self._events:
            received, ev = self._events[0]
            kind = ev.get("event")
            if kind == "step":
                labels = ev["labels"]
                obs = self._observation(ev.get("obs_stamp_ns"), float(labels["obs_timestamp_s"]))
                if obs is None:
                    if time.monotonic() - received < self.p["label_timeout_s"]:
                        return  # its observation may still be on the way
                    self.counters["steps_dropped_no_observation"] += 1
                    self.get_logger().warning(f"step {labels['step']} of {labels['episode_id']}: observation "
                                              f"{ev.get('obs_stamp_ns')} never arrived; step dropped")
                else:
                    try:
                        self.recorder.add(labels_to_record(labels, obs))
                        self.counters["steps"] += 1
                        self.counters["steps_in_episode"] += 1
                    except Exception as e:  # noqa: BLE001 - a bad record must not kill the recorder
                        self.counters["steps_rejected"] += 1
                        self.get_logger().error(f"step rejected: {e}")
            elif kind == "start":
                if self.recorder.episode_open:
                    self.recorder.abort_episode()
                header = {k: v for k, v in (ev.get("header") or {}).items() if v is not None}
                self.recorder.start_episode(ev["episode_id"], **header)
                self.counters["steps_in_episode"] = 0
            elif kind == "end":
                if self.recorder.episode_open and self.counters["steps_in_episode"] == 0:
                    self.get_logger().error(f"episode {ev.get('meta', {}).get('episode_id', '')}: none of its steps "
                                            "could be joined with an observation; discarded (moved to quarantine/)")
                    self.recorder.abort_episode()
                    self.counters["episodes_discarded"] += 1
                elif self.recorder.episode_open:
                    final = self._observation(ev.get("final_obs_stamp_ns"), time.monotonic())
                    meta = dict(ev.get("meta") or {})
                    extra = dict(meta.pop("extra", None) or {})
                    extra["ros_recorder"] = {k: v for k, v in self.counters.items() if k != "steps_in_episode"}
                    em = self.recorder.end_episode(bool(ev["success"]), final_observation=final, extra=extra, **meta)
                    self.counters["episodes"] += 1
                    self.get_logger().info(f"episode {em.episode_id}: {em.num_steps} steps, success={em.success}")
            self._events.popleft()

    def close(self) -> None:
        end = time.monotonic() + self.p["label_timeout_s"]
        while self._events and time.monotonic() < end:  # write what already arrived before closing
            self._drain()
            time.sleep(0.02)
        self.recorder.close()


def main(argv: list[str] | None = None) -> int:
    return run_node(lambda cfg: RecorderNode(cfg), argv)
