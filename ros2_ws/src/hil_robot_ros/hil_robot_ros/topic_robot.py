"""Robot / Policy / operator / recorder contracts implemented over ROS topics, so the plain
``hil_robot.control.Controller`` runs unchanged inside the ``controller`` node.

* ``TopicRobot`` — observations assembled from the driver's topics (stamps mapped onto the
  controller's monotonic clock by their age), actions out as stamped commands; resets through
  ``sim/reset``. ``lockstep=True`` waits for the observation each command produces (sim lock-step),
  so a run over ROS reproduces a run without it.
* ``TopicPolicy`` — chunks from ``policy/chunk`` (the policy_bridge) for the observation's stamp.
* ``TopicOperator`` — the newest ``teleop/command``; stale commands count as hands-off.
* ``StepPublisher`` — the recorder interface; step labels go to ``controller/step`` and the
  ``recorder`` node joins them with the observation topics.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable

import numpy as np

from hil_robot.types import ACTION_DIM, OperatorCommand, SentAction, StepRecord
from hil_robot_ros import convert
from hil_robot_ros.obs_sync import observation_from_parts


class StampIndex:
    """obs ``timestamp_s`` -> ROS stamp (ns) of the observations handed out recently."""

    def __init__(self, keep: int = 256) -> None:
        self._d: collections.OrderedDict[float, int] = collections.OrderedDict()
        self.keep = keep
        self._lock = threading.Lock()

    def put(self, ts: float, stamp_ns: int) -> None:
        with self._lock:
            self._d[float(ts)] = int(stamp_ns)
            while len(self._d) > self.keep:
                self._d.popitem(last=False)

    def get(self, ts: float) -> int | None:
        with self._lock:
            return self._d.get(float(ts))


class TopicRobot:
    """A Robot over topics. ``on_obs`` is the ObservationSubscriber callback; ``ros_now_ns`` reads
    the node's clock; ``clock`` is the controller's (monotonic seconds)."""

    def __init__(self, commands: Any, publish_reset: Callable[[dict[str, Any]], None] | None,
                 ros_now_ns: Callable[[], int], clock: Callable[[], float], metadata: dict[str, Any], *,
                 lockstep: bool = False, timeout_s: float = 5.0, prompt: str = "") -> None:
        self.commands = commands
        self.publish_reset = publish_reset
        self.ros_now_ns = ros_now_ns
        self.clock = clock
        self._metadata = metadata
        self.lockstep = lockstep
        self.timeout_s = timeout_s
        self.prompt = prompt
        self.stamps = StampIndex()
        self._cond = threading.Condition()
        self._latest: tuple[int, dict[str, Any]] | None = None  # (stamp_ns, parts)
        self._reset_id = 0
        self._last_cmd_stamp = 0
        self._last_gripper = -1.0
        self.estopped = threading.Event()

    # called from the subscription thread
    def on_obs(self, stamp_ns: int, parts: dict[str, Any]) -> None:
        with self._cond:
            if self._latest is None or stamp_ns > self._latest[0]:
                self._latest = (stamp_ns, parts)
                self._cond.notify_all()

    def _wait_for(self, pred: Callable[[tuple[int, dict[str, Any]]], bool], what: str,
                  timeout_s: float | None = None) -> tuple[int, dict[str, Any]]:
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        with self._cond:
            while self._latest is None or not pred(self._latest):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {what} within {self.timeout_s:g} s; is the driver node running and "
                                       "publishing joint_states, ee_pose and camera/<cam>/image_raw? (ros2 topic hz)")
                self._cond.wait(left)
            return self._latest

    def _to_obs(self, stamp_ns: int, parts: dict[str, Any]) -> dict[str, Any]:
        age_s = (self.ros_now_ns() - stamp_ns) * 1e-9
        obs = observation_from_parts(parts, self.clock() - age_s, self.prompt)
        self.stamps.put(obs["timestamp_s"], stamp_ns)
        return obs

    def _status(self) -> dict[str, Any]:
        with self._cond:
            return dict(self._latest[1].get("status") or {}) if self._latest else {}

    # ---------------------------------------------------------------- Robot protocol

    def connect(self) -> None:
        self._wait_for(lambda _: True, "observation")

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        if self.publish_reset is None:  # a real cell: the operator resets the scene
            return self.observe()
        self._reset_id += 1
        rid = self._reset_id
        deadline = time.monotonic() + self.timeout_s
        while True:  # the request is reliable, but the driver may not be matched yet: repeat until seen
            self.publish_reset({"reset_id": rid, "seed": seed})
            try:
                stamp, parts = self._wait_for(lambda x: (x[1].get("status") or {}).get("reset_id") == rid,
                                              "observation after sim/reset", timeout_s=0.5)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no observation after sim/reset within {self.timeout_s:g} s; is sim_driver "
                                       "running (and not e-stopped)?") from None
        self._last_gripper = float((parts["status"].get("sent") or [0] * ACTION_DIM)[6])
        return self._to_obs(stamp, parts)

    def observe(self) -> dict[str, Any]:
        stamp, parts = self._wait_for(lambda _: True, "observation")
        return self._to_obs(stamp, parts)

    def _next_stamp(self) -> int:
        stamp = max(self.ros_now_ns(), self._last_cmd_stamp + 1)
        self._last_cmd_stamp = stamp
        return stamp

    def send_action(self, action: np.ndarray) -> SentAction:
        a = np.asarray(action, dtype=np.float32)
        before = self._latest[0] if self._latest else -1
        self.commands.send_action(a, self._next_stamp())
        self._last_gripper = float(a[6])
        if not self.lockstep:
            return SentAction(a, ())
        _, parts = self._wait_for(lambda x: x[0] > before, "observation after a lock-step command")
        st = parts.get("status") or {}
        sent = convert.decode_floats(st.get("sent", a))
        return SentAction(sent.astype(np.float32), tuple(st.get("limits", ())))

    def send_pose_target(self, pose8: np.ndarray) -> SentAction:
        before = self._latest[0] if self._latest else -1
        self.commands.send_pose(pose8, self._next_stamp())
        if self.lockstep:
            _, parts = self._wait_for(lambda x: x[0] > before, "observation after a lock-step pose target")
            st = parts.get("status") or {}
            return SentAction(convert.decode_floats(st.get("sent", np.zeros(ACTION_DIM))), tuple(st.get("limits", ())))
        return SentAction(np.zeros(ACTION_DIM, np.float32), ())

    def stop(self) -> None:
        hold = np.zeros(ACTION_DIM, np.float32)
        hold[6] = self._last_gripper
        self.commands.send_action(hold, self._next_stamp())  # the driver's own e-stop handling is separate

    def task_status(self) -> dict[str, Any]:
        return dict(self._status().get("task_status") or {})

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def __enter__(self) -> "TopicRobot":
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class TopicPolicy:
    """Policy whose replies come from ``policy/chunk``: ``infer(obs)`` waits (up to ``timeout_s``)
    for the chunk computed from this observation's stamp, or any newer one."""

    def __init__(self, stamps: StampIndex, timeout_s: float = 2.0, metadata: dict[str, Any] | None = None) -> None:
        self.stamps = stamps
        self.timeout_s = timeout_s
        self._metadata = metadata or {"name": "policy_bridge", "action_dim": ACTION_DIM}
        self._cond = threading.Condition()
        self._latest: dict[str, Any] | None = None
        self.received = 0

    def on_chunk(self, chunk: dict[str, Any]) -> None:
        with self._cond:
            if self._latest is None or chunk["obs_stamp_ns"] >= self._latest["obs_stamp_ns"]:
                self._latest = chunk
                self.received += 1
                self._cond.notify_all()

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        want = self.stamps.get(obs["timestamp_s"])
        if want is None:
            raise KeyError("observation did not come from this node's TopicRobot (no ROS stamp known)")
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while self._latest is None or self._latest["obs_stamp_ns"] < want:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no policy/chunk for the observation stamped {want} within {self.timeout_s:g} s; "
                                       "is policy_bridge running and the policy server reachable?")
                self._cond.wait(left)
            c = self._latest
        return {"actions": c["actions"], "policy_version": int(c["policy_version"]),
                **{k: v for k, v in c.items() if k not in ("actions", "policy_version", "obs_stamp_ns")}}

    def reset(self) -> None:
        pass

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._metadata)


