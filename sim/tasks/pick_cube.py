"""Pick up the cube and lift it. Sub-tasks: reach -> grasp -> lift."""

from __future__ import annotations

import math

import mujoco
import numpy as np

from sim.tasks.base import (EDGE_MARGIN_M, GRIPPER_MAX_OPENING_M, RobotView, Task, clip01, out_of_workspace,
                            status_dict)

CUBE_HALF_M = 0.02
LIFT_M = 0.08  # success: the cube's bottom at least this far above the table, held by the gripper


class PickCube(Task):
    name = "pick_cube"
    prompt = "pick up the red cube and lift it"
    subtasks = ("reach", "grasp", "lift")
    handback_subtasks = ("reach", "lift")
    colour_geoms = ("cube_geom",)

    def objects_xml(self) -> str:
        h = CUBE_HALF_M
        return f"""
    <body name="cube" pos="0.5 0 {h}">
      <freejoint name="cube_joint"/>
      <geom name="cube_geom" type="box" size="{h} {h} {h}" class="object" mass="0.05" rgba="0.85 0.15 0.15 1"/>
    </body>"""

    def bind(self, model: mujoco.MjModel) -> None:
        self.qadr = self.free_qpos_adr(model, "cube_joint")
        self.dadr = self.free_dof_adr(model, "cube_joint")
        self.cube_body = self.body_id(model, "cube")

    def reset(self, model, data, rng, randomize) -> None:
        xy = self.sample_xy(rng) if randomize else np.array([0.5, 0.0])
        yaw = rng.uniform(-math.pi / 4, math.pi / 4) if randomize else 0.0
        self.place_free(data, self.qadr, self.dadr, (xy[0], xy[1], CUBE_HALF_M), yaw)
        self.goal = np.array([xy[0], xy[1], CUBE_HALF_M + LIFT_M])
        self.d0: float | None = None

    def task_state(self, data) -> np.ndarray:
        out = np.zeros(14, np.float32)
        out[0:3] = data.xpos[self.cube_body]
        out[3:7] = data.xquat[self.cube_body]
        out[7:10] = self.goal
        out[10] = 1.0
        return out

    def status(self, data, robot: RobotView) -> dict:
        # plain floats: this runs every tick and a dozen tiny numpy calls would cost more than the math
        cx, cy, cz = data.xpos[self.cube_body].tolist()
        tx, ty, tz = robot.tcp_pos.tolist()
        dx, dy, dz = cx - tx, cy - ty, cz - tz
        d = math.sqrt(dx * dx + dy * dy + dz * dz)
        if self.d0 is None:
            self.d0 = max(d, 1e-3)
        near = math.hypot(dx, dy) < 0.02 and abs(dz) < 0.03
        jaw_m = robot.opening * GRIPPER_MAX_OPENING_M
        held = near and -0.006 < 2 * CUBE_HALF_M - jaw_m < 0.012  # == in_grasp(robot, cube, 2 * CUBE_HALF_M)
        lift = cz - CUBE_HALF_M
        success = held and lift >= LIFT_M
        failed = out_of_workspace((cx, cy))
        risk = out_of_workspace((cx, cy), EDGE_MARGIN_M)
        if held:
            sub, prog = "lift", 2 / 3 + clip01(lift / LIFT_M) / 3
        elif near:
            sub, prog = "grasp", 1 / 3 + clip01((1.0 - robot.opening) / 0.5) / 3 * 0.9
        else:
            sub, prog = "reach", clip01(1.0 - d / self.d0) / 3
        return status_dict(success, failed, prog, sub, risk, held=held)
