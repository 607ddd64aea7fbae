"""Default topic names (relative, so a namespace or remapping moves them). docs/ros.md's topic table
is this dict; the nodes read their names from here and each can be remapped at launch."""

from __future__ import annotations

# name: (message type, QoS, producer -> consumers, meaning)
TOPICS: dict[str, tuple[str, str, str, str]] = {
    "joint_states": ("sensor_msgs/JointState", "sensor", "sim_driver|arm_bridge -> controller, recorder",
                     "7 arm joints (rad) + 'gripper' opening (0 closed .. 1 open)"),
    "ee_pose": ("geometry_msgs/PoseStamped", "sensor", "sim_driver|arm_bridge -> controller, recorder",
                "end-effector pose in the base frame"),
    "camera/<cam>/image_raw": ("sensor_msgs/Image", "sensor", "sim_driver|camera -> controller, recorder, policy_bridge",
                               "rgb8 frames"),
    "camera/<cam>/image_raw/compressed": ("sensor_msgs/CompressedImage", "sensor", "sim_driver|camera -> (viewers)",
                                          "jpeg frames, optional"),
    "camera/<cam>/camera_info": ("sensor_msgs/CameraInfo", "sensor", "sim_driver|camera -> (any)", "pinhole intrinsics"),
    "sim/task_state": ("std_msgs/Float32MultiArray", "sensor", "sim_driver -> controller, recorder",
                       "privileged object state (sim only)"),
    "sim/status": ("std_msgs/String", "sensor", "sim_driver -> controller, recorder",
                   "JSON: task_status, reset_id, observation stamp"),
    "sim/reset": ("std_msgs/String", "command", "controller -> sim_driver", "JSON {reset_id, seed}"),
    "cmd/ee_twist": ("geometry_msgs/TwistStamped", "command", "controller -> sim_driver|arm_bridge",
                     "EE velocity (m/s, rad/s) held for one control tick"),
    "cmd/ee_pose": ("geometry_msgs/PoseStamped", "command", "controller -> sim_driver|arm_bridge", "absolute EE target"),
    "cmd/gripper": ("sensor_msgs/JointState", "command", "controller -> sim_driver|arm_bridge",
                    "'gripper': -1 open .. +1 closed, stamped like its twist"),
    "policy/chunk": ("std_msgs/String", "command", "policy_bridge -> controller",
                     "JSON {obs_stamp_ns, actions[H][7], policy_version}"),
    "teleop/command": ("std_msgs/String", "command", "teleop -> controller", "JSON OperatorCommand"),
    "teleop/joy": ("sensor_msgs/Joy", "sensor", "(joystick driver) -> teleop", "gamepad axes/buttons"),
    "controller/step": ("std_msgs/String", "record", "controller -> recorder", "JSON step labels per tick"),
    "recorder/ready": ("std_msgs/Bool", "latched", "recorder -> controller", "the recorder sees every stream"),
    "estop": ("std_msgs/Bool", "latched", "anyone -> controller, drivers", "true = stop (latched until reset)"),
    "estop/reset": ("std_msgs/Bool", "command", "operator -> controller", "true clears a latched stop"),
}


def image_topic(camera: str) -> str:
    return f"camera/{camera}/image_raw"


def compressed_topic(camera: str) -> str:
    return f"camera/{camera}/image_raw/compressed"


def info_topic(camera: str) -> str:
    return f"camera/{camera}/camera_info"
