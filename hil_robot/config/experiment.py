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
    rounds: int = 5  # deployment rounds (policy + operator), each followed by an eval (eval_every_rounds)
    episodes_per_round: int = 10
    eval_episodes: int = 10  # operator-free evaluation episodes after each round, on the fixed seeds
    eval_fresh_episodes: int = -1  # ... plus these on fresh seeds drawn per round, never deployed on (-1: eval_episodes)
    eval_visual: str = "train"  # appearance of evaluation: train | heldout | same (= sim.visual)
    # evaluate after every Nth round and after the last one (budget or rounds); the rounds between
    # deploy only (eval episodes were 60 % of an RLPD run's wall clock at N = 1)
    eval_every_rounds: int = 1
    max_minutes: float = 30.0  # wall-clock budget for the whole run
    wandb_mode: str = "offline"  # offline | online | disabled
    realtime: bool = False  # false: controllers run on a simulated clock, as fast as the sim goes

    def __post_init__(self) -> None:
        from hil_robot.config._build import choice

        for k in ("rounds", "episodes_per_round", "eval_every_rounds"):
            positive(f"experiment.{k}", getattr(self, k))
        positive("experiment.demo_episodes", self.demo_episodes, allow_zero=True)
        positive("experiment.eval_episodes", self.eval_episodes, allow_zero=True)
        if self.eval_fresh_episodes == -1:
            self.eval_fresh_episodes = self.eval_episodes
        positive("experiment.eval_fresh_episodes", self.eval_fresh_episodes, allow_zero=True)
        choice("experiment.eval_visual", self.eval_visual, ("train", "heldout", "same"))
        positive("experiment.max_minutes", self.max_minutes)
        choice("experiment.wandb_mode", self.wandb_mode, ("offline", "online", "disabled"))
