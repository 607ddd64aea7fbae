"""Push the block onto the target disc. Sub-tasks: reach (get behind the block) -> push."""

from __future__ import annotations

import math

import numpy as np

from sim.tasks.base import EDGE_MARGIN_M, RobotView, Task, clip01, out_of_workspace, status_dict

BLOCK_HALF_M = 0.025
TARGET_RADIUS_M = 0.035
SUCCESS_DIST_M = 0.025  # block centre within this of the target centre
PUSH_HEIGHT_M = 0.02  # TCP height while pushing


def push_geometry(obj_xy: np.ndarray, target_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit push direction [2] and the pre-push TCP point [2] behind the block."""
    v = target_xy - obj_xy
    n = float(np.linalg.norm(v))
    direction = v / n if n > 1e-6 else np.array([1.0, 0.0])
    return direction, obj_xy - direction * (BLOCK_HALF_M + 0.025)


class PushTarget(Task):
    name = "push_target"
    prompt = "push the blue block onto the green target"
    subtasks = ("reach", "push")
    handback_subtasks = ("reach", "push")
    colour_geoms = ("block_geom",)

    def objects_xml(self) -> str:
        h = BLOCK_HALF_M
        return f"""
    <body name="block" pos="0.5 0 {h}">
      <freejoint name="block_joint"/>
      <geom name="block_geom" type="box" size="{h} {h} {h}" class="object" mass="0.1" rgba="0.15 0.3 0.85 1"/>
    </body>
    <body name="target" mocap="true" pos="0.6 0 0">
      <geom name="target_geom" type="cylinder" size="{TARGET_RADIUS_M} 0.0008" pos="0 0 0.0008" rgba="0.2 0.8 0.3 1" contype="0" conaffinity="0"/>
    </body>"""

    def bind(self, model) -> None:
        self.qadr = self.free_qpos_adr(model, "block_joint")
        self.dadr = self.free_dof_adr(model, "block_joint")
        self.block_body = self.body_id(model, "block")
        self.mocap = int(model.body_mocapid[self.body_id(model, "target")])

    def reset(self, model, data, rng, randomize) -> None:
        if randomize:
            while True:
                obj = self.sample_xy(rng, (0.45, -0.12), (0.58, 0.12))
                ang = rng.uniform(-math.pi, math.pi)
                tgt = obj + rng.uniform(0.1, 0.16) * np.array([math.cos(ang), math.sin(ang)])
                if 0.4 <= tgt[0] <= 0.66 and abs(tgt[1]) <= 0.2:
                    break
            yaw = rng.uniform(-math.pi / 4, math.pi / 4)
        else:
            obj, tgt, yaw = np.array([0.48, 0.0]), np.array([0.62, 0.0]), 0.0
        self.place_free(data, self.qadr, self.dadr, (obj[0], obj[1], BLOCK_HALF_M), yaw)
        data.mocap_pos[self.mocap] = (tgt[0], tgt[1], 0.0)
        self.target_xy = tgt.copy()
        self.dist0 = float(np.linalg.norm(tgt - obj))
        self.d0: float | None = None

    def task_state(self, data) -> np.ndarray:
        out = np.zeros(14, np.float32)
        out[0:3] = data.xpos[self.block_body]
        out[3:7] = data.xquat[self.block_body]
        out[7:9] = self.target_xy
        out[10] = 1.0
        return out

    def status(self, data, robot: RobotView) -> dict:
        block = data.xpos[self.block_body]
        dist = float(np.linalg.norm(block[:2] - self.target_xy))
        direction, pre = push_geometry(block[:2], self.target_xy)
        rel = robot.tcp_pos[:2] - block[:2]
        along = float(rel @ direction)  # negative: TCP behind the block
        lateral = abs(float(rel[0] * direction[1] - rel[1] * direction[0]))
        behind = along < -BLOCK_HALF_M + 0.005 and lateral < 0.02 and robot.tcp_pos[2] < 0.05
        d = float(np.linalg.norm(robot.tcp_pos[:2] - pre)) + abs(robot.tcp_pos[2] - PUSH_HEIGHT_M)
        if self.d0 is None:
            self.d0 = max(d, 1e-3)
        success = dist < SUCCESS_DIST_M
        if behind or dist < self.dist0 - 0.01:
            sub, prog = "push", 0.2 + 0.8 * clip01(1.0 - dist / self.dist0)
        else:
            sub, prog = "reach", 0.2 * clip01(1.0 - d / self.d0)
        return status_dict(success, out_of_workspace(block[:2]), prog, sub,
                           out_of_workspace(block[:2], EDGE_MARGIN_M), dist_m=dist)
