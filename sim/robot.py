"""``SimRobot``: the MuJoCo cell behind the ``Robot`` protocol (the sim is just another robot).

    with SimRobot(sim_cfg, robot_cfg, seed=0) as robot:
        obs = robot.reset()
        sent = robot.send_action(np.zeros(7, np.float32))   # SentAction(action, limits)
        obs = robot.observe(); robot.task_status()           # {"success", "failed", "progress", "subtask", ...}

Out-of-range actions are clipped and NaN/Inf actions become "hold"; every such event is named in
``SentAction.limits`` and counted in ``limit_counts``.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from hil_robot.config.robot import RobotConfig
from hil_robot.config.sim import SimConfig
from hil_robot.rotations import quat_conj, quat_mul, quat_to_rotvec
from hil_robot.types import IMAGE_PREFIX, SentAction
from sim.render import CameraRenderer
from sim.world import SimWorld


class SimRobot:
    def __init__(self, sim_cfg: SimConfig | None = None, robot_cfg: RobotConfig | None = None,
                 seed: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.sim_cfg = sim_cfg or SimConfig()
        self.robot_cfg = robot_cfg or RobotConfig()
        self.seed = seed
        self.clock = clock
        self.world: SimWorld | None = None
        self._renderer: CameraRenderer | None = None

    # ------------------------------------------------------------------ lifecycle

    def connect(self) -> None:
        if self.world is None:
            self.world = SimWorld(self.sim_cfg, self.robot_cfg, self.seed)
        if self.sim_cfg.render and self._renderer is None:
            self._renderer = CameraRenderer(self.world.model, self.sim_cfg.image_height, self.sim_cfg.image_width,
                                            self.sim_cfg.shadows)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self.world = None

    def __enter__(self) -> "SimRobot":
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.world is not None:
            self.stop()
        self.close()

    @property
    def _w(self) -> SimWorld:
        if self.world is None:
            self.connect()
        assert self.world is not None
        return self.world

    # ------------------------------------------------------------------ Robot protocol

    def reset(self, seed: int | None = None) -> dict[str, Any]:
        """Start a new episode (seeded: same seed -> same layout, colours, lights and cameras)."""
        self._w.reset(seed)
        return self.observe()

    def observe(self) -> dict[str, Any]:
        w = self._w
        obs: dict[str, Any] = {}
        if self.sim_cfg.render:
            if self._renderer is None:
                self.connect()
            for cam in self.sim_cfg.cameras:
                obs[IMAGE_PREFIX + cam] = self._renderer.render(w.data, cam)
        obs["state"] = w.state()
        obs["task_state"] = w.task_state()
        obs["prompt"] = w.task.prompt
        obs["timestamp_s"] = float(self.clock())
        return obs

    def send_action(self, action: np.ndarray) -> SentAction:
        applied, limits = self._w.apply_action(action)
        return SentAction(applied, limits)

    def send_pose_target(self, pose8: np.ndarray) -> SentAction:
        """Absolute TCP target [x, y, z, qw, qx, qy, qz, gripper]; returns the equivalent normalised delta."""
        w = self._w
        prev_pos, prev_quat = w.target_pos.copy(), w.target_quat.copy()
        applied, limits = w.apply_pose_target(pose8)
        delta = np.empty(7, np.float32)
        delta[:3] = (applied[:3] - prev_pos) / w.max_pos
        delta[3:6] = quat_to_rotvec(quat_mul(applied[3:7], quat_conj(prev_quat))) / w.max_rot
        delta[6] = applied[7]
        return SentAction(delta, limits)

    def stop(self) -> None:
        """Hold: joint targets := the current joint angles, pose target := the measured pose."""
        w = self._w
        q = w.data.qpos[w.arm_qadr].copy()
        w.q_target = q
        w._q_ctrl = q.copy()
        w.data.ctrl[:7] = q
        w.target_pos, w.target_quat = w.tcp_pose()

    def task_status(self) -> dict[str, Any]:
        return self._w.status()

    @property
    def limit_counts(self) -> dict[str, int]:
        return dict(self._w.limit_counts)

    @property
    def metadata(self) -> dict[str, Any]:
        w = self._w
        return {
            "name": self.robot_cfg.name, "kind": "sim", "task": self.sim_cfg.task, "prompt": w.task.prompt,
            "subtasks": w.task.subtasks, "cameras": tuple(self.sim_cfg.cameras) if self.sim_cfg.render else (),
            "image_hw": (self.sim_cfg.image_height, self.sim_cfg.image_width), "control_hz": self.robot_cfg.control_hz,
            "physics_dt_s": float(w.model.opt.timestep), "substeps": w.substeps, "action_dim": 7,
            "state_dim": 15, "task_state_dim": 14, "max_episode_steps": self.sim_cfg.max_episode_steps,
            "max_delta_pos_m": self.robot_cfg.max_delta_pos_m, "max_delta_rot_rad": self.robot_cfg.max_delta_rot_rad,
        }

    def render_frame(self, camera: str = "front") -> np.ndarray:
        """One uint8 [H, W, 3] image from ``camera`` (for videos), independent of sim.cameras."""
        if self._renderer is None:
            w = self._w
            self._renderer = CameraRenderer(w.model, self.sim_cfg.image_height, self.sim_cfg.image_width,
                                            self.sim_cfg.shadows)
        return self._renderer.render(self._w.data, camera)
