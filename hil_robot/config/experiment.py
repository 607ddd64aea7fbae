"""Experiment-level settings: what to run, for how long, where to write."""

from __future__ import annotations

import dataclasses

from hil_robot.config._build import positive


@dataclasses.dataclass
class ExperimentConfig:
    name: str = "sim_pick_cube"
    seed: int = 0
    run_dir: str = "runs/${experiment.name}"  # resolved by Hydra/OmegaConf interpolation
    demo_episodes: int = 10  # scripted-expert demos seeded into the store before round 1
    rounds: int = 5  # deployment rounds (policy + operator), each followed by an eval
    episodes_per_round: int = 10
    eval_episodes: int = 10  # operator-free evaluation episodes after each round
    max_minutes: float = 30.0  # wall-clock budget for the whole run
    wandb_mode: str = "offline"  # offline | online | disabled
    realtime: bool = False  # false: controllers run on a simulated clock, as fast as the sim goes

    def __post_init__(self) -> None:
        from hil_robot.config._build import choice

        for k in ("rounds", "episodes_per_round"):
            positive(f"experiment.{k}", getattr(self, k))
        positive("experiment.demo_episodes", self.demo_episodes, allow_zero=True)
        positive("experiment.eval_episodes", self.eval_episodes, allow_zero=True)
        positive("experiment.max_minutes", self.max_minutes)
        choice("experiment.wandb_mode", self.wandb_mode, ("offline", "online", "disabled"))
