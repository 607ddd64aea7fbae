"""Controller timing benchmark (issue: loop jitter, deadline misses, watchdog reaction).

    .venv/bin/python scripts/bench_control.py [--quick] [--json PATH] [--policy vla|null] [--seconds S] [--rt-priority N]

The loop thread runs SCHED_FIFO priority 10 by default (``control.rt_priority``, the recommended
deployment; ``--rt-priority 0`` = normal scheduling; the header line says which was used).

1. Loop timing: the real controller at 20 Hz on the MuJoCo ``SimRobot`` (two 128x128 cameras),
   real clock, the policy served by a separate ``hil-robot serve-policy`` process over zmq
   (default: the VLA, chunks of 10, 5 executed, next chunk requested early).
   * ``loop_jitter_p99_ms``: p99 of |tick period - 50 ms|, tick = loop wake-up (back-to-back ticks).
   * ``command_jitter_p99_ms``: the same for the instants the commands reach the robot.
   * ``deadline_miss_frac``: ticks whose command reached the robot more than ``control.deadline_frac``
     of a period (0.5 -> 25 ms) after its slot, plus skipped slots, over all slots.
   * Each episode first gets its tick-0 chunk before its slots start (``control.first_chunk_timeout_s``):
     ``first_chunk_wait_first_ms`` (cold server, first episode), ``first_chunk_wait_p50_ms`` (later
     episodes), ``first_chunk_retries`` (timed-out first requests re-sent).
   Anchor in the same run: a plain ``time.sleep(period - elapsed)`` loop calling the same remote
   policy synchronously when its chunk runs out (``anchor_*`` keys).
2. Watchdog: an operator device streams takeover commands at 100 Hz from its own thread (like a
   SpaceMouse driver); the stream is cut at random instants. ``watchdog_reaction_ms`` is the median,
   over cuts, of (time the first hold command reached the robot - timestamp of the last command);
   ``watchdog_reaction_max_ms`` the worst cut. The filter holds once an input would be older than
   ``watchdog_hold_s`` (100 ms) before the end of the tick it drives.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from hil_robot import procs  # noqa: E402
from hil_robot.config import load_config  # noqa: E402
from hil_robot.control.clock import MonotonicClock  # noqa: E402
from hil_robot.control.loop import Controller  # noqa: E402
from hil_robot.types import OperatorCommand, OperatorMode  # noqa: E402

HZ = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(policy: str, port: int) -> subprocess.Popen:
    args = [sys.executable, "-m", "hil_robot", "serve-policy", f"port={port}", "transport.heartbeat_s=0.5"]
    if policy == "null":
        args += ["policy_factory=hil_robot.transport.null_policy:make_null_policy", "policy.action_horizon=10"]
    else:
        args += [f"policy={policy}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return procs.spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, new_group=False)  # ends with the bench


def make_robot(kind: str, cfg, clock):
    if kind == "kinematic":  # no physics, no cameras: isolates the controller's own timing
        from hil_robot.control.fakes import KinematicRobot

        return KinematicRobot(cfg.robot, clock=clock.now)
    import sim

    return sim.SimRobot(cfg.sim, cfg.robot, seed=0, clock=clock.now)


def bench_loop(policy: str, seconds: float, rt_priority: int, lead_s: float, robot_kind: str) -> dict[str, float]:
    from hil_robot.transport.policy_client import PolicyClient

    cfg = load_config([f"robot.control_hz={HZ}", "policy=vla", "sim.max_episode_steps=100", f"control.rt_priority={rt_priority}",
                      f"control.observe_lead_s={lead_s}"])
    port = free_port()
    server = start_server(policy, port)
    client = PolicyClient(f"tcp://127.0.0.1:{port}", timeout_s=2.0)
    try:
        client.wait_ready(120)
        clock = MonotonicClock()
        robot = make_robot(robot_kind, cfg, clock)
        ctl = Controller(robot, client, None, None, cfg, clock=clock)
        slots = 0
        t_end = time.monotonic() + seconds
        with robot:
            ep = 0
            primes = []
            while time.monotonic() < t_end:
                steps = max(10, min(100, int((t_end - time.monotonic()) * HZ)))
                primes.append(ctl.run_episode(max_steps=steps, seed=ep).first_chunk_wait_s * 1e3)
                ep += 1
            anchor = anchor_loop(robot, client, min(seconds / 2, 20.0))
        ctl.close()
        timings = list(ctl.timings)
        sched = np.array([t.scheduled_s for t in timings])
        start = np.array([t.started_s for t in timings])
        sent = np.array([t.sent_s for t in timings])
        decided = np.array([t.decided_s for t in timings])
        period = 1.0 / HZ
        consecutive = np.abs(np.diff(sched) - period) < 1e-6
        wake_j = np.abs(np.diff(start) - period)[consecutive] * 1e3
        send_j = np.abs(np.diff(sent) - period)[consecutive] * 1e3
        slots = ctl.counters["ticks"] + ctl.counters["overruns"]
        misses = ctl.counters["deadline_misses"] + ctl.counters["overruns"]
        return {
            "loop_jitter_p99_ms": float(np.percentile(wake_j, 99)),
            "loop_jitter_p50_ms": float(np.percentile(wake_j, 50)),
            "command_jitter_p99_ms": float(np.percentile(send_j, 99)),
            "deadline_miss_frac": misses / max(slots, 1),
            "tick_work_p50_ms": float(np.percentile((decided - start) * 1e3, 50)),  # observe .. safety decision
            "tick_work_p99_ms": float(np.percentile((decided - start) * 1e3, 99)),
            "loop_ticks": float(len(timings)),
            "policy_requests": float(ctl.executor.counters["requests"]),
            "policy_errors": float(ctl.executor.counters["errors"]),
            # before tick 0 of each episode, outside the slots: the first (cold) one and the rest
            "first_chunk_wait_first_ms": float(primes[0]),
            "first_chunk_wait_p50_ms": float(np.median(primes[1:] or primes)),
            "first_chunk_retries": float(ctl.executor.counters["prime_errors"]),
            **anchor,
        }
    finally:
        client.close()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()


def anchor_loop(robot, client, seconds: float, n_action_steps: int = 5) -> dict[str, float]:
    """The anchor: the usual hand-written loop (``time.sleep(period - elapsed)``, the policy called
    synchronously whenever the chunk runs out), same robot, same remote policy."""
    period = 1.0 / HZ
    wake, sent = [], []
    chunk, i, errors = None, 0, 0
    robot.reset(seed=0)
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        t = time.monotonic()
        wake.append(t)
        obs = robot.observe()
        if chunk is None or i >= n_action_steps:
            try:
                chunk, i = client.infer(obs)["actions"], 0
            except Exception:  # a timed-out request: the anchor holds, like the controller
                chunk, i, errors = np.zeros((n_action_steps, 7), np.float32), 0, errors + 1
        robot.send_action(np.clip(chunk[i], -1, 1))
        i += 1
        sent.append(time.monotonic())
        time.sleep(max(0.0, period - (time.monotonic() - t)))
    wake_j = np.abs(np.diff(wake) - period) * 1e3
    late = np.array(sent) - np.array(wake)  # the anchor has no schedule: its slot is its wake-up
    return {
        "anchor_loop_jitter_p99_ms": float(np.percentile(wake_j, 99)),
        "anchor_command_jitter_p99_ms": float(np.percentile(np.abs(np.diff(sent) - period) * 1e3, 99)),
        "anchor_deadline_miss_frac": float(np.mean(late > 0.5 * period)),
        "anchor_policy_errors": float(errors),
    }


class StreamingDevice:
    """An operator source fed by a 100 Hz device thread; ``cut()`` stops the stream (unplugged)."""

    def __init__(self, clock: MonotonicClock, rate_hz: float = 100.0) -> None:
        self.clock, self.rate_hz = clock, rate_hz
        self._latest: OperatorCommand | None = None
        self._on = threading.Event()
        self._on.set()
        self._quit = threading.Event()
        self.last_sample_s = float("nan")
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        a = np.array([0.05, 0, 0, 0, 0, 0, -1.0], np.float32)
        while not self._quit.is_set():
            if self._on.is_set():
                with self._lock:
                    t = self.clock.now()
                    self._latest = OperatorCommand(t, OperatorMode.TAKEOVER, action=a * (1 if int(t) % 2 else -1))
                    self.last_sample_s = t
            time.sleep(1.0 / self.rate_hz)

    def cut(self) -> float:
        with self._lock:
            self._on.clear()
            return self.last_sample_s

    def resume(self) -> None:
        self._on.set()

    def command(self, obs, context):
        with self._lock:
            return self._latest

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self._quit.set()


def bench_watchdog(cuts: int, rt_priority: int, lead_s: float, robot_kind: str) -> dict[str, float]:
    cfg = load_config([f"robot.control_hz={HZ}", "sim.max_episode_steps=100000", f"control.rt_priority={rt_priority}",
                      f"control.observe_lead_s={lead_s}"])
    clock = MonotonicClock()
    robot = make_robot(robot_kind, cfg, clock)
    dev = StreamingDevice(clock)
    ctl = Controller(robot, None, dev, None, cfg, clock=clock)
    ticks: list[tuple[float, str, tuple[str, ...]]] = []
    ctl.on_step = lambda rec, dec: ticks.append((rec.timestamp_s, dec.kind, dec.flags))
    last_cmd: list[float] = []
    rng = random.Random(0)

    def cutter() -> None:
        time.sleep(0.5)
        for _ in range(cuts):
            time.sleep(rng.uniform(0.2, 0.4))
            last_cmd.append(dev.cut())
            time.sleep(0.3)
            dev.resume()
        ctl.request_stop()

    th = threading.Thread(target=cutter, daemon=True)
    with robot:
        th.start()
        ctl.run_episode(max_steps=100000, seed=0)
    dev.close()
    ctl.close()
    reactions = []
    for t_c in last_cmd:
        hold = next((t for t, kind, flags in ticks if t > t_c and kind != "send" and "watchdog_hold" in flags), None)
        if hold is not None:
            reactions.append((hold - t_c) * 1e3)
    r = np.array(reactions)
    return {
        "watchdog_reaction_ms": float(np.median(r)),
        "watchdog_reaction_max_ms": float(r.max()),
        "watchdog_cuts": float(len(r)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="<= ~60 s")
    ap.add_argument("--json", default="")
    ap.add_argument("--policy", default="", help="vla | expert | null, served by a separate process (default: vla with "
                    "--robot sim, null with --robot kinematic, whose observations have no real camera images)")
    ap.add_argument("--seconds", type=float, default=0.0, help="loop timing duration (default 60, quick 15)")
    ap.add_argument("--rt-priority", type=int, default=10, help="control.rt_priority for the loop thread (default 10: SCHED_FIFO, the recommended deployment; 0 = normal scheduling)")
    ap.add_argument("--robot", default="sim", choices=("sim", "kinematic"), help="sim: MuJoCo SimRobot (default)")
    ap.add_argument("--observe-lead-s", type=float, default=0.0, help="control.observe_lead_s (0 = send when decided)")
    args = ap.parse_args()
    if args.rt_priority > 0:
        # Mesa llvmpipe renders in its own worker threads at normal priority, where a loaded box
        # starves them; with a real-time loop thread render in that thread instead.
        os.environ.setdefault("LP_NUM_THREADS", "0")
    seconds = args.seconds or (15.0 if args.quick else 60.0)
    args.policy = args.policy or ("vla" if args.robot == "sim" else "null")
    cuts = 10 if args.quick else 40
    res = bench_loop(args.policy, seconds, args.rt_priority, args.observe_lead_s, args.robot)
    res.update(bench_watchdog(cuts, args.rt_priority, args.observe_lead_s, args.robot))
    goals = {"loop_jitter_p99_ms": "<= 2", "deadline_miss_frac": "< 0.01", "watchdog_reaction_ms": "<= 100"}
    width = max(map(len, res))
    robot = "SimRobot 2x128x128 cameras" if args.robot == "sim" else "kinematic robot (no physics/cameras)"
    print(f"controller at {HZ:.0f} Hz, {robot}, policy={args.policy} in another process, "
          f"loop thread {'SCHED_FIFO ' + str(args.rt_priority) if args.rt_priority else 'normal scheduling'}, "
          f"observe_lead_s={args.observe_lead_s}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'metric':<{width}}  {'value':>10}  goal")
    for k, v in res.items():
        print(f"{k:<{width}}  {v:>10.4g}  {goals.get(k, '')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
