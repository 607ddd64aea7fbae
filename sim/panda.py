"""Franka Panda kinematics (modified DH, Craig convention) and the MJCF of a primitive-geometry arm.

The body frames are computed from the published Panda DH table, so forward kinematics match the
real arm; links are capsules and the hand is boxes, which keeps CPU rendering and collision cheap.

    T_{i-1,i} = RotX(alpha_{i-1}) * TransX(a_{i-1}) * RotZ(theta_i) * TransZ(d_i)
"""

from __future__ import annotations

import math

import numpy as np

from hil_robot.kinematics import PANDA  # the one Panda DH table: robot-side FK and this sim arm use it

# (a_{i-1} m, d_i m, alpha_{i-1} rad) for joints 1..7, then the flange (fixed).
DH: tuple[tuple[float, float, float], ...] = PANDA.dh
FLANGE_D_M = PANDA.flange_d_m
HAND_YAW_RAD = PANDA.hand_yaw_rad  # the hand is mounted at -45 deg about the flange z axis
TCP_OFFSET_M = PANDA.tcp_offset_m  # flange -> point between the fingertips
JOINT_LIMITS_RAD: tuple[tuple[float, float], ...] = PANDA.joint_limits_rad
# Franka's "ready" pose; the sim starts from a pose solved near it (see SimWorld.home_qpos).
READY_QPOS = (0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4)
LINK_MASS_KG = (4.97, 0.65, 3.23, 3.59, 1.23, 1.67, 0.74)
FINGER_TRAVEL_M = 0.04  # per finger; the jaw opens 0..0.08 m
KP = (1500.0, 1500.0, 1200.0, 1200.0, 600.0, 400.0, 200.0)  # joint position gains (N m / rad)
FINGER_KP = 300.0  # N / m -> ~6 N squeeze on a 4 cm cube


def _fmt(v) -> str:
    return " ".join(f"{x:.10g}" for x in v)


