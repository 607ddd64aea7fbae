"""Turn a graph description (``cfg.graph``) into process specs. The pip-path runner starts these
as supervised processes; ``ros_description`` turns the very same specs into launch_ros actions, so
``ros2 launch`` and ``hil-robot launch`` start the same nodes with the same parameters."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from hil_robot.config import RootConfig
from hil_robot.config.graph import ROS_EXECUTABLES

ROS_PACKAGE = "hil_robot_ros"


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    name: str  # ROS node name (and the log prefix)
    executable: str  # a hil_robot_ros node, or "process"
    arguments: tuple[str, ...]  # node argv before --ros-args (Hydra overrides) / hil-robot argv for processes
    parameters: dict[str, Any]
    remappings: tuple[tuple[str, str], ...]
    namespace: str
    restart: str
    max_restarts: int
    required: bool

    @property
    def is_ros_node(self) -> bool:
        return self.executable in ROS_EXECUTABLES

    def ros_args(self) -> list[str]:
        """The ``--ros-args`` block a launch_ros Node would generate for this spec."""
        out = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            out += ["-r", f"__ns:={self.namespace}"]
        for key, value in self.parameters.items():
            out += ["-p", f"{key}:={format_param(value)}"]
        for src, dst in self.remappings:
            out += ["-r", f"{src}:={dst}"]
        return out

    def command(self, python: str = sys.executable) -> list[str]:
        """argv for the pip path (the virtual environment's interpreter)."""
        if self.is_ros_node:
            return [python, "-m", ROS_PACKAGE, self.executable, *self.arguments, *self.ros_args()]
        return [python, "-m", "hil_robot", *self.arguments]


def format_param(value: Any) -> str:
    """A parameter value as ROS 2 ``-p name:=value`` YAML text (strings quoted so '10' stays a string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_param(v) for v in value) + "]"
    text = str(value).replace("'", "''")
    return f"'{text}'"


def node_plan(cfg: RootConfig, overrides: Sequence[str] = ()) -> list[ProcessSpec]:
    """One ProcessSpec per enabled node of ``cfg.graph``, in the description's order.

    overrides: the run's Hydra overrides; each node gets them (then its own ``overrides``), so every
    process composes the same configuration.
    """
    graph = cfg.graph
    specs = []
    for name, node in graph.enabled_nodes().items():
        node_overrides = [*overrides, *node.overrides]
        if node.executable == "process":
            arguments = (*node.command, *node_overrides)
        else:
            arguments = tuple(node_overrides)
        specs.append(ProcessSpec(
            name=name, executable=node.executable, arguments=tuple(arguments),
            parameters=dict(node.parameters), remappings=tuple(node.remappings.items()),
            namespace=node.namespace or graph.namespace, restart=node.restart,
            max_restarts=node.max_restarts, required=node.required,
        ))
    return specs


def ros_package_dir() -> Path:
    """``ros2_ws/src/hil_robot_ros`` of this checkout (holds the importable ``hil_robot_ros``)."""
    return Path(__file__).resolve().parents[2] / "ros2_ws" / "src" / ROS_PACKAGE


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for node processes: ``hil_robot_ros`` importable without colcon, unbuffered logs."""
    env = dict(os.environ if base is None else base)
    src = ros_package_dir()
    if src.is_dir():  # this checkout's copy first (a colcon install of the same code is then unused)
        env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    # One BLAS/OpenMP thread per child: on a 2-core host several torch processes with 2 threads each
    # oversubscribe the cores (a VLA update measured 5.4 s with 2 threads vs 0.41 s with 1).
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    return env
