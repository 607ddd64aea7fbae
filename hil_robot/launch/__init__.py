"""``hil-robot launch GRAPH [overrides]``: start an experiment's node graph (``configs/graph/``) as
supervised processes — the pip-path twin of ``ros2 launch hil_robot_ros GRAPH.launch.py``.

    hil-robot launch sim_pick_cube policy=expert duration_s=60
    hil-robot launch sim_pick_cube dry_run=true          # print the commands only

Options: ``duration_s`` (0 = until Ctrl-C), ``dry_run``, ``log_dir`` (one log file per node).
Everything else is a Hydra override passed to every node.
"""

from __future__ import annotations

import shlex
import sys

from hil_robot.config import ConfigError

OPTIONS = {"duration_s": 0.0, "dry_run": False, "log_dir": ""}


def launch(argv: list[str]) -> int:
    from hil_robot.cli import parse_command_args, strip_ros_args
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
    specs = node_plan(cfg, [f"graph={graph}", *overrides])  # each node composes the same graph config
    if not specs:
        raise ConfigError(f"graph {graph!r} has no enabled nodes")
    if opts["dry_run"]:
        for spec in specs:
            print(f"{spec.name}: {shlex.join(spec.command())}")
        return 0
    sup = Supervisor(specs, child_env(), restart_delay_s=cfg.graph.restart_delay_s,
                     shutdown_timeout_s=cfg.graph.shutdown_timeout_s, log_dir=opts["log_dir"] or None)
    rc = sup.run(duration_s=float(opts["duration_s"]))
    if sup.failed_required:
        print(f"hil-robot launch: required node {sup.failed_required!r} stopped; see its log lines above",
              file=sys.stderr)
    return rc
