"""Appearance variation: colours (task objects, table, arm), key light direction and intensity,
camera poses, drawn per episode from a seeded generator (DESIGN §7 domain randomisation).

Two distributions share one set of knobs (``hil_robot.config.sim.VisualRanges``):

* ``train`` (demos, deployment, the default evaluation): each offset uniform in [-max, +max];
* ``heldout`` (evaluation only, ``sim.visual=heldout``): each offset's magnitude uniform in
  [train max, heldout max] with a random sign, so a held-out appearance lies outside every range
  the policy was trained on (colours before clipping to [0, 1]).

Both draw the same number of values in the same order, after the task has placed its objects, so
the episode's physics (start pose, object poses, everything after) is the same under either
distribution: only the model's visual fields (geom_rgba, light_dir/diffuse, cam_pos/quat) change.
"""

from __future__ import annotations

import mujoco
import numpy as np

from hil_robot.config.sim import SimConfig, VisualRanges
from hil_robot.rotations import quat_from_rotvec, quat_mul, quat_normalize

OBJECT_SHADE_CENTRE = 0.95  # object colours are scaled around this (slightly darker than nominal on average)
WRIST_CAMERA_SHARE = 0.25  # the wrist camera is bolted on: a quarter of the front camera's offsets


def offsets(rng: np.random.Generator, n: int | tuple[int, ...], lo: float, hi: float) -> np.ndarray:
    """``n`` offsets: uniform in [-hi, hi] when ``lo`` is 0, else magnitude uniform in [lo, hi] with a
    random sign. One uniform draw per value either way (the generator advances the same)."""
    u = rng.random(n)
    if lo <= 0.0:
        return hi * (2.0 * u - 1.0)
    sign = np.where(u < 0.5, -1.0, 1.0)
    frac = np.where(u < 0.5, u, u - 0.5) * 2.0
    return sign * (lo + (hi - lo) * frac)


class Appearance:
    """Applies one episode's appearance to a model, from the nominal values captured at build time."""

    def __init__(self, model: mujoco.MjModel, colour_geoms: tuple[str, ...]) -> None:
        m = model
        self.model = m
        self.rgba0 = m.geom_rgba.copy()
        self.light_dir0, self.light_diffuse0 = m.light_dir.copy(), m.light_diffuse.copy()
        self.cam_pos0, self.cam_quat0 = m.cam_pos.copy(), m.cam_quat.copy()
        self.objects = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, g) for g in colour_geoms]
        self.table = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "table_top")
        arm_root = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "link0")
        self.arm = [g for g in range(m.ngeom) if m.body_rootid[m.geom_bodyid[g]] == arm_root]
        self.front = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "front")

    def nominal(self) -> None:
        m = self.model
        m.geom_rgba[:] = self.rgba0
        m.light_dir[:], m.light_diffuse[:] = self.light_dir0, self.light_diffuse0
        m.cam_pos[:], m.cam_quat[:] = self.cam_pos0, self.cam_quat0

    def apply(self, rng: np.random.Generator, sim_cfg: SimConfig) -> dict[str, float]:
        """Draw and set this episode's appearance (after ``nominal()``); returns a summary of it."""
        train, held = sim_cfg.visual_train, sim_cfg.visual_heldout
        if sim_cfg.visual == "heldout":
            lo, hi = train, held
        else:
            lo, hi = VisualRanges(**{k: 0.0 for k in vars(train)}), train

        def draw(name: str, n: int | tuple[int, ...]) -> np.ndarray:
            return offsets(rng, n, getattr(lo, name), getattr(hi, name))

        m = self.model
        for g in self.objects:
            base = self.rgba0[g, :3]
            shade = OBJECT_SHADE_CENTRE + draw("object_shade", 1)
            m.geom_rgba[g, :3] = np.clip(base * shade + draw("object_rgb", 3), 0.0, 1.0)
        m.geom_rgba[self.table, :3] = np.clip(self.rgba0[self.table, :3] + draw("table_rgb", 3), 0.0, 1.0)
        arm_shift = draw("robot_rgb", 3)  # one tint for the whole arm (links and joints keep their contrast)
        for g in self.arm:
            m.geom_rgba[g, :3] = np.clip(self.rgba0[g, :3] + arm_shift, 0.0, 1.0)
        tilt = draw("light_dir", (m.nlight, 2))
        scale = 1.0 + draw("light_intensity", m.nlight)
        for i in range(m.nlight):
            d = self.light_dir0[i].copy()
            d[:2] += tilt[i]
            m.light_dir[i] = d / np.linalg.norm(d)
            m.light_diffuse[i] = np.clip(self.light_diffuse0[i] * max(scale[i], 0.05), 0.0, 1.0)
        for c in range(m.ncam):
            k = 1.0 if c == self.front else WRIST_CAMERA_SHARE
            dp, dr = draw("camera_pos_m", 3) * k, draw("camera_rot_rad", 3) * k
            m.cam_pos[c] = self.cam_pos0[c] + dp
            m.cam_quat[c] = quat_normalize(quat_mul(quat_from_rotvec(dr), self.cam_quat0[c]))
        return {"light_scale": float(scale[0]) if m.nlight else 1.0}
