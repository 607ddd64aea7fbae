"""Damped-least-squares inverse kinematics on a MuJoCo model (7 arm joints, TCP site).

Uses its own MjData so solving never disturbs the simulation state. One iteration costs one
``mj_kinematics`` + ``mj_comPos`` + ``mj_jacSite`` and a 6x6 solve.

    dq = J^T (J J^T + lambda^2 I)^-1 (e - J z) + z,   z = k_null (q_home - q)

(the damped form of J^+ e + (I - J^+ J) z).
"""

from __future__ import annotations

import dataclasses
import math

import mujoco
import numpy as np



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
        self._jac6 = np.zeros((6, model.nv))  # [position rows; rotation rows] of the site Jacobian
        self._jacp, self._jacr = self._jac6[:3], self._jac6[3:]
        self._quat = np.zeros(4)
        self._J = self._jac6[:, self.dadr]  # [6, 7] arm columns (a view when the arm dofs are contiguous)
        if not isinstance(self.dadr, slice):
            raise ValueError("the arm joints' dofs must be contiguous")
        self._A = np.zeros((6, 6))
        self._lam2_eye = self.lam2 * np.eye(6)
        self._y = np.zeros(6)
        self._qc = np.zeros(4)
        self._qe = np.zeros(4)

    def fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """TCP position [3] and quaternion [4] at joint angles ``q`` [7]."""
        pos, quat = self._fk_view(q)
        return pos.copy(), quat.copy()

    def _fk_view(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like ``fk`` but returns views into solver buffers (valid until the next call)."""
        d = self.data
        d.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, d)
        mujoco.mju_mat2Quat(self._quat, d.site_xmat[self.site])
        return d.site_xpos[self.site], self._quat

    def _rot_error(self, q_target: np.ndarray, q_current: np.ndarray, out: np.ndarray) -> None:
        """World-frame rotation vector [3] taking ``q_current`` to ``q_target`` (angle in [0, pi]), written
        to ``out``; MuJoCo's C quaternion routines (one call each) since this runs every tick."""
        mujoco.mju_negQuat(self._qc, q_current)
        mujoco.mju_mulQuat(self._qe, q_target, self._qc)
        mujoco.mju_quat2Vel(out, self._qe, 1.0)

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
        target_pos = np.asarray(target_pos, float)
        target_quat = np.ascontiguousarray(target_quat, float)
        m, d = self.model, self.data
        e = np.zeros(6)
        e_pos, e_rot = e[:3], e[3:]
        pos_err = rot_err = float("inf")
        it = 0
        start_pos = None
        J, A, y = self._J, self._A, self._y
        for it in range(1, max_iters + 1):
            pos, quat = self._fk_view(q)
            if start_pos is None:
                start_pos = pos.copy()
            np.subtract(target_pos, pos, out=e_pos)
            self._rot_error(target_quat, quat, e_rot)
            pos_err, rot_err = math.sqrt(e_pos @ e_pos), math.sqrt(e_rot @ e_rot)
            if pos_err < tol_pos_m and rot_err < tol_rot_rad:
                it -= 1
                break
            mujoco.mj_comPos(m, d)
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self.site)  # rows of self._jac6: J is a view
            self._jacr *= self.rot_weight
            e_rot *= self.rot_weight
            # Cholesky of A = J J^T + lambda^2 I once, then one vector solve (no explicit pseudo-inverse):
            #   dq = J^T A^-1 (e - J z) + z  with the null-space pull z = k (q_home - q)
            np.dot(J, J.T, out=A)
            A += self._lam2_eye
            mujoco.mju_cholFactor(A, 0.0)
            z = self.q_home - q
            z *= self.null_gain
            e -= J @ z
            mujoco.mju_cholSolve(y, A, e)
            dq = J.T @ y
            dq += z
            dq += q
            q = np.minimum(np.maximum(dq, self.lo, out=dq), self.hi, out=dq)
        else:
            if final_check:
                pos, quat = self._fk_view(q)
                np.subtract(target_pos, pos, out=e_pos)
                self._rot_error(target_quat, quat, e_rot)
                pos_err, rot_err = math.sqrt(e_pos @ e_pos), math.sqrt(e_rot @ e_rot)
        return IKResult(q, pos_err, rot_err, it, start_pos)
