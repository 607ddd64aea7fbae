"""The learner process: tail the episode store(s), train, publish weights, checkpoint, log.

    summary = main(cfg, stores=["runs/x/store"], run_dir="runs/x/learner", endpoint="tcp://127.0.0.1:5556")

One iteration: (every ``refresh_every_s``) load newly finalised episodes into the replay; sample
the configured mix (weighted BC: Sirius-weighted ``bc`` view with action chunks; RLPD:
``rl_demo_fraction`` from the demo+intervention view, the rest online, ``utd_ratio`` x batch);
``algo.update(batch)``; publish weights when ``publish_every_updates`` updates or
``publish_every_s`` seconds have passed; checkpoint atomically every ``checkpoint_every_s``; log.

Resume: a run directory with a checkpoint continues from it exactly — weights, optimisers, RNG
(torch, numpy, python, the sampler), step, replay memory (which episodes were held/seen) and the
weight version. The version continues from the highest version ever *published* (recorded on
every publish), so subscribers, which reject non-increasing versions, accept the resumed learner.

Under ``torchrun`` every rank trains on its share of the batch through DDP; rank 0 alone
publishes, checkpoints and logs, and broadcasts when to stop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from hil_robot.config import RootConfig
from hil_robot.learn import checkpoint as ckpt
from hil_robot.learn import dist
from hil_robot.learn.metrics_log import MetricsLogger

log = logging.getLogger("hil_robot.learner")


def sample_rlpd(replay: Any, n: int, demo_fraction: float, rng: np.random.Generator,
                images: bool = True) -> dict[str, Any]:
    """``demo_fraction`` of n from the demo+intervention ('offline') view, the rest 'online'; all
    from one view when the other is empty. ``images=False``: no camera keys (state-only RL)."""
    from hil_robot.learn.rlpd import mix_batches

    buf = replay.buffer
    n_off = int(round(n * demo_fraction))
    if buf.view_size("offline") == 0:
        n_off = 0
    elif buf.view_size("online") == 0:
        n_off = n
    if n_off in (0, n):
        batch = replay.sample(n, 1, view="offline" if n_off else "online", rng=rng, images=images)
        batch["is_offline"] = np.full(n, 1.0 if n_off else 0.0, np.float32)
        return batch
    return mix_batches(replay.sample(n_off, 1, view="offline", rng=rng, images=images),
                       replay.sample(n - n_off, 1, view="online", rng=rng, images=images))


def n_step_targets(buffer: Any, batch: dict[str, Any], n: int, gamma: float, images: bool = False) -> dict[str, Any]:
    """The batch's transitions stretched over up to ``n`` recorded steps (``learner.rl_n_step``):
    reward = sum of gamma^i r_{t+i}, ``discount`` = gamma^m for a span of m steps (shorter where the
    episode ends), done / truncated and next_obs of the span's last step. A span ending on a step that
    can neither bootstrap nor is terminal is replaced by another row of the batch (the size stays)."""
    from hil_robot.learn.dsrl import apply_spans, take_rows

    size = len(batch["reward"])
    span = buffer.n_step(np.asarray(batch["replay_row"]), n, gamma)
    keep = np.flatnonzero(span["valid"])
    if len(keep) == 0:
        return batch
    if len(keep) < size:  # rare: refill from the valid rows so the update's batch size holds
        fill = np.resize(keep, size)
        batch, span = take_rows(batch, fill, size), {k: v[fill] for k, v in span.items()}
    return apply_spans(buffer, batch, span, images)


@torch.no_grad()
def add_base_actions(batch: dict[str, Any], vla: Any) -> dict[str, Any]:
    """Residual RL: the VLA's first action at obs and next_obs -> ``obs/base_action``,
    ``next_obs/base_action`` float32 [B, 7]."""
    from policies.vla import batch_to_torch, next_obs_view

    mb = batch_to_torch(batch, vla.device)
    vla.model.eval()
    batch["obs/base_action"] = vla.model.sample_actions(mb)[:, 0].float().cpu().numpy()
    batch["next_obs/base_action"] = vla.model.sample_actions(next_obs_view(mb))[:, 0].float().cpu().numpy()
    return batch


def load_critic_backend(path: str, device: torch.device) -> Any:
    """A trained progress critic (``policies.checkpoint`` directory of kind "critic") as a backend."""
    if not path:
        raise ValueError("learner.reward=critic / learner.advantage_beta>0 need a progress critic: "
                         "learner.critic_checkpoint=DIR (from `hil-robot train-critic`) or critic.endpoint=tcp://HOST:PORT "
                         "(a critic served by `hil-robot serve-critic`)")
    from policies.checkpoint import check_tensors, read_checkpoint
    from policies.critic import CriticNetConfig, LocalCriticBackend, ProgressCritic

    doc, tensors = read_checkpoint(path, kind="critic")
    model = ProgressCritic(CriticNetConfig.from_dict(doc["model_config"]))
    model.load_state_dict(check_tensors(tensors, model, f"critic checkpoint {path}"), strict=True)
    return LocalCriticBackend(model.eval(), device=device)


def critic_advantages(backend: Any, batch: dict[str, Any]) -> np.ndarray:
    """A_i from the progress critic: Δprogress(o_t, o_{t+1}) standardised over the batch, so
    ``advantage_beta`` is in units of batch standard deviations. float32 [B]."""
    from hil_robot.learn.critic import label_rewards

    delta = label_rewards(backend, batch)["reward"].astype(np.float64)
    return ((delta - delta.mean()) / (delta.std() + 1e-6)).astype(np.float32)


@dataclasses.dataclass
class LearnerState:
    step: int = 0
    version: int = 0
    started_s: float = 0.0


class Learner:
    """Owns replay, algorithm, publisher, logger and checkpoints; ``run()`` is the loop."""

    def __init__(self, cfg: RootConfig, stores: Sequence[str | os.PathLike], run_dir: str | os.PathLike, *,
                 endpoint: str | None = None, publisher: Any = None, resume: bool = True,
                 stop: threading.Event | None = None, wait_for_data_s: float = 600.0, curve: Any = None):
        from hil_robot.data import StoreReplay

        self.cfg = cfg
        lc = cfg.learner
        self.run_dir = Path(run_dir)
        self.stop = stop or threading.Event()
        if lc.num_threads:
            torch.set_num_threads(lc.num_threads)
        self.device = dist.setup(lc.device)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.main_rank = self.rank == 0
        self.per_rank_batch = max(1, lc.batch_size // self.world)
        torch.manual_seed(cfg.experiment.seed)  # identical initial weights on every rank
        self.sample_rng = np.random.default_rng(cfg.experiment.seed + 1000 * self.rank)
        last = ckpt.latest(self.run_dir) if resume else None
        # on resume, rebuild the memory from the checkpoint's episode list first (same rows, same
        # samples), then pick up what was recorded since
        self.replay = StoreReplay([str(s) for s in stores], lc.memory_max_steps, lc.memory_strategy, sirius=lc.sirius,
                                  keep_demos=lc.memory_keep_demos, seed=cfg.experiment.seed + self.rank,
                                  refresh=last is None)
        self.state = LearnerState()
        self._critic_backend = None
        # progress-critic reward per stored transition, computed once: the critic is frozen and a
        # stored transition never changes, so only transitions not seen before are scored
        self._reward_cache: dict[tuple[int, int, int], float] = {}
        self.reward_cache_stats = {"hits": 0, "scored": 0}
        self.vla = None  # the VLA policy (weighted BC trains it; residual RLPD acts on top of it)
        self.online_critic = None  # reward=critic_online: critics trained on this run's episodes
        self.noise_labeler = None  # rl_actor=noise (DSRL): recorded actions -> the frozen VLA's noise
        self._critic_metrics: dict[str, float] = {}
        resumed_state = resumed_meta = None
        if last is not None:
            resumed_state, resumed_meta = ckpt.load(last)
            self.replay.load_state_dict(resumed_meta["replay"])
            self.replay.refresh()
        if self._needs_frozen_critic:
            self._check_critic(wait_for_data_s)  # a wrong path or a dead critic server fails now, not after the data
        self._wait_for_data(wait_for_data_s)
        self.algo = self._build_algorithm(fresh=last is None)
        if resumed_state is not None:
            self.algo.load_state_dict(resumed_state["algo"])
            ckpt.set_rng_state(resumed_state["rng"])
            self.sample_rng.bit_generator.state = resumed_meta["sample_rng"]
            self.state.step = int(resumed_meta["step"])
            self.state.version = int(resumed_meta["version"])
            log.info("resumed from %s (step %d, weight version %d)", last, self.state.step, self.state.version)
        # never re-use a version a subscriber may already hold
        self.state.version = max(self.state.version, ckpt.published_version(self.run_dir))
        self.resumed_from = str(last) if last is not None else ""
        self.publisher = publisher
        self._base_published = False
        self._own_publisher = False
        if self.publisher is None and endpoint and self.main_rank:
            from hil_robot.transport.weights import WeightPublisher

            t = cfg.transport  # curve: the bound endpoint's CURVE keys (transport.security.CurveKeys) or None
            self.publisher = WeightPublisher(endpoint, curve=curve, chunk_bytes=t.weight_chunk_bytes,
                                             checksum_algo=t.weight_checksum, heartbeat_s=t.heartbeat_s)
            self._own_publisher = True
        self.logger = MetricsLogger(self.run_dir, wandb_mode=cfg.experiment.wandb_mode, config=cfg.to_dict(),
                                    name=f"{cfg.experiment.name}-learner", enabled=self.main_rank)

    # ------------------------------------------------------------------ setup
    def _wait_for_data(self, timeout_s: float) -> None:
        lc = self.cfg.learner
        deadline = time.monotonic() + timeout_s
        need = max(1, lc.min_replay_steps)
        while self.replay.buffer.view_size("all") < need:
            if self.stop.is_set() or time.monotonic() > deadline:
                raise TimeoutError(f"the replay holds {self.replay.buffer.view_size('all')} transitions after "
                                   f"{timeout_s:.0f} s; learner.min_replay_steps={need}. Record episodes into "
                                   f"{[str(s.root) for s in self.replay.stores]} first")
            time.sleep(min(0.5, lc.refresh_every_s))
            if self.replay.refresh():
                log.info("replay: %d episodes, %d steps", self.replay.num_episodes, self.replay.num_steps)

    def _build_algorithm(self, fresh: bool) -> Any:
        lc = self.cfg.learner
        if lc.algorithm in ("weighted_bc", "bc") and self.cfg.policy.name == "lerobot":
            # a LeRobot checkpoint (LeRobot env), fine-tuned with its own loss and the Sirius weights;
            # its normalisation statistics are the checkpoint's (never refitted)
            from hil_robot.learn.lerobot_bc import LeRobotBC, check_supported
            from policies.lerobot_backend import make_lerobot_policy

            check_supported(lc, self.cfg.policy)
            self.vla = make_lerobot_policy(self.cfg, device=str(self.device))
            return LeRobotBC(lc, self.vla, self.device)
        if lc.algorithm in ("weighted_bc", "bc"):
            from hil_robot.learn.weighted_bc import WeightedBC
            from policies.registry import make_policy

            if self.cfg.policy.name != "vla":
                raise ValueError(f"learner.algorithm={lc.algorithm} trains the VLA; set policy=vla (got {self.cfg.policy.name})")
            self.vla = make_policy(self.cfg)
            self.vla.model.to(self.device)
            self.vla.device = self.device
            if fresh and not self.cfg.policy.checkpoint:
                stats_batch = self.replay.sample(min(4096, max(256, self.replay.num_steps)), self._horizon(), view="all",
                                                 rng=np.random.default_rng(self.cfg.experiment.seed))
                self.vla.fit_norm_stats(stats_batch)  # same data, same stats on every rank
            return WeightedBC(lc, self.vla, self.device, advantage_fn=self._advantage_fn())
        from hil_robot.learn.rlpd import RLPD, obs_spec_from_batch

        if lc.rl_actor == "residual":
            from policies.registry import make_policy

            self.vla = make_policy(self.cfg)
            self.vla.model.to(self.device)
            self.vla.device = self.device
        probe = self.replay.sample(2, 1, view="all", rng=np.random.default_rng(0))
        spec = obs_spec_from_batch(probe, lc)
        if lc.rl_actor == "noise":  # DSRL: SAC over the noise of a frozen flow VLA (policy.checkpoint)
            from hil_robot.learn.dsrl import NoiseLabeler
            from policies.vla import make_vla_policy

            if self.cfg.policy.checkpoint:  # local: invert what has no recorded noise (else the labeler needs rl_noise_shape)
                self.vla = make_vla_policy(self.cfg)
                self.vla.model.to(self.device).requires_grad_(False)
                self.vla.device = self.device
            self.noise_labeler = NoiseLabeler(self.vla, self.replay.buffer, lc, noise_shape=tuple(lc.rl_noise_shape),
                                              span=self.cfg.policy.n_action_steps, images=self._rlpd_images)
            spec["noise_dim"] = self.noise_labeler.noise_dim
        algo = RLPD(lc, spec, self.device)
        if fresh:  # same sample (fixed seed) on every rank; a resumed run restores the stats
            algo.fit_state_stats(self.replay.sample(min(4096, max(256, self.replay.num_steps)), 1, view="all",
                                                    rng=np.random.default_rng(self.cfg.experiment.seed)))
        return algo

    def _horizon(self) -> int:
        if self.vla is not None and self.cfg.policy.name == "lerobot":
            return int(self.vla.horizon)  # the LeRobot checkpoint's chunk_size
        return int(self.vla.config.action_horizon) if self.vla is not None else 1

    def _critic(self) -> Any:
        """The frozen progress critic of ``reward=critic`` / ``advantage_source=critic``: the small
        critic at ``learner.critic_checkpoint``, else the ``critic`` group's (a served critic at
        ``critic.endpoint`` — e.g. a VLM critic on a GPU host — or ``critic.kind=vlm`` in-process)."""
        if self._critic_backend is None:
            if self._critic_from_group:
                from policies.critic_remote import make_critic_backend

                self._critic_backend = make_critic_backend(self.cfg)
            else:
                self._critic_backend = load_critic_backend(self.cfg.learner.critic_checkpoint, self.device)
        return self._critic_backend

    @property
    def _critic_from_group(self) -> bool:
        """No learner.critic_checkpoint, but the critic group names one (served, VLM or small)."""
        cc = self.cfg.critic
        return not self.cfg.learner.critic_checkpoint and bool(cc.endpoint or cc.kind == "vlm" or cc.checkpoint)

    @property
    def _critic_source(self) -> str:
        cc = self.cfg.critic
        return (cc.endpoint or cc.vlm_path or cc.checkpoint) if self._critic_from_group else self.cfg.learner.critic_checkpoint

    @property
    def _needs_frozen_critic(self) -> bool:
        lc = self.cfg.learner
        configured = bool(lc.critic_checkpoint) or self._critic_from_group
        advantage = (lc.advantage_beta > 0 or lc.advantage_conditioning) and lc.advantage_source != "critic_online"
        # advantages may also come from the data's 'advantage' column: then no critic is needed
        return (lc.algorithm == "rlpd" and lc.reward == "critic") or (advantage and configured)

    def _check_critic(self, timeout_s: float) -> None:
        """Load the frozen critic; a served one must answer a ping and say it is a critic."""
        backend = self._critic()
        client = getattr(backend, "client", None)
        if client is None:
            return
        try:
            meta = client.wait_ready(min(timeout_s, 30.0))
        except TimeoutError as e:
            raise RuntimeError(f"no progress critic answers at critic.endpoint={self.cfg.critic.endpoint} ({e}); "
                               "start one there (`hil-robot serve-critic critic.kind=vlm critic.vlm_path=DIR "
                               "port=N`) or use learner.reward=sparse") from None
        if meta.get("kind") != "critic":
            raise RuntimeError(f"the server at critic.endpoint={self.cfg.critic.endpoint} is not a critic (its metadata "
                               f"kind is {meta.get('kind')!r}); point critic.endpoint at `hil-robot serve-critic`")
        log.info("progress critic at %s: %s", self.cfg.critic.endpoint, meta.get("name", "?"))

    def _score_critic(self, batch: dict[str, Any]) -> np.ndarray:
        from hil_robot.learn.critic import label_rewards

        backend = self._critic()
        try:
            return label_rewards(backend, batch)["reward"]
        except (TimeoutError, ConnectionError) as e:
            raise RuntimeError(f"the progress critic at {self._critic_source} did not answer ({e}); the learner "
                               "stops rather than train on missing rewards: start it (`hil-robot serve-critic "
                               "...`) and resume the learner, or use learner.reward=sparse") from e

    def critic_rewards(self, batch: dict[str, Any]) -> np.ndarray:
        """reward [B] float32 = the progress critic's Δ(obs, next_obs), scoring only transitions
        not scored before (cache keyed by store, episode and step)."""
        from hil_robot.learn.critic import label_rewards

        keys = list(zip(batch["store_index"].tolist(), batch["episode_index"].tolist(), batch["step_index"].tolist()))
        cache = self._reward_cache
        if len(cache) + len(keys) > 2 * self.cfg.learner.memory_max_steps:
            cache.clear()  # bounded: at most twice the replay's capacity
        first: dict[tuple[int, int, int], int] = {}  # unscored transition -> its first row in the batch
        for i, k in enumerate(keys):
            if k not in cache:
                first.setdefault(k, i)
        missing = list(first.values())
        if missing:
            idx = np.asarray(missing)
            sub = {k: v[idx] for k, v in batch.items() if k.startswith(("obs/", "next_obs/"))}
            sub["instruction"] = [batch["instruction"][i] for i in missing]
            rewards = self._score_critic(sub)
            for i, r in zip(missing, rewards.tolist()):
                cache[keys[i]] = r
        self.reward_cache_stats["scored"] += len(missing)
        self.reward_cache_stats["hits"] += len(keys) - len(missing)
        return np.array([cache[k] for k in keys], np.float32)

    def _online_critic(self) -> Any:
        if self.online_critic is None:
            from hil_robot.learn.online_critic import OnlineCritic

            self.online_critic = OnlineCritic(self.cfg.learner, self.replay.buffer, self.device,
                                              seed=self.cfg.experiment.seed + 1000 * self.rank)
        self._critic_metrics = self.online_critic.maybe_train()
        return self.online_critic

    def _advantage_fn(self) -> Callable | None:
        lc = self.cfg.learner
        if lc.advantage_beta <= 0 and not lc.advantage_conditioning:
            return None
        if lc.advantage_source == "critic_online":  # critics trained on this run's own episodes
            def online(batch: dict[str, Any]) -> np.ndarray:
                r = self._online_critic().relabel(dict(batch))["reward"].astype(np.float64)
                return ((r - r.mean()) / (r.std() + 1e-6)).astype(np.float32)

            return online
        return lambda batch: critic_advantages(self._critic(), batch)

    # ------------------------------------------------------------------ one step
    def sample(self) -> dict[str, Any]:
        lc = self.cfg.learner
        if lc.algorithm == "rlpd":
            batch = sample_rlpd(self.replay, self.per_rank_batch * lc.utd_ratio, lc.rl_demo_fraction,
                                self.sample_rng, images=self._rlpd_images)
            if lc.rl_n_step > 1:
                batch = n_step_targets(self.replay.buffer, batch, lc.rl_n_step, lc.gamma, images=self._rlpd_images)
            if lc.rl_actor == "residual":
                add_base_actions(batch, self.vla)
            if lc.reward == "critic":
                batch["reward"] = self.critic_rewards(batch)
            elif lc.reward == "critic_online":
                batch = self._online_critic().relabel(batch)
            if self.noise_labeler is not None:
                batch = self.noise_labeler.relabel(batch)
            return batch
        return self.replay.sample(self.per_rank_batch, self._horizon(), view="bc", rng=self.sample_rng)

    @property
    def _rlpd_images(self) -> bool:
        """Whether RLPD batches carry the cameras: from state with the stored reward nothing reads them
        (the online critics fetch the frames of the rows they score from the replay themselves)."""
        lc = self.cfg.learner
        return lc.rl_obs == "image" or lc.rl_actor == "residual" or lc.reward == "critic"

    @property
    def delta_mode(self) -> bool:
        """learner.finetune=lora|expert: publish only the trainable tensors (weights.publish_delta)."""
        return self.cfg.learner.finetune != "full" and self.vla is not None and hasattr(self.algo, "publish_delta")

    def publish(self) -> None:
        if self.publisher is None or not self.main_rank:
            return
        self.state.version += 1
        if self.delta_mode:
            if not self._base_published:  # the frozen base never changes: hand it over once
                from hil_robot.transport.weights import compute_base_id

                base, adapter = self.vla.base_numpy(), self.vla.adapter_info()
                self.publisher.set_base(base, compute_base_id(base, adapter), adapter)
                self._base_published = True
            info = self.publisher.publish_delta(self.algo.publish_delta(), self.state.version, self.state.step)
        else:
            info = self.publisher.publish(self.algo.publish_weights(), self.state.version, self.state.step)
        info = info if isinstance(info, dict) else {}
        ckpt.record_published(self.run_dir, self.state.version, self.state.step,
                              kind="delta" if self.delta_mode else "full", nbytes=int(info.get("bytes", 0)))

    def save_checkpoint(self) -> Path | None:
        dist.check_in_sync(self.trainable_modules())  # collective: every rank calls save_checkpoint
        if not self.main_rank:
            return None
        meta = {
            "step": self.state.step, "version": self.state.version, "algorithm": self.cfg.learner.algorithm,
            "replay": self.replay.state_dict(), "sample_rng": self.sample_rng.bit_generator.state,
            "world_size": self.world, "config": self.cfg.to_dict(),
        }
        state = {"algo": self.algo.state_dict(), "rng": ckpt.rng_state()}
        writer = None
        if hasattr(self.algo, "save_policy"):  # LeRobot BC: a LeRobot save_pretrained directory
            def writer(tmp: Path) -> None:
                self.algo.save_policy(tmp / "policy")
        elif self.cfg.learner.algorithm in ("weighted_bc", "bc"):
            from policies import checkpoint as policy_ckpt

            def writer(tmp: Path) -> None:  # the weights that are served (the EMA when learner.ema_decay > 0)
                with self.algo.serving_weights():
                    policy_ckpt.save(tmp / "policy", self.vla, step=self.state.step, version=self.state.version)
        # Plots are redrawn by logger.close() (and `hil-robot report`), not on every checkpoint:
        # matplotlib took ~13 s per call under load on 2 cores, stalling training.
        return ckpt.save(self.run_dir, state, meta, extra_writer=writer)

    def trainable_modules(self) -> dict[str, torch.nn.Module]:
        if hasattr(self.algo, "critic_loss"):
            return {"critic": self.algo.critic_loss, "actor": self.algo.actor}
        return {"model": self.algo.model}

    # ------------------------------------------------------------------ loop
    def run(self, on_update: Callable[["Learner", dict[str, float]], None] | None = None) -> dict[str, Any]:
        lc = self.cfg.learner
        t_start = last_pub = last_ckpt = last_log = last_refresh = time.monotonic()
        updates_since_pub = updates_since_ckpt = updates_since_log = 0
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        last_metrics: dict[str, float] = {}
        rate = 0.0
        try:
            while True:
                now = time.monotonic()
                done = self.stop.is_set() or (lc.max_updates and self.state.step >= lc.max_updates) or \
                    (lc.max_minutes and now - t_start >= lc.max_minutes * 60)
                if dist.agree(bool(done)):
                    break
                if now - last_refresh >= lc.refresh_every_s:
                    if self.replay.refresh():
                        log.info("replay: %d episodes, %d steps", self.replay.num_episodes, self.replay.num_steps)
                    last_refresh = now
                metrics = self.algo.update(self.sample())
                if self._critic_metrics:  # a round of the online critic ran for this batch
                    metrics = {**metrics, **self._critic_metrics}
                if self.noise_labeler is not None:
                    metrics = {**metrics, **self.noise_labeler.metrics()}
                self.state.step += 1
                updates_since_pub += 1
                updates_since_ckpt += 1
                updates_since_log += 1
                for k, v in metrics.items():
                    sums[k] += v
                    counts[k] += 1
                last_metrics = metrics
                now = time.monotonic()
                if updates_since_pub >= lc.publish_every_updates or now - last_pub >= lc.publish_every_s:
                    self.publish()
                    updates_since_pub, last_pub = 0, now
                if dist.agree((lc.checkpoint_every_updates and updates_since_ckpt >= lc.checkpoint_every_updates)
                              or now - last_ckpt >= lc.checkpoint_every_s):
                    self.save_checkpoint()
                    updates_since_ckpt, last_ckpt = 0, now
                if now - last_log >= lc.log_every_s:
                    rate = updates_since_log / max(now - last_log, 1e-9)
                    self._log_row(sums, counts, rate)
                    sums.clear(), counts.clear()
                    updates_since_log, last_log = 0, now
                if on_update is not None:
                    on_update(self, metrics)
        finally:
            if updates_since_pub:
                self.publish()
            if updates_since_ckpt or self.state.step == 0 or not self.resumed_from:
                self.save_checkpoint()
            if counts:
                self._log_row(sums, counts, updates_since_log / max(time.monotonic() - last_log, 1e-9))
            self.close()
        elapsed = time.monotonic() - t_start
        return {"step": self.state.step, "version": self.state.version, "run_dir": str(self.run_dir), "world_size": self.world,
                "elapsed_s": elapsed, "updates_per_s": rate, "last_metrics": last_metrics,
                "resumed_from": self.resumed_from}

    def _log_row(self, sums: dict[str, float], counts: dict[str, int], rate: float) -> None:
        row = {k: sums[k] / counts[k] for k in sums}
        row.update({"learner/updates_per_s": rate, "learner/weight_version": float(self.state.version),
                    "learner/replay_steps": float(self.replay.num_steps),
                    "learner/replay_episodes": float(self.replay.num_episodes)})
        self.logger.log(self.state.step, row)
        if self.main_rank:
            main_loss = next((f"{k} {row[k]:.4g}" for k in ("wbc/loss", "bc/loss", "rlpd/critic_loss") if k in row), "")
            log.info("step %d | %.1f upd/s | weights v%d | replay %d eps / %d steps | %s", self.state.step, rate,
                     self.state.version, self.replay.num_episodes, self.replay.num_steps, main_loss)

    def close(self) -> None:
        self.logger.close()
        if self._own_publisher and self.publisher is not None:
            self.publisher.close()
            self.publisher = None


def main(cfg: RootConfig, stores: Sequence[str | os.PathLike], run_dir: str | os.PathLike | None = None, *,
         endpoint: str | None = None, publisher: Any = None, resume: bool = True, stop: threading.Event | None = None,
         wait_for_data_s: float = 600.0, curve: Any = None) -> dict[str, Any]:
    """Run the learner until ``learner.max_updates``/``max_minutes`` or ``stop``; returns a summary.

    stores: episode store folders to learn from; run_dir: checkpoints, metrics.csv, metrics.png
    (default ``<experiment.run_dir>/learner``); endpoint: weight bus PUB endpoint (None: no publishing);
    curve: CURVE keys for that endpoint (``transport.security.keys_from_config(t, server=True)``; None: plain).
    """
    run_dir = Path(run_dir) if run_dir is not None else Path(cfg.experiment.run_dir) / "learner"
    learner = Learner(cfg, stores, run_dir, endpoint=endpoint, publisher=publisher, resume=resume, stop=stop,
                      wait_for_data_s=wait_for_data_s, curve=curve)
    return learner.run()
