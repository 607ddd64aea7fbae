"""Insert the peg into the hole (1.5 mm clearance per side). Sub-tasks: reach -> grasp -> lift -> align -> insert."""

from __future__ import annotations

import numpy as np

from hil_robot.rotations import z_axis
from sim.tasks.base import EDGE_MARGIN_M, RobotView, Task, clip01, in_grasp, out_of_workspace, status_dict

PEG_RADIUS_M = 0.012
PEG_HALF_LEN_M = 0.04  # centre to the tip of the rounded end
HOLE_HALF_M = 0.0135  # square hole, half width: 1.5 mm clearance around the peg
WALL_HEIGHT_M = 0.03
WALL_T_M = 0.008  # wall thickness
INSERT_DEPTH_M = 0.015  # success: the peg tip at least this far below the hole's rim
GRASP_ABOVE_CENTRE_M = 0.01  # the expert grasps the peg this far above its centre


def peg_tip(peg_pos: np.ndarray, peg_quat: np.ndarray) -> np.ndarray:
    """The peg's lower tip [3] (the peg axis is its body z)."""
    return peg_pos - z_axis(peg_quat) * PEG_HALF_LEN_M


class PegInsert(Task):
    name = "peg_insert"
    prompt = "insert the peg into the hole"
    subtasks = ("reach", "grasp", "lift", "align", "insert")
    handback_subtasks = ("reach", "lift", "align")
    colour_geoms = ("peg_geom",)

    def objects_xml(self) -> str:
        r, hl, a, t, h = PEG_RADIUS_M, PEG_HALF_LEN_M - PEG_RADIUS_M, HOLE_HALF_M, WALL_T_M / 2, WALL_HEIGHT_M / 2
        walls = []
        for name, pos, size in (
            ("wall_px", (a + t, 0, h), (t, a + 2 * t, h)),
            ("wall_nx", (-(a + t), 0, h), (t, a + 2 * t, h)),
            ("wall_py", (0, a + t, h), (a, t, h)),
            ("wall_ny", (0, -(a + t), h), (a, t, h)),
        ):
            walls.append(f'<geom name="{name}" type="box" pos="{pos[0]} {pos[1]} {pos[2]}" size="{size[0]} {size[1]} {size[2]}" '
                         f'class="object" rgba="0.35 0.35 0.4 1"/>')
        return f"""
    <body name="peg" pos="0.5 0 {PEG_HALF_LEN_M}">
      <freejoint name="peg_joint"/>
      <geom name="peg_geom" type="capsule" size="{r} {hl}" class="object" condim="4" mass="0.03" rgba="0.9 0.6 0.1 1"/>
    </body>
    <body name="hole" mocap="true" pos="0.6 0 0">
      {' '.join(walls)}
    </body>"""

    def bind(self, model) -> None:
        self.qadr = self.free_qpos_adr(model, "peg_joint")
        self.dadr = self.free_dof_adr(model, "peg_joint")
        self.peg_body = self.body_id(model, "peg")
        self.mocap = int(model.body_mocapid[self.body_id(model, "hole")])

    def reset(self, model, data, rng, randomize) -> None:
        if randomize:
            while True:
                peg = self.sample_xy(rng, (0.45, -0.15), (0.6, 0.15))
                hole = self.sample_xy(rng, (0.45, -0.15), (0.6, 0.15))
                if np.linalg.norm(peg - hole) > 0.12:
                    break
        else:
            peg, hole = np.array([0.5, -0.08]), np.array([0.5, 0.08])
        self.place_free(data, self.qadr, self.dadr, (peg[0], peg[1], PEG_HALF_LEN_M), 0.0)
        data.mocap_pos[self.mocap] = (hole[0], hole[1], 0.0)
        self.hole_xy = hole.copy()
        self.d0: float | None = None

    def task_state(self, data) -> np.ndarray:
        out = np.zeros(14, np.float32)
        out[0:3] = data.xpos[self.peg_body]
        out[3:7] = data.xquat[self.peg_body]
        out[7:9] = self.hole_xy
        out[10] = 1.0
        return out

    def status(self, data, robot: RobotView) -> dict:
        pos, quat = data.xpos[self.peg_body], data.xquat[self.peg_body]
        tip = peg_tip(pos, quat)
        xy_err = float(np.linalg.norm(tip[:2] - self.hole_xy))
        inserted = xy_err < HOLE_HALF_M and tip[2] < WALL_HEIGHT_M - INSERT_DEPTH_M
        grasp_pt = pos + np.array([0, 0, GRASP_ABOVE_CENTRE_M])
        held = in_grasp(robot, grasp_pt, 2 * PEG_RADIUS_M)
        tilt = float(z_axis(quat)[2])
        d = float(np.linalg.norm(grasp_pt - robot.tcp_pos))
        if self.d0 is None:
            self.d0 = max(d, 1e-3)
        clear = tip[2] > WALL_HEIGHT_M + 0.003
        if inserted:
            sub, prog = "insert", 1.0
        elif held and xy_err < 0.004 or (xy_err < HOLE_HALF_M and tip[2] < WALL_HEIGHT_M + 0.01 and held):
            sub, prog = "insert", 0.8 + 0.2 * clip01((WALL_HEIGHT_M + 0.01 - tip[2]) / (INSERT_DEPTH_M + 0.01))
        elif held and clear:
            sub, prog = "align", 0.6 + 0.2 * clip01(1.0 - xy_err / 0.15)
        elif held:
            sub, prog = "lift", 0.4 + 0.2 * clip01(tip[2] / (WALL_HEIGHT_M + 0.003))
        elif np.hypot(*(grasp_pt[:2] - robot.tcp_pos[:2])) < 0.02 and abs(grasp_pt[2] - robot.tcp_pos[2]) < 0.03:
            sub, prog = "grasp", 0.2 + 0.2 * clip01((1.0 - robot.opening) / 0.7)
        else:
            sub, prog = "reach", 0.2 * clip01(1.0 - d / self.d0)
        failed = out_of_workspace(pos[:2])
        risk = out_of_workspace(pos[:2], EDGE_MARGIN_M) or (tilt < 0.5 and not held)
        return status_dict(inserted, failed, prog, sub, risk, held=held, xy_err_m=xy_err)
