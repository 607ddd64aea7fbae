"""Scripted experts: one reactive controller per task, reading privileged ``task_state`` and ``state``.

Each expert decides from the current observation alone (no hidden phase), so it can take over from
any state — the simulated operator uses it to correct. ``make_expert(task)`` returns a ``Policy``
(chunk H = 1). ``noise_std`` > 0 gives the ``noisy_expert``: Gaussian noise on the six motion
components (the gripper command stays clean), clipped to [-1, 1].

A plan is a ``Plan`` (TCP target pose, gripper command, speed limit, phase); ``plan_to_action``
turns it into a normalised delta using the robot's per-tick scales.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from hil_robot.config.robot import RobotConfig
from hil_robot.rotations import quat_conj, quat_from_yaw, quat_mul, relative_rotvec, wrap_angle, yaw_of
from hil_robot.types import STATE_LAYOUT
from sim.panda import DOWN_QUAT
from sim.tasks import check_task
from sim.tasks import peg_insert as peg
from sim.tasks import pick_cube as pick
from sim.tasks import push_target as push
from sim.tasks import stack_cubes as stack
from sim.tasks.base import RobotView, in_grasp

PREGRASP_M = 0.08  # hover this far above a grasp point before descending
REFERENCE_HZ = 10.0  # the plans' gains and speeds are per 0.1 s
OPEN, CLOSE = -1.0, 1.0


@dataclasses.dataclass
class Plan:
    pos: np.ndarray  # [3] TCP target, m
    quat: np.ndarray  # [4] TCP target orientation
    gripper: float  # -1 open .. +1 closed
    phase: str
    speed: float = 1.0  # cap on the normalised translation command
    gain: float = 1.0  # fraction of the remaining error commanded per tick (< 1 for fine, lag-free approach)


def gripper_yaw(q: np.ndarray) -> float:
    return yaw_of(quat_mul(q, quat_conj(DOWN_QUAT)))


def down(yaw: float) -> np.ndarray:
    return quat_mul(quat_from_yaw(yaw), DOWN_QUAT)


def aligned_yaw(obj_quat: np.ndarray, tcp_quat: np.ndarray) -> float:
    """Gripper yaw closest to the current one that lines the jaw up with a cube's faces (90 deg symmetry)."""
    cur = gripper_yaw(tcp_quat)
    return cur + wrap_angle(yaw_of(obj_quat) - cur, math.pi / 2)


def plan_to_action(plan: Plan, robot: RobotView, max_pos_m: float, max_rot_rad: float,
                   control_hz: float = REFERENCE_HZ) -> np.ndarray:
    """Normalised delta towards the plan. Gains and speed caps are tuned per 0.1 s and scaled by the
    tick length, so the motion is the same in time at any control rate (10-20 Hz)."""
    k = min(1.0, REFERENCE_HZ / control_hz)
    a = np.empty(7, np.float32)
    dp = plan.gain * k * (plan.pos - robot.tcp_pos) / max_pos_m
    n = float(np.max(np.abs(dp)))
    cap = plan.speed * k
    if n > cap:
        dp *= cap / n  # keep the direction, cap the largest component
    a[:3] = dp
    a[3:6] = np.clip(k * relative_rotvec(plan.quat, robot.tcp_quat) / max_rot_rad, -1.0, 1.0)
    a[6] = plan.gripper
    return a


# ---------------------------------------------------------------------------- per-task planners


