"""``hil-robot controller``: run the control loop against the sim robot.

    hil-robot controller policy=noisy_expert episodes=3 store=runs/ctl/store
    hil-robot controller policy.name=remote endpoint=tcp://127.0.0.1:5555 operator=sim_operator
    hil-robot controller policy=expert operator=keyboard episodes=1          # drive with the keys
    hil-robot controller policy=expert realtime=false episodes=20           # as fast as the sim goes

Options: ``episodes``, ``store`` (episode store dir; default ``<run_dir>/controller_store``,
``none`` = do not record), ``operator`` (sim_operator | keyboard | spacemouse | gamepad | openxr |
webxr | none; default ``teleop.device``), ``endpoint`` (remote policy; implied by
``policy.name=remote``), ``seed`` (episode i runs seed + i), ``seeds`` (comma-separated: one
episode per listed seed, in order, in place of ``episodes``/``seed``), ``max_steps``, ``realtime``
(false: a simulated clock, the loop runs as fast as the sim), ``keys`` (e-stop keys on the
terminal), ``subscribe_weights`` (local policy follows the learner's weight bus, swapping at chunk
boundaries), ``summary_json``,
``operator_endpoint`` (the operator runs in another process: ``hil-robot operator``),
``transitions`` (stream records to a remote recorder, ``hil-robot receive-transitions``, instead of
writing a local store).

Safety keys (terminal, then Enter): ``control.estop_key`` (x) latches the e-stop,
``control.reset_key`` (r) clears it, ``q`` ends after the current episode. With ``operator=keyboard``
the terminal belongs to the keyboard device: its own ``x`` latches the e-stop and
``kill -USR1 <pid>`` resets it.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from hil_robot.cli import parse_command_args
from hil_robot.config import ConfigError, RootConfig
from hil_robot.control.clock import FakeClock, MonotonicClock
from hil_robot.control.loop import Controller

log = logging.getLogger(__name__)

OPTIONS: dict[str, Any] = {
    "episodes": 1,
    "store": "",
    "operator": "",
    "endpoint": "",
    "seed": -1,
    "seeds": "",
    "max_steps": 0,
    "realtime": True,
    "keys": True,
    "subscribe_weights": False,
    "serve_screen": False,
    "summary_json": "",
    "operator_endpoint": "",
    "transitions": "",
}


def parse_seeds(text: str) -> list[int]:
    """``seeds=3,7,1000001`` -> [3, 7, 1000001]; non-negative integers, at least one."""
    try:
        seeds = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"seeds={text!r}: give comma-separated non-negative integers, e.g. seeds=3,7,11") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"seeds={text!r}: give at least one seed, each >= 0, e.g. seeds=3,7,11")
    return seeds


def build_policy(cfg: RootConfig, endpoint: str) -> tuple[Any, Any]:
    """(policy, weight_subscriber or None). Remote when an endpoint is given or policy.name=remote."""
    t = cfg.transport
    if endpoint or cfg.policy.name == "remote":
        from hil_robot.transport.links import tcp_endpoint
        from hil_robot.transport.policy_client import PolicyClient
        from hil_robot.transport.security import keys_from_config

        ep = endpoint or tcp_endpoint(t.host, t.policy_port)
        client = PolicyClient(ep, timeout_s=t.request_timeout_s, curve=keys_from_config(t, server=False), heartbeat_s=t.heartbeat_s)
        log.info("remote policy at %s", ep)
        return client, None
    from policies.registry import make_policy

    return make_policy(cfg), None


def build_operator(cfg: RootConfig, name: str, seed: int | None, clock: Any, serve_screen: bool) -> Any:
    if name == "none":
        return None
    if name == "sim_operator":
        from sim.operator import SimulatedOperator

        return SimulatedOperator(cfg.teleop.sim_operator, cfg.sim.task, seed=seed, robot_cfg=cfg.robot)
    import dataclasses

    from teleop.node import TeleopNode

    tcfg = dataclasses.replace(cfg.teleop, device=name)
    return TeleopNode(tcfg, cfg.robot, serve=serve_screen).start()


class KeyListener:
    """Reads lines from the terminal: e-stop, reset, quit. Runs in a daemon thread."""

    def __init__(self, ctl: Controller, operator: Any, estop_key: str, reset_key: str) -> None:
        self.ctl, self.operator = ctl, operator
        self.estop_key, self.reset_key = estop_key, reset_key
        self.quit = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="controller-keys", daemon=True)

    def start(self) -> "KeyListener":
        print(f"keys: '{self.estop_key}'+Enter e-stop, '{self.reset_key}'+Enter reset e-stop, 'q'+Enter quit", flush=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        fd = sys.stdin.fileno()
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            line = os.read(fd, 256).decode(errors="ignore")
            if not line:
                return
            self.handle(line.strip().lower())

    def handle(self, key: str) -> None:
        if key == self.estop_key:
            self.ctl.estop("terminal key")
        elif key == self.reset_key:
            reset_estop(self.ctl, self.operator)
        elif key == "q":
            self.quit.set()
            self.ctl.request_stop()

    def close(self) -> None:
        self._stop.set()


def reset_estop(ctl: Controller, operator: Any) -> None:
    """The explicit reset: controller latch and (if it has one) the operator device's latch."""
    ctl.reset_estop()
    clear = getattr(getattr(operator, "operator", operator), "clear_estop", None)
    if callable(clear):
        clear()


