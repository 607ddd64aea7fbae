"""The sim graph over real DDS on loopback (marker ``ros``): the pip runner starts sim_driver,
policy server + bridge, teleop (simulated operator), controller and recorder; this test joins the
same domain as an observer. Checks: topic rates, the loop closed through topics (policy chunks in,
commands out, the arm moves, episodes recorded), the e-stop holding the arm (how fast is
bench_ros.py's figure) and staying latched in the controller until ``estop/reset``, a killed node
reported and restarted by the runner, and a clean Ctrl-C with no orphans."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]


def _domain() -> str:
    return str(int(os.environ["ROS_DOMAIN_ID"]) + 101)  # not the in-process tests' domain


class Runner:
    """``hil-robot launch -v`` (node output on the console too) in a subprocess with its output
    collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "hil_robot", "launch", "-v", *args], cwd=REPO, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            m = re.search(pattern, self.text)
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"runner output never matched {pattern!r}:\n" + "\n".join(self.lines[-60:]))

    def pids(self) -> dict[str, int]:
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"\] (\w+): started \(pid (\d+)\)", self.text)}

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture
def ros_env(tmp_path):
    env = dict(os.environ, ROS_DOMAIN_ID=_domain(), MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    return env


class Observer:
    """An rclpy node in this process on the graph's domain: counts and timestamps topics."""

    def __init__(self, domain: str) -> None:
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Bool, String

        from hil_robot_ros.qos import COMMAND_QOS, LATCHED_QOS, RECORD_QOS, SENSOR_QOS

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=int(domain))
        self.node = rclpy.create_node("test_observer", context=self.ctx)
        self.t: dict[str, list[float]] = {"joint_states": [], "image": [], "step": [], "chunk": [], "teleop": []}
        self.poses: list[tuple[float, np.ndarray]] = []
        self.sources: list[str] = []
        self.steps: list[tuple[float, dict]] = []
        self.pose_stamps: list[tuple[int, np.ndarray]] = []
        self.starts: list[float] = []
        self.status: list[tuple[int, bool]] = []
        n = self.node
        n.create_subscription(JointState, "joint_states", lambda m: self.t["joint_states"].append(time.monotonic()), SENSOR_QOS)
        n.create_subscription(Image, "camera/front/image_raw", lambda m: self.t["image"].append(time.monotonic()), SENSOR_QOS)
        n.create_subscription(PoseStamped, "ee_pose", self._pose, SENSOR_QOS)
        n.create_subscription(String, "controller/step", self._step, RECORD_QOS)
        n.create_subscription(String, "sim/status", self._status, SENSOR_QOS)
        n.create_subscription(String, "policy/chunk", lambda m: self.t["chunk"].append(time.monotonic()), COMMAND_QOS)
        n.create_subscription(String, "teleop/command", lambda m: self.t["teleop"].append(time.monotonic()), COMMAND_QOS)
        self.estop_pub = n.create_publisher(Bool, "estop", LATCHED_QOS)
        self.estop_reset_pub = n.create_publisher(Bool, "estop/reset", COMMAND_QOS)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(n)
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._spin, daemon=True)
        self._th.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.ex.spin_once(timeout_sec=0.05)

    def _pose(self, msg) -> None:
        p = msg.pose.position
        self.poses.append((time.monotonic(), np.array([p.x, p.y, p.z])))
        self.pose_stamps.append((msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, np.array([p.x, p.y, p.z])))

    def _status(self, msg) -> None:
        import json

        d = json.loads(msg.data)
        self.status.append((d["stamp_ns"], bool(d.get("estopped"))))

    def _step(self, msg) -> None:
        import json

        d = json.loads(msg.data)
        self.t["step"].append(time.monotonic())
        if d.get("event") == "start":
            self.starts.append(time.monotonic())
        if d.get("event") == "step":
            self.sources.append(d["labels"]["source"])
            self.steps.append((time.monotonic(), d["labels"]))

    def rate(self, key: str, since: float) -> float:
        ts = [t for t in self.t[key] if t >= since]
        return (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 2 else 0.0

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._th.join(timeout=2)
        self.ex.shutdown()
        rclpy.shutdown(context=self.ctx)


def test_sim_graph_over_dds(ros_env, tmp_path, free_port):
    run_dir = tmp_path / "run"
    runner = Runner(["sim_pick_cube", "policy=expert", f"transport.policy_port={free_port()}",
                     f"experiment.run_dir={run_dir}", "robot.control_hz=10", "graph.restart_delay_s=0.5"], ros_env)
    obs = Observer(ros_env["ROS_DOMAIN_ID"])
    try:
        runner.wait_for(r"sim_driver\s*\] .*sim robot ready", 60)
        end = time.monotonic() + 60
        while len(obs.sources) < 25 and time.monotonic() < end:
            time.sleep(0.2)
        t0 = time.monotonic()
        time.sleep(6.0)
        # topics flow at the configured rates (10 Hz control, cameras every tick)
        js, img = obs.rate("joint_states", t0), obs.rate("image", t0)
        assert 7.0 <= js <= 12.0, f"joint_states at {js:.1f} Hz, expected ~10"
        assert 7.0 <= img <= 12.0, f"camera/front/image_raw at {img:.1f} Hz, expected ~10"
        assert obs.rate("teleop", t0) > 5.0, "teleop/command is not flowing"
        # the loop is closed through topics: chunks from the bridge, steps from the controller, motion
        assert obs.rate("chunk", t0) > 5.0 and obs.rate("step", t0) > 7.0
        assert "policy" in obs.sources
        moved = [p for t, p in obs.poses if t >= t0]
        assert np.ptp(np.array(moved), axis=0).max() > 0.01, "the arm did not move under policy control"

        # e-stop: motion stops and stays stopped (latched)
        for _ in range(30):  # estop while the arm is moving
            recent = [p for t, p in obs.poses if t >= time.monotonic() - 0.4]
            if len(recent) >= 2 and np.linalg.norm(recent[-1] - recent[0]) > 2e-3:
                break
            time.sleep(0.1)
        from std_msgs.msg import Bool

        t_e = time.monotonic()
        t_e_ns = obs.node.get_clock().now().nanoseconds  # same system clock as the driver's stamps
        obs.estop_pub.publish(Bool(data=True))
        time.sleep(2.5)
        # the driver holds the arm (its state published with estopped=true). How fast is a figure,
        # measured by scripts/bench_ros.py (ros_estop_hold_p50_ms / _max_ms; DESIGN's goal 100 ms):
        # here, beside the graph's other processes on a shared 2-core CI machine, one
        # scheduling stall has held it back to ~300 ms, so the test bounds a working path, not the figure
        stopped_ns = min((st for st, e in obs.status if e and st >= t_e_ns), default=None)
        assert stopped_ns is not None, "the sim driver never reported the e-stop"
        stop_latency_ms = (stopped_ns - t_e_ns) / 1e6
        assert stop_latency_ms < 1000.0, f"the driver held the arm {stop_latency_ms:.0f} ms after the e-stop"
        # from then on the arm only settles (stopping distance of the position loop) and then stays put
        after = np.array([p for st, p in obs.pose_stamps if st >= stopped_ns])
        assert len(after) >= 10, "ee_pose stopped flowing after the e-stop"
        travel = np.linalg.norm(after - after[-1], axis=1)
        # (the sim's joint position loop overshoots a few mm when a fast motion is cut; a command that
        # kept flowing would move the arm up to 2 cm per tick)
        assert travel.max() < 1e-2, f"the arm travelled {travel.max() * 1e3:.1f} mm after it was held"
        late = np.array([p for t, p in obs.poses if t >= t_e + 1.5])
        # (contact with a grasped cube may still nudge the held arm by a fraction of a millimetre)
        assert np.abs(late - late[0]).max() < 2e-3, "the arm kept moving while the e-stop was latched"
        # the controller latched it: every tick after it is a stop flagged "estop" with zero motion, and
        # when the episode ends meanwhile, no new one starts (its reset would move the arm)
        latched = [lab for t, lab in obs.steps if t >= t_e + 0.2]
        assert all("estop" in lab["safety_flags"] for lab in latched), latched[-1:]
        assert all(np.allclose(np.asarray(lab["action_executed"], float)[:6], 0.0) for lab in latched)
        assert not [t for t in obs.starts if t >= t_e + 0.2], "an episode started while the e-stop was latched"
        # only an explicit reset clears it (the latched topic itself is set back to false first)
        obs.estop_pub.publish(Bool(data=False))
        t_r = time.monotonic()
        obs.estop_reset_pub.publish(Bool(data=True))
        end = time.monotonic() + 15.0
        while time.monotonic() < end:
            resumed = np.array([p for t, p in obs.poses if t >= t_r + 0.2] or [np.zeros(3)])
            if np.ptp(resumed, axis=0).max() > 5e-3:
                break
            time.sleep(0.2)
        assert np.ptp(resumed, axis=0).max() > 5e-3, "the arm did not move again after estop/reset"

        # a killed node is reported and restarted (policy_bridge: restart on-failure)
        pid = runner.pids()["policy_bridge"]
        os.kill(pid, signal.SIGKILL)
        runner.wait_for(r"policy_bridge: exited \(killed by SIGKILL\)", 10)
        runner.wait_for(r"policy_bridge: restarting \(1/3", 5)
        runner.wait_for(r"policy_bridge: started \(pid (?!%d\b)\d+\)" % pid, 10)
    finally:
        obs.close()
        pids = runner.pids()
        rc = runner.stop()
    assert rc == 0, runner.text[-3000:]
    assert "all nodes stopped" in runner.text
    time.sleep(0.5)
    alive = {name: pid for name, pid in pids.items() if _alive(pid)}
    assert not alive, f"orphans after Ctrl-C: {alive}"
    assert "controller" in pids and "recorder" in pids

    from hil_robot.data import EpisodeStore

    store = EpisodeStore(run_dir / "ros_episodes", read_only=True)
    assert len(store) >= 1, "no episode recorded through ROS"
    ep = store.read_episode(0)
    assert ep.cameras == ["front", "wrist"] and len(ep) == ep.meta.num_steps > 0
