"""ros2 launch hil_robot_ros real_franka.launch.py [overrides:="key=value ..."]

The node list comes from configs/graph/real_franka.yaml — the same description `hil-robot launch real_franka`
starts on the pip path (hil_robot.launch.plan.node_plan feeds both).
"""

from hil_robot.launch.ros_description import generate_launch_description_for


def generate_launch_description():
    return generate_launch_description_for("real_franka")
