"""What every task provides: objects (MJCF), seeded placement, privileged state and a status check.

``task_state`` has the same layout for every task (K = 14, float32)::

    [0:3]  object A position (m)      the object the gripper handles (cube, puck, peg, top cube)
    [3:7]  object A quaternion (wxyz)
    [7:10] object B position (m)      the goal: lift point, target disc, hole, base cube
    [10:14] object B quaternion (wxyz)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import mujoco
import numpy as np

from hil_robot.types import STATE_LAYOUT

TASK_STATE_DIM = 14
WORKSPACE_XY_MIN = (0.2, -0.4)  # objects leaving this box have left the robot's reach: failure
WORKSPACE_XY_MAX = (0.8, 0.4)
EDGE_MARGIN_M = 0.04  # within this of the box edge: failure is imminent (operator trigger)


@dataclasses.dataclass
class RobotView:
    """The robot quantities a status check needs, cut from the state vector."""

    tcp_pos: np.ndarray  # [3] m
    tcp_quat: np.ndarray  # [4]
    opening: float  # 0 closed .. 1 open

    @classmethod
    def from_state(cls, state: np.ndarray) -> "RobotView":
        p0, p1 = STATE_LAYOUT["ee_pos"]
        q0, q1 = STATE_LAYOUT["ee_quat"]
        g0, _ = STATE_LAYOUT["gripper"]
        return cls(np.asarray(state[p0:p1], float), np.asarray(state[q0:q1], float), float(state[g0]))


def status_dict(success: bool, failed: bool, progress: float, subtask: str, risk: bool = False, **extra: Any) -> dict:
    """``task_status()`` result. ``risk``: failure is imminent (the simulated operator reacts to it)."""
    out = {"success": bool(success), "failed": bool(failed) and not success,
           "progress": float(min(1.0, max(0.0, progress))), "subtask": subtask, "risk": bool(risk)}
    out.update(extra)
    return out


def out_of_workspace(xy: np.ndarray, margin: float = 0.0) -> bool:
    return bool(
        xy[0] < WORKSPACE_XY_MIN[0] + margin or xy[0] > WORKSPACE_XY_MAX[0] - margin
        or xy[1] < WORKSPACE_XY_MIN[1] + margin or xy[1] > WORKSPACE_XY_MAX[1] - margin
    )


class Task:
    """Base class; subclasses set the class attributes and implement the four methods below."""

    name: str = ""
    prompt: str = ""
    subtasks: tuple[str, ...] = ()
    # sub-tasks an operator may hand back at (not mid-grasp or mid-insertion, where a person finishes the move)
    handback_subtasks: tuple[str, ...] = ()
    colour_geoms: tuple[str, ...] = ()  # geoms whose colour domain randomisation changes

    def objects_xml(self) -> str:
        raise NotImplementedError

    def bind(self, model: mujoco.MjModel) -> None:
        """Resolve names to ids once after compiling."""
        raise NotImplementedError

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, rng: np.random.Generator, randomize: bool) -> None:
        """Place objects (and goals) for a new episode; ``randomize`` False = the nominal layout."""
        raise NotImplementedError

    def task_state(self, data: mujoco.MjData) -> np.ndarray:
        raise NotImplementedError

    def status(self, data: mujoco.MjData, robot: RobotView) -> dict:
        raise NotImplementedError

    # ----------------------------------------------------------------- helpers for subclasses

    @staticmethod
    def free_qpos_adr(model: mujoco.MjModel, joint: str) -> int:
        return int(model.jnt_qposadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint)])

    @staticmethod
    def free_dof_adr(model: mujoco.MjModel, joint: str) -> int:
        return int(model.jnt_dofadr[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint)])

    @staticmethod
    def body_id(model: mujoco.MjModel, body: str) -> int:
        return int(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body))

    @staticmethod
    def place_free(data: mujoco.MjData, qadr: int, dadr: int, pos, yaw: float) -> None:
        data.qpos[qadr : qadr + 3] = pos
        data.qpos[qadr + 3 : qadr + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        data.qvel[dadr : dadr + 6] = 0.0

    @staticmethod
    def sample_xy(rng: np.random.Generator, lo=(0.45, -0.15), hi=(0.6, 0.15)) -> np.ndarray:
        return np.array([rng.uniform(lo[0], hi[0]), rng.uniform(lo[1], hi[1])])


GRIPPER_MAX_OPENING_M = 0.08


def in_grasp(robot: RobotView, obj_pos: np.ndarray, width_m: float) -> bool:
    """True when the object sits between the fingers and the jaw is closed on it."""
    d = obj_pos - robot.tcp_pos
    jaw_m = robot.opening * GRIPPER_MAX_OPENING_M
    return bool(np.hypot(d[0], d[1]) < 0.02 and abs(d[2]) < 0.03 and -0.006 < width_m - jaw_m < 0.012)


def clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))
