"""ros2 launch hil_robot_ros sim_pick_cube.launch.py [overrides:="key=value ..."]

The node list comes from configs/graph/sim_pick_cube.yaml — the same description `hil-robot launch sim_pick_cube`
starts on the pip path (hil_robot.launch.plan.node_plan feeds both).
"""

from hil_robot.launch.ros_description import generate_launch_description_for


def generate_launch_description():
    return generate_launch_description_for("sim_pick_cube")
