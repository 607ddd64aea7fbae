"""A simulated person at the robot: watches a rollout, takes over, recovers, corrects, hands back.

State machine (one ``command`` call per control tick)::

    WATCHING --(no progress for stall_steps, or failure imminent)--> REACTING
    REACTING --(reaction_delay_steps later)--> RECOVERY      mode takeover, segment recovery:
        drive back to a familiar state (the expert's hover/pre-grasp pose, or lift when holding)
    RECOVERY --(pose reached or max_recovery_steps)--> CORRECTION   segment correction:
        the scripted expert (plus operator noise) completes the sub-task that was stuck
    CORRECTION --(sub-task done, success, or max_correction_steps)--> WATCHING   (hand back)

The hand-back waits for a sub-task the task lists in ``handback_subtasks`` (a person finishing a
grasp does not let go of the controls halfway through closing the jaw).

At most ``max_interventions_per_episode`` takeovers. Every tick emits mode and segment
(``autonomous`` while watching), and ``mark`` = "success"/"failure" once the task status says so.
``log`` keeps one dict per tick (step, mode, segment, mark, trigger, subtask, progress).
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

from hil_robot.config.robot import RobotConfig
from hil_robot.config.teleop import SimOperatorConfig
from hil_robot.rotations import relative_rotvec
from hil_robot.types import OperatorCommand, OperatorMode, Segment
from sim.expert import OPEN, make_expert, plan_to_action, recovery_plan
from sim.tasks import check_task, make_task
from sim.tasks.base import RobotView


class Phase(str, enum.Enum):
    WATCHING = "watching"
    REACTING = "reacting"
    RECOVERY = "recovery"
    CORRECTION = "correction"


class SimulatedOperator:
    def __init__(self, op_cfg: SimOperatorConfig | None = None, task: str = "pick_cube", seed: int | None = None,
                 robot_cfg: RobotConfig | None = None) -> None:
        self.cfg = op_cfg or SimOperatorConfig()
        self.task = check_task(task)
        spec = make_task(task)
        self.subtasks, self.handback = spec.subtasks, set(spec.handback_subtasks)
        self.robot_cfg = robot_cfg or RobotConfig()
        self.expert = make_expert(task, self.robot_cfg)
        self._seed = seed
        self.rng = np.random.default_rng(seed)
        self.log: list[dict[str, Any]] = []
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self._seed = seed
        self.rng = np.random.default_rng(self._seed)
        self.phase = Phase.WATCHING
        self.interventions = 0
        self.best_progress = -1.0
        self.last_improve_step = 0
        self.react_at = 0
        self.phase_start = 0
        self.trigger = ""
        self.goal_subtask = 0
        self.log = []

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ one tick

    def command(self, obs: dict[str, Any], context: dict[str, Any]) -> OperatorCommand:
        step = int(context.get("step", len(self.log)))
        status = context.get("task_status")
        if status is None:
            raise ValueError("SimulatedOperator needs context['task_status'] (robot.task_status())")
        progress = float(status["progress"])
        sub_idx = self._subtask_index(status["subtask"])
        mark = "success" if status["success"] else ("failure" if status["failed"] else "")
        if progress > self.best_progress + self.cfg.progress_eps:
            self.best_progress, self.last_improve_step = progress, step
        robot = RobotView.from_state(np.asarray(obs["state"]))
        ts = np.asarray(obs["task_state"])
        trigger = ""
        if mark:
            self.phase = Phase.WATCHING  # episode is over: hands off
        elif self.phase == Phase.WATCHING and self.interventions < self.cfg.max_interventions_per_episode:
            if step - self.last_improve_step >= self.cfg.stall_steps:
                trigger = "stall"
            elif self.cfg.trigger_on_failure_risk and status.get("risk", False):
                trigger = "failure_risk"
            if trigger:
                self.trigger, self.phase, self.react_at = trigger, Phase.REACTING, step + self.cfg.reaction_delay_steps
                self.goal_subtask = sub_idx
        if self.phase == Phase.REACTING and step >= self.react_at:
            self.phase, self.phase_start = Phase.RECOVERY, step
            self.interventions += 1
            self.goal_subtask = min(self.goal_subtask, sub_idx)
        action = None
        if self.phase == Phase.RECOVERY:
            plan = recovery_plan(self.task, robot, ts)
            reached = (np.linalg.norm(plan.pos - robot.tcp_pos) < self.cfg.recovery_tol_m
                       and np.linalg.norm(relative_rotvec(plan.quat, robot.tcp_quat)) < 0.15
                       and (plan.gripper != OPEN or robot.opening > 0.8))
            if reached or step - self.phase_start >= self.cfg.max_recovery_steps:
                self.phase, self.phase_start = Phase.CORRECTION, step
            else:
                rc = self.robot_cfg
                action = plan_to_action(plan, robot, rc.max_delta_pos_m, rc.max_delta_rot_rad, rc.control_hz)
        if self.phase == Phase.CORRECTION:
            done = (sub_idx > self.goal_subtask and status["subtask"] in self.handback) or status["success"]
            if done or step - self.phase_start >= self.cfg.max_correction_steps:
                self.phase = Phase.WATCHING  # hand back; give the policy a fresh stall window
                self.best_progress, self.last_improve_step = progress, step
            else:
                action = self.expert.act(obs)
        mode, segment = OperatorMode.AUTONOMOUS, Segment.AUTONOMOUS
        if action is not None:
            action = np.asarray(action, np.float32).copy()
            if self.cfg.action_noise_std > 0:
                action[:6] += self.rng.normal(0.0, self.cfg.action_noise_std, 6).astype(np.float32)
            action = np.clip(action, -1.0, 1.0)
            mode = OperatorMode.TAKEOVER
            segment = Segment.RECOVERY if self.phase == Phase.RECOVERY else Segment.CORRECTION
        self.log.append({"step": step, "mode": mode.value, "segment": segment.value, "mark": mark,
                         "trigger": trigger, "phase": self.phase.value, "subtask": status["subtask"],
                         "progress": progress, "interventions": self.interventions})
        return OperatorCommand(timestamp_s=float(obs.get("timestamp_s", 0.0)), mode=mode, action=action,
                               segment=segment, mark=mark, operator_id="sim_operator", device_id="sim")

    def _subtask_index(self, name: str) -> int:
        try:
            return self.subtasks.index(name)
        except ValueError:
            return 0
