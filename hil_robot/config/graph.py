"""The node graph of an experiment (DESIGN §8): which nodes run, with which ROS parameters,
remappings and restart policy. One description feeds both ``launch/*.launch.py`` (``ros2 launch``
on a ROS 2 install) and the pip-path runner ``hil-robot launch`` (``hil_robot.launch``).

Every node also receives the run's Hydra overrides, so all processes compose the same RootConfig;
``overrides`` on a node add Hydra overrides for that node only.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from hil_robot.config._build import ConfigError, choice, positive

# ROS nodes of the hil_robot_ros package (console scripts of the same names after colcon build)
ROS_EXECUTABLES = ("sim_driver", "camera", "arm_bridge", "controller", "recorder", "policy_bridge", "teleop")
# "process": a plain `hil-robot <command ...>` process (e.g. the policy server), not a ROS node
EXECUTABLES = ROS_EXECUTABLES + ("process",)
RESTART_POLICIES = ("never", "on-failure", "always")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclasses.dataclass
class NodeSpec:
    executable: str = "sim_driver"
    enabled: bool = True
    command: list[str] = dataclasses.field(default_factory=list)  # for executable=process: hil-robot argv
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)  # ROS parameters (name: scalar/list)
    remappings: dict[str, str] = dataclasses.field(default_factory=dict)  # topic remaps, from: to
    overrides: list[str] = dataclasses.field(default_factory=list)  # extra Hydra overrides for this node
    namespace: str = ""  # "" = the graph's namespace
    restart: str = "on-failure"  # never | on-failure | always
    max_restarts: int = 3
    required: bool = False  # when it exits for good, the whole graph shuts down

    def __post_init__(self) -> None:
        choice("graph.nodes.*.executable", self.executable, EXECUTABLES)
        choice("graph.nodes.*.restart", self.restart, RESTART_POLICIES)
        positive("graph.nodes.*.max_restarts", self.max_restarts, allow_zero=True)
        if self.executable == "process" and not self.command:
            raise ConfigError("graph.nodes.*.command must name a hil-robot command when executable=process "
                              "(e.g. [serve-policy])")
        for key, value in self.parameters.items():
            if not _NAME.match(key):
                raise ConfigError(f"graph.nodes.*.parameters.{key}: ROS parameter names are letters, digits, _")
            if value is None or isinstance(value, dict):
                raise ConfigError(f"graph.nodes.*.parameters.{key}={value!r}: ROS parameters are scalars or lists")


@dataclasses.dataclass
class GraphConfig:
    name: str = "sim_pick_cube"
    namespace: str = ""  # ROS namespace for every node (e.g. /cell1)
    nodes: dict[str, NodeSpec] = dataclasses.field(default_factory=dict)  # node name -> spec
    restart_delay_s: float = 1.0  # pause before a restart
    shutdown_timeout_s: float = 5.0  # SIGINT, then SIGTERM, then SIGKILL after this long each

    def __post_init__(self) -> None:
        positive("graph.restart_delay_s", self.restart_delay_s, allow_zero=True)
        positive("graph.shutdown_timeout_s", self.shutdown_timeout_s)
        for name in self.nodes:
            if not _NAME.match(name):
                raise ConfigError(f"graph.nodes.{name}: node names are letters, digits and _ (a ROS node name)")
        if self.namespace and not self.namespace.startswith("/"):
            raise ConfigError(f"graph.namespace={self.namespace!r} must start with '/'")

    def enabled_nodes(self) -> dict[str, NodeSpec]:
        return {name: spec for name, spec in self.nodes.items() if spec.enabled}
