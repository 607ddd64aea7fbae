"""Who drives each degree of freedom this tick, and how a step is labelled (DESIGN §2, §3).

* ``OperatorMode.AUTONOMOUS`` (or no operator): the policy drives everything.
* ``TAKEOVER``: the operator drives the DoFs set in ``dof_mask`` (all by default, a full takeover);
  the policy keeps the others (shared autonomy, e.g. the human moves the arm, the policy the
  gripper). Segment: the command's ``segment`` (recovery / correction), else the current
  intervention's segment, else ``control.takeover_segment``. With no policy at all the episode is a
  teleoperated ``demo``.
* ``PERTURBATION``: like a takeover, labelled ``perturbation``; counted in ``perturbations``, not in
  ``interventions`` (a deliberate disturbance is not the operator rescuing the policy).
* Hand-back: when a DoF returns to the policy, the command on it moves from the last executed value
  towards the policy's by at most ``handback_max_delta`` per tick until it catches up, so the robot
  does not jerk when the operator lets go.

A DoF whose driver has nothing this tick holds (motion 0, gripper kept). The result carries the
oldest input time among the sources actually used, for the safety filter's watchdog.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hil_robot.types import ACTION_DIM, GRIPPER_INDEX, OperatorCommand, OperatorMode, Segment, Source


@dataclasses.dataclass(frozen=True)
class Arbitration:
    action: np.ndarray | None  # float64[7] desired normalised command, None = nothing to send
    input_time_s: float | None  # oldest input time among the sources used
    source: Source
    segment: Segment
    human_mask: np.ndarray  # bool[7] DoFs the operator drove
    takeover_started: bool  # first human tick after autonomous ones (takeover or perturbation)
    intervention_started: bool  # an operator takeover began this tick (a perturbation -> takeover switch counts)
    perturbation_started: bool  # a deliberate perturbation began this tick
    handing_back: bool  # hand-back smoothing changed the policy's command this tick


class Arbiter:
    def __init__(self, handback_max_delta: float = 0.2, takeover_segment: str = "recovery", demo_mode: bool = False) -> None:
        self.handback_max_delta = float(handback_max_delta)
        self.takeover_segment = Segment.parse(takeover_segment)
        self.demo_mode = demo_mode
        self.reset()

    def reset(self) -> None:
        self._human_mask = np.zeros(ACTION_DIM, dtype=bool)
        self._handback = np.zeros(ACTION_DIM, dtype=bool)
        self._last_executed = np.zeros(ACTION_DIM, dtype=np.float64)
        self._segment: Segment | None = None  # segment of the intervention in progress
        self.interventions = 0  # operator takeovers this episode
        self.perturbations = 0  # deliberate perturbations this episode
        self._kind: OperatorMode | None = None  # TAKEOVER / PERTURBATION in progress, None when autonomous

    def note_executed(self, action: np.ndarray) -> None:
        """The command actually sent (after safety); the hand-back starts from it."""
        self._last_executed = np.asarray(action, dtype=np.float64).copy()

    def arbitrate(
        self,
        policy_action: np.ndarray | None,
        policy_time_s: float | None,
        command: OperatorCommand | None,
        operator_action: np.ndarray | None,
    ) -> Arbitration:
        """policy_action: float[7] or None; command: this tick's operator command (or None);
        operator_action: the operator's normalised delta float[7] (a pose target already converted)
        or None when the operator gave no usable motion this tick."""
        mode = command.mode if command is not None else OperatorMode.AUTONOMOUS
        if self.demo_mode and command is not None:
            mode = OperatorMode.TAKEOVER if mode == OperatorMode.AUTONOMOUS else mode
            mask = np.ones(ACTION_DIM, dtype=bool)
        elif mode == OperatorMode.AUTONOMOUS:
            mask = np.zeros(ACTION_DIM, dtype=bool)
        else:
            mask = np.asarray(command.dof_mask, dtype=bool).copy()
        human = bool(mask.any())
        started = human and not self._human_mask.any()
        released = self._human_mask & ~mask
        kind = None if not human or self.demo_mode else (
            OperatorMode.PERTURBATION if mode == OperatorMode.PERTURBATION else OperatorMode.TAKEOVER)
        intervention_started = kind == OperatorMode.TAKEOVER and self._kind != kind
        perturbation_started = kind == OperatorMode.PERTURBATION and self._kind != kind
        self.interventions += intervention_started
        self.perturbations += perturbation_started
        self._kind = kind
        self._handback |= released
        self._handback &= ~mask
        self._human_mask = mask

        # the segment label
        if not human:
            self._segment = None
            segment = Segment.AUTONOMOUS
        elif self.demo_mode:
            segment = Segment.DEMO
        elif mode == OperatorMode.PERTURBATION:
            segment = Segment.PERTURBATION
        else:
            if command is not None and command.segment is not None:
                self._segment = command.segment
            elif self._segment is None or started:
                self._segment = self.takeover_segment
            segment = self._segment

        # per-DoF mixing
        out = np.zeros(ACTION_DIM, dtype=np.float64)
        out[GRIPPER_INDEX] = self._last_executed[GRIPPER_INDEX]  # hold = keep the gripper command
        times: list[float] = []
        used_any = False
        op_time = command.timestamp_s if command is not None else None
        if human and operator_action is not None:
            out[mask] = np.asarray(operator_action, dtype=np.float64)[mask]
            used_any = True
            if op_time is not None:
                times.append(float(op_time))
        policy_dofs = ~mask
        smoothing = False
        if policy_dofs.any() and policy_action is not None:
            pa = np.asarray(policy_action, dtype=np.float64)
            hb = self._handback & policy_dofs
            if hb.any() and np.isfinite(pa).all():
                last = self._last_executed
                limited = last + np.clip(pa - last, -self.handback_max_delta, self.handback_max_delta)
                caught_up = np.abs(limited - pa) <= 1e-12
                smoothing = bool((hb & ~caught_up).any())
                pa = np.where(hb, limited, pa)
                self._handback &= ~caught_up
            out[policy_dofs] = pa[policy_dofs]
            used_any = True
            if policy_time_s is not None:
                times.append(float(policy_time_s))
        elif policy_dofs.any():
            self._handback &= ~policy_dofs  # nothing to hand back to: hold, and start fresh later
        if not used_any:
            return Arbitration(None, None, Source.HUMAN if human else Source.POLICY, segment, mask, started,
                               intervention_started, perturbation_started, False)
        return Arbitration(
            action=out,
            input_time_s=min(times) if times else None,
            source=Source.HUMAN if human else Source.POLICY,
            segment=segment,
            human_mask=mask,
            takeover_started=started,
            intervention_started=intervention_started,
            perturbation_started=perturbation_started,
            handing_back=smoothing,
        )