class TopicOperator:
    """Operator source fed by ``teleop/command``; a command older than ``max_age_s`` is ignored."""

    def __init__(self, clock: Callable[[], float], max_age_s: float = 0.5) -> None:
        self.clock = clock
        self.max_age_s = max_age_s
        self._latest: tuple[float, OperatorCommand] | None = None
        self._pending_mark: OperatorCommand | None = None  # marks and e-stops must not be missed between ticks
        self._lock = threading.Lock()

    def on_command(self, cmd: OperatorCommand) -> None:
        with self._lock:
            self._latest = (self.clock(), cmd)
            if cmd.mark or cmd.estop or cmd.language_correction:
                self._pending_mark = cmd

    def command(self, obs: dict[str, Any], context: dict[str, Any]) -> OperatorCommand | None:
        with self._lock:
            if self._pending_mark is not None:
                cmd, self._pending_mark = self._pending_mark, None
            elif self._latest is None or self.clock() - self._latest[0] > self.max_age_s:
                return None
            else:
                cmd = self._latest[1]
        cmd.timestamp_s = self._latest[0] if self._latest else self.clock()  # received on our clock
        return cmd

    def reset(self) -> None:
        with self._lock:
            self._latest, self._pending_mark = None, None

    def close(self) -> None:
        pass


