"""``hil-robot launch GRAPH [overrides]``: start an experiment's node graph (``configs/graph/``) as
supervised processes — the pip-path twin of ``ros2 launch hil_robot_ros GRAPH.launch.py``.

    hil-robot launch sim_pick_cube policy=expert duration_s=60
    hil-robot launch sim_pick_cube dry_run=true          # print the commands only

Options: ``duration_s`` (0 = until Ctrl-C), ``dry_run``, ``log_dir`` (one log file per node;
default ``runs/launch/GRAPH-<time>/``). Everything else is a Hydra override passed to every node.

The console shows the supervisor's events (a node started, exited, restarting) and warnings;
each node's output is in its log file, and also on the console with ``-v``. SIGINT/SIGTERM stop
every node (escalating to SIGKILL); killed hard, the nodes stop on their own (``hil_robot.procs``).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from hil_robot.config import ConfigError

OPTIONS = {"duration_s": 0.0, "dry_run": False, "log_dir": ""}


def launch(argv: list[str]) -> int:
    from hil_robot.cli import console_logging, parse_command_args, strip_ros_args, verbose
    from hil_robot.launch.plan import child_env, node_plan
    from hil_robot.launch.supervisor import Supervisor

    argv = strip_ros_args(list(argv))
    if not argv or "=" in argv[0] or argv[0].startswith("-"):
        from hil_robot.config import config_dir

        graphs = sorted(p.stem for p in (config_dir() / "graph").glob("*.yaml"))
        raise ConfigError(f"name a graph first: hil-robot launch GRAPH [key=value ...]; graphs: {', '.join(graphs)}")
    graph, rest = argv[0], argv[1:]
    overrides = [a for a in rest if a.partition("=")[0].lstrip("-").replace("-", "_") not in OPTIONS]
    opts, cfg = parse_command_args([f"graph={graph}", *rest], options=OPTIONS)
    from hil_robot.run import check_paths

    check_paths(cfg)
    specs = node_plan(cfg, [f"graph={graph}", *overrides])  # each node composes the same graph config
    if not specs:
        raise ConfigError(f"graph {graph!r} has no enabled nodes")
    check_ports_free(cfg, specs)
    if opts["dry_run"]:
        for spec in specs:
            print(f"{spec.name}: {shlex.join(spec.command())}")
        return 0
    log_dir = Path(opts["log_dir"] or Path("runs") / "launch" / f"{graph}-{time.strftime('%Y%m%d-%H%M%S')}")
    log_dir.mkdir(parents=True, exist_ok=True)
    console_logging(str(log_dir / "launch.log"))
    print(f"hil-robot launch {graph}: {len(specs)} nodes; logs in {log_dir}/<node>.log"
          f"{'' if verbose() else ' (-v prints them here too)'}", flush=True)
    sup = Supervisor(specs, child_env(), restart_delay_s=cfg.graph.restart_delay_s,
                     shutdown_timeout_s=cfg.graph.shutdown_timeout_s, log_dir=str(log_dir),
                     echo=None if verbose() else (lambda line: False))
    rc = sup.run(duration_s=float(opts["duration_s"]))
    if sup.failed_required:
        print(f"hil-robot launch: required node {sup.failed_required!r} stopped; see {log_dir}/{sup.failed_required}.log",
              file=sys.stderr)
    return rc


def check_ports_free(cfg, specs) -> None:
    """The ports the graph's policy servers will bind are free (else the node would crash at start
    and be restarted until it gives up)."""
    import socket

    for spec in specs:
        if spec.is_ros_node or "serve-policy" not in spec.arguments:
            continue
        port = cfg.transport.policy_port
        for arg in spec.arguments:
            key, _, value = arg.partition("=")
            if key in ("port", "transport.policy_port") and value.isdigit():
                port = int(value)
        if port == 0:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as zmq binds
            try:
                s.bind((cfg.transport.bind_host, port))
            except OSError:
                raise ConfigError(f"port {port} ({spec.name}: transport.policy_port) is already in use by another "
                                  f"process; stop it or pass transport.policy_port=<a free port>") from None
