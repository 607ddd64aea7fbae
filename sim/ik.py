"""Damped-least-squares inverse kinematics on a MuJoCo model (7 arm joints, TCP site).

Uses its own MjData so solving never disturbs the simulation state. One iteration costs one
``mj_kinematics`` + ``mj_comPos`` + ``mj_jacSite`` and a 6x6 solve.

    dq = J^T (J J^T + lambda^2 I)^-1 e  +  (I - J^+ J) k_null (q_home - q)
"""

from __future__ import annotations

import dataclasses
import math

import mujoco
import numpy as np

from sim.rotations import rot_error


@dataclasses.dataclass
class IKResult:
    qpos: np.ndarray  # [7] rad
    pos_err_m: float
    rot_err_rad: float
    iterations: int
    start_pos: np.ndarray | None = None  # TCP position at q_init [3]


def as_slice(idx: np.ndarray) -> slice | np.ndarray:
    if len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        return slice(int(idx[0]), int(idx[0]) + len(idx))
    return idx


class DampedLeastSquaresIK:
    def __init__(
        self,
        model: mujoco.MjModel,
        site: str,
        joint_qpos_adr: np.ndarray,
        joint_dof_adr: np.ndarray,
        limits: np.ndarray,
        q_home: np.ndarray,
        damping: float = 0.03,
        null_gain: float = 0.05,
        rot_weight: float = 0.5,
    ) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.site = int(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, site))
        if self.site < 0:
            raise ValueError(f"no site named {site!r} in the model")
        self.qadr = as_slice(np.asarray(joint_qpos_adr))  # contiguous -> a slice (views, not fancy copies)
        self.dadr = as_slice(np.asarray(joint_dof_adr))
        self.lo = limits[:, 0] + 1e-3
        self.hi = limits[:, 1] - 1e-3
        self.q_home = np.asarray(q_home, float)
        self.lam2 = damping**2
        self.null_gain = null_gain
        self.rot_weight = rot_weight
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self._quat = np.zeros(4)
        n = len(np.asarray(joint_qpos_adr))
        self._J = np.zeros((6, n))
        self._A = np.zeros((6, 6))
        self._diag = np.diag_indices(6)
        self._y = np.zeros(6)
        self._y2 = np.zeros(6)

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position [3] and quaternion [4] at joint angles ``q`` [7]."""
        d = self.data
        d.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, d)
        mujoco.mju_mat2Quat(self._quat, d.site_xmat[self.site])
        return d.site_xpos[self.site].copy(), self._quat.copy()

    def solve(
        self,
        target_pos: np.ndarray,
        target_quat: np.ndarray,
        q_init: np.ndarray,
        max_iters: int = 2,
        tol_pos_m: float = 1e-4,
        tol_rot_rad: float = 1e-3,
        final_check: bool = True,
    ) -> IKResult:
        """Iterate from ``q_init`` towards the target pose; returns the joint angles (within limits).

        final_check False skips the last forward kinematics (the per-tick path): the reported errors
        are then those before the last update.
        """
        q = np.minimum(np.maximum(np.asarray(q_init, float), self.lo), self.hi)
        m, d = self.model, self.data
        e = np.zeros(6)
        pos_err = rot_err = float("inf")
        it = 0
        start_pos = None
        for it in range(1, max_iters + 1):
            pos, quat = self.fk(q)
            if start_pos is None:
                start_pos = pos
            e[:3] = target_pos - pos
            e[3:] = rot_error(target_quat, quat)
            pos_err, rot_err = math.sqrt(e[:3] @ e[:3]), math.sqrt(e[3:] @ e[3:])
            if pos_err < tol_pos_m and rot_err < tol_rot_rad:
                it -= 1
                break
            mujoco.mj_comPos(m, d)
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self.site)
            J = self._J
            J[:3] = self._jacp[:, self.dadr]
            J[3:] = self.rot_weight * self._jacr[:, self.dadr]
            e[3:] *= self.rot_weight
            # Cholesky of J J^T + lambda^2 I once, then two vector solves (no explicit pseudo-inverse):
            #   dq = J^T A^-1 e ;  null-space part: z - J^T A^-1 J z  with z = k (q_home - q)
            A = self._A
            A[:] = J @ J.T
            A[self._diag] += self.lam2
            mujoco.mju_cholFactor(A, 0.0)
            y = self._y
            mujoco.mju_cholSolve(y, A, e)
            z = self.null_gain * (self.q_home - q)
            mujoco.mju_cholSolve(self._y2, A, J @ z)
            dq = J.T @ (y - self._y2) + z
            q = np.minimum(np.maximum(q + dq, self.lo), self.hi)
        else:
            if final_check:
                pos, quat = self.fk(q)
                pos_err = float(np.linalg.norm(target_pos - pos))
                rot_err = float(np.linalg.norm(rot_error(target_quat, quat)))
        return IKResult(q, pos_err, rot_err, it, start_pos)
