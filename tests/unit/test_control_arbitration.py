"""Arbitration: per-DoF ownership, segment labels, hand-back smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from hil_robot.control.arbitration import Arbiter
from hil_robot.types import OperatorCommand, OperatorMode, Segment, Source

P = np.array([-1.0, 0.5, 0, 0, 0, 0, -1.0])
H = np.array([1.0, 0, 0, 0, 0, 0, 1.0])


def cmd(mode=OperatorMode.TAKEOVER, mask=None, segment=None, t=1.0):
    return OperatorCommand(t, mode, action=H, dof_mask=np.ones(7, bool) if mask is None else mask, segment=segment)


def test_autonomous_policy_drives_and_segment_is_autonomous():
    a = Arbiter()
    r = a.arbitrate(P, 2.0, OperatorCommand(1.0), None)
    assert r.source == Source.POLICY and r.segment == Segment.AUTONOMOUS and np.allclose(r.action, P) and r.input_time_s == 2.0


def test_takeover_segments_default_recovery_then_persist_until_changed():
    a = Arbiter(takeover_segment="recovery")
    r1 = a.arbitrate(P, 2.0, cmd(), H)
    r2 = a.arbitrate(P, 2.0, cmd(segment=Segment.CORRECTION), H)
    r3 = a.arbitrate(P, 2.0, cmd(), H)  # no segment named: the running one continues
    assert (r1.segment, r2.segment, r3.segment) == (Segment.RECOVERY, Segment.CORRECTION, Segment.CORRECTION)
    assert r1.takeover_started and not r2.takeover_started and a.interventions == 1
    assert r1.input_time_s == 1.0  # oldest input used: the operator's


def test_perturbation_is_labelled_and_counts_as_human():
    a = Arbiter()
    r = a.arbitrate(P, 2.0, cmd(OperatorMode.PERTURBATION), H)
    assert r.segment == Segment.PERTURBATION and r.source == Source.HUMAN and np.allclose(r.action, H)
    assert r.perturbation_started and not r.intervention_started and (a.perturbations, a.interventions) == (1, 0)
    # the operator grabs the robot during the perturbation: that is a takeover; then back to autonomous
    r = a.arbitrate(P, 2.0, cmd(), H)
    assert r.intervention_started and not r.takeover_started and r.segment == Segment.RECOVERY
    a.arbitrate(P, 2.0, cmd(), H)
    a.arbitrate(P, 2.0, OperatorCommand(1.0), None)
    a.arbitrate(P, 2.0, cmd(OperatorMode.PERTURBATION), H)
    assert (a.perturbations, a.interventions) == (2, 1)


def test_partial_mask_mixes_and_oldest_time_wins():
    mask = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    r = Arbiter().arbitrate(P, 2.0, cmd(mask=mask, t=1.5), H)
    assert np.allclose(r.action, np.where(mask, H, P)) and r.input_time_s == 1.5 and r.source == Source.HUMAN


def test_takeover_without_operator_motion_holds_owned_dofs():
    a = Arbiter()
    a.note_executed(np.array([0.3, 0, 0, 0, 0, 0, 0.7]))
    r = a.arbitrate(P, 2.0, cmd(), None)
    assert r.action is None  # nothing to send: the safety filter holds
    mask = np.array([0, 0, 0, 0, 0, 0, 1], bool)
    r = a.arbitrate(P, 2.0, cmd(mask=mask), None)
    # arm DoFs go back to the policy through the hand-back ramp (from 0.3 / 0.0 by at most 0.2),
    # the operator-owned gripper with no motion given keeps its last command
    assert r.action[:2] == pytest.approx([0.1, 0.2]) and r.action[6] == pytest.approx(0.7) and r.handing_back


def test_handback_is_rate_limited_per_dof_until_caught_up():
    a = Arbiter(handback_max_delta=0.5)
    a.arbitrate(P, 2.0, cmd(), H)
    a.note_executed(H)
    seq = []
    for _ in range(5):
        r = a.arbitrate(P, 2.0, OperatorCommand(1.0), None)
        seq.append(r.action.copy())
        a.note_executed(r.action)
    seq = np.array(seq)
    assert seq[:, 0] == pytest.approx([0.5, 0.0, -0.5, -1.0, -1.0])
    assert seq[:, 1] == pytest.approx([0.5] * 5)  # within the bound at once
    assert np.abs(np.diff(np.vstack([H, seq]), axis=0)).max() <= 0.5 + 1e-12


def test_demo_mode_labels_everything_demo():
    a = Arbiter(demo_mode=True)
    r = a.arbitrate(None, None, OperatorCommand(1.0, action=H), H)
    assert r.segment == Segment.DEMO and r.source == Source.HUMAN and a.interventions == 0
