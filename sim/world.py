"""The simulated cell: MuJoCo model + data, end-effector control through IK, observations, status.

``SimWorld`` is the one place that touches physics; the Gymnasium env and ``SimRobot`` wrap it.

Control per tick (``1 / robot_cfg.control_hz`` s): the normalised action is checked (NaN/Inf ->
hold, out of [-1, 1] -> clipped, each counted), scaled to metres/radians, added to the pose target,
clipped to the workspace box, turned into joint targets by DLS IK once, and tracked by joint
position actuators for ``substeps = round(1 / (control_hz * dt))`` physics steps (a few C calls,
the joint target ramped across them).
"""

from __future__ import annotations

import math
from collections import Counter

import mujoco
import numpy as np

from hil_robot.config.robot import RobotConfig
from hil_robot.config.sim import SimConfig
from hil_robot.rotations import quat_normalize
from hil_robot.types import ACTION_DIM, STATE_DIM
from sim import panda
from sim.ik import DampedLeastSquaresIK, as_slice
from sim.scene import build_xml
from sim.visual import Appearance
from sim.tasks import make_task
from sim.tasks.base import RobotView

HOME_TCP_POS = np.array([0.45, 0.0, 0.25])  # start pose: above the middle of the workspace, pointing down
RESYNC_M = 0.02  # pose target further than this from the measured TCP (blocked by contact) -> restart from measured
MIN_TCP_Z_M = 0.005  # never command the TCP into the table


