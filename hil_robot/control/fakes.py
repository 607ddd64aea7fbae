"""In-process stand-ins that follow the Robot / Policy / operator contracts exactly, for unit tests
and for timing the loop without MuJoCo. They are not simulators: the kinematic robot moves its
end effector by exactly the commanded delta, which makes safety properties easy to check.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np

from hil_robot import rotations
from hil_robot.config.robot import RobotConfig
from hil_robot.types import ACTION_DIM, STATE_DIM, STATE_LAYOUT, ContractError, OperatorCommand, SentAction


class KinematicRobot:
    """A Robot whose EE follows the commanded delta exactly (metric scales from the robot config).

    clock: callable returning seconds (stamps observations on the controller's time base).
    Refuses non-finite actions with ContractError, so a test fails loudly if one gets through.
    """

    def __init__(self, robot_cfg: RobotConfig, clock: Callable[[], float] = time.monotonic, start_pos_m=(0.5, 0.0, 0.3)) -> None:
        self.cfg = robot_cfg
        self.clock = clock
        self.start_pos = np.asarray(start_pos_m, dtype=np.float64)
        self.sent: list[np.ndarray] = []
        self.stops = 0
        self.prompt = "pick up the cube"
        self.success_at_step: int | None = None
        self.reset()

    def connect(self) -> None:
        pass

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        self.pos = self.start_pos.copy()
        self.quat = np.array([1.0, 0.0, 0.0, 0.0])
        self.gripper_cmd = -1.0
        self.steps = 0
        return self.observe()

    def observe(self) -> dict[str, Any]:
        state = np.zeros(STATE_DIM, dtype=np.float32)
        state[slice(*STATE_LAYOUT["ee_pos"])] = self.pos
        state[slice(*STATE_LAYOUT["ee_quat"])] = self.quat
        state[slice(*STATE_LAYOUT["gripper"])] = (1.0 - self.gripper_cmd) / 2.0
        return {"state": state, "prompt": self.prompt, "timestamp_s": float(self.clock()), "images/front": np.zeros((4, 4, 3), np.uint8)}

    def send_action(self, action: np.ndarray) -> SentAction:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (ACTION_DIM,) or not np.isfinite(a).all():
            raise ContractError(f"kinematic robot got a bad action {a}")
        self.sent.append(a.astype(np.float32))
        self.pos = self.pos + a[:3] * self.cfg.max_delta_pos_m
        dq = rotations.quat_from_rotvec(a[3:6] * self.cfg.max_delta_rot_rad)
        self.quat = rotations.quat_normalize(rotations.quat_mul(dq, self.quat))
        self.gripper_cmd = float(a[6])
        self.steps += 1
        return SentAction(a.astype(np.float32), ())

    def stop(self) -> None:
        self.stops += 1

    def task_status(self) -> dict[str, Any]:
        ok = self.success_at_step is not None and self.steps >= self.success_at_step
        return {"success": ok, "failed": False, "progress": 0.0, "subtask": ""}

    @property
    def metadata(self) -> dict[str, Any]:
        return {"name": "kinematic", "cameras": ["front"], "image_hw": (4, 4), "control_hz": self.cfg.control_hz, "action_dim": ACTION_DIM}

    def __enter__(self) -> "KinematicRobot":
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class ChunkPolicy:
    """A Policy returning ``fn(call_index, obs) -> float[H, 7]`` after ``latency_s`` (real sleep);
    it records the observations it saw and reports ``version``."""

    def __init__(self, fn: Callable[[int, dict[str, Any]], np.ndarray], latency_s: float = 0.0, version: int = 1) -> None:
        self.fn = fn
        self.latency_s = latency_s
        self.version = version
        self.calls = 0
        self.seen: list[dict[str, Any]] = []
        self.resets = 0
        self.threads: set[str] = set()

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        self.threads.add(threading.current_thread().name)
        self.seen.append(obs)
        if self.latency_s:
            time.sleep(self.latency_s)
        out = np.asarray(self.fn(self.calls, obs), dtype=np.float32)
        self.calls += 1
        return {"actions": out, "policy_version": self.version}

    def reset(self) -> None:
        self.resets += 1

    @property
    def metadata(self) -> dict[str, Any]:
        return {"name": "chunk_fake", "action_horizon": None, "action_dim": ACTION_DIM, "cameras": [], "policy_version": self.version}


class ScriptedOperator:
    """An operator source replaying ``script(step, obs, context) -> OperatorCommand | None``."""

    def __init__(self, script: Callable[[int, dict[str, Any], dict[str, Any]], OperatorCommand | None]) -> None:
        self.script = script
        self.log: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.log.clear()

    def command(self, obs: dict[str, Any], context: dict[str, Any]) -> OperatorCommand | None:
        cmd = self.script(int(context["step"]), obs, context)
        self.log.append({"step": context["step"], "mode": None if cmd is None else cmd.mode.value, "segment": None if cmd is None else cmd.segment})
        return cmd

    def close(self) -> None:
        pass
