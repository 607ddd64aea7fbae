"""Task registry: a plain dict of name -> "module:Class", imported lazily."""

from __future__ import annotations

import importlib

from hil_robot.config._build import ConfigError
from sim.tasks.base import TASK_STATE_DIM, Task

TASKS: dict[str, str] = {
    "pick_cube": "sim.tasks.pick_cube:PickCube",
    "push_target": "sim.tasks.push_target:PushTarget",
    "peg_insert": "sim.tasks.peg_insert:PegInsert",
    "stack_cubes": "sim.tasks.stack_cubes:StackCubes",
}

__all__ = ["TASKS", "TASK_STATE_DIM", "Task", "make_task", "check_task"]


def check_task(name: str) -> str:
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return name


def make_task(name: str) -> Task:
    module, cls = TASKS[check_task(name)].split(":")
    return getattr(importlib.import_module(module), cls)()
