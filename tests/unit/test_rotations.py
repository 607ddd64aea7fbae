"""The one rotations module: wxyz convention (checked against MuJoCo), single == batched, NaN on bad input."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from hil_robot import rotations as R


def _random_quats(n: int, seed: int = 0) -> np.ndarray:
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_convention_matches_mujoco_wxyz():
    rng = np.random.default_rng(1)
    for a, b in zip(_random_quats(50, 2), _random_quats(50, 3)):
        ref = np.zeros(4)
        mujoco.mju_mulQuat(ref, a, b)
        assert R.quat_mul(a, b) == pytest.approx(ref, abs=1e-12)
        v = rng.normal(size=3)
        ref = np.zeros(4)
        mujoco.mju_axisAngle2Quat(ref, v / np.linalg.norm(v), float(np.linalg.norm(v)))
        assert R.quat_from_rotvec(v) == pytest.approx(ref, abs=1e-12)
    # 90 deg about z turns x into y (scalar-first quaternion)
    q = R.quat_from_rotvec([0.0, 0.0, math.pi / 2])
    assert q == pytest.approx([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)])
    rotated = R.quat_mul(R.quat_mul(q, [0.0, 1.0, 0.0, 0.0]), R.quat_conj(q))[1:]
    assert rotated == pytest.approx([0, 1, 0], abs=1e-12)


def test_single_and_batched_agree():
    a, b = _random_quats(20, 4), _random_quats(20, 5)
    v = np.random.default_rng(6).normal(size=(20, 3))
    batched = {
        "mul": R.quat_mul(a, b), "norm": R.quat_normalize(-a), "from": R.quat_from_rotvec(v),
        "to": R.quat_to_rotvec(a), "rel": R.relative_rotvec(a, b), "angle": R.quat_angle_rad(a, b),
    }
    for i in range(20):
        assert R.quat_mul(a[i], b[i]) == pytest.approx(batched["mul"][i], abs=1e-12)
        assert R.quat_normalize(-a[i]) == pytest.approx(batched["norm"][i], abs=1e-12)
        assert R.quat_from_rotvec(v[i]) == pytest.approx(batched["from"][i], abs=1e-12)
        assert R.quat_to_rotvec(a[i]) == pytest.approx(batched["to"][i], abs=1e-9)
        assert R.relative_rotvec(a[i], b[i]) == pytest.approx(batched["rel"][i], abs=1e-9)
        assert R.quat_angle_rad(a[i], b[i]) == pytest.approx(batched["angle"][i], abs=1e-9)


def test_round_trips_and_relative_rotation():
    for q in _random_quats(30, 7):
        qn = R.quat_normalize(q)
        assert qn[0] >= 0 and np.linalg.norm(qn) == pytest.approx(1.0)
        assert R.quat_from_rotvec(R.quat_to_rotvec(q)) == pytest.approx(qn, abs=1e-9)
        assert np.linalg.norm(R.quat_to_rotvec(q)) <= math.pi + 1e-9
    a, b = _random_quats(2, 8)
    e = R.relative_rotvec(a, b)  # a = R(e) b
    assert R.quat_normalize(R.quat_mul(R.quat_from_rotvec(e), b)) == pytest.approx(R.quat_normalize(a), abs=1e-9)
    assert R.quat_angle_rad(a, b) == pytest.approx(np.linalg.norm(e), abs=1e-9)
    assert R.quat_angle_rad(a, -a) == pytest.approx(0.0, abs=1e-6)  # q and -q: the same orientation


def test_small_angles_and_yaw_helpers():
    assert R.quat_to_rotvec([1.0, 0, 0, 0]) == pytest.approx([0, 0, 0])
    assert R.quat_to_rotvec(R.quat_from_rotvec([1e-14, 0, 0])) == pytest.approx([1e-14, 0, 0], abs=1e-20)
    assert R.yaw_of(R.quat_from_yaw(0.7)) == pytest.approx(0.7)
    assert R.z_axis(R.quat_from_rotvec([math.pi, 0, 0])) == pytest.approx([0, 0, -1], abs=1e-12)
    assert R.wrap_angle(3 * math.pi / 2) == pytest.approx(-math.pi / 2)
    assert R.rot_z(90) @ np.array([1.0, 0, 0]) == pytest.approx([0, 1, 0], abs=1e-12)
    assert R.XR_TO_BASE @ np.array([0, 0, -1.0]) == pytest.approx([1, 0, 0])  # XR forward (-z) = base +x


def test_degenerate_inputs_give_nan_not_garbage():
    assert np.isnan(R.quat_normalize(np.zeros(4))).all()
    assert np.isnan(R.quat_normalize([np.nan, 0, 0, 1])).all()
    rows = R.quat_normalize(np.array([[0.0, 0, 0, 0], [0, 0, 0, 2]]))
    assert np.isnan(rows[0]).all() and rows[1] == pytest.approx([0, 0, 0, 1])
    assert np.isnan(R.quat_to_rotvec(np.zeros(4))).all()
    assert np.isnan(R.quat_angle_rad(np.zeros((1, 4)), np.array([[1.0, 0, 0, 0]]))).all()