STEP_FIELDS = ("episode_id", "step", "action_executed", "action_policy", "source", "segment", "instruction",
               "policy_version", "reward", "critic_progress", "done", "truncated", "success", "timestamp_s",
               "obs_timestamp_s", "operator_id", "device_id", "safety_flags", "language_correction")


class StepPublisher:
    """The recorder interface of the Controller, published on ``controller/step`` as JSON events
    (start / step / end) that carry the observation's ROS stamp instead of the images."""

    def __init__(self, publish: Callable[[dict[str, Any]], None], stamps: StampIndex) -> None:
        self.publish = publish
        self.stamps = stamps
        self.steps = 0

    def start_episode(self, episode_id: str, **header: Any) -> None:
        self.publish({"event": "start", "episode_id": episode_id, "header": header})

    def add(self, record: StepRecord) -> None:
        d = record.to_dict()
        labels = {k: d[k] for k in STEP_FIELDS}
        if record.policy_noise is not None:  # DSRL: the chunk's noise, on the tick that chose it
            labels["policy_noise"] = d["policy_noise"]
        self.publish({"event": "step", "obs_stamp_ns": self.stamps.get(record.obs_timestamp_s), "labels": labels})
        self.steps += 1

    def end_episode(self, success: bool, final_observation: dict[str, Any] | None = None, **meta: Any) -> None:
        final = None if final_observation is None else self.stamps.get(final_observation["timestamp_s"])
        self.publish({"event": "end", "success": bool(success), "final_obs_stamp_ns": final, "meta": meta})

    def close(self) -> None:
        pass


def labels_to_record(labels: dict[str, Any], observation: dict[str, Any]) -> StepRecord:
    """The inverse of StepPublisher.add: JSON labels + the observation from topics -> StepRecord."""
    d = dict(labels)
    d["action_executed"] = convert.decode_floats(d["action_executed"])
    d["action_policy"] = convert.decode_floats(d["action_policy"])
    d["critic_progress"] = float(d["critic_progress"])
    d["safety_flags"] = tuple(d.get("safety_flags", ()))
    if d.get("policy_noise") is not None:
        d["policy_noise"] = convert.decode_floats(d["policy_noise"])
    return StepRecord(observation=observation, **d)