def _dh_frame(a: float, d: float, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Body position and quaternion of a DH frame in its parent (joint at theta = 0)."""
    ca, sa = math.cos(alpha), math.sin(alpha)
    pos = np.array([a, -sa * d, ca * d])  # RotX(alpha) @ (a, 0, d)
    quat = np.array([math.cos(alpha / 2), math.sin(alpha / 2), 0.0, 0.0])
    return pos, quat


def forward_kinematics(q: np.ndarray) -> np.ndarray:
    """Pure-numpy DH forward kinematics: 4x4 pose of the TCP in the base frame (for tests)."""
    T = np.eye(4)
    for (a, d, alpha), theta in zip(DH, q):
        ca, sa, ct, st = math.cos(alpha), math.sin(alpha), math.cos(theta), math.sin(theta)
        Ti = np.array(
            [
                [ct, -st, 0, a],
                [st * ca, ct * ca, -sa, -sa * d],
                [st * sa, ct * sa, ca, ca * d],
                [0, 0, 0, 1],
            ]
        )
        T = T @ Ti
    c, s = math.cos(HAND_YAW_RAD), math.sin(HAND_YAW_RAD)
    flange = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, FLANGE_D_M + TCP_OFFSET_M], [0, 0, 0, 1]])
    return T @ flange


def arm_xml(link_rgba: str = "0.92 0.92 0.95 1", joint_rgba: str = "0.25 0.25 0.28 1") -> str:
    """MJCF <body> tree of the arm + gripper (to be placed under <worldbody>)."""
    parts: list[str] = ['<body name="link0" pos="0 0 0">',
                        f'<geom type="cylinder" size="0.07 0.03" pos="0 0 0.03" rgba="{joint_rgba}" contype="0" conaffinity="0" mass="2"/>',
                        '<geom type="capsule" fromto="0 0 0.06 0 0 0.2" size="0.06" class="link" mass="3"/>']
    for i, (a, d, alpha) in enumerate(DH):
        pos, quat = _dh_frame(a, d, alpha)
        lo, hi = JOINT_LIMITS_RAD[i]
        parts.append(f'<body name="link{i + 1}" pos="{_fmt(pos)}" quat="{_fmt(quat)}" gravcomp="1">')
        parts.append(f'<joint name="joint{i + 1}" range="{lo} {hi}" class="arm"/>')
        # a capsule from this joint towards the next frame's origin (expressed in this frame)
        if i + 1 < len(DH):
            na, nd, nalpha = DH[i + 1]
            npos, _ = _dh_frame(na, nd, nalpha)
        else:
            npos = np.array([0.0, 0.0, FLANGE_D_M])
        if float(np.linalg.norm(npos)) > 1e-6:
            parts.append(f'<geom type="capsule" fromto="0 0 0 {_fmt(npos)}" size="0.045" class="link" mass="{LINK_MASS_KG[i]}"/>')
        else:
            parts.append(f'<geom type="sphere" size="0.055" class="link" mass="{LINK_MASS_KG[i]}"/>')
    hq = (math.cos(HAND_YAW_RAD / 2), 0.0, 0.0, math.sin(HAND_YAW_RAD / 2))
    parts.append(f'<body name="hand" pos="0 0 {FLANGE_D_M}" quat="{_fmt(hq)}" gravcomp="1">')
    parts.append(f'<geom type="box" size="0.02 0.09 0.025" pos="0 0 0.03" rgba="{link_rgba}" class="pad" mass="0.73"/>')
    parts.append(f'<site name="tcp" pos="0 0 {TCP_OFFSET_M}" size="0.004" rgba="1 0 0 0" group="4"/>')
    parts.append('<camera name="wrist" pos="0.07 0 0.035" xyaxes="0 -1 0 -0.94 0 -0.34" fovy="75"/>')
    for side, sign in (("left", 1.0), ("right", -1.0)):
        parts.append(f'<body name="finger_{side}" pos="0 0 0.0584" gravcomp="1">')
        parts.append(f'<joint name="finger_{side}" type="slide" axis="0 {sign} 0" range="0 {FINGER_TRAVEL_M + 0.002}" class="finger"/>')
        parts.append(f'<geom type="box" size="0.01 0.006 0.027" pos="0 {sign * 0.006} 0.026" rgba="{joint_rgba}" class="pad" mass="0.015" friction="1.5 0.01 0.001"/>')
        parts.append("</body>")
    parts.append("</body>")  # hand
    parts.extend("</body>" for _ in DH)
    parts.append("</body>")  # link0
    return "\n".join(parts)


def actuators_xml() -> str:
    rows = [f'<position name="act{i + 1}" joint="joint{i + 1}" kp="{KP[i]}" dampratio="1" ctrlrange="{lo} {hi}"/>'
            for i, (lo, hi) in enumerate(JOINT_LIMITS_RAD)]
    for side in ("left", "right"):
        rows.append(f'<position name="act_finger_{side}" joint="finger_{side}" kp="{FINGER_KP}" dampratio="1" '
                    f'ctrlrange="0 {FINGER_TRAVEL_M}" forcerange="-20 20"/>')
    return "\n".join(rows)


DEFAULTS_XML = """
<default>
  <default class="arm"><joint armature="0.1" damping="1"/></default>
  <default class="finger"><joint armature="0.01" damping="2"/></default>
  <default class="link"><geom contype="0" conaffinity="0" rgba="0.92 0.92 0.95 1"/></default>
  <default class="pad"><geom contype="1" conaffinity="0" condim="3"/></default>
  <default class="object"><geom contype="1" conaffinity="1" condim="3" friction="1 0.01 0.001"/></default>
</default>
"""


def down_quat() -> np.ndarray:
    """TCP orientation at the ready pose (gripper pointing down, fingers along world y): (0, 1, 0, 0)."""
    R = forward_kinematics(np.array(READY_QPOS))[:3, :3]
    w = math.sqrt(max(0.0, 1.0 + R[0, 0] + R[1, 1] + R[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1.0 + R[0, 0] - R[1, 1] - R[2, 2])) / 2, R[2, 1] - R[1, 2] or 1.0)
    y = math.copysign(math.sqrt(max(0.0, 1.0 - R[0, 0] + R[1, 1] - R[2, 2])) / 2, R[0, 2] - R[2, 0] or 1.0)
    z = math.copysign(math.sqrt(max(0.0, 1.0 - R[0, 0] - R[1, 1] + R[2, 2])) / 2, R[1, 0] - R[0, 1] or 1.0)
    q = np.array([w, x, y, z])
    return q / np.linalg.norm(q)


DOWN_QUAT = down_quat()