def _grasp_plan(robot: RobotView, grasp_pt: np.ndarray, yaw: float, width_m: float) -> Plan:
    """Hover above ``grasp_pt``, descend when lined up, close; re-open and retry after a miss."""
    xy_err = float(np.hypot(*(grasp_pt[:2] - robot.tcp_pos[:2])))
    z_err = abs(float(grasp_pt[2] - robot.tcp_pos[2]))
    yaw_err = abs(wrap_angle(yaw - gripper_yaw(robot.tcp_quat)))
    jaw_m = robot.opening * 0.08
    closing_on_it = xy_err < 0.02 and z_err < 0.015 and jaw_m > width_m - 0.012 and robot.opening < 0.95
    if closing_on_it or (xy_err < 0.006 and z_err < 0.006 and yaw_err < 0.12):
        return Plan(grasp_pt.copy(), down(yaw), CLOSE, "grasp")
    if jaw_m < width_m - 0.012:  # closed on nothing: open up again and hover
        return Plan(np.array([*robot.tcp_pos[:2], grasp_pt[2] + PREGRASP_M]), down(yaw), OPEN, "reach")
    if xy_err < 0.012 and yaw_err < 0.15 and robot.opening > 0.9:
        return Plan(grasp_pt.copy(), down(yaw), OPEN, "descend", speed=0.8)
    hover = grasp_pt + np.array([0.0, 0.0, PREGRASP_M])
    if robot.tcp_pos[2] < grasp_pt[2] + 0.03 and xy_err > 0.02:  # low and off to the side: rise first
        hover[:2] = robot.tcp_pos[:2]
    return Plan(hover, down(yaw), OPEN, "reach")


def plan_pick_cube(robot: RobotView, ts: np.ndarray) -> Plan:
    cube, cq = ts[0:3].astype(float), ts[3:7].astype(float)
    if in_grasp(robot, cube, 2 * pick.CUBE_HALF_M):
        tgt = np.array([*robot.tcp_pos[:2], pick.CUBE_HALF_M + pick.LIFT_M + 0.03])
        return Plan(tgt, down(gripper_yaw(robot.tcp_quat)), CLOSE, "lift")
    return _grasp_plan(robot, cube, aligned_yaw(cq, robot.tcp_quat), 2 * pick.CUBE_HALF_M)


def plan_push_target(robot: RobotView, ts: np.ndarray) -> Plan:
    obj, tgt = ts[0:2].astype(float), ts[7:9].astype(float)
    direction, pre = push.push_geometry(obj, tgt)
    rel = robot.tcp_pos[:2] - obj
    along = float(rel @ direction)
    lateral = float(rel[0] * direction[1] - rel[1] * direction[0])
    dist = float(np.linalg.norm(tgt - obj))
    q = down(0.0)
    if along < -push.BLOCK_HALF_M + 0.005 and abs(lateral) < 0.012 and robot.tcp_pos[2] < 0.04:
        # pushing: advance along the line, steer back onto the line through the block centre
        perp = np.array([direction[1], -direction[0]])
        step = direction * min(dist, 0.6 * 0.02) - perp * lateral * 0.8
        return Plan(np.array([*(robot.tcp_pos[:2] + step), push.PUSH_HEIGHT_M]), q, CLOSE, "push")
    far = float(np.linalg.norm(robot.tcp_pos[:2] - pre))
    travel_z = 2 * push.BLOCK_HALF_M + 0.025
    if far > 0.012:
        if robot.tcp_pos[2] < travel_z - 0.01 and float(np.linalg.norm(rel)) < 0.08:  # near the block and low: rise
            return Plan(np.array([*robot.tcp_pos[:2], travel_z]), q, CLOSE, "reach")
        return Plan(np.array([*pre, max(travel_z, push.PUSH_HEIGHT_M)]), q, CLOSE, "reach")
    return Plan(np.array([*pre, push.PUSH_HEIGHT_M]), q, CLOSE, "descend", speed=0.8)