class SimWorld:
    def __init__(self, sim_cfg: SimConfig, robot_cfg: RobotConfig, seed: int | None = None) -> None:
        self.sim_cfg, self.robot_cfg = sim_cfg, robot_cfg
        self.task = make_task(sim_cfg.task)
        self.model = mujoco.MjModel.from_xml_string(build_xml(self.task.objects_xml(), sim_cfg))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.task.bind(m)
        jid = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"joint{i + 1}") for i in range(7)]
        # contiguous address ranges become slices: numpy views instead of fancy-index copies every tick
        self.arm_qadr = as_slice(np.array([m.jnt_qposadr[j] for j in jid]))
        self.arm_dadr = as_slice(np.array([m.jnt_dofadr[j] for j in jid]))
        self.finger_qadr = np.array([m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"finger_{s}")]
                                     for s in ("left", "right")])
        self._finger_lr = (int(self.finger_qadr[0]), int(self.finger_qadr[1]))
        self.finger_dadr = np.array([m.jnt_dofadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"finger_{s}")]
                                     for s in ("left", "right")])
        self.tcp_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "tcp")
        self.limits = np.array(panda.JOINT_LIMITS_RAD)
        self.ik = DampedLeastSquaresIK(m, "tcp", [m.jnt_qposadr[j] for j in jid], [m.jnt_dofadr[j] for j in jid],
                                       self.limits, np.array(panda.READY_QPOS))
        # the start pose: TCP at HOME_TCP_POS pointing straight down, solved once from Franka's ready pose
        ready_pos, ready_quat = self.ik.fk(np.array(panda.READY_QPOS))
        self.down_quat = ready_quat / np.linalg.norm(ready_quat)  # "pointing down, zero yaw" reference orientation
        home = self.ik.solve(HOME_TCP_POS, self.down_quat, np.array(panda.READY_QPOS), max_iters=200)
        self.home_qpos = home.qpos
        self.ik.q_home = home.qpos.copy()
        self.substeps = substeps_for(robot_cfg.control_hz, m.opt.timestep)
        self._chunks = min(self.substeps, sim_cfg.ctrl_ramp_chunks)
        bounds = [(self.substeps * k) // self._chunks for k in range(self._chunks + 1)]
        self._chunk_steps = [b - a for a, b in zip(bounds[:-1], bounds[1:])]  # sums to substeps, all > 0
        self._ramp_fractions = np.arange(1, self._chunks + 1) / self._chunks
        self.ws_min = np.array(robot_cfg.safety.workspace_min_m, float)
        self.ws_max = np.array(robot_cfg.safety.workspace_max_m, float)
        self.ws_min[2] = max(self.ws_min[2], MIN_TCP_Z_M)
        self.max_pos, self.max_rot = robot_cfg.max_delta_pos_m, robot_cfg.max_delta_rot_rad
        self.appearance = Appearance(m, self.task.colour_geoms)  # nominal visuals that randomisation perturbs
        self.rng = np.random.default_rng(seed)
        self.limit_counts: Counter[str] = Counter()
        self._quat = np.zeros(4)
        self._dq = np.zeros(4)
        self._ctrl_arm, self._ctrl_fingers = self.data.ctrl[:7], self.data.ctrl[7:9]  # views, kept for the data's life
        self.reset()

    # ------------------------------------------------------------------ episode

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        m, d, rng = self.model, self.data, self.rng
        mujoco.mj_resetData(m, d)
        randomize = self.sim_cfg.randomize
        self.appearance.nominal()
        q0 = self.home_qpos + (rng.uniform(-0.03, 0.03, 7) if randomize else 0.0)
        d.qpos[self.arm_qadr] = q0
        d.qpos[self.finger_qadr] = panda.FINGER_TRAVEL_M
        self.task.reset(m, d, rng, randomize)
        if randomize or self.sim_cfg.visual == "heldout":  # last: the physics draws above stay the same
            self.appearance.apply(rng, self.sim_cfg)
        d.ctrl[:7] = q0
        d.ctrl[7:9] = panda.FINGER_TRAVEL_M
        mujoco.mj_forward(m, d)
        self.q_target = q0.copy()
        self._q_ctrl = q0.copy()
        self.gripper_cmd = -1.0
        self.target_pos, self.target_quat = self.tcp_pose()
        self.steps = 0
        self.limit_counts = Counter()
        self._state = None

    # ------------------------------------------------------------------ control

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        mujoco.mju_mat2Quat(self._quat, self.data.site_xmat[self.tcp_site])
        q = self._quat.copy()
        if q @ self.down_quat < 0:  # one sign for 'gripper roughly down' poses, so the state has no jumps
            q = -q
        return self.data.site_xpos[self.tcp_site].copy(), q

    def apply_action(self, action: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
        """Normalised EE delta [7] -> one control tick. Returns (action actually applied, limits fired)."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},) [dx,dy,dz,drx,dry,drz,gripper], got {a.shape}")
        limits: list[str] = []
        peak = float(np.abs(a).max())  # NaN/Inf -> not finite: one reduction checks both cases
        if not math.isfinite(peak):
            limits.append("nan_hold")  # hold pose and gripper; nothing non-finite reaches physics
            a = np.array([0, 0, 0, 0, 0, 0, self.gripper_cmd], dtype=np.float64)
        elif peak > 1.0:
            limits.append("clip_action")
            a = np.clip(a, -1.0, 1.0)
        st = self._cached_state()
        pos, quat = st[0:3].astype(np.float64), st[3:7].astype(np.float64)
        base_pos, base_quat = self.target_pos, self.target_quat
        dp = base_pos - pos
        if dp @ dp > RESYNC_M * RESYNC_M:
            base_pos, base_quat = pos, quat
        target_pos = base_pos + a[:3] * self.max_pos
        target_quat = self._rotated(a[3:6] * self.max_rot, base_quat)
        limits += self._set_target(target_pos, target_quat, float(a[6]), iters=self.sim_cfg.ik_iterations)
        if limits:
            self.limit_counts.update(limits)
        return a.astype(np.float32), tuple(limits)

    def _rotated(self, rotvec: np.ndarray, quat: np.ndarray) -> np.ndarray:
        """Unit quaternion (w >= 0) of the world-frame rotation ``rotvec`` [3] rad applied to ``quat`` [4]
        (MuJoCo's C quaternion routines: this runs every tick)."""
        out = np.empty(4)
        angle = math.sqrt(float(rotvec @ rotvec))
        if angle < 1e-12:
            out[:] = quat
        else:
            mujoco.mju_axisAngle2Quat(self._dq, rotvec / angle, angle)
            mujoco.mju_mulQuat(out, self._dq, quat)
        if mujoco.mju_normalize4(out) < 1e-12:
            out[:] = (1.0, 0.0, 0.0, 0.0)
        if out[0] < 0:
            np.negative(out, out=out)
        return out

    def apply_pose_target(self, pose8: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
        """Absolute target: pos[3] m, quat[4] wxyz, gripper[1] in [-1, 1] -> one control tick."""
        p = np.asarray(pose8, dtype=np.float64).reshape(-1)
        if p.shape != (8,):
            raise ValueError(f"pose target must have shape (8,) [x,y,z,qw,qx,qy,qz,gripper], got {p.shape}")
        limits: list[str] = []
        if not np.all(np.isfinite(p)) or np.linalg.norm(p[3:7]) < 1e-6:
            limits.append("nan_hold")
            p = np.concatenate([self.target_pos, self.target_quat, [self.gripper_cmd]])
        if abs(p[7]) > 1.0:
            limits.append("clip_action")
        limits += self._set_target(p[:3], quat_normalize(p[3:7]), float(np.clip(p[7], -1, 1)), iters=30)
        if limits:
            self.limit_counts.update(limits)
        return np.concatenate([self.target_pos, self.target_quat, [self.gripper_cmd]]).astype(np.float32), tuple(limits)

    def _set_target(self, pos: np.ndarray, quat: np.ndarray, gripper: float, iters: int) -> list[str]:
        limits = []
        clipped = np.minimum(np.maximum(pos, self.ws_min), self.ws_max)
        if (clipped != pos).any():
            limits.append("workspace")
        prev_target = self.target_pos
        self.target_pos, self.target_quat = clipped, quat
        self.gripper_cmd = min(1.0, max(-1.0, float(gripper)))
        if iters > 2:  # absolute pose target: converge now and check the result
            res = self.ik.solve(clipped, quat, self.q_target, max_iters=iters)
            unreachable = res.pos_err_m > 0.01 or res.rot_err_rad > 0.1
        else:  # per tick: warm-started, the residual of the previous tick tells whether IK keeps up
            res = self.ik.solve(clipped, quat, self.q_target, max_iters=iters, final_check=False)
            r = res.start_pos - prev_target if res.start_pos is not None else np.zeros(3)
            unreachable = float(r @ r) > 0.01 * 0.01
        if unreachable:
            limits.append("ik_unreachable")
        self.q_target = res.qpos
        self._step_physics()
        return limits

    def _step_physics(self) -> None:
        """Advance one control tick. The joint target is ramped from the last one in a few chunks so
        all joints move together (a straight joint-space path, no Cartesian wobble from uneven lag);
        each chunk is one ``mj_step(..., nstep=n)`` call with constant ctrl."""
        m, d, arm = self.model, self.data, self._ctrl_arm
        self._ctrl_fingers[:] = panda.FINGER_TRAVEL_M * (1.0 - self.gripper_cmd) * 0.5
        q0, q1 = self._q_ctrl, self.q_target
        ramp = np.multiply.outer(self._ramp_fractions, q1 - q0)  # [chunks, 7]
        ramp += q0
        for row, n in zip(ramp, self._chunk_steps):
            arm[:] = row
            mujoco.mj_step(m, d, nstep=n)
        self._q_ctrl = q1
        self.steps += 1
        self._state = None

    def hold(self) -> None:
        """Keep the current joint targets for one more tick (stop/hold)."""
        self._step_physics()

    # ------------------------------------------------------------------ observation

    def state(self) -> np.ndarray:
        """float32[15]: ee_pos, ee_quat, gripper opening (0 closed .. 1 open), 7 joint angles (a copy)."""
        return self._cached_state().copy()

    def _cached_state(self) -> np.ndarray:
        """The state of this tick, computed once (read-only use: not a copy)."""
        if self._state is None:
            self._state = self._compute_state()
        return self._state

    def _compute_state(self) -> np.ndarray:
        d, q = self.data, self._quat
        mujoco.mju_mat2Quat(q, d.site_xmat[self.tcp_site])
        if q @ self.down_quat < 0:  # same sign convention as tcp_pose()
            np.negative(q, out=q)
        qpos = d.qpos
        out = np.empty(STATE_DIM, np.float32)
        out[0:3] = d.site_xpos[self.tcp_site]
        out[3:7] = q
        fl, fr = self._finger_lr
        out[7] = min(1.0, max(0.0, (float(qpos[fl]) + float(qpos[fr])) / (2 * panda.FINGER_TRAVEL_M)))
        out[8:15] = qpos[self.arm_qadr]
        return out

    def task_state(self) -> np.ndarray:
        return self.task.task_state(self.data)

    def status(self, state: np.ndarray | None = None) -> dict:
        return self.task.status(self.data, RobotView.from_state(self._cached_state() if state is None else state))

    def sim_time_s(self) -> float:
        return float(self.data.time)


def substeps_for(control_hz: float, dt_s: float) -> int:
    """Physics steps per control tick: round(), not floor, so 1/(15 Hz * 2 ms) = 33.3 -> 33."""
    return max(1, int(round(1.0 / (control_hz * dt_s))))
