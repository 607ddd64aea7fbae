"""Every task's success check, positive and negative, on constructed states (no rollout needed)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

import sim  # noqa: F401
from hil_robot.config import ConfigError, RobotConfig, SimConfig
from sim import panda
from sim.tasks import TASKS, make_task
from sim.tasks import peg_insert as peg
from sim.tasks import pick_cube as pick
from sim.tasks import push_target as push
from sim.tasks import stack_cubes as stack
from sim.world import SimWorld


def make_world(task: str) -> SimWorld:
    return SimWorld(SimConfig(task=task, render=False, randomize=False), RobotConfig(), seed=0)


def put_gripper(w: SimWorld, pos, jaw_m: float) -> None:
    """Arm via IK so the TCP is at ``pos`` pointing down; each finger at jaw/2."""
    res = w.ik.solve(np.asarray(pos, float), panda.DOWN_QUAT, w.home_qpos, max_iters=200)
    assert res.pos_err_m < 1e-3
    w.data.qpos[w.arm_qadr] = res.qpos
    w.data.qpos[w.finger_qadr] = jaw_m / 2


def put_body(w: SimWorld, joint: str, pos, quat=(1, 0, 0, 0)) -> None:
    adr = w.model.jnt_qposadr[mujoco.mj_name2id(w.model, mujoco.mjtObj.mjOBJ_JOINT, joint)]
    w.data.qpos[adr : adr + 3] = pos
    w.data.qpos[adr + 3 : adr + 7] = quat


def status(w: SimWorld) -> dict:
    mujoco.mj_forward(w.model, w.data)
    w._state = None
    return w.status()


def test_registry_lists_four_tasks_and_rejects_unknown():
    assert set(TASKS) == {"pick_cube", "push_target", "peg_insert", "stack_cubes"}
    with pytest.raises(ConfigError, match="valid tasks: pick_cube, push_target, peg_insert, stack_cubes"):
        make_task("pick_sphere")
    with pytest.raises(ConfigError, match="sim.task='pick_sphere' is not allowed; choose one of: pick_cube"):
        SimConfig(task="pick_sphere")


@pytest.mark.parametrize("task", list(TASKS))
def test_start_state_is_not_success_nor_failure(task):
    w = make_world(task)
    for seed in range(5):
        w.reset(seed)
        st = w.status()
        assert not st["success"] and not st["failed"]
        assert st["subtask"] == make_task(task).subtasks[0]
        assert 0.0 <= st["progress"] < 0.2
        assert w.task_state().shape == (14,) and w.task_state().dtype == np.float32


def test_pick_cube_success_needs_lift_and_grasp():
    w = make_world("pick_cube")
    h = pick.CUBE_HALF_M
    lifted = (0.5, 0.0, h + pick.LIFT_M + 0.01)
    put_gripper(w, lifted, 2 * h - 0.002)
    put_body(w, "cube_joint", lifted)
    st = status(w)
    assert st["success"] and st["subtask"] == "lift"
    put_gripper(w, lifted, 0.08)  # jaw open: the cube is not held
    assert not status(w)["success"]
    on_table = (0.5, 0.0, h)
    put_gripper(w, on_table, 2 * h - 0.002)  # held but not lifted
    put_body(w, "cube_joint", on_table)
    st = status(w)
    assert not st["success"] and st["subtask"] == "lift" and st["progress"] < 0.7
    put_body(w, "cube_joint", (0.5, 0.6, h))  # off the workspace
    assert status(w)["failed"]


def test_push_target_success_is_block_on_target():
    w = make_world("push_target")
    tx, ty = w.task.target_xy
    put_body(w, "block_joint", (tx + 0.01, ty, push.BLOCK_HALF_M))
    assert status(w)["success"]
    put_body(w, "block_joint", (tx + 0.05, ty, push.BLOCK_HALF_M))
    st = status(w)
    assert not st["success"] and not st["failed"]
    put_body(w, "block_joint", (0.95, ty, push.BLOCK_HALF_M))
    assert status(w)["failed"]


def test_peg_insert_success_needs_depth_inside_the_hole():
    w = make_world("peg_insert")
    hx, hy = w.task.hole_xy
    inserted_z = peg.PEG_HALF_LEN_M + 0.001  # tip 1 mm above the table, inside the walls
    put_body(w, "peg_joint", (hx + 0.001, hy, inserted_z))
    assert status(w)["success"]
    on_rim = peg.WALL_HEIGHT_M + peg.PEG_HALF_LEN_M  # resting on top of the walls: not inserted
    put_body(w, "peg_joint", (hx + 0.001, hy, on_rim))
    assert not status(w)["success"]
    put_body(w, "peg_joint", (hx + 0.05, hy, inserted_z))  # beside the hole on the table
    assert not status(w)["success"]


def test_stack_cubes_success_needs_release_on_top():
    w = make_world("stack_cubes")
    bx, by = w.task.base0
    top = (bx, by, stack.STACK_Z_M)
    put_body(w, "top_joint", top)
    put_gripper(w, (bx, by, stack.STACK_Z_M + 0.1), 0.08)  # released, hand above
    st = status(w)
    assert st["success"] and st["subtask"] == "release"
    put_gripper(w, top, 2 * stack.TOP_HALF_M - 0.002)  # still holding it
    assert not status(w)["success"]
    put_body(w, "top_joint", (bx + 0.05, by, stack.TOP_HALF_M))  # beside, on the table
    put_gripper(w, (bx, by, 0.2), 0.08)
    assert not status(w)["success"]
    put_body(w, "base_joint", (bx + 0.1, by, stack.BASE_HALF_M))  # base knocked away
    assert status(w)["failed"]


def test_prompts_are_task_specific_instructions():
    prompts = {make_task(t).prompt for t in TASKS}
    assert len(prompts) == 4 and all(len(p.split()) >= 4 for p in prompts)
