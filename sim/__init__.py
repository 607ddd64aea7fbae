"""MuJoCo world: scenes, tasks, Gymnasium envs, scripted expert, simulated operator.

    import sim
    env = sim.make_env(sim_cfg, robot_cfg, seed=0)          # or gymnasium.make("hil_robot/PickCube-v0")
    robot = sim.SimRobot(sim_cfg, robot_cfg, seed=0)        # the Robot protocol
    expert = sim.expert.make_expert("pick_cube")            # a Policy

Importing ``sim`` registers the Gymnasium ids ``hil_robot/{PickCube,PushTarget,PegInsert,StackCubes}-v0``.
"""

from __future__ import annotations

import os
import sys

# Headless default: without a display MuJoCo's glfw backend cannot render; EGL can (set before mujoco loads).
# If mujoco was already imported with MUJOCO_GL unset, it is too late: render.py then says so.
GL_DEFAULT_TOO_LATE = "mujoco" in sys.modules and not os.environ.get("MUJOCO_GL")
if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not GL_DEFAULT_TOO_LATE:
    os.environ.setdefault("MUJOCO_GL", "egl")
# Mesa's software rasteriser: at 128x128 its worker threads cost more than they give on a small
# shared CPU; one thread renders these small images fastest. Override by exporting LP_NUM_THREADS.
os.environ.setdefault("LP_NUM_THREADS", "1")

from sim.env import ENV_IDS, HilSimEnv, make_env, register_envs
from sim.robot import SimRobot
from sim.tasks import TASKS
from sim import expert, operator  # noqa: E402,F401  (sim.expert.make_expert, sim.operator.SimulatedOperator)

register_envs()

__all__ = ["expert", "operator", "ENV_IDS", "HilSimEnv", "SimRobot", "TASKS", "make_env", "register_envs"]
