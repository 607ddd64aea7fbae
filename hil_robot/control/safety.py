"""The safety filter on the command path (DESIGN §6). Always on; limits come from ``robot.safety``.

Every tick the controller hands the filter one normalised EE delta ``[dx, dy, dz, drx, dry, drz, g]``
(or nothing), the time its input was produced and the robot's state vector. The filter returns the
command actually to send, whether to ``send``, ``hold`` (zero motion, gripper kept) or ``stop``
(``robot.stop()``), and the names of the limits that fired. In order:

1. latched e-stop -> stop (cleared only by ``reset_estop()``);
2. command watchdog: an input never drives the robot once it is older than ``watchdog_hold_s``.
   A command is applied for one tick, so the filter checks its age at the *end* of that tick
   (``tick_start + period - input_time``): older than ``watchdog_hold_s`` -> hold, older than
   ``watchdog_stop_s`` -> stop. No command at all -> hold (``no_command``), escalating to stop once
   the last input is older than ``watchdog_stop_s``;
3. NaN/Inf anywhere in the command -> hold (``nan_hold``); non-finite robot state -> hold
   (``state_invalid``);
4. each component clipped to [-1, 1] (``clip``);
5. workspace box on the resulting EE target (``workspace``): a target outside the box is pulled
   back onto it; if the EE is already outside on an axis, it may not move further out on it;
6. per-tick translation / rotation step limits (``step_pos``, ``step_rot``; vector norms, the
   direction is kept);
7. gripper rate limit (``gripper_rate``) against the last gripper command sent.

Absolute pose targets (VR) go through ``pose_target_to_action`` first: the pose-jump guard rejects a
target more than ``pose_jump_m`` / ``pose_jump_deg`` away from the previous accepted one
(``pose_jump`` -> hold), then the target becomes a delta from the current EE pose and runs the
same chain. The numeric core exists twice with identical decisions: ``limit_commands`` vectorised
over a batch (the property tests push 10^5 commands through it) and ``limit_one`` in plain floats
for the per-tick path; a differential test checks them against each other on every kind of input.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from typing import Any

import numpy as np

from hil_robot.config.robot import RobotConfig
from hil_robot.control.safety_core import (  # noqa: F401  (re-exported: the filter's public vocabulary)
    FLAG_BIT,
    FLAGS,
    HOLD,
    KIND_NAMES,
    SEND,
    STOP,
    SafetyLimits,
    flags_from_bits,
    limit_commands,
    limit_one,
    pose_targets_to_actions,
)
from hil_robot.types import ACTION_DIM, STATE_DIM, STATE_LAYOUT

log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class SafetyDecision:
    """What the filter decided for one tick."""

    action: np.ndarray  # float32[7] the command to send (for hold/stop: zero motion, gripper kept)
    kind: str  # "send" | "hold" | "stop"
    flags: tuple[str, ...]  # limits that fired

    @property
    def moved(self) -> bool:
        return self.kind == "send"


class SafetyFilter:
    """Stateful, always-on filter for one robot. Not thread-safe except ``estop()``, which only
    sets a flag (so a key listener or ROS callback may call it from another thread)."""

    def __init__(self, robot_cfg: RobotConfig, period_s: float | None = None) -> None:
        self.limits = SafetyLimits.from_robot_config(robot_cfg, period_s)
        self.counters: collections.Counter[str] = collections.Counter()
        self._estopped = False
        self._estop_reason = ""
        self._last_gripper: float | None = None
        self._last_input_s: float | None = None
        self._ref_pose: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ e-stop (latched)
    def estop(self, reason: str = "api") -> None:
        if not self._estopped:
            log.warning("E-STOP latched (%s); robot stopped until reset_estop()", reason)
            self.counters["estop_latched"] += 1
        self._estop_reason = reason
        self._estopped = True

    def reset_estop(self) -> None:
        """The only way to clear the e-stop."""
        if self._estopped:
            log.warning("e-stop reset by explicit request (was: %s)", self._estop_reason)
            self.counters["estop_reset"] += 1
        self._estopped = False
        self._estop_reason = ""

    @property
    def estopped(self) -> bool:
        return self._estopped

    # ------------------------------------------------------------------ episode state
    def reset(self, now_s: float, state: np.ndarray | None = None) -> None:
        """New episode: forget the gripper reference, pose reference and input times (not the e-stop)."""
        self._last_gripper = None
        self._last_input_s = float(now_s)
        self._ref_pose = None
        if state is not None:
            self._last_gripper = _gripper_from_state(np.asarray(state, dtype=np.float64))

    def reset_pose_reference(self) -> None:
        """Forget the last accepted absolute target (e.g. the VR clutch was released)."""
        self._ref_pose = None

    # ------------------------------------------------------------------ per tick
    def pose_target_to_action(self, pose8: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
        """Absolute target float[8] -> (normalised delta float64[7] or NaNs, flags)."""
        state = _check_state(state)
        ee_pos, ee_quat = _ee(state)
        ref_pos, ref_quat = self._ref_pose if self._ref_pose is not None else (ee_pos, ee_quat)
        act, jumped = pose_targets_to_actions(self.limits, pose8, ee_pos[None], ee_quat[None], ref_pos[None], ref_quat[None])
        if jumped[0]:
            self.counters["pose_jump"] += 1
            return act[0], ("pose_jump",)
        if np.isfinite(act[0]).all():
            p = np.asarray(pose8, dtype=np.float64)
            self._ref_pose = (p[:3].copy(), p[3:7].copy())
        return act[0], ()

    def filter(
        self,
        action: np.ndarray | None,
        input_time_s: float | None,
        tick_start_s: float,
        state: np.ndarray,
        force_hold: tuple[str, ...] = (),
    ) -> SafetyDecision:
        """One tick. action: float[7] normalised delta or None; input_time_s: when its input was
        produced (controller clock); tick_start_s: the tick's scheduled start; state: float32[15]."""
        state = _check_state(state)
        if self._last_gripper is None or not math.isfinite(self._last_gripper):
            self._last_gripper = _gripper_from_state(state)
        has = action is not None
        vec = np.full(ACTION_DIM, np.nan) if action is None else np.asarray(action, dtype=np.float64).reshape(ACTION_DIM)
        if has and input_time_s is not None and math.isfinite(input_time_s) and np.isfinite(vec).all():
            # only a usable command is fresh input: a source that streams NaN escalates to stop
            self._last_input_s = input_time_s if self._last_input_s is None else max(self._last_input_s, input_time_s)
        tick_end = tick_start_s + self.limits.period_s
        if has and np.isfinite(vec).all():
            age = tick_end - input_time_s if input_time_s is not None else float("nan")
        elif has:  # unusable command: judged by the last usable input, so a NaN stream ends in stop
            age = max(0.0, tick_end - self._last_input_s) if self._last_input_s is not None else 0.0
        else:
            age = tick_end - self._last_input_s if self._last_input_s is not None else 0.0
        bits = 0
        for name in force_hold:
            bits |= FLAG_BIT[name]
        out_l, kind, fl = limit_one(
            self.limits,
            vec,
            has,
            age,
            _ee(state)[0],
            self._last_gripper if self._last_gripper is not None else math.nan,
            self._estopped,
            bits,
        )
        out = np.asarray(out_l, dtype=np.float32)
        kind_name = KIND_NAMES[kind]
        flags = flags_from_bits(fl)
        if kind_name != "stop":
            self._last_gripper = float(out[6])
        self.counters["ticks"] += 1
        self.counters[kind_name] += 1
        for f in flags:
            self.counters[f] += 1
        return SafetyDecision(action=out, kind=kind_name, flags=flags)

    def summary(self) -> dict[str, Any]:
        return dict(self.counters) | {"estopped": self._estopped}


def _check_state(state: np.ndarray) -> np.ndarray:
    state = np.asarray(state, dtype=np.float64)
    if state.shape != (STATE_DIM,):
        raise ValueError(f"safety filter needs the robot state float[{STATE_DIM}] (types.STATE_LAYOUT), got {state.shape}")
    return state


def _ee(state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = STATE_LAYOUT["ee_pos"]
    c, d = STATE_LAYOUT["ee_quat"]
    return state[a:b], state[c:d]


def _gripper_from_state(state: np.ndarray) -> float:
    """Gripper opening (1 open .. 0 closed) -> the absolute command that holds it (-1 open .. +1 closed)."""
    a, _ = STATE_LAYOUT["gripper"]
    opening = float(state[a])
    return float(np.clip(1.0 - 2.0 * opening, -1.0, 1.0)) if math.isfinite(opening) else float("nan")
