"""MuJoCo world settings (DESIGN §7)."""

from __future__ import annotations

import dataclasses

from hil_robot.config._build import choice, positive

TASKS = ("pick_cube", "push_target", "peg_insert", "stack_cubes")


@dataclasses.dataclass
class SimConfig:
    task: str = "pick_cube"
    image_height: int = 128
    image_width: int = 128
    cameras: tuple[str, ...] = ("front", "wrist")
    physics_dt_s: float = 0.002
    max_episode_steps: int = 100
    shadows: bool = False  # the shadow pass dominates CPU render time (DESIGN §7)
    offscreen_samples: int = 0  # MSAA samples; 0 is fastest on llvmpipe
    randomize: bool = True  # object poses, colours, lighting, camera jitter (seeded)
    render: bool = True  # False: state-only observations (no images)

    def __post_init__(self) -> None:
        choice("sim.task", self.task, TASKS)
        for k in ("image_height", "image_width", "physics_dt_s", "max_episode_steps"):
            positive(f"sim.{k}", getattr(self, k))
        for cam in self.cameras:
            choice("sim.cameras[]", cam, ("front", "wrist"))