def plan_peg_insert(robot: RobotView, ts: np.ndarray) -> Plan:
    pos, quat, hole = ts[0:3].astype(float), ts[3:7].astype(float), ts[7:9].astype(float)
    grasp_pt = pos + np.array([0.0, 0.0, peg.GRASP_ABOVE_CENTRE_M])
    yaw = gripper_yaw(robot.tcp_quat) if abs(gripper_yaw(robot.tcp_quat)) < 0.3 else 0.0
    if not in_grasp(robot, grasp_pt, 2 * peg.PEG_RADIUS_M):
        return _grasp_plan(robot, grasp_pt, 0.0 if abs(yaw) >= 0.3 else yaw, 2 * peg.PEG_RADIUS_M)
    tip = peg.peg_tip(pos, quat)
    offset = robot.tcp_pos - tip  # the peg moves with the hand: steer the tip, command the TCP
    xy_err = float(np.linalg.norm(hole - tip[:2]))
    rim = peg.WALL_HEIGHT_M
    q = down(yaw)
    if tip[2] < rim - 0.002 and xy_err < peg.HOLE_HALF_M:  # in the hole: push it home
        return Plan(np.array([*(hole + offset[:2]), offset[2] - 0.01]), q, CLOSE, "insert", speed=0.5, gain=0.5)
    if tip[2] < rim + 0.008 and xy_err > 0.01:  # still low and away from the hole: lift straight up
        return Plan(np.array([*robot.tcp_pos[:2], rim + 0.025 + offset[2]]), q, CLOSE, "lift")
    if xy_err < 0.0025:
        return Plan(np.array([*(hole + offset[:2]), offset[2] - 0.01]), q, CLOSE, "insert", speed=0.4, gain=0.5)
    fine = xy_err < 0.02
    return Plan(np.array([*(hole + offset[:2]), rim + 0.015 + offset[2]]), q, CLOSE, "align",
                speed=0.3 if fine else 1.0, gain=0.5 if fine else 1.0)


def plan_stack_cubes(robot: RobotView, ts: np.ndarray) -> Plan:
    top, tq, base = ts[0:3].astype(float), ts[3:7].astype(float), ts[7:10].astype(float)
    base_top = base[2] + stack.BASE_HALF_M
    xy_err = float(np.linalg.norm(base[:2] - top[:2]))
    on_base = xy_err < 0.02 and abs(top[2] - (base_top + stack.TOP_HALF_M)) < 0.008
    q_now = down(gripper_yaw(robot.tcp_quat))
    if in_grasp(robot, top, 2 * stack.TOP_HALF_M):
        offset = robot.tcp_pos - top
        bottom = top[2] - stack.TOP_HALF_M
        if on_base and xy_err < 0.012:
            return Plan(robot.tcp_pos.copy(), q_now, OPEN, "release")
        if bottom < base_top + 0.012 and xy_err > 0.015:  # lift clear of the base cube first
            return Plan(np.array([*robot.tcp_pos[:2], base_top + 0.04 + stack.TOP_HALF_M + offset[2]]), q_now, CLOSE, "lift")
        if xy_err < 0.005:
            z = base_top + stack.TOP_HALF_M + 0.002 + offset[2]
            return Plan(np.array([*(base[:2] + offset[:2]), z]), q_now, CLOSE, "place", speed=0.5, gain=0.5)
        z = base_top + 0.03 + stack.TOP_HALF_M + offset[2]
        fine = xy_err < 0.02
        return Plan(np.array([*(base[:2] + offset[:2]), z]), q_now, CLOSE, "place", speed=0.4 if fine else 1.0,
                    gain=0.5 if fine else 1.0)
    if on_base:  # released (or never grasped but resting there): open and back off upwards
        return Plan(np.array([*robot.tcp_pos[:2], top[2] + 0.08]), q_now, OPEN, "release")
    return _grasp_plan(robot, top, aligned_yaw(tq, robot.tcp_quat), 2 * stack.TOP_HALF_M)


PLANNERS: dict[str, Callable[[RobotView, np.ndarray], Plan]] = {
    "pick_cube": plan_pick_cube,
    "push_target": plan_push_target,
    "peg_insert": plan_peg_insert,
    "stack_cubes": plan_stack_cubes,
}


