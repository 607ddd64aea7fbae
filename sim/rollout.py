"""A small episode loop with operator arbitration (the full controller lives in hil_robot.control).

Each tick: the policy proposes an action; the operator sees the observation, the proposal and the
task status and returns an ``OperatorCommand``; while it has taken over, its action replaces the
policy's on the DoFs in ``dof_mask``. The episode ends when the operator marks success/failure
(or, without an operator, when the task status says so) or after ``max_steps``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import numpy as np

from hil_robot.types import OperatorMode, Policy, Segment
from sim.robot import SimRobot


@dataclasses.dataclass
class EpisodeResult:
    seed: int | None
    success: bool
    outcome: str  # "success" | "failure" | "timeout"
    steps: int
    interventions: int  # takeovers (not steps)
    segments: list[str]  # per executed step, with pre_intervention relabelled
    limit_counts: dict[str, int]
    frames: list[np.ndarray]
    actions: np.ndarray  # [T, 7] executed
    policy_actions: np.ndarray  # [T, 7]
    operator_log: list[dict[str, Any]]
    perturbations: int = 0  # deliberate perturbation events (not counted as interventions)

    @property
    def segment_counts(self) -> dict[str, int]:
        c = Counter(self.segments)
        return {s.value: c.get(s.value, 0) for s in Segment if c.get(s.value, 0)}


def relabel_pre_intervention(segments: list[str], k: int) -> list[str]:
    """Mark the last ``k`` autonomous steps before each takeover as ``pre_intervention``."""
    out = list(segments)
    human = {Segment.RECOVERY.value, Segment.CORRECTION.value}
    for t in range(1, len(out)):
        if out[t] in human and segments[t - 1] == Segment.AUTONOMOUS.value:
            j = t - 1
            while j >= 0 and t - j <= k and out[j] == Segment.AUTONOMOUS.value:
                out[j] = Segment.PRE_INTERVENTION.value
                j -= 1
    return out


def video_frame(obs: dict[str, Any], robot: SimRobot) -> np.ndarray:
    """All camera images side by side (uint8 [H, W * n_cams, 3]); renders the front camera if none."""
    imgs = [obs[k] for k in sorted(obs) if k.startswith("images/")]
    return np.concatenate(imgs, axis=1) if imgs else robot.render_frame("front")


def run_episode(robot: SimRobot, policy: Policy, operator: Any | None = None, seed: int | None = None,
                max_steps: int | None = None, pre_intervention_k: int = 15, record_video: bool = False) -> EpisodeResult:
    max_steps = max_steps or robot.sim_cfg.max_episode_steps
    obs = robot.reset(seed)
    policy.reset()
    if operator is not None:
        operator.reset()
    frames, segments, executed, proposed = [], [], [], []
    interventions, perturbations, outcome, prev_mode = 0, 0, "timeout", OperatorMode.AUTONOMOUS
    if record_video:
        frames.append(video_frame(obs, robot))
    for step in range(max_steps):
        status = robot.task_status()
        a_pol = np.asarray(policy.infer(obs)["actions"], np.float32)[0]
        if operator is not None:
            cmd = operator.command(obs, {"policy_action": a_pol, "step": step, "task_status": status})
            if cmd.mark:
                outcome = cmd.mark
                break
            mode, segment = cmd.mode, (cmd.segment or Segment.AUTONOMOUS)
        else:
            if status["success"] or status["failed"]:
                outcome = "success" if status["success"] else "failure"
                break
            cmd, mode, segment = None, OperatorMode.AUTONOMOUS, Segment.AUTONOMOUS
        if mode != prev_mode and mode == OperatorMode.TAKEOVER:
            interventions += 1
        elif mode != prev_mode and mode == OperatorMode.PERTURBATION:
            perturbations += 1
        prev_mode = mode
        if cmd is not None and mode != OperatorMode.AUTONOMOUS and cmd.pose_target is not None:
            sent = robot.send_pose_target(cmd.pose_target)
        elif cmd is not None and mode != OperatorMode.AUTONOMOUS and cmd.action is not None:
            sent = robot.send_action(np.where(cmd.dof_mask, cmd.action, a_pol).astype(np.float32))
        else:
            sent = robot.send_action(a_pol)
        executed.append(sent.action)
        proposed.append(a_pol)
        segments.append(Segment(segment).value)
        obs = robot.observe()
        if record_video:
            frames.append(video_frame(obs, robot))
    else:
        status = robot.task_status()  # the last tick's outcome (the loop ran out of steps)
        if status["success"]:
            outcome = "success"
    return EpisodeResult(
        seed=seed, success=outcome == "success", outcome=outcome, steps=len(executed), interventions=interventions,
        segments=relabel_pre_intervention(segments, pre_intervention_k), limit_counts=robot.limit_counts,
        frames=frames, actions=np.array(executed, np.float32).reshape(-1, 7),
        policy_actions=np.array(proposed, np.float32).reshape(-1, 7),
        operator_log=list(getattr(operator, "log", [])), perturbations=perturbations,
    )
