"""Stack the small cube on the big one. Sub-tasks: reach -> grasp -> lift -> place -> release."""

from __future__ import annotations

import math

import numpy as np

from sim.tasks.base import EDGE_MARGIN_M, RobotView, Task, clip01, in_grasp, out_of_workspace, status_dict

TOP_HALF_M = 0.02
BASE_HALF_M = 0.025
STACK_Z_M = 2 * BASE_HALF_M + TOP_HALF_M  # top cube centre when stacked


class StackCubes(Task):
    name = "stack_cubes"
    prompt = "stack the red cube on top of the yellow cube"
    subtasks = ("reach", "grasp", "lift", "place", "release")
    handback_subtasks = ("reach", "lift", "place")
    colour_geoms = ("top_geom", "base_geom")

    def objects_xml(self) -> str:
        a, b = TOP_HALF_M, BASE_HALF_M
        return f"""
    <body name="top_cube" pos="0.5 0.1 {a}">
      <freejoint name="top_joint"/>
      <geom name="top_geom" type="box" size="{a} {a} {a}" class="object" mass="0.05" rgba="0.85 0.15 0.15 1"/>
    </body>
    <body name="base_cube" pos="0.5 -0.1 {b}">
      <freejoint name="base_joint"/>
      <geom name="base_geom" type="box" size="{b} {b} {b}" class="object" mass="0.3" rgba="0.9 0.8 0.1 1"/>
    </body>"""

    def bind(self, model) -> None:
        self.top_q, self.top_d = self.free_qpos_adr(model, "top_joint"), self.free_dof_adr(model, "top_joint")
        self.base_q, self.base_d = self.free_qpos_adr(model, "base_joint"), self.free_dof_adr(model, "base_joint")
        self.top_body = self.body_id(model, "top_cube")
        self.base_body = self.body_id(model, "base_cube")

    def reset(self, model, data, rng, randomize) -> None:
        if randomize:
            while True:
                top = self.sample_xy(rng, (0.45, -0.15), (0.6, 0.15))
                base = self.sample_xy(rng, (0.45, -0.15), (0.6, 0.15))
                if np.linalg.norm(top - base) > 0.1:
                    break
            yaw_t, yaw_b = rng.uniform(-math.pi / 4, math.pi / 4, size=2)
        else:
            top, base, yaw_t, yaw_b = np.array([0.5, 0.1]), np.array([0.5, -0.1]), 0.0, 0.0
        self.place_free(data, self.top_q, self.top_d, (top[0], top[1], TOP_HALF_M), yaw_t)
        self.place_free(data, self.base_q, self.base_d, (base[0], base[1], BASE_HALF_M), yaw_b)
        self.base0 = base.copy()
        self.d0: float | None = None

    def task_state(self, data) -> np.ndarray:
        out = np.zeros(14, np.float32)
        out[0:3] = data.xpos[self.top_body]
        out[3:7] = data.xquat[self.top_body]
        out[7:10] = data.xpos[self.base_body]
        out[10:14] = data.xquat[self.base_body]
        return out

    def status(self, data, robot: RobotView) -> dict:
        top, base = data.xpos[self.top_body], data.xpos[self.base_body]
        xy_err = float(np.linalg.norm(top[:2] - base[:2]))
        on_top = xy_err < 0.02 and abs(top[2] - (base[2] + BASE_HALF_M + TOP_HALF_M)) < 0.008
        held = in_grasp(robot, top, 2 * TOP_HALF_M)
        released = not held and robot.opening > 0.6
        base_moved = float(np.linalg.norm(base[:2] - self.base0))
        success = on_top and released and base[2] < BASE_HALF_M + 0.005
        d = float(np.linalg.norm(top - robot.tcp_pos))
        if self.d0 is None:
            self.d0 = max(d, 1e-3)
        if on_top:
            sub, prog = "release", 0.8 + 0.2 * clip01((robot.opening - 0.5) / 0.2)
        elif held and top[2] - TOP_HALF_M > 2 * BASE_HALF_M + 0.005:
            sub, prog = "place", 0.6 + 0.2 * clip01(1.0 - xy_err / 0.2)
        elif held:
            sub, prog = "lift", 0.4 + 0.2 * clip01((top[2] - TOP_HALF_M) / (2 * BASE_HALF_M + 0.005))
        elif np.hypot(*(top[:2] - robot.tcp_pos[:2])) < 0.02 and abs(top[2] - robot.tcp_pos[2]) < 0.03:
            sub, prog = "grasp", 0.2 + 0.2 * clip01((1.0 - robot.opening) / 0.5)
        else:
            sub, prog = "reach", 0.2 * clip01(1.0 - d / self.d0)
        failed = out_of_workspace(top[:2]) or out_of_workspace(base[:2]) or base_moved > 0.08
        risk = out_of_workspace(top[:2], EDGE_MARGIN_M) or base_moved > 0.03
        return status_dict(success, failed, prog, sub, risk, held=held, xy_err_m=xy_err)