def recovery_plan(task: str, robot: RobotView, ts: np.ndarray) -> Plan:
    """A familiar state to back off to before correcting: the expert's hover pose for its next step.

    Not holding anything: hover above the grasp (or pre-push) point with the jaw as the expert wants
    it. Holding: lift straight up to a safe carrying height, keeping the grasp.
    """
    plan = PLANNERS[task](robot, ts)
    if plan.gripper == CLOSE and plan.phase not in ("grasp", "reach", "descend"):  # holding something
        return Plan(np.array([*robot.tcp_pos[:2], max(robot.tcp_pos[2], 0.14)]), plan.quat, CLOSE, "recover")
    if task == "push_target":
        _, pre = push.push_geometry(ts[0:2].astype(float), ts[7:9].astype(float))
        return Plan(np.array([*pre, 2 * push.BLOCK_HALF_M + 0.025]), down(0.0), CLOSE, "recover")
    obj = ts[0:3].astype(float)
    if task == "peg_insert":
        obj = obj + np.array([0.0, 0.0, peg.GRASP_ABOVE_CENTRE_M])
    yaw = aligned_yaw(ts[3:7].astype(float), robot.tcp_quat) if task != "peg_insert" else 0.0
    return Plan(obj + np.array([0.0, 0.0, PREGRASP_M]), down(yaw), OPEN, "recover")


# ---------------------------------------------------------------------------- the Policy


class ScriptedExpert:
    """``Policy`` for one task. obs needs ``state`` [15] and ``task_state`` [14]."""

    def __init__(self, task: str, robot_cfg: RobotConfig | None = None, noise_std: float = 0.0,
                 seed: int | None = None) -> None:
        self.task = check_task(task)
        self.robot_cfg = robot_cfg or RobotConfig()
        self.noise_std = float(noise_std)
        self._seed = seed
        self.rng = np.random.default_rng(seed)
        self.planner = PLANNERS[self.task]
        self.last_plan: Plan | None = None

    def plan(self, obs: dict[str, Any]) -> Plan:
        if "task_state" not in obs:
            raise ValueError("the scripted expert needs the privileged obs['task_state'] (sim observations carry it)")
        return self.planner(RobotView.from_state(np.asarray(obs["state"])), np.asarray(obs["task_state"]))

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        """One normalised action float32[7]."""
        plan = self.plan(obs)
        self.last_plan = plan
        robot = RobotView.from_state(np.asarray(obs["state"]))
        rc = self.robot_cfg
        a = plan_to_action(plan, robot, rc.max_delta_pos_m, rc.max_delta_rot_rad, rc.control_hz)
        if self.noise_std > 0:
            a[:6] += self.rng.normal(0.0, self.noise_std, 6).astype(np.float32)
        return np.clip(a, -1.0, 1.0)

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        return {"actions": self.act(obs)[None, :], "policy_version": 0, "phase": self.last_plan.phase}

    def reset(self) -> None:
        self.last_plan = None
        if self._seed is not None:
            self.rng = np.random.default_rng(self._seed)

    def seed(self, seed: int | None) -> None:
        self._seed = seed
        self.rng = np.random.default_rng(seed)

    @property
    def metadata(self) -> dict[str, Any]:
        return {"name": "noisy_expert" if self.noise_std > 0 else "expert", "task": self.task,
                "action_horizon": 1, "action_dim": 7, "cameras": (), "policy_version": 0,
                "noise_std": self.noise_std, "needs": ("state", "task_state")}


def make_expert(task: str, robot_cfg: RobotConfig | None = None, noise_std: float = 0.0,
                seed: int | None = None) -> ScriptedExpert:
    """The scripted expert ``Policy`` for ``task`` (``noise_std`` > 0: the noisy expert)."""
    return ScriptedExpert(task, robot_cfg, noise_std, seed)


_ = STATE_LAYOUT  # the expert reads state through RobotView (layout in hil_robot.types)
