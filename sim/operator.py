"""A simulated person at the robot: watches a rollout, takes over, recovers, corrects, hands back.

State machine (one ``command`` call per control tick)::

    WATCHING --(no progress for stall_steps, less than stall_min_gain in stall_steps, or failure imminent)--> REACTING
    REACTING --(reaction_delay_steps later)--> RECOVERY      mode takeover, segment recovery:
        drive back to a familiar state (the expert's hover/pre-grasp pose, or lift when holding)
    RECOVERY --(pose reached or max_recovery_steps)--> CORRECTION   segment correction:
        the scripted expert (plus operator noise) completes the sub-task that was stuck
    CORRECTION --(sub-task done, success, or max_correction_steps)--> WATCHING   (hand back)

The hand-back waits for a sub-task the task lists in ``handback_subtasks`` (a person finishing a
grasp does not let go of the controls halfway through closing the jaw).

At most ``max_interventions_per_episode`` takeovers. Every tick emits mode and segment
(``autonomous`` while watching), and ``mark`` = "success"/"failure" once the task status says so.
``log`` keeps one dict per tick (step, mode, segment, mark, trigger, subtask, progress, perturbation).

Deliberate perturbations (off unless ``perturb_prob`` > 0): with probability ``perturb_prob`` per
episode (seeded) the operator plans one event of a kind drawn from ``perturb_kinds`` (a push at
a step drawn from ``perturb_window``, a drop as described below); while WATCHING it then drives for ``perturb_steps`` ticks with mode
and segment ``perturbation`` and hands straight back (no recovery/correction for it; the stall and
failure triggers watch the policy again afterwards, with a fresh stall window)::

    push: translate the EE at ``perturb_push_scale`` away from where the policy was heading
          (plus a random horizontal component; a random direction when the policy is still),
          the policy's gripper command kept
    drop: open the jaw (no motion) at the first tick in the window where an object is carried
          (held DROP_AFTER_HELD_TICKS ticks in a row, i.e. being lifted); no event if nothing
          is carried by the window's end
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


DROP_AFTER_HELD_TICKS = 3  # a 'drop' waits until the object has been held this long (mid-lift)


class Phase(str, enum.Enum):
    WATCHING = "watching"
    REACTING = "reacting"
    RECOVERY = "recovery"
    CORRECTION = "correction"
    PERTURBATION = "perturbation"


class SimulatedOperator:
    def __init__(self, op_cfg: SimOperatorConfig | None = None, task: str = "pick_cube", seed: int | None = None,
                 robot_cfg: RobotConfig | None = None) -> None:
        self.cfg = op_cfg or SimOperatorConfig()
        self.task = check_task(task)
        spec = make_task(task)
        self.subtasks, self.handback = spec.subtasks, set(spec.handback_subtasks)
        self.robot_cfg = robot_cfg or RobotConfig()
        self.expert = make_expert(task, self.robot_cfg)
        self.can_hold = "grasp" in spec.subtasks  # tasks where a 'drop' perturbation makes sense
        self._seed = seed
        self._episode = -1  # resets without a new seed since the last seed (perturbation plans differ per episode)
        self.rng = np.random.default_rng(seed)
        self.log: list[dict[str, Any]] = []
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self._seed, self._episode = seed, 0
        else:
            self._episode += 1
        self.rng = np.random.default_rng(self._seed)
        self.phase = Phase.WATCHING
        self.interventions = 0
        self.best_progress = -1.0
        self.last_improve_step = 0
        self._best_at: dict[int, float] = {}  # step -> best progress, since the policy last got the controls
        self.react_at = 0
        self.phase_start = 0
        self.trigger = ""
        self.goal_subtask = 0
        self.log = []
        self.perturbations = 0
        self._held_ticks = 0
        self._perturb_kind = ""  # the kind of the event in progress
        self._perturb_dir = np.zeros(3)
        self._perturb_gripper = OPEN
        self._perturb_plan = self._plan_perturbation()

    def _plan_perturbation(self) -> tuple[str, int, int] | None:
        """(kind, first step, last step) of this episode's perturbation, or None. Its own generator
        (from the seed and the number of seedless resets since, so a controller that calls reset()
        each episode gets a fresh draw per episode), so turning perturbations on leaves the
        operator's noise sequence unchanged."""
        cfg = self.cfg
        if cfg.perturb_prob <= 0:
            return None
        rng = np.random.default_rng(None if self._seed is None else (int(self._seed), self._episode, 0x5EED))
        if rng.random() >= cfg.perturb_prob:
            return None
        kinds = [k for k in cfg.perturb_kinds if k != "drop" or self.can_hold]
        if not kinds:
            return None
        lo, hi = cfg.perturb_window
        kind = kinds[int(rng.integers(len(kinds)))]
        start = lo if kind == "drop" else int(rng.integers(lo, hi + 1))  # a drop: first carried tick in the window
        self.rng_perturb = rng  # push directions come from the same stream
        return kind, start, hi

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
        self._best_at[step] = self.best_progress
        self._best_at.pop(step - self.cfg.stall_steps - 1, None)
        robot = RobotView.from_state(np.asarray(obs["state"]))
        ts = np.asarray(obs["task_state"])
        self._held_ticks = self._held_ticks + 1 if status.get("held", False) else 0
        trigger = ""
        if mark:
            self.phase = Phase.WATCHING  # episode is over: hands off
        elif self.phase == Phase.WATCHING and self._perturbation_due(step, status):
            self._start_perturbation(step, robot, context.get("policy_action"))
        if self.phase == Phase.PERTURBATION and not mark and step - self.phase_start >= self.cfg.perturb_steps:
            self.phase = Phase.WATCHING  # hand straight back; a fresh stall window for the policy
            self._fresh_window(progress, step)
        if not mark and self.phase == Phase.WATCHING and self.interventions < self.cfg.max_interventions_per_episode:
            if step - self.last_improve_step >= self.cfg.stall_steps:
                trigger = "stall"
            elif self._too_slow(step):
                trigger = "slow"
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
        if self.phase == Phase.PERTURBATION:
            action = self._perturbation_action()
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
                self._fresh_window(progress, step)
            else:
                action = self.expert.act(obs)
        mode, segment = OperatorMode.AUTONOMOUS, Segment.AUTONOMOUS
        if action is not None and self.phase == Phase.PERTURBATION:
            mode, segment = OperatorMode.PERTURBATION, Segment.PERTURBATION
        elif action is not None:
            action = np.asarray(action, np.float32).copy()
            if self.cfg.action_noise_std > 0:
                action[:6] += self.rng.normal(0.0, self.cfg.action_noise_std, 6).astype(np.float32)
            action = np.clip(action, -1.0, 1.0)
            mode = OperatorMode.TAKEOVER
            segment = Segment.RECOVERY if self.phase == Phase.RECOVERY else Segment.CORRECTION
        self.log.append({"step": step, "mode": mode.value, "segment": segment.value, "mark": mark,
                         "trigger": trigger, "phase": self.phase.value, "subtask": status["subtask"],
                         "progress": progress, "interventions": self.interventions,
                         "perturbation": self._perturb_kind if segment == Segment.PERTURBATION else ""})
        return OperatorCommand(timestamp_s=float(obs.get("timestamp_s", 0.0)), mode=mode, action=action,
                               segment=segment, mark=mark, operator_id="sim_operator", device_id="sim")

    def _fresh_window(self, progress: float, step: int) -> None:
        """The policy gets the controls back: its stall and slow windows start now."""
        self.best_progress, self.last_improve_step = progress, step
        self._best_at = {step: progress}

    def _too_slow(self, step: int) -> bool:
        """``stall_min_gain`` > 0: the best progress grew by less than that over the last
        ``stall_steps`` ticks (a crawl that sets a new best every few ticks never stalls)."""
        then = self._best_at.get(step - self.cfg.stall_steps)
        return self.cfg.stall_min_gain > 0 and then is not None and self.best_progress - then < self.cfg.stall_min_gain

    # ------------------------------------------------------------------ perturbations

    def _perturbation_due(self, step: int, status: dict[str, Any]) -> bool:
        plan = self._perturb_plan
        if plan is None or self.perturbations:
            return False
        kind, start, last = plan
        if step > last:
            self._perturb_plan = None  # a drop whose window passed with nothing held: no event
            return False
        return step >= start and (kind != "drop" or self._held_ticks >= DROP_AFTER_HELD_TICKS)

    def _start_perturbation(self, step: int, robot: RobotView, policy_action: Any) -> None:
        kind = self._perturb_plan[0]
        self.phase, self.phase_start, self._perturb_kind = Phase.PERTURBATION, step, kind
        self.perturbations += 1
        rng = self.rng_perturb
        pa = None if policy_action is None else np.asarray(policy_action, np.float64).reshape(-1)
        heading = pa[:3] if pa is not None and pa.shape == (7,) and np.isfinite(pa).all() else np.zeros(3)
        side = np.array([*rng.normal(0.0, 1.0, 2), 0.0])  # a random horizontal component
        side /= max(float(np.linalg.norm(side)), 1e-9)
        n = float(np.linalg.norm(heading))
        d = (-heading / n + 0.5 * side) if n > 0.05 else side  # away from where the policy was heading
        self._perturb_dir = d / max(float(np.linalg.norm(d)), 1e-9)
        if pa is not None and pa.shape == (7,) and np.isfinite(pa[6]):
            self._perturb_gripper = float(pa[6])
        else:
            self._perturb_gripper = OPEN if robot.opening > 0.5 else -OPEN

    def _perturbation_action(self) -> np.ndarray:
        a = np.zeros(7, np.float32)
        if self._perturb_kind == "drop":
            a[6] = OPEN
        else:
            a[:3] = self._perturb_dir * self.cfg.perturb_push_scale
            a[6] = self._perturb_gripper
        return a

    def _subtask_index(self, name: str) -> int:
        try:
            return self.subtasks.index(name)
        except ValueError:
            return 0
