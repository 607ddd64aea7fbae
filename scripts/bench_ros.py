"""ROS 2 transport benchmark (FastDDS on loopback, pip rclpy).

1. Image topic: a publisher process sends 2 cameras x 128x128 rgb8 at 30 Hz (sensor QoS); this
   process subscribes. Delivered rate (pairs/s) and latency (receive time - header stamp, both
   on the host's system clock) p50/p99. Anchor in the same run: the same frames over a pyzmq
   PUB/SUB pair on loopback (the project's own transport layer underneath), ``zmq_image_*``.
2. Control loop over topics at 20 Hz: the real ``sim_driver`` node (kinematic backend, lock-step,
   one camera) in its own process; here a ``TopicRobot`` sends each command as TwistStamped +
   gripper JointState and waits for the observation the driver publishes after applying it.
   End-to-end command latency = command published -> resulting observation assembled here.
   Then 10 e-stop cycles: ``estop`` published -> the driver's held state published (sim/status).

    python scripts/bench_ros.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from hil_robot.procs import spawn  # children end with the bench, even if it is killed

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ros2_ws" / "src" / "hil_robot_ros"))

IMAGE_PUBLISHER = r"""
import sys, time, numpy as np, rclpy
from sensor_msgs.msg import Image
from hil_robot_ros import convert
from hil_robot_ros.qos import SENSOR_QOS
rclpy.init()
node = rclpy.create_node("bench_camera")
pubs = [node.create_publisher(Image, f"camera/{c}/image_raw", SENSOR_QOS) for c in ("front", "wrist")]
rng = np.random.default_rng(0)
imgs = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2)]
duration, rate = float(sys.argv[1]), 30.0
time.sleep(1.5)  # discovery
t0 = time.monotonic()
k = 0
while time.monotonic() - t0 < duration:
    stamp = node.get_clock().now().nanoseconds
    for pub, img in zip(pubs, imgs):
        pub.publish(convert.image_to_msg(img, stamp, "cam"))
    k += 1
    time.sleep(max(0.0, t0 + k / rate - time.monotonic()))
rclpy.shutdown()
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 50))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONPATH"] = str(REPO / "ros2_ws" / "src" / "hil_robot_ros") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def bench_images(duration_s: float, env: dict[str, str]) -> dict[str, float]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from hil_robot_ros import convert
    from hil_robot_ros.qos import SENSOR_QOS

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("bench_images_sub", context=ctx)
    got: dict[str, list[tuple[float, int, float]]] = {"front": [], "wrist": []}

    def cb(cam: str):
        def f(msg: Image) -> None:
            now_ns = node.get_clock().now().nanoseconds
            convert.msg_to_image(msg)  # the consumer's conversion is part of the cost
            got[cam].append((time.monotonic(), convert.stamp_to_ns(msg.header.stamp), now_ns))
        return f

    for cam in got:
        node.create_subscription(Image, f"camera/{cam}/image_raw", cb(cam), SENSOR_QOS)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    proc = spawn([sys.executable, "-c", IMAGE_PUBLISHER, str(duration_s)], env=env, new_group=False)
    try:
        end = time.monotonic() + duration_s + 10.0
        while proc.poll() is None and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        t_end = time.monotonic() + 0.3
        while time.monotonic() < t_end:
            ex.spin_once(timeout_sec=0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        ex.shutdown()
        rclpy.shutdown(context=ctx)
    stamps_both = {s for _, s, _ in got["front"]} & {s for _, s, _ in got["wrist"]}
    recv = sorted(t for t, s, _ in got["wrist"] if s in stamps_both)
    # rate over the steady part (skip the first second after discovery)
    steady = [t for t in recv if t >= recv[0] + 1.0] if recv else []
    rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 2 else 0.0
    lat = np.array([(r - s) / 1e6 for cam in got for _, s, r in got[cam]])
    return {"ros_image_rate_hz": rate, "ros_image_latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
            "ros_image_latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
            "ros_image_pairs": float(len(stamps_both))}


ZMQ_PUBLISHER = r"""
import sys, time, numpy as np, zmq
ctx = zmq.Context(); pub = ctx.socket(zmq.PUB); pub.bind(sys.argv[2])
rng = np.random.default_rng(0)
imgs = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2)]
duration, rate = float(sys.argv[1]), 30.0
time.sleep(1.5)  # let the subscriber connect
t0 = time.monotonic(); k = 0
while time.monotonic() - t0 < duration:
    stamp = time.time_ns()
    for cam, img in zip((b"front", b"wrist"), imgs):
        pub.send_multipart([cam, str(stamp).encode(), img.tobytes()], copy=False)
    k += 1
    time.sleep(max(0.0, t0 + k / rate - time.monotonic()))
pub.close(linger=0); ctx.term()
"""


def bench_zmq_images(duration_s: float) -> dict[str, float]:
    """The same 2 x 128x128 @ 30 Hz stream over pyzmq PUB/SUB on loopback (the anchor)."""
    import socket

    import zmq

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 5)  # like depth-5 sensor QoS
    sub.connect(endpoint)
    proc = spawn([sys.executable, "-c", ZMQ_PUBLISHER, str(duration_s), endpoint], new_group=False)
    lat, recv = [], []
    try:
        end = time.monotonic() + duration_s + 10.0
        while time.monotonic() < end:
            if sub.poll(100):
                cam, stamp, data = sub.recv_multipart()
                np.frombuffer(data, np.uint8).reshape(128, 128, 3).copy()
                lat.append((time.time_ns() - int(stamp)) / 1e6)
                if cam == b"wrist":
                    recv.append(time.monotonic())
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close(linger=0)
        ctx.term()
    steady = [t for t in recv if t >= recv[0] + 1.0] if recv else []
    rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 2 else 0.0
    a = np.array(lat)
    return {"zmq_image_rate_hz": rate, "zmq_image_latency_p50_ms": float(np.percentile(a, 50)) if a.size else float("nan"),
            "zmq_image_latency_p99_ms": float(np.percentile(a, 99)) if a.size else float("nan")}


