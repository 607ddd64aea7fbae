"""Intervention state machine and the device operator: modes, segment labels, marks, language."""

from __future__ import annotations

import numpy as np
import pytest

from hil_robot.config.robot import RobotConfig
from hil_robot.config.teleop import TeleopConfig
from hil_robot.types import OperatorMode, Segment
from teleop.base import Device, OperatorInput
from teleop.intervention import InterventionStateMachine
from teleop.operator import DeviceOperator


def test_takeover_correction_handback_labels():
    sm = InterventionStateMachine()
    labels = []
    script = {2: "takeover", 4: "correction", 6: "takeover", 8: "perturbation", 9: "perturbation"}
    for step in range(11):
        if step in script:
            sm.handle(script[step])
        labels.append((sm.mode, sm.segment))
        sm.tick()
    segs = [s.value if s else "autonomous" for _, s in labels]
    assert segs == ["autonomous"] * 2 + ["recovery"] * 2 + ["correction"] * 2 + ["autonomous"] * 2 + [
        "perturbation", "autonomous", "autonomous"]
    assert labels[3][0] is OperatorMode.TAKEOVER and labels[8][0] is OperatorMode.PERTURBATION
    assert sm.counts["takeovers"] == 1 and sm.counts["corrections"] == 1 and sm.counts["perturbations"] == 1
    assert [t.event for t in sm.transitions] == ["takeover", "correction", "takeover", "perturbation", "perturbation"]


def test_correction_only_from_recovery_and_cycle_button():
    sm = InterventionStateMachine()
    sm.handle("correction")
    assert sm.segment is None  # nothing to correct while autonomous
    for expected in (Segment.RECOVERY, Segment.CORRECTION, None, Segment.RECOVERY):
        sm.handle("cycle")
        assert sm.segment is expected


def test_marks_emit_once_and_end_the_takeover_estop_latches():
    sm = InterventionStateMachine()
    sm.handle("takeover")
    sm.handle("success")
    assert sm.tick() == ("success", "")
    assert sm.segment is None and sm.tick() == ("", "")
    sm.handle("estop")
    sm.tick()
    sm.reset()
    assert sm.estop  # only an explicit clear releases it
    sm.clear_estop()
    assert not sm.estop
    with pytest.raises(ValueError, match="allowed"):
        sm.handle("dance")


def test_language_correction_attaches_to_segment_and_demo_mode():
    sm = InterventionStateMachine()
    sm.handle("takeover")
    sm.add_language_correction("  pick the red cube first ")
    assert sm.tick() == ("", "pick the red cube first")
    assert sm.language_corrections == [(0, "recovery", "pick the red cube first")]
    demo = InterventionStateMachine(demo=True)
    demo.handle("takeover")
    assert demo.segment is Segment.DEMO and demo.mode is OperatorMode.TAKEOVER
    demo.handle("failure")
    assert demo.tick()[0] == "failure" and demo.segment is Segment.DEMO


class ScriptedDevice(Device):
    """A device replaying a list of OperatorInput samples (one per read)."""

    kind = "scripted"

    def __init__(self, samples, pose_based=False):
        super().__init__()
        self.samples = list(samples)
        self.pose_based = pose_based
        self.i = 0

    def open(self):
        pass

    def close(self):
        pass

    def read(self):
        s = self.samples[min(self.i, len(self.samples) - 1)]
        self.i += 1
        return s


def obs(x=0.5, gripper_open=1.0):
    state = np.zeros(15, dtype=np.float32)
    state[:3] = [x, 0.0, 0.3]
    state[3:7] = [0, 1, 0, 0]
    state[7] = gripper_open
    return {"state": state, "timestamp_s": 0.0, "prompt": "pick"}


