"""Learner settings (DESIGN §4: published parameters are the defaults)."""

from __future__ import annotations

import dataclasses

from hil_robot.config._build import ConfigError, choice, in_range, positive


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
    algorithm: str = "weighted_bc"  # weighted_bc | bc (uniform weights, for ablations) | rlpd
    batch_size: int = 64  # global batch (split across DDP ranks); RLPD samples utd_ratio x this
    lr: float = 3e-4
    publish_every_updates: int = 50  # publish when this many updates passed ...
    publish_every_s: float = 0.5  # ... or this many seconds (sub-second by default)
    checkpoint_every_s: float = 30.0
    checkpoint_every_updates: int = 0  # 0 = by time only
    sirius: SiriusWeights = dataclasses.field(default_factory=SiriusWeights)
    pre_intervention_k: int = 15
    # fixed: the last pre_intervention_k autonomous steps before a takeover; estimated: per takeover,
    # the stretch the EE (or the critic's value) had stalled for, in [min_k, max_k] (hil_robot/data/pre_intervention.py)
    pre_intervention: str = "fixed"
    pre_intervention_min_k: int = 3
    pre_intervention_max_k: int = 60
    pre_intervention_stall_m: float = 0.01  # the EE counts as stalled inside a box of this half-width
    ema_decay: float = 0.0  # BC: > 0 publishes/serves an exponential moving average of the weights (e.g. 0.998)
    advantage_beta: float = 0.0  # > 0 enables critic-advantage weights exp(A/beta)
    advantage_max_weight: float = 20.0  # clip for exp(A/beta)
    critic_checkpoint: str = ""  # progress-critic checkpoint (reward=critic, advantage_beta > 0, advantage_source=critic)
    # RECAP-style advantage conditioning (weighted BC): the VLA gets an advantage token; a sample is
    # 'positive' when its critic advantage is in the batch's top advantage_positive_frac, or when a
    # person acted (demo, recovery, correction); advantage_dropout of the samples get 'unknown';
    # serving always asks for 'positive'
    advantage_conditioning: bool = False
    advantage_positive_frac: float = 0.3
    advantage_dropout: float = 0.1
    advantage_source: str = "critic"  # critic (learner.critic_checkpoint) | critic_online (critics trained on the run)
    # which VLA weights train (weighted BC): full | lora (peft LoRA adapters on lora_targets, base
    # frozen) | expert (only the action decoder/head). lora/expert publish only the trainable
    # tensors on the weight bus (deltas, with a base_id); serving resyncs the base on request.
    finetune: str = "full"
    lora_rank: int = 16
    lora_alpha: float = 32.0  # LoRA scale = alpha / rank
    # module-name suffixes (Linear/Conv2d) that get adapters; the default is every attention and
    # MLP Linear of the encoder and the action decoder
    lora_targets: tuple[str, ...] = ("linear1", "linear2", "self_qkv", "self_out", "cross_q", "cross_kv", "cross_out",
                                     "mlp.0", "mlp.3")
    memory_max_steps: int = 200_000
    memory_strategy: str = "fifo"  # fifo | filo | lifo_intervention | mifo_intervention
    memory_keep_demos: bool = True  # never evict demo episodes while others can go (Sirius keeps its demos)
    # the learner process
    max_updates: int = 0  # stop after this many updates (0 = run until stopped)
    max_minutes: float = 0.0  # stop after this wall time (0 = no limit)
    min_replay_steps: int = 64  # wait for this many stored steps before training
    refresh_every_s: float = 2.0  # re-scan the episode store for new episodes this often
    log_every_s: float = 5.0  # progress line + CSV/wandb row this often
    device: str = "auto"  # auto | cpu | cuda
    num_threads: int = 0  # torch CPU threads (0 = torch default)
    # RLPD / SAC
    gamma: float = 0.97
    tau: float = 0.005
    init_temperature: float = 0.01
    num_critics: int = 2  # ensemble size (RLPD: 2, or 10 with rl_critic_subsample=2)
    utd_ratio: int = 1  # critic updates per actor update (update-to-data ratio)
    rl_n_step: int = 1  # TD target over up to this many recorded steps (sum of gamma^i r, then gamma^m V); sparse reward only
    reward: str = "sparse"  # sparse (stored reward) | critic (progress-critic dense reward)
    rl_obs: str = "state"  # state (obs/state + obs/task_state) | image (cameras + obs/state)
    rl_cameras: tuple[str, ...] = ()  # image mode: cameras to use ((): all in the batch)
    rl_actor: str = "standalone"  # standalone | residual (on top of the VLA's action) | noise (DSRL: picks a frozen flow VLA's noise)
    rl_noise_bound: float = 1.5  # rl_actor=noise: the actor's noise lies in [-bound, bound]^(H·D)
    rl_noise_invert_iters: int = 3  # rl_actor=noise: fixed-point iterations per Euler step when inverting recorded actions
    # rl_actor=noise with a remote flow VLA (policy.server_url, e.g. pi0 behind openpi): its noise shape
    # [action_horizon, action_dim] as the model samples it (openpi pads action_dim to 32); () = the local VLA's
    rl_noise_shape: tuple[int, ...] = ()
    rl_residual_scale: float = 0.3  # residual mode: action = clip(base + scale * actor)
    rl_gripper: str = "discrete"  # discrete (close/stay/open critic) | continuous (actor dim)
    rl_gripper_penalty: float = 0.02  # reward penalty per gripper toggle (discrete gripper)
    rl_gripper_closed_below: float = 0.8  # measured opening below this counts as 'closed'
    rl_demo_fraction: float = 0.5  # share of each batch from the demo+intervention view
    rl_critic_subsample: int = 2  # target = min over this many random ensemble members
    rl_hidden_dims: tuple[int, ...] = (256, 256)
    rl_encoder_channels: int = 32
    rl_latent_dim: int = 64
    rl_drq_pad: int = 4  # DrQ random-shift padding in pixels (0 = off)
    rl_backup_entropy: bool = True
    rl_grad_clip: float = 0.0  # 0 = off
    rl_bc_weight: float = 0.0  # actor: + this x BC loss on demo+intervention samples (0 = pure SAC)
    rl_bc_q_filter: bool = True  # BC only where the critic rates the recorded action above the actor's
    critic_online_ensemble: int = 2  # reward=critic_online: progress critics trained on the run's episodes
    critic_online_penalty: float = 1.0  # reward = mean Δ - this x ensemble std of Δ
    critic_online_success_bonus: float = 1.0  # + this where every member's P(done | next obs) > threshold
    critic_online_done_threshold: float = 0.75  # ... which is also the TD terminal
    critic_online_warmup_steps: int = 200  # critic steps per member before the first RL update
    critic_online_steps: int = 20  # critic steps per member each round ...
    critic_online_train_every_s: float = 15.0  # ... this often
    critic_online_rescore_per_batch: int = 32  # older-version scores refreshed per batch (-1: all)

    def __post_init__(self) -> None:
        choice("learner.algorithm", self.algorithm, ("weighted_bc", "bc", "rlpd"))
        choice("learner.finetune", self.finetune, ("full", "lora", "expert"))
        positive("learner.lora_rank", self.lora_rank)
        positive("learner.lora_alpha", self.lora_alpha)
        self.lora_targets = tuple(str(t) for t in self.lora_targets)
        if self.finetune == "lora" and (not self.lora_targets or any(not t for t in self.lora_targets)):
            raise ConfigError(f"learner.lora_targets={list(self.lora_targets)} must name at least one module "
                              "(suffixes of Linear/Conv2d module names, e.g. [self_qkv, mlp.0])")
        if self.finetune != "full" and self.algorithm == "rlpd":
            raise ConfigError(f"learner.finetune={self.finetune} fine-tunes the VLA with weighted BC; use "
                              "learner.algorithm=weighted_bc|bc, or learner.finetune=full with rlpd")
        choice("learner.memory_strategy", self.memory_strategy, ("fifo", "filo", "lifo_intervention", "mifo_intervention"))
        choice("learner.reward", self.reward, ("sparse", "critic", "critic_online"))
        in_range("learner.critic_online_done_threshold", self.critic_online_done_threshold, 0.0, 1.0)
        if self.critic_online_rescore_per_batch < -1:
            raise ConfigError(f"learner.critic_online_rescore_per_batch={self.critic_online_rescore_per_batch} must be "
                              ">= 0, or -1 to rescore every older-version score")
        choice("learner.device", self.device, ("auto", "cpu", "cuda"))
        choice("learner.rl_obs", self.rl_obs, ("state", "image"))
        choice("learner.rl_actor", self.rl_actor, ("standalone", "residual", "noise"))
        choice("learner.rl_gripper", self.rl_gripper, ("discrete", "continuous"))
        choice("learner.advantage_source", self.advantage_source, ("critic", "critic_online"))
        in_range("learner.advantage_positive_frac", self.advantage_positive_frac, 0.0, 1.0)
        in_range("learner.advantage_dropout", self.advantage_dropout, 0.0, 1.0)
        if self.advantage_conditioning and self.algorithm not in ("weighted_bc", "bc"):
            raise ConfigError("learner.advantage_conditioning trains the VLA with weighted BC: use learner=weighted_bc "
                              f"(got learner.algorithm={self.algorithm})")
        if self.rl_actor == "noise" and self.algorithm != "rlpd":
            raise ConfigError(f"learner.rl_actor=noise (DSRL) is an RLPD actor; set learner=dsrl (got learner.algorithm="
                              f"{self.algorithm})")
        for cam in self.rl_cameras:
            choice("learner.rl_cameras[]", cam, ("front", "wrist"))
        if self.rl_noise_shape and (len(self.rl_noise_shape) != 2 or min(self.rl_noise_shape) < 1):
            raise ConfigError(f"learner.rl_noise_shape={list(self.rl_noise_shape)} must be [action_horizon, action_dim] "
                              "of the steered model's noise, e.g. [50, 32] for an openpi pi0 checkpoint")
        for k in ("batch_size", "lr", "publish_every_updates", "publish_every_s", "checkpoint_every_s",
                  "num_critics", "utd_ratio", "rl_critic_subsample", "rl_encoder_channels", "rl_latent_dim",
                  "refresh_every_s", "log_every_s", "advantage_max_weight", "critic_online_ensemble",
                  "critic_online_train_every_s", "rl_noise_bound", "rl_noise_invert_iters"):
            positive(f"learner.{k}", getattr(self, k))
        for k in ("max_updates", "max_minutes", "min_replay_steps", "num_threads", "checkpoint_every_updates",
                  "rl_drq_pad", "rl_gripper_penalty", "advantage_beta", "rl_grad_clip", "rl_residual_scale", "rl_bc_weight",
                  "critic_online_penalty", "critic_online_success_bonus", "critic_online_warmup_steps", "critic_online_steps"):
            positive(f"learner.{k}", getattr(self, k), allow_zero=True)
        positive("learner.memory_max_steps", self.memory_max_steps)
        positive("learner.pre_intervention_k", self.pre_intervention_k, allow_zero=True)
        choice("learner.pre_intervention", self.pre_intervention, ("fixed", "estimated"))
        positive("learner.pre_intervention_min_k", self.pre_intervention_min_k, allow_zero=True)
        positive("learner.pre_intervention_max_k", self.pre_intervention_max_k)
        positive("learner.pre_intervention_stall_m", self.pre_intervention_stall_m)
        if self.pre_intervention_min_k > self.pre_intervention_max_k:
            raise ConfigError(f"learner.pre_intervention_min_k={self.pre_intervention_min_k} must be <= "
                              f"learner.pre_intervention_max_k={self.pre_intervention_max_k}")
        in_range("learner.gamma", self.gamma, 0.0, 1.0)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"learner.ema_decay={self.ema_decay} must be in [0, 1) (0 = off; 0.99-0.999 typical)")
        in_range("learner.tau", self.tau, 0.0, 1.0)
        in_range("learner.rl_demo_fraction", self.rl_demo_fraction, 0.0, 1.0)
        in_range("learner.rl_gripper_closed_below", self.rl_gripper_closed_below, 0.0, 1.0)
        positive("learner.init_temperature", self.init_temperature)
        if self.rl_critic_subsample > self.num_critics:
            raise ConfigError(
                f"learner.rl_critic_subsample={self.rl_critic_subsample} must be <= learner.num_critics={self.num_critics}"
            )
        positive("learner.rl_n_step", self.rl_n_step)
        if self.rl_n_step > 1 and (self.reward != "sparse" or self.rl_actor != "standalone"):
            raise ConfigError(f"learner.rl_n_step={self.rl_n_step} sums the stored reward over recorded steps: it needs "
                              f"learner.reward=sparse and learner.rl_actor=standalone (got reward={self.reward}, "
                              f"rl_actor={self.rl_actor}); set learner.rl_n_step=1")
        if not self.rl_hidden_dims or any(h <= 0 for h in self.rl_hidden_dims):
            raise ConfigError(f"learner.rl_hidden_dims={list(self.rl_hidden_dims)} must be a non-empty list of positive widths")
