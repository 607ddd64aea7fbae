"""What every node shares: argv handling (``--ros-args`` stripped before Hydra), declared and
validated parameters, a multi-threaded executor, and a clean exit on SIGINT/SIGTERM.

A node module provides ``make_node(cfg: RootConfig) -> rclpy Node`` and calls
``run_node(make_node, argv)`` from its ``main``. Nodes that own devices are lifecycle nodes; on the
pip path (no lifecycle manager) they configure and activate themselves when ``autostart`` is true.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
from typing import Any, Callable, Sequence

from hil_robot.config import ConfigError, RootConfig

log = logging.getLogger("hil_robot_ros")


@dataclasses.dataclass(frozen=True)
class Param:
    """A declared ROS parameter: default, a validator returning an error text (or None), a description."""

    default: Any
    description: str
    check: Callable[[Any], str | None] | None = None
    read_only: bool = True  # most of our parameters shape the node at start-up


def one_of(*allowed: Any) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"must be one of {', '.join(map(str, allowed))}"


def positive(v: Any) -> str | None:
    return None if isinstance(v, (int, float)) and v > 0 else "must be > 0"


def non_negative(v: Any) -> str | None:
    return None if isinstance(v, (int, float)) and v >= 0 else "must be >= 0"


def declare_params(node: Any, spec: dict[str, Param]) -> dict[str, Any]:
    """Declare ``spec`` on ``node``, validate the values it was started with, and reject invalid
    updates at run time. Returns name -> value. Raises ConfigError naming parameter and rule."""
    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

    values: dict[str, Any] = {}
    for name, p in spec.items():
        desc = ParameterDescriptor(description=p.description, read_only=p.read_only)
        value = node.declare_parameter(name, p.default, desc).value
        if isinstance(p.default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # `-p rate_hz:=10` arrives as an integer
        if p.check is not None and (err := p.check(value)) is not None:
            raise ConfigError(f"parameter {node.get_name()}.{name}={value!r} {err}")
        values[name] = value

    def _on_set(params: list[Any]) -> Any:
        for prm in params:
            p = spec.get(prm.name)
            if p is not None and p.check is not None and (err := p.check(prm.value)) is not None:
                return SetParametersResult(successful=False, reason=f"{prm.name}={prm.value!r} {err}")
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(_on_set)
    return values


def load_node_config(argv: Sequence[str]) -> RootConfig:
    """Hydra overrides from a node's argv (ROS's ``--ros-args`` block removed first)."""
    from hil_robot.cli import strip_ros_args
    from hil_robot.config import load_config

    return load_config([a for a in strip_ros_args(list(argv)) if "=" in a])


def run_node(make_node: Callable[[RootConfig], Any], argv: Sequence[str] | None = None,
             num_threads: int = 4) -> int:
    """Init rclpy with ``argv``, build the node, spin until SIGINT/SIGTERM or ``node.done``, clean up.

    Returns 0 on a clean stop, 2 on a configuration error (the message names the fix), 1 otherwise.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from hil_robot.procs import watch_parent

    watch_parent()  # started by `hil-robot launch`: end when it does, even if it is killed hard
    try:
        cfg = load_node_config(argv)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    rclpy.init(args=["hil_robot_ros", *argv], signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    node = None
    executor = MultiThreadedExecutor(num_threads=num_threads)
    rc = 0
    try:
        node = make_node(cfg)
        executor.add_node(node)
        while rclpy.ok() and not stop.is_set() and not getattr(node, "done", False):
            executor.spin_once(timeout_sec=0.1)
        rc = int(getattr(node, "exit_code", 0))
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        rc = 2
    except ExternalShutdownException:
        pass
    except Exception as e:  # a device error etc.: the message must say what to do
        log.exception("node failed: %s", e)
        rc = 1
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            try:
                if callable(close):
                    close()
            except Exception:  # noqa: BLE001 - best-effort cleanup on the way out
                log.exception("error while closing the node")
        executor.shutdown(timeout_sec=2.0)  # let running callbacks finish before the node goes away
        if rclpy.ok():
            rclpy.shutdown()  # destroys the node's entities; destroying them first races the executor
    return rc


def autostart_lifecycle(node: Any) -> None:
    """configure + activate a lifecycle node (what a lifecycle manager does on a ROS install)."""
    from rclpy.lifecycle import TransitionCallbackReturn

    for trigger, what in ((node.trigger_configure, "configure"), (node.trigger_activate, "activate")):
        if trigger() != TransitionCallbackReturn.SUCCESS:
            reason = getattr(node, "last_error", "") or "see the log above"
            raise RuntimeError(f"{node.get_name()}: lifecycle transition {what} failed: {reason}")
