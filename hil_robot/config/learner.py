"""Learner settings (DESIGN §4: published parameters are the defaults)."""

from __future__ import annotations

import dataclasses

from hil_robot.config._build import choice, in_range, positive


@dataclasses.dataclass
class SiriusWeights:
    """Share of the loss per segment class. `demo` < 0 means 'natural share'."""

    intervention: float = 0.5
    pre_intervention: float = 0.002
    demo: float = -1.0
    # autonomous gets what is left; perturbation steps get no BC weight (deliberately off-task)

    def __post_init__(self) -> None:
        in_range("learner.sirius.intervention", self.intervention, 0.0, 1.0)
        in_range("learner.sirius.pre_intervention", self.pre_intervention, 0.0, 1.0)
        if self.demo >= 0:
            in_range("learner.sirius.demo", self.demo, 0.0, 1.0)
        in_range("learner.sirius.intervention+pre_intervention", self.intervention + self.pre_intervention, 0.0, 1.0)


@dataclasses.dataclass
class LearnerConfig:
    algorithm: str = "weighted_bc"  # weighted_bc | bc | rlpd
    batch_size: int = 64
    lr: float = 3e-4
    publish_every_updates: int = 50
    publish_every_s: float = 1.0
    checkpoint_every_s: float = 30.0
    sirius: SiriusWeights = dataclasses.field(default_factory=SiriusWeights)
    pre_intervention_k: int = 15
    advantage_beta: float = 0.0  # > 0 enables critic-advantage weights exp(A/beta)
    memory_max_steps: int = 200_000
    memory_strategy: str = "fifo"  # fifo | filo | lifo_intervention | mifo_intervention
    memory_keep_demos: bool = True  # never evict demo episodes while others can go (Sirius keeps its demos)
    # RLPD / SAC
    gamma: float = 0.97
    tau: float = 0.005
    init_temperature: float = 0.01
    num_critics: int = 2
    utd_ratio: int = 1
    reward: str = "sparse"  # sparse | critic

    def __post_init__(self) -> None:
        choice("learner.algorithm", self.algorithm, ("weighted_bc", "bc", "rlpd"))
        choice("learner.memory_strategy", self.memory_strategy, ("fifo", "filo", "lifo_intervention", "mifo_intervention"))
        choice("learner.reward", self.reward, ("sparse", "critic"))
        positive("learner.batch_size", self.batch_size)
        positive("learner.memory_max_steps", self.memory_max_steps)
        positive("learner.pre_intervention_k", self.pre_intervention_k, allow_zero=True)
        positive("learner.lr", self.lr)
        in_range("learner.gamma", self.gamma, 0.0, 1.0)
        in_range("learner.tau", self.tau, 0.0, 1.0)