def bench_loop(duration_s: float, env: dict[str, str]) -> dict[str, float]:
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from std_msgs.msg import String

    from hil_robot.config import load_config
    from hil_robot_ros import convert
    from hil_robot_ros.qos import COMMAND_QOS
    from hil_robot_ros.ros_io import CommandPublisher, ObservationSubscriber
    from hil_robot_ros.topic_robot import TopicRobot

    overrides = ["robot.control_hz=20", "sim.cameras=[front]"]
    cfg = load_config(overrides)
    driver = spawn([sys.executable, "-m", "hil_robot_ros", "sim_driver", *overrides, "--ros-args",
                               "-p", "backend:=kinematic", "-p", "mode:=lockstep"], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(os.devnull if not os.environ.get("BENCH_DEBUG") else "/tmp/bench_driver.log", "w"))
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("bench_controller", context=ctx)
    commands = CommandPublisher(node, cfg.robot)
    reset_pub = node.create_publisher(String, "sim/reset", COMMAND_QOS)
    robot = TopicRobot(commands, lambda d: reset_pub.publish(convert.json_msg(d)), lambda: node.get_clock().now().nanoseconds,
                       time.monotonic, {}, lockstep=True, timeout_s=30.0)
    ObservationSubscriber(node, ["front"], robot.on_obs, sim=True)
    ex = MultiThreadedExecutor(num_threads=2, context=ctx)
    ex.add_node(node)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    lat_ms: list[float] = []
    try:
        robot.reset(seed=0)
        period = 1.0 / 20.0
        t0 = time.monotonic()
        k = 0
        rng = np.random.default_rng(0)
        while time.monotonic() - t0 < duration_s:
            a = rng.uniform(-0.2, 0.2, 7).astype(np.float32)
            t_send = time.monotonic()
            robot.send_action(a)  # returns when the driver's resulting observation is assembled here
            lat_ms.append((time.monotonic() - t_send) * 1e3)
            k += 1
            time.sleep(max(0.0, t0 + k * period - time.monotonic()))
        estop_ms = _estop_cycles(node, robot, 10)
    finally:
        ex.shutdown()
        rclpy.shutdown(context=ctx)
        driver.terminate()
        try:
            driver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            driver.kill()
    lat = np.array(lat_ms[5:])  # skip warm-up
    return {"ros_loop_latency_p50_ms": float(np.percentile(lat, 50)), "ros_loop_latency_p99_ms": float(np.percentile(lat, 99)),
            "ros_loop_ticks": float(len(lat_ms)), **estop_ms}


def _estop_cycles(node, robot, n: int) -> dict[str, float]:
    """e-stop published -> the driver's held state published (its sim/status says estopped), n times."""
    from std_msgs.msg import Bool, String

    from hil_robot_ros import convert
    from hil_robot_ros.qos import COMMAND_QOS, LATCHED_QOS, SENSOR_QOS

    held: list[int] = []
    node.create_subscription(String, "sim/status", lambda m: (lambda d: d.get("estopped") and held.append(int(d["stamp_ns"])))(
        convert.msg_to_json(m)), SENSOR_QOS)
    estop = node.create_publisher(Bool, "estop", LATCHED_QOS)
    reset = node.create_publisher(Bool, "estop/reset", COMMAND_QOS)
    time.sleep(1.0)  # discovery of the new endpoints
    out = []
    for _ in range(n):
        t_ns = node.get_clock().now().nanoseconds
        estop.publish(Bool(data=True))
        end = time.monotonic() + 5.0
        while time.monotonic() < end and not any(h >= t_ns for h in held):
            time.sleep(0.001)
        hit = [h for h in held if h >= t_ns]
        if hit:
            out.append((min(hit) - t_ns) / 1e6)
        estop.publish(Bool(data=False))
        reset.publish(Bool(data=True))
        time.sleep(0.3)
        robot.send_action(np.zeros(7, np.float32))  # a fresh step after the reset
    a = np.array(out) if out else np.array([np.nan])
    return {"ros_estop_hold_p50_ms": float(np.median(a)), "ros_estop_hold_max_ms": float(a.max()),
            "ros_estop_cycles": float(len(out))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs (about 55 s in all)")
    ap.add_argument("--json", help="write the metrics as a flat JSON object here")
    args = ap.parse_args(argv)
    duration = 8.0 if args.quick else 30.0
    env = _env()
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    results: dict[str, float] = {}
    results.update(bench_images(duration, env))
    results.update(bench_zmq_images(duration))
    results.update(bench_loop(duration, env))
    print(f"{'metric':<28} {'value':>10}")
    for k, v in results.items():
        print(f"{k:<28} {v:>10.2f}")
    print("(image: 2 x 128x128 rgb8 at 30 Hz target; loop: 20 Hz command -> driver -> observation round trip)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