def test_twist_operator_motion_takes_over_and_scales():
    zero, fwd = np.zeros(6), np.array([1.0, 0, 0, 0, 0, -0.5])
    samples = [OperatorInput(0.0, motion=zero), OperatorInput(0.1, motion=fwd),
               OperatorInput(0.2, motion=fwd, buttons={"correction": True}),
               OperatorInput(0.3, motion=zero, buttons={"takeover": True, "gripper": True})]
    op = DeviceOperator(ScriptedDevice(samples), TeleopConfig(translation_scale=0.5), RobotConfig())
    c0 = op.command(obs(gripper_open=0.0), {"policy_action": np.array([0, 0, 0, 0, 0, 0, 1.0], np.float32)})
    assert c0.mode is OperatorMode.AUTONOMOUS and c0.action is None and c0.segment is None
    c1 = op.command(obs(), {})
    assert c1.mode is OperatorMode.TAKEOVER and c1.segment is Segment.RECOVERY
    assert c1.action.tolist() == pytest.approx([0.5, 0, 0, 0, 0, -0.5, -1.0])
    c2 = op.command(obs(), {})
    assert c2.segment is Segment.CORRECTION
    c3 = op.command(obs(), {})
    assert c3.mode is OperatorMode.AUTONOMOUS and c3.action is None
    assert op.status()["counts"]["takeovers"] == 1


def test_takeover_keeps_the_gripper_where_the_policy_had_it():
    close = OperatorInput(0.0, motion=np.array([0, 0, 1.0, 0, 0, 0]))
    op = DeviceOperator(ScriptedDevice([close]), TeleopConfig(), RobotConfig())
    cmd = op.command(obs(gripper_open=0.1), {"policy_action": np.array([0, 0, 0, 0, 0, 0, 0.9], np.float32)})
    assert cmd.action[6] == pytest.approx(0.9)  # not dropped


def test_vr_operator_clutch_takes_over_and_maps_pose():
    q = [1.0, 0, 0, 0]
    samples = [
        OperatorInput(0.0, pose=[0, 1, 0, *q], gripper=-1.0),
        OperatorInput(0.1, pose=[0, 1, 0, *q], gripper=-1.0, buttons={"clutch": True}),
        OperatorInput(0.2, pose=[0, 1, -0.01, *q], gripper=-1.0, buttons={"clutch": True}),
        OperatorInput(0.3, pose=None, tracking_valid=False, buttons={"clutch": True}),
    ]
    op = DeviceOperator(ScriptedDevice(samples, pose_based=True), TeleopConfig(), RobotConfig())
    op.post_text("go left")
    c0 = op.command(obs(), {})
    assert c0.mode is OperatorMode.AUTONOMOUS and c0.language_correction == "go left"
    c1 = op.command(obs(), {})
    assert c1.mode is OperatorMode.TAKEOVER and c1.pose_target[:3] == pytest.approx([0.5, 0, 0.3])
    c2 = op.command(obs(), {})
    assert c2.pose_target[:3] == pytest.approx([0.51, 0, 0.3], abs=1e-6)
    assert c2.action[0] == pytest.approx(0.5)  # 1 cm at 2 cm per tick
    c3 = op.command(obs(x=0.505), {})  # tracking lost: hold the last target
    assert c3.pose_target[:3] == pytest.approx([0.51, 0, 0.3], abs=1e-6)
    op.post_event("estop")
    c4 = op.command(obs(), {})
    assert c4.estop and not np.any(c4.action[:6]) and c4.pose_target is None


def test_teleop_config_errors_name_the_key_and_choices():
    from hil_robot.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="teleop.hand.*left, right"):
        TeleopConfig(hand="middle")
    with pytest.raises(ConfigError, match="dof_mask"):
        TeleopConfig(dof_mask=(True, False))
    cfg = load_config(["teleop=spacemouse", "teleop.dominant_axis=true", "teleop.http_port=0"])
    assert cfg.teleop.device == "spacemouse" and cfg.teleop.dominant_axis and cfg.teleop.http_port == 0
    shared = load_config(["teleop=webxr", "teleop.dof_mask=[true,true,true,true,true,true,false]"]).teleop
    assert shared.dof_mask[-1] is False and shared.http_host == "0.0.0.0"


def test_shared_autonomy_mask_reaches_the_command():
    cfg = TeleopConfig(dof_mask=(True,) * 6 + (False,))
    op = DeviceOperator(ScriptedDevice([OperatorInput(0.0, motion=np.array([0, 1.0, 0, 0, 0, 0]))]), cfg, RobotConfig())
    c = op.command(obs(), {})
    assert c.mode is OperatorMode.TAKEOVER and c.dof_mask.tolist() == [True] * 6 + [False]
