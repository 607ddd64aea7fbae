"""A device + pose mapping + intervention state machine = an operator source for the controller.

Every operator source (this one, the simulated operator, ...) exposes
``command(obs, context) -> OperatorCommand``, ``reset()`` and ``close()``.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Mapping

import numpy as np

from hil_robot.config.robot import RobotConfig
from hil_robot.config.teleop import TeleopConfig
from hil_robot.types import ACTION_DIM, GRIPPER_INDEX, STATE_LAYOUT, OperatorCommand, OperatorMode
from teleop.base import Clock, Device, OperatorInput
from teleop.intervention import InterventionStateMachine
from teleop.mapping import PoseMapper, pose_to_action

EDGE_EVENTS = ("takeover", "correction", "cycle", "perturbation", "success", "failure", "estop")


def ee_pose_from_state(state: np.ndarray) -> np.ndarray:
    """float32[15] state -> float64[7] EE pose ``[x, y, z, qw, qx, qy, qz]``."""
    a, b = STATE_LAYOUT["ee_pos"][0], STATE_LAYOUT["ee_quat"][1]
    return np.asarray(state[a:b], dtype=np.float64)


def gripper_command_from_state(state: np.ndarray) -> float:
    """Opening 0 (closed) .. 1 (open) -> command +1 closed .. -1 open."""
    opening = float(state[STATE_LAYOUT["gripper"][0]])
    return float(np.clip(1.0 - 2.0 * opening, -1.0, 1.0))


class DeviceOperator:
    """Turns ``device`` samples into ``OperatorCommand`` s, one per controller tick."""

    def __init__(
        self,
        device: Device,
        cfg: TeleopConfig,
        robot_cfg: RobotConfig,
        *,
        operator_id: str = "operator",
        clock: Clock | None = None,
    ) -> None:
        self.device = device
        self.cfg = cfg
        self.robot_cfg = robot_cfg
        self.operator_id = operator_id
        self.clock = clock or device.clock or time.monotonic
        self.machine = InterventionStateMachine(demo=cfg.demo, auto_takeover=cfg.auto_takeover)
        self.mapper = PoseMapper(
            translation_scale=cfg.translation_scale, rotation_scale=cfg.rotation_scale,
            operator_yaw_deg=cfg.operator_yaw_deg, jump_m=cfg.jump_guard_m, jump_deg=cfg.jump_guard_deg,
        )
        self._prev_buttons: dict[str, bool] = {}
        self._external: collections.deque[tuple[str, str]] = collections.deque()
        self._lock = threading.Lock()
        self._gripper = -1.0
        self._analog_picked_up = True
        self._prev_moving = False
        self.policy_version = -1
        self.step = 0
        self.last_command: OperatorCommand | None = None
        self.last_context: dict[str, Any] = {}
        self.last_input: OperatorInput | None = None

    # --------------------------------------------------------------- external (operator screen)
    def post_event(self, event: str) -> None:
        """Thread-safe: queue a button event (takeover, correction, success, estop, ...)."""
        with self._lock:
            self._external.append(("event", event))

    def post_text(self, text: str) -> None:
        """Thread-safe: queue a language correction typed on the operator screen."""
        with self._lock:
            self._external.append(("text", text))

    def clear_estop(self) -> None:
        self.machine.clear_estop()

    # --------------------------------------------------------------- per tick
    def command(self, obs: Mapping[str, Any], context: Mapping[str, Any] | None = None) -> OperatorCommand:
        context = dict(context or {})
        self.last_context = context
        if context.get("policy_version") is not None:
            self.policy_version = int(context["policy_version"])
        if context.get("step") is not None:
            self.step = int(context["step"])
        inp = self.device.read()
        self.last_input = inp
        state = np.asarray(obs["state"], dtype=np.float32)
        ee = ee_pose_from_state(state)
        was_driving = self.machine.human_driving

        rising = {b for b, held in inp.buttons.items() if held and not self._prev_buttons.get(b, False)}
        self._prev_buttons = dict(inp.buttons)
        for event in EDGE_EVENTS:
            if event in rising:
                self.machine.handle(event)
        with self._lock:
            external, self._external = list(self._external), collections.deque()
        for kind, value in external:
            if kind == "event":
                if value == "clear_estop":
                    self.machine.clear_estop()
                else:
                    self.machine.handle(value)
            else:
                self.machine.add_language_correction(value)
        if inp.text:
            self.machine.add_language_correction(inp.text)

        if self.device.pose_based:
            clutch = bool(inp.buttons.get("clutch", False))
            if "clutch" in rising:
                self.machine.handle("engage")
        else:  # twist devices: starting to move the device is the grab (not staying moved after a hand-back)
            moving = inp.motion is not None and bool(np.any(inp.motion != 0))
            if moving and not self._prev_moving:
                self.machine.handle("engage")
            self._prev_moving = moving
        driving = self.machine.human_driving

        if driving and not was_driving:  # take over the gripper where the policy left it
            policy_action = context.get("policy_action")
            self._gripper = (
                float(policy_action[GRIPPER_INDEX]) if policy_action is not None and np.isfinite(policy_action[GRIPPER_INDEX])
                else gripper_command_from_state(state)
            )
            self._analog_picked_up = inp.gripper is None
        self._update_gripper(inp, rising)

        action = np.zeros(ACTION_DIM, dtype=np.float32)
        pose_target = None
        if self.device.pose_based:
            if driving:
                mapped = self.mapper.update(inp.pose, clutch=clutch, tracking_valid=inp.tracking_valid, robot_pose=ee)
                target = mapped.target if mapped.target is not None else ee
                action[:6] = pose_to_action(
                    target, ee, max_delta_pos_m=self.robot_cfg.max_delta_pos_m,
                    max_delta_rot_rad=self.robot_cfg.max_delta_rot_rad,
                )
                pose_target = np.concatenate([target, [self._gripper]]).astype(np.float32)
            else:
                self.mapper.reset()
        elif inp.motion is not None:
            action[:3] = inp.motion[:3] * self.cfg.translation_scale
            action[3:6] = inp.motion[3:] * self.cfg.rotation_scale
        action[GRIPPER_INDEX] = self._gripper
        action = np.clip(action, -1.0, 1.0)

        mode, segment = self.machine.mode, self.machine.segment
        mark, text = self.machine.tick()
        estop = self.machine.estop
        if estop:  # hold still; the controller's latched e-stop stops the robot
            action[:6] = 0.0
            pose_target = None
        cmd = OperatorCommand(
            timestamp_s=inp.timestamp_s,
            mode=mode,
            action=action if (driving or estop) else None,
            pose_target=pose_target if driving else None,
            dof_mask=np.asarray(self.cfg.dof_mask, dtype=bool) if mode is not OperatorMode.AUTONOMOUS else np.ones(ACTION_DIM, bool),
            segment=segment,
            mark=mark,
            language_correction=text,
            estop=estop,
            operator_id=self.operator_id,
            device_id=self.device.device_id,
        )
        self.last_command = cmd
        return cmd

    def _update_gripper(self, inp: OperatorInput, rising: set[str]) -> None:
        if "gripper" in rising:
            self._gripper = -1.0 if self._gripper > 0 else 1.0
        if inp.gripper is not None:
            g = float(np.clip(inp.gripper, -1.0, 1.0))
            # analog inputs pick the gripper up where it is (no sudden drop of a held object)
            if not self._analog_picked_up and abs(g - self._gripper) < 0.2:
                self._analog_picked_up = True
            if self._analog_picked_up:
                self._gripper = g

    # --------------------------------------------------------------- lifecycle
    def status(self) -> dict[str, Any]:
        """What the operator screen shows (JSON-friendly)."""
        m = self.machine
        return {
            "mode": m.mode.value,
            "segment": m.segment.value if m.segment is not None else "autonomous",
            "estop": m.estop,
            "counts": dict(m.counts),
            "step": self.step,
            "policy_version": self.policy_version,
            "device": self.device.device_id,
            "clutch": bool(self.last_input.buttons.get("clutch", False)) if self.last_input else False,
            "jumps": self.mapper.jumps,
            "language_corrections": [t for _, _, t in m.language_corrections][-5:],
        }

    def reset(self) -> None:
        self.machine.reset()
        self.mapper.reset()
        self._prev_buttons = {}

    def close(self) -> None:
        self.device.close()
