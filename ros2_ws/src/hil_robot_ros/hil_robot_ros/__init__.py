"""hil_robot_ros: thin rclpy nodes over the plain-Python hil_robot cores (DESIGN §8).

Nodes (``python -m hil_robot_ros NODE`` from the virtual environment, or the console scripts of the
same names after ``colcon build``): sim_driver, camera, arm_bridge, controller, recorder,
policy_bridge, teleop. ``NODES`` maps each to ``module:function``; modules load lazily.
"""

NODES: dict[str, str] = {
    "sim_driver": "hil_robot_ros.nodes.sim_driver:main",
    "camera": "hil_robot_ros.nodes.camera:main",
    "arm_bridge": "hil_robot_ros.nodes.arm_bridge:main",
    "controller": "hil_robot_ros.nodes.controller:main",
    "recorder": "hil_robot_ros.nodes.recorder:main",
    "policy_bridge": "hil_robot_ros.nodes.policy_bridge:main",
    "teleop": "hil_robot_ros.nodes.teleop:main",
}
