"""Pose mapping: clutch latch, scale, frame alignment, jump guard, tracking loss."""

from __future__ import annotations

import math

import numpy as np
import pytest

from teleop.mapping import PoseMapper, pose_to_action
from hil_robot.rotations import quat_angle_rad, quat_from_rotvec, quat_mul, quat_to_rotvec

ROBOT = np.array([0.5, 0.0, 0.3, 0.0, 1.0, 0.0, 0.0])  # EE pointing down
ID_Q = [1.0, 0.0, 0.0, 0.0]


def ctrl(x, y, z, q=ID_Q):
    return np.array([x, y, z, *q])


def test_no_clutch_no_motion_and_engage_latches_robot_pose():
    m = PoseMapper()
    assert m.update(ctrl(0, 1, 0), clutch=False, tracking_valid=True, robot_pose=ROBOT).event == "idle"
    out = m.update(ctrl(0.2, 1.0, -0.3), clutch=True, tracking_valid=True, robot_pose=ROBOT)
    assert out.event == "engage" and np.allclose(out.target, ROBOT)  # engaging never moves the arm


def test_relative_motion_frame_alignment_and_scale():
    m = PoseMapper(translation_scale=0.5)
    m.update(ctrl(0, 1, 0), clutch=True, tracking_valid=True, robot_pose=ROBOT)
    # controller 4 cm away from the operator (-z in XR) and 2 cm up (+y)
    out = m.update(ctrl(0, 1.02, -0.04), clutch=True, tracking_valid=True, robot_pose=ROBOT)
    assert out.event == "track"
    assert out.target[:3] == pytest.approx(ROBOT[:3] + [0.02, 0.0, 0.01])  # base +x forward, +z up, halved
    # operator standing on the robot's left, facing -y: XR forward becomes base -y
    m2 = PoseMapper(operator_yaw_deg=-90)
    m2.update(ctrl(0, 1, 0), clutch=True, tracking_valid=True, robot_pose=ROBOT)
    out2 = m2.update(ctrl(0, 1, -0.03), clutch=True, tracking_valid=True, robot_pose=ROBOT)
    assert out2.target[:3] == pytest.approx(ROBOT[:3] + [0.0, -0.03, 0.0], abs=1e-9)


def test_rotation_is_relative_and_scaled_in_base_frame():
    m = PoseMapper(rotation_scale=2.0)
    m.update(ctrl(0, 1, 0), clutch=True, tracking_valid=True, robot_pose=ROBOT)
    q = quat_from_rotvec([0.0, math.radians(10), 0.0])  # yaw left about XR +y (= base +z)
    out = m.update(ctrl(0, 1, 0, q), clutch=True, tracking_valid=True, robot_pose=ROBOT)
    delta = quat_mul(out.target[3:], np.array([0.0, -1.0, 0.0, 0.0]))  # target * robot^-1
    assert quat_to_rotvec(delta) == pytest.approx([0, 0, math.radians(20)], abs=1e-6)


def test_release_holds_and_reengage_continues_from_held_target():
    m = PoseMapper()
    m.update(ctrl(0, 1, 0), clutch=True, tracking_valid=True, robot_pose=ROBOT)
    held = m.update(ctrl(0, 1, -0.04), clutch=True, tracking_valid=True, robot_pose=ROBOT).target
    out = m.update(ctrl(0, 1, -0.5), clutch=False, tracking_valid=True, robot_pose=ROBOT)
    assert out.event == "release" and np.allclose(out.target, held)  # moving the hand freely does nothing
    assert m.update(ctrl(0, 1, -0.6), clutch=False, tracking_valid=True, robot_pose=ROBOT).event == "hold"
    out = m.update(ctrl(0, 1.3, -0.6), clutch=True, tracking_valid=True, robot_pose=ROBOT)  # ratchet
    assert out.event == "engage" and np.allclose(out.target, held)
    out = m.update(ctrl(0, 1.3, -0.62), clutch=True, tracking_valid=True, robot_pose=ROBOT)
    assert out.target[0] == pytest.approx(held[0] + 0.02)


def test_jump_guard_ignores_translation_and_rotation_jumps():
    m = PoseMapper(jump_m=0.05, jump_deg=35)
    m.update(ctrl(0, 1, 0), clutch=True, tracking_valid=True, robot_pose=ROBOT)
    good = m.update(ctrl(0, 1, -0.03), clutch=True, tracking_valid=True, robot_pose=ROBOT).target
    out = m.update(ctrl(0, 1, -0.2), clutch=True, tracking_valid=True, robot_pose=ROBOT)  # 17 cm in one sample
    assert out.event == "jump" and np.allclose(out.target, good) and m.jumps == 1
    q = quat_from_rotvec([math.radians(40), 0, 0])
    out = m.update(ctrl(0, 1, -0.2, q), clutch=True, tracking_valid=True, robot_pose=ROBOT)
    assert out.event == "jump" and np.allclose(out.target, good) and m.jumps == 2
    # motion continues smoothly from the re-anchored sample
    out = m.update(ctrl(0, 1, -0.21, q), clutch=True, tracking_valid=True, robot_pose=ROBOT)
    assert out.event == "track" and out.target[0] == pytest.approx(good[0] + 0.01)


def test_tracking_loss_holds_and_relatches():
    m = PoseMapper()
    m.update(ctrl(0, 1, 0), clutch=True, tracking_valid=True, robot_pose=ROBOT)
    good = m.update(ctrl(0, 1, -0.02), clutch=True, tracking_valid=True, robot_pose=ROBOT).target
    out = m.update(None, clutch=True, tracking_valid=False, robot_pose=ROBOT)
    assert out.event == "tracking_lost" and np.allclose(out.target, good) and m.tracking_losses == 1
    out = m.update(ctrl(0.3, 1, 0.3), clutch=True, tracking_valid=True, robot_pose=ROBOT)  # back, elsewhere
    assert out.event == "engage" and np.allclose(out.target, good)
    nan = ctrl(np.nan, 1, 0)
    assert m.update(nan, clutch=True, tracking_valid=True, robot_pose=ROBOT).event == "tracking_lost"


def test_pose_to_action_clips_and_points_the_right_way():
    target = ROBOT.copy()
    target[0] += 0.01
    target[3:] = quat_mul(quat_from_rotvec([0, 0, 0.05]), ROBOT[3:])
    a = pose_to_action(target, ROBOT, max_delta_pos_m=0.02, max_delta_rot_rad=0.1)
    assert a == pytest.approx([0.5, 0, 0, 0, 0, 0.5], abs=1e-6)
    far = ROBOT.copy()
    far[2] -= 1.0
    assert pose_to_action(far, ROBOT, max_delta_pos_m=0.02, max_delta_rot_rad=0.1)[2] == -1.0
    assert quat_angle_rad(target[3:], ROBOT[3:]) == pytest.approx(0.05)
