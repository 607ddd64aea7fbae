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
    ik_iterations: int = 1  # DLS iterations per control tick (warm-started; absolute pose targets use up to 30)
    ctrl_ramp_chunks: int = 5  # joint targets ramp over the tick in this many pieces (1 = step change)
    camera_pos_jitter_m: float = 0.015  # domain randomisation of the front camera (wrist: a quarter of it)
    camera_rot_jitter_rad: float = 0.035

    def __post_init__(self) -> None:
        choice("sim.task", self.task, TASKS)
        for k in ("image_height", "image_width", "physics_dt_s", "max_episode_steps", "ik_iterations", "ctrl_ramp_chunks"):
            positive(f"sim.{k}", getattr(self, k))
        for cam in self.cameras:
            choice("sim.cameras[]", cam, ("front", "wrist"))
        positive("sim.offscreen_samples", self.offscreen_samples, allow_zero=True)
        positive("sim.camera_pos_jitter_m", self.camera_pos_jitter_m, allow_zero=True)
        positive("sim.camera_rot_jitter_rad", self.camera_rot_jitter_rad, allow_zero=True)
