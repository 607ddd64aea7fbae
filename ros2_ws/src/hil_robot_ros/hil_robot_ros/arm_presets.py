"""How ``arm_bridge`` talks to a real arm's ROS 2 driver: topic names, frames and command style.

Two documented presets (docs/ros.md):

* ``franka_cartesian_impedance`` — franka_ros2 with a Cartesian impedance controller that tracks an
  equilibrium pose: our per-tick EE twist is integrated onto the measured EE pose and sent as a
  ``PoseStamped`` target (``command_style = "pose"``).
* ``ur_servo_twist`` — ur_robot_driver with moveit_servo: our twist goes out as a
  ``TwistStamped`` on servo's delta-twist topic (``command_style = "twist"``), absolute targets on
  servo's pose-target topic.

Every field is also a node parameter, so a different arm or controller is a parameter file away.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from hil_robot.rotations import quat_from_rotvec, quat_mul, quat_normalize


@dataclasses.dataclass(frozen=True)
class ArmPreset:
    command_style: str  # "pose" (impedance equilibrium pose) | "twist" (servo velocity)
    driver_joint_states: str  # the driver's JointState topic
    driver_ee_pose: str  # the driver's EE PoseStamped topic (base frame)
    driver_twist_cmd: str  # where our twist goes (command_style = twist)
    driver_pose_cmd: str  # where pose targets go
    driver_gripper_cmd: str  # std_msgs/Float32 in [-1 open, +1 closed] for the site's gripper adapter
    base_frame: str
    joint_names: tuple[str, ...]  # the driver's 7 (or 6) arm joints, in our order
    gripper_joint: str  # joint in driver_joint_states that measures the gripper ("" = none)
    gripper_open_position: float  # that joint's position when fully open (-> opening 1.0)
    max_linear_speed_mps: float  # clamp on outgoing twists
    max_angular_speed_rps: float

    def as_params(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["joint_names"] = list(self.joint_names)
        return d


PRESETS: dict[str, ArmPreset] = {
    "franka_cartesian_impedance": ArmPreset(
        command_style="pose",
        driver_joint_states="/franka/joint_states",
        driver_ee_pose="/franka_robot_state_broadcaster/current_pose",
        driver_twist_cmd="",
        driver_pose_cmd="/cartesian_impedance_controller/equilibrium_pose",
        driver_gripper_cmd="/gripper/command",
        base_frame="fr3_link0",
        joint_names=tuple(f"fr3_joint{i}" for i in range(1, 8)),
        gripper_joint="fr3_finger_joint1",
        gripper_open_position=0.04,
        max_linear_speed_mps=0.25,
        max_angular_speed_rps=1.0,
    ),
    "ur_servo_twist": ArmPreset(
        command_style="twist",
        driver_joint_states="/joint_states",
        driver_ee_pose="/tcp_pose_broadcaster/pose",
        driver_twist_cmd="/servo_node/delta_twist_cmds",
        driver_pose_cmd="/servo_node/pose_target_cmds",
        driver_gripper_cmd="/gripper/command",
        base_frame="base_link",
        joint_names=("shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint", "wrist_2_joint",
                     "wrist_3_joint"),
        gripper_joint="",
        gripper_open_position=1.0,
        max_linear_speed_mps=0.25,
        max_angular_speed_rps=1.0,
    ),
}


def clamp_twist(v: np.ndarray, max_lin: float, max_ang: float) -> np.ndarray:
    """Scale linear and angular parts down (direction kept) to the speed limits. v: float[6]."""
    v = np.asarray(v, dtype=np.float64).copy()
    if not np.isfinite(v).all():
        return np.zeros(6)  # non-finite commands never reach the arm
    for sl, lim in ((slice(0, 3), max_lin), (slice(3, 6), max_ang)):
        n = float(np.linalg.norm(v[sl]))
        if n > lim > 0:
            v[sl] *= lim / n
    return v


def integrate_twist(pos: np.ndarray, quat_wxyz: np.ndarray, twist: np.ndarray, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Pose after applying base-frame twist [vx, vy, vz, wx, wy, wz] for ``dt_s`` seconds."""
    twist = np.asarray(twist, dtype=np.float64)
    new_pos = np.asarray(pos, dtype=np.float64) + twist[:3] * dt_s
    dq = quat_from_rotvec(twist[3:6] * dt_s)
    return new_pos, quat_normalize(quat_mul(dq, np.asarray(quat_wxyz, dtype=np.float64)))


def gripper_opening(position: float, open_position: float) -> float:
    """Driver gripper joint position -> our opening in [0, 1]."""
    return float(np.clip(position / open_position, 0.0, 1.0)) if open_position > 0 else 0.0
