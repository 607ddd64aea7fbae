"""Assemble the MJCF of the tabletop world: arm, table (top at z = 0), light, cameras, task objects.

Collision is kept minimal for speed: arm links never collide; only the hand/finger pads, the task
objects and the table plane do (pads: contype 1 / conaffinity 0, objects 1/1, table 0/1).
"""

from __future__ import annotations

import math

import numpy as np

from hil_robot.config.sim import SimConfig
from sim import panda

TABLE_CENTER_XY = (0.5, 0.0)
TABLE_HALF_XY = (0.45, 0.6)
FRONT_CAM_POS = np.array([0.95, 0.0, 0.40])
FRONT_CAM_LOOKAT = np.array([0.48, 0.0, 0.06])


def look_at_xyaxes(pos: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera x and y axes (6 numbers) so that the camera at ``pos`` looks at ``target``."""
    fwd = np.asarray(target, float) - np.asarray(pos, float)
    fwd /= np.linalg.norm(fwd)
    x = np.cross(fwd, up)
    x /= np.linalg.norm(x)
    y = np.cross(x, fwd)
    return np.concatenate([x, y])


def build_xml(objects_xml: str, sim_cfg: SimConfig, dt_s: float | None = None) -> str:
    """Full MJCF string. ``objects_xml`` are the task's bodies (placed under <worldbody>)."""
    dt = sim_cfg.physics_dt_s if dt_s is None else dt_s
    xy = look_at_xyaxes(FRONT_CAM_POS, FRONT_CAM_LOOKAT)
    h, w = sim_cfg.image_height, sim_cfg.image_width
    shadow = "true" if sim_cfg.shadows else "false"
    tx, ty = TABLE_CENTER_XY
    hx, hy = TABLE_HALF_XY
    return f"""
<mujoco model="hil_robot_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{dt}" integrator="Euler" cone="pyramidal" impratio="1">
    <flag energy="disable" sleep="enable" eulerdamp="disable"/>
  </option>
  <size memory="2M"/>
  <visual>
    <global offwidth="{max(w, 640)}" offheight="{max(h, 480)}" fovy="45"/>
    <quality shadowsize="{2048 if sim_cfg.shadows else 0}" offsamples="{sim_cfg.offscreen_samples}" numslices="12" numstacks="6" numquads="1"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.3 0.3 0.3" specular="0 0 0"/>
  </visual>
  {panda.DEFAULTS_XML}
  <worldbody>
    <light name="key" pos="0.4 -0.3 1.6" dir="0 0.15 -1" directional="true" diffuse="0.6 0.6 0.6" castshadow="{shadow}"/>
    <geom name="floor" type="plane" size="2 2 0.1" pos="0 0 -0.75" rgba="0.35 0.37 0.4 1" contype="0" conaffinity="0"/>
    <geom name="table_top" type="plane" size="{hx} {hy} 0.02" pos="{tx} {ty} 0" rgba="0.62 0.5 0.38 1" contype="0" conaffinity="1" condim="3"/>
    <geom name="table_body" type="box" size="{hx} {hy} 0.37" pos="{tx} {ty} -0.3705" rgba="0.55 0.44 0.33 1" contype="0" conaffinity="0"/>
    <camera name="front" pos="{' '.join(map(str, FRONT_CAM_POS))}" xyaxes="{' '.join(f'{v:.6f}' for v in xy)}" fovy="42"/>
    {panda.arm_xml()}
    {objects_xml}
  </worldbody>
  <actuator>
    {panda.actuators_xml()}
  </actuator>
</mujoco>
"""


def quat_yaw_str(yaw: float) -> str:
    return f"{math.cos(yaw / 2):.6f} 0 0 {math.sin(yaw / 2):.6f}"
