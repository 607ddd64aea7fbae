"""``ros2 launch`` side of the graph description: build a LaunchDescription from ``cfg.graph``
with the same ``node_plan`` the pip runner uses. Imported by ``launch/*.launch.py`` on a ROS 2
install (``launch`` and ``launch_ros`` come with ROS; they are imported only here, lazily).

    ros2 launch hil_robot_ros sim_pick_cube.launch.py overrides:="policy=expert sim.image_height=64"
"""

from __future__ import annotations

import shlex
from typing import Any

OVERRIDES_ARG = "overrides"


def node_actions(graph: str, overrides_text: str) -> list[Any]:
    """launch_ros ``Node`` (and ``ExecuteProcess`` for non-ROS processes) actions for ``graph``."""
    from launch.actions import ExecuteProcess
    from launch_ros.actions import Node

    from hil_robot.config import load_config
    from hil_robot.launch.plan import ROS_PACKAGE, node_plan

    overrides = [f"graph={graph}", *shlex.split(overrides_text)]  # each node composes the same graph config
    cfg = load_config(overrides)
    actions: list[Any] = []
    for spec in node_plan(cfg, overrides):
        respawn = spec.restart != "never"  # launch respawns on any exit; on-failure is the pip runner's refinement
        common = {"name": spec.name, "output": "screen", "respawn": respawn,
                  "respawn_delay": cfg.graph.restart_delay_s,
                  "respawn_max_retries": spec.max_restarts if respawn else -1}  # (launch >= Iron, so Jazzy has it)
        if spec.is_ros_node:
            actions.append(Node(package=ROS_PACKAGE, executable=spec.executable, namespace=spec.namespace or None,
                                parameters=[spec.parameters] if spec.parameters else [],
                                remappings=list(spec.remappings), arguments=list(spec.arguments), **common))
        else:
            actions.append(ExecuteProcess(cmd=["hil-robot", *spec.arguments], **common))
    return actions


def generate_launch_description_for(graph: str) -> Any:
    """The whole LaunchDescription: an ``overrides`` argument (Hydra overrides, space separated)
    and an OpaqueFunction that composes the config at launch time and creates the nodes."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration

    def _create(context: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return node_actions(graph, LaunchConfiguration(OVERRIDES_ARG).perform(context))

    return LaunchDescription([
        DeclareLaunchArgument(OVERRIDES_ARG, default_value="",
                              description="Hydra overrides for every node, space separated (e.g. 'policy=expert')"),
        OpaqueFunction(function=_create),
    ])
