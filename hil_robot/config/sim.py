"""MuJoCo world settings (DESIGN §7)."""

from __future__ import annotations

import dataclasses

from hil_robot.config._build import choice, positive

TASKS = ("pick_cube", "push_target", "peg_insert", "stack_cubes")
VISUALS = ("train", "heldout")


@dataclasses.dataclass
class VisualRanges:
    """Appearance variation of one distribution, as magnitudes drawn per episode (seeded). The
    training distribution draws each offset uniformly in [-max, +max]; the held-out one draws its
    magnitude in [train max, heldout max] with a random sign, so no held-out value is ever seen in
    training. Colour offsets are in RGB units (0..1), light intensity is a relative scale offset."""

    object_rgb: float = 0.08  # per-channel offset of the task objects' colour (around a shade scale)
    object_shade: float = 0.2  # object colour scale offset: x (1 + U) (train: 0.95 +- 0.2 ~ [0.7, 1.15] before)
    table_rgb: float = 0.1  # per-channel offset of the table top colour
    robot_rgb: float = 0.0  # per-channel offset of the arm's colours (0: the arm keeps its colours)
    light_dir: float = 0.3  # key light direction: offset of its horizontal components (it points down: 0 0.15 -1)
    light_intensity: float = 0.3  # key light diffuse scale offset: x (1 + U)
    camera_pos_m: float = 0.015  # front camera position offset per axis (the wrist camera: a quarter)
    camera_rot_rad: float = 0.035  # front camera rotation offset per axis (rotation vector)

    def check(self, key: str) -> None:
        for f in dataclasses.fields(self):
            positive(f"{key}.{f.name}", getattr(self, f.name), allow_zero=True)


def _heldout() -> VisualRanges:
    return VisualRanges(object_rgb=0.2, object_shade=0.35, table_rgb=0.25, robot_rgb=0.25, light_dir=0.6,
                        light_intensity=0.6, camera_pos_m=0.03, camera_rot_rad=0.07)


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
    randomize: bool = True  # object poses and start pose, and appearance from visual_train (seeded)
    render: bool = True  # False: state-only observations (no images)
    ik_iterations: int = 1  # DLS iterations per control tick (warm-started; absolute pose targets use up to 30)
    ctrl_ramp_chunks: int = 5  # joint targets ramp over the tick in this many pieces (1 = step change)
    # appearance: which distribution episodes are drawn from (train: the deployment/demo ranges;
    # heldout: every offset beyond the training range, for evaluation only) and the two ranges
    visual: str = "train"
    visual_train: VisualRanges = dataclasses.field(default_factory=VisualRanges)
    visual_heldout: VisualRanges = dataclasses.field(default_factory=_heldout)

    def __post_init__(self) -> None:
        choice("sim.task", self.task, TASKS)
        for k in ("image_height", "image_width", "physics_dt_s", "max_episode_steps", "ik_iterations", "ctrl_ramp_chunks"):
            positive(f"sim.{k}", getattr(self, k))
        for cam in self.cameras:
            choice("sim.cameras[]", cam, ("front", "wrist"))
        positive("sim.offscreen_samples", self.offscreen_samples, allow_zero=True)
        choice("sim.visual", self.visual, VISUALS)
        self.visual_train.check("sim.visual_train")
        self.visual_heldout.check("sim.visual_heldout")
        for f in dataclasses.fields(VisualRanges):
            lo, hi = getattr(self.visual_train, f.name), getattr(self.visual_heldout, f.name)
            if hi < lo:
                from hil_robot.config._build import ConfigError

                raise ConfigError(f"sim.visual_heldout.{f.name}={hi} is below sim.visual_train.{f.name}={lo}: held-out "
                                  "offsets are drawn between the training maximum and the held-out maximum")