def controller(argv: list[str]) -> int:
    opts, cfg = parse_command_args(argv, options=OPTIONS, aliases={"task": "sim.task", "checkpoint": "policy.checkpoint"})
    if opts["episodes"] < 1:
        raise ConfigError("episodes must be >= 1")
    seed = cfg.experiment.seed if opts["seed"] < 0 else opts["seed"]
    seeds = parse_seeds(opts["seeds"]) if opts["seeds"] else [seed + i for i in range(opts["episodes"])]
    op_name = opts["operator"] or cfg.teleop.device
    allowed = ("sim_operator", "keyboard", "spacemouse", "gamepad", "openxr", "webxr", "none")
    if op_name not in allowed:
        raise ConfigError(f"operator={op_name!r} is not allowed; choose one of: {', '.join(allowed)}")
    if op_name not in ("sim_operator", "none") and not opts["realtime"]:
        raise ConfigError(f"operator={op_name} is a person at a device: it needs realtime=true")
    seed = seeds[0]  # also seeds the robot's and the simulated operator's own generators
    clock = MonotonicClock() if opts["realtime"] else FakeClock()

    import sim

    robot = sim.SimRobot(cfg.sim, cfg.robot, seed=seed, clock=clock.now)
    policy, subscriber = build_policy(cfg, opts["endpoint"])
    hook = None
    if opts["subscribe_weights"]:
        if not callable(getattr(policy, "load_weights", None)):
            raise ConfigError(f"subscribe_weights=true needs a local weight-updatable policy; {cfg.policy.name!r} is not")
        from hil_robot.transport.links import tcp_endpoint
        from hil_robot.transport.security import keys_from_config
        from hil_robot.transport.weights import WeightSubscriber

        t = cfg.transport  # connects to the learner's weight bus (CURVE client when transport.curve_keys_dir is set)
        subscriber = WeightSubscriber(tcp_endpoint(t.host, t.weights_port), policy,
                                      curve=keys_from_config(t, server=False), heartbeat_s=t.heartbeat_s)
        hook = subscriber.apply_pending  # staged weights go in between chunks only
    if opts["operator_endpoint"]:  # the operator runs in its own process (`hil-robot operator`)
        from hil_robot.transport.operator_link import RemoteOperator

        operator = RemoteOperator(opts["operator_endpoint"], timeout_s=cfg.transport.request_timeout_s)
        operator.wait_ready(timeout_s=30.0)
    else:
        try:
            operator = build_operator(cfg, op_name, seed, clock, opts["serve_screen"])
        except Exception as e:
            if type(e).__name__ != "DeviceUnavailableError":
                raise
            print(f"hil-robot controller: operator={op_name}: {e}", file=sys.stderr)
            return 2
    recorder = None
    store_path = opts["store"] or str(Path(cfg.experiment.run_dir) / "controller_store")
    if opts["transitions"]:  # records stream to a remote recorder (`hil-robot receive-transitions`)
        from hil_robot.transport.transitions import TransitionSender

        recorder = TransitionSender(opts["transitions"])
        store_path = "none"
    elif store_path != "none":
        from hil_robot.data import EpisodeStore, Recorder
        from hil_robot.data.recorder import recorder_options

        recorder = Recorder(EpisodeStore(store_path), **recorder_options(cfg.learner), robot=cfg.robot.name, operator=op_name)
    ctl = Controller(robot, policy, operator, recorder, cfg, clock=clock, on_chunk_boundary=hook)

    keys = None
    if opts["keys"] and sys.stdin.isatty() and op_name in ("sim_operator", "none"):  # else a device owns the tty
        keys = KeyListener(ctl, operator, cfg.control.estop_key, cfg.control.reset_key).start()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, lambda *_: reset_estop(ctl, operator))
        signal.signal(signal.SIGTERM, lambda *_: ctl.request_stop())

    results = []
    try:
        with robot:
            for i, episode_seed in enumerate(seeds):
                res = ctl.run_episode(max_steps=opts["max_steps"] or None, seed=episode_seed)
                results.append(res)
                print(
                    f"episode {i + 1}/{len(seeds)} {res.episode_id}: {res.steps} steps, {res.end_reason}, "
                    f"takeovers={res.interventions}" + (f" perturbations={res.perturbations}" if res.perturbations else ""),
                    flush=True,
                )
                if keys is not None and keys.quit.is_set() or res.end_reason == "stopped":
                    break
    finally:
        if keys is not None:
            keys.close()
        ctl.close()
        for thing in (operator, policy, subscriber, recorder):
            close = getattr(thing, "close", None)
            if callable(close):
                close()
    stats = ctl.stats()
    summary = {
        "episodes": len(results),
        "successes": sum(r.success for r in results),
        "steps": sum(r.steps for r in results),
        "takeovers": sum(r.interventions for r in results),
        "perturbations": sum(r.perturbations for r in results),
        **{k: v for k, v in stats.items() if isinstance(v, (int, float))},
    }
    width = max(map(len, summary))
    print("\n".join(f"  {k:<{width}}  {v:.4g}" if isinstance(v, float) else f"  {k:<{width}}  {v}" for k, v in summary.items()))
    if store_path != "none":
        print(f"episodes written to {store_path}")
    if opts["summary_json"]:
        Path(opts["summary_json"]).write_text(json.dumps(summary, indent=2))
    return 0
