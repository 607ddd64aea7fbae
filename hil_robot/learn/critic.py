"""Train the progress critic from episodes, label rewards with it, score/filter demos (DESIGN §4).

Training pairs (frames a, b of one episode, its instruction; all ordered pairs among a few frames
of each sampled episode, so each frame is encoded once per step):

* successful episodes: progress p_i = i / (T - 1) (normalised time); target Δ = p_b - p_a for
  random pairs in both orders (reversed pairs give negative targets); done = 1 on the last
  ``done_last_k`` frames, else 0;
* failed episodes: target Δ = 0 (no progress towards the goal) with weight ``fail_weight``, done = 0;
* mismatched instructions: a success pair scored against another task's instruction: Δ = 0, done = 0;
* done-focused groups include a final frame of a success, so done positives are not rare.

    episodes = episodes_from_store(["runs/x/store"], cameras=("front", "wrist"))
    critic, metrics = train_critic(episodes, CriticTrainSettings(steps=600))
    rewards = label_rewards(LocalCriticBackend(critic), replay_batch)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from policies.critic import CriticBackend, CriticNetConfig, ProgressCritic, score_episode

log = logging.getLogger(__name__)

# instructions of the sim tasks: the default pool of mismatched instructions
DEFAULT_OTHER_INSTRUCTIONS = (
    "pick up the red cube and lift it",
    "push the blue block onto the green target",
    "insert the peg into the hole",
    "stack the red cube on top of the yellow cube",
    "open the drawer",
    "wave at the camera",
)


@dataclasses.dataclass
class CriticEpisode:
    """frames: {"images/<cam>": uint8 [T, H, W, 3], "state": float32 [T, 15]} (T includes the final
    observation after the last action when known); success: whether the instruction was completed."""

    frames: dict[str, np.ndarray]
    instruction: str
    success: bool
    name: str = ""

    def __len__(self) -> int:
        return len(self.frames["state"])


@dataclasses.dataclass
class CriticTrainSettings:
    steps: int = 600
    episodes_per_batch: int = 8  # episode groups per step
    frames_per_episode: int = 4  # frames drawn from each; all ordered pairs within a group are trained
    lr: float = 2e-3
    weight_decay: float = 1e-4
    fail_fraction: float = 0.3  # share of groups drawn from failed episodes
    fail_weight: float = 0.5
    mismatch_fraction: float = 0.25  # share of success groups also scored against another instruction
    done_last_k: int = 2
    done_focus: float = 0.5  # chance that a success group includes one of its final frames
    done_loss_weight: float = 0.5
    seed: int = 0
    device: str = "cpu"
    log_every: int = 100


def episodes_from_store(paths: Sequence[str], cameras: Sequence[str], min_steps: int = 3) -> list[CriticEpisode]:
    """Read every finished episode of the given episode stores (final observation appended)."""
    from hil_robot.data import EpisodeStore

    out = []
    for path in paths:
        store = EpisodeStore(path, read_only=True, create=False)
        for ep in store:
            if len(ep) < min_steps:
                continue
            missing = [c for c in cameras if c not in ep.cameras]
            if missing:
                raise ValueError(f"{path}: episode {ep.meta.episode_id} has no camera(s) {missing} (has {ep.cameras})")
            frames = {f"images/{c}": ep.frames(c) for c in cameras}
            frames["state"] = np.asarray(ep.columns["obs/state"], np.float32)
            if ep.final_obs is not None and all(f"images/{c}" in ep.final_obs for c in cameras):
                for c in cameras:
                    frames[f"images/{c}"] = np.concatenate([frames[f"images/{c}"], ep.final_frame(c)[None]])
                frames["state"] = np.concatenate([frames["state"], np.asarray(ep.final_obs["obs/state"], np.float32)[None]])
            out.append(CriticEpisode(frames, ep.meta.instruction, bool(ep.meta.success), ep.meta.episode_id))
    return out


class PairSampler:
    """Holds all frames in flat arrays and draws training groups: a few frames from each of a few
    episodes. Every frame is encoded once per step and all ordered pairs within a group are
    trained, which is far cheaper than encoding two fresh frames per pair."""

    def __init__(self, episodes: Sequence[CriticEpisode], settings: CriticTrainSettings,
                 other_instructions: Sequence[str] = DEFAULT_OTHER_INSTRUCTIONS) -> None:
        if not any(e.success for e in episodes):
            raise ValueError("critic training needs at least one successful episode")
        self.s = settings
        self.rng = np.random.default_rng(settings.seed)
        keys = list(episodes[0].frames)
        self.frames = {k: np.concatenate([e.frames[k] for e in episodes]) for k in keys}
        self.lengths = np.array([len(e) for e in episodes])
        self.starts = np.r_[0, np.cumsum(self.lengths)[:-1]]
        self.success = np.array([e.success for e in episodes])
        self.instructions = [e.instruction for e in episodes]
        own = set(self.instructions)
        self.others = [t for t in other_instructions if t not in own] or ["do nothing"]
        self.succ_ids = np.flatnonzero(self.success)
        self.fail_ids = np.flatnonzero(~self.success)

    def sample(self) -> dict[str, Any]:
        """-> frames ``idx`` [N]; per-frame ``done`` [N] and ``frame_text`` (N strings); pairs
        ``pa``/``pb`` (positions into idx) with ``delta``, ``weight`` and ``pair_text`` (strings);
        extra done negatives ``neg_frames`` (positions) with ``neg_text`` (mismatched instructions)."""
        rng, s = self.rng, self.s
        m = s.frames_per_episode
        idx, done, frame_text = [], [], []
        pa, pb, delta, weight, pair_text = [], [], [], [], []
        neg_frames, neg_text = [], []
        for g in range(s.episodes_per_batch):
            fail = len(self.fail_ids) > 0 and rng.random() < s.fail_fraction
            ep = int(rng.choice(self.fail_ids if fail else self.succ_ids))
            t = int(self.lengths[ep])
            local = rng.integers(0, t, size=m)
            if not fail and rng.random() < s.done_focus:
                local[0] = t - 1 - rng.integers(0, min(s.done_last_k, t))
            base = len(idx)
            idx.extend(self.starts[ep] + local)
            text = self.instructions[ep]
            frame_text.extend([text] * m)
            done.extend([0.0 if fail else float(i >= t - s.done_last_k) for i in local])
            progress = local / max(t - 1, 1)
            mismatch = (not fail) and rng.random() < s.mismatch_fraction
            other = self.others[int(rng.integers(len(self.others)))]
            for i in range(m):
                for j in range(m):
                    pa.append(base + i)
                    pb.append(base + j)
                    delta.append(0.0 if fail else progress[j] - progress[i])
                    weight.append(s.fail_weight if fail else 1.0)
                    pair_text.append(text)
                    if mismatch:  # the same frames against another task's instruction: no progress
                        pa.append(base + i)
                        pb.append(base + j)
                        delta.append(0.0)
                        weight.append(1.0)
                        pair_text.append(other)
            if mismatch:
                neg_frames.extend(range(base, base + m))
                neg_text.extend([other] * m)
        f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
        return {"idx": np.asarray(idx, np.int64), "done": f32(done), "frame_text": frame_text,
                "pa": np.asarray(pa, np.int64), "pb": np.asarray(pb, np.int64), "delta": f32(delta),
                "weight": f32(weight), "pair_text": pair_text, "neg_frames": np.asarray(neg_frames, np.int64),
                "neg_text": neg_text}

    def gather(self, idx: np.ndarray, device: torch.device) -> dict[str, Any]:
        images = {k[len("images/"):]: torch.from_numpy(v[idx]).to(device) for k, v in self.frames.items()
                  if k.startswith("images/")}
        return {"images": images, "state": torch.from_numpy(self.frames["state"][idx]).to(device)}


def critic_loss(model: ProgressCritic, sampler: PairSampler, group: Mapping[str, Any], device: torch.device,
                settings: CriticTrainSettings) -> tuple[torch.Tensor, dict[str, float]]:
    feats = model.frame_features(sampler.gather(group["idx"], device))  # [N, f], each frame encoded once
    pa, pb = torch.from_numpy(group["pa"]).to(device), torch.from_numpy(group["pb"]).to(device)
    delta, _ = model.heads(feats[pa], feats[pb], model.encode_text(group["pair_text"], device))
    target = torch.from_numpy(group["delta"]).to(device)
    w = torch.from_numpy(group["weight"]).to(device)
    delta_loss = (w * (delta - target).pow(2)).sum() / w.sum()
    # done: every frame with its own instruction, plus mismatched-instruction negatives
    frame_text = model.encode_text(list(group["frame_text"]) + list(group["neg_text"]), device)
    rows = torch.from_numpy(np.r_[np.arange(len(group["idx"])), group["neg_frames"]].astype(np.int64)).to(device)
    done_t = torch.from_numpy(np.r_[group["done"], np.zeros(len(group["neg_frames"]), np.float32)]).to(device)
    done_logit = model.done_logits(feats[rows], frame_text)
    pos = done_t.mean().clamp(0.05, 0.95)
    done_loss = F.binary_cross_entropy_with_logits(done_logit, done_t, pos_weight=(1 - pos) / pos)
    loss = delta_loss + settings.done_loss_weight * done_loss
    return loss, {"critic/delta_mse": float(delta_loss.detach()), "critic/done_bce": float(done_loss.detach())}


def train_critic(episodes: Sequence[CriticEpisode], settings: CriticTrainSettings | None = None,
                 net: CriticNetConfig | None = None, model: ProgressCritic | None = None) -> tuple[ProgressCritic, dict[str, Any]]:
    """Train (or continue training ``model``) on ``episodes``. -> (model in eval mode, metrics)."""
    settings = settings or CriticTrainSettings()
    torch.manual_seed(settings.seed)
    device = torch.device(settings.device)
    if not episodes:
        raise ValueError("critic training needs episodes; record some with `hil-robot collect-demos` first")
    cams = tuple(k[len("images/"):] for k in episodes[0].frames if k.startswith("images/"))
    hw = tuple(episodes[0].frames[f"images/{cams[0]}"].shape[1:3])
    if model is None:
        net = net or CriticNetConfig(cameras=cams, image_hw=hw)  # type: ignore[arg-type]
        model = ProgressCritic(net)
    sampler = PairSampler(episodes, settings)
    states = sampler.frames["state"]
    model.state_mean.copy_(torch.from_numpy(states.mean(0)))
    model.state_std.copy_(torch.from_numpy(np.maximum(states.std(0), 1e-2)))
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=settings.steps, pct_start=0.1)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for step in range(settings.steps):
        loss, metrics = critic_loss(model, sampler, sampler.sample(), device, settings)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % settings.log_every == 0 or step == settings.steps - 1:
            history.append({"step": step, **metrics})
            log.info("critic step %d: %s", step, metrics)
    model.eval()
    return model, {"history": history, "train_s": time.perf_counter() - t0, "episodes": len(episodes),
                   "frames": int(len(states))}


# ----------------------------------------------------------------------------- using a trained critic


def label_rewards(backend: CriticBackend, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Dense rewards for a replay batch: r = Δ(obs, next_obs) -> {"reward": [B], "p_done": [B]}."""
    a = {k[len("obs/"):]: v for k, v in batch.items() if k.startswith("obs/images/") or k == "obs/state"}
    b = {k[len("next_obs/"):]: v for k, v in batch.items() if k.startswith("next_obs/images/") or k == "next_obs/state"}
    if not b:
        raise ValueError("label_rewards needs next_obs/* keys in the batch")
    delta, p_done = backend.score(a, b, list(batch["instruction"]))
    return {"reward": delta, "p_done": p_done}


def score_episodes(backend: CriticBackend, episodes: Sequence[CriticEpisode], stride: int = 1) -> list[dict[str, Any]]:
    """Per episode: value curve, P(done) and the Spearman correlation of value with time."""
    out = []
    for ep in episodes:
        res = score_episode(backend, ep.frames, ep.instruction, stride=stride)
        res.update(name=ep.name, success=ep.success)
        out.append(res)
    return out


def filter_demos(backend: CriticBackend, episodes: Sequence[CriticEpisode], min_spearman: float = 0.8,
                 stride: int = 1) -> tuple[list[CriticEpisode], list[dict[str, Any]]]:
    """Keep demos whose critic value rises with time (Spearman ≥ ``min_spearman``). -> (kept, scores)."""
    scores = score_episodes(backend, episodes, stride)
    kept = [ep for ep, s in zip(episodes, scores) if np.isfinite(s["spearman"]) and s["spearman"] >= min_spearman]
    return kept, scores


def detection_rates(p_done_pos: np.ndarray, p_done_neg: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Recall on positives and false-positive rate on negatives at ``threshold``."""
    return {"recall": float(np.mean(np.asarray(p_done_pos) > threshold)),
            "false_positive_rate": float(np.mean(np.asarray(p_done_neg) > threshold))}


def collect_sim_episodes(task: str, n_success: int, n_failure: int, *, image_hw: tuple[int, int] = (64, 64),
                         cameras: Sequence[str] = ("front", "wrist"), seed: int = 0, failure_noise: float = 0.8,
                         max_steps: int = 60) -> list[CriticEpisode]:
    """Roll out the sim's scripted expert (successes) and a noisy or early-stopped expert (failures).

    Failures alternate between the noisy expert (``failure_noise``) and the clean expert stopped at
    a random fraction of a successful run (a partial attempt, then the robot holds still), so the
    critic sees failed episodes that made some progress too."""
    from hil_robot.config import RobotConfig, SimConfig
    from sim import SimRobot
    from sim.expert import make_expert

    sim_cfg = SimConfig(task=task, image_height=image_hw[0], image_width=image_hw[1], cameras=tuple(cameras),
                        max_episode_steps=max_steps)
    rng = np.random.default_rng(seed)
    out: list[CriticEpisode] = []
    n_succ = n_fail = 0
    with SimRobot(sim_cfg, RobotConfig(), seed=seed) as robot:
        ep_seed = seed * 100_003
        while n_succ < n_success or n_fail < n_failure:
            ep_seed += 1
            want_fail = n_succ >= n_success or (n_fail < n_failure and rng.random() < n_failure / (n_success + n_failure))
            noisy = want_fail and n_fail % 2 == 0
            expert = make_expert(task, noise_std=failure_noise if noisy else 0.0, seed=ep_seed)
            stop_at = int(rng.integers(3, 15)) if want_fail and not noisy else max_steps
            obs = robot.reset(seed=ep_seed)
            observations, success = [obs], False
            for t in range(max_steps):
                action = expert.infer(obs)["actions"][0] if t < stop_at else np.r_[np.zeros(6), expert.act(obs)[6]]
                robot.send_action(np.asarray(action, np.float32))
                obs = robot.observe()
                observations.append(obs)
                status = robot.task_status()
                if status["success"] or status["failed"]:
                    success = bool(status["success"])
                    break
            if success and n_succ < n_success:
                n_succ += 1
            elif not success and want_fail and n_fail < n_failure:
                n_fail += 1
                observations = observations[: max(stop_at + 8, 20)]  # a failure need not run to the time limit
            else:
                continue
            frames = {f"images/{c}": np.stack([o[f"images/{c}"] for o in observations]) for c in cameras}
            frames["state"] = np.stack([o["state"] for o in observations]).astype(np.float32)
            out.append(CriticEpisode(frames, str(obs["prompt"]), success, f"{task}-{ep_seed}"))
    return out


# ----------------------------------------------------------------------------- command line


def train_critic_cli(argv: list[str]) -> int:
    """``hil-robot train-critic store=runs/x/store out=runs/x/critic [steps=600] [holdout=0.2]``
    (``critic.kind=vlm [critic.vlm_path=DIR]``: the VLM critic, saved in its own layout for ``critic.vlm_path``)

    Trains on a store's episodes (or, with ``store=sim``, on freshly rolled-out scripted-expert
    successes and failures of ``sim.task``), saves the critic checkpoint to ``out`` and prints the
    held-out ranking (Spearman of value with time) and success-detection figures."""
    import json
    from pathlib import Path

    from hil_robot.cli import parse_command_args
    from policies.checkpoint import save_critic
    from policies.critic import LocalCriticBackend

    opts, cfg = parse_command_args(argv, options={
        "store": "", "out": "", "steps": 600, "episodes_per_batch": 8, "lr": 2e-3, "holdout": 0.2,
        "sim_successes": 40, "sim_failures": 16, "min_spearman": 0.8, "threads": 2})
    if not opts["store"] or not opts["out"]:
        print("usage: hil-robot train-critic store=PATH[,PATH...]|sim out=DIR [steps=600] [holdout=0.2]")
        return 2
    torch.set_num_threads(int(opts["threads"]))
    cams = tuple(cfg.sim.cameras)
    if opts["store"] == "sim":
        episodes = collect_sim_episodes(cfg.sim.task, int(opts["sim_successes"]), int(opts["sim_failures"]),
                                        image_hw=(cfg.sim.image_height, cfg.sim.image_width), cameras=cams,
                                        seed=cfg.experiment.seed)
    else:
        episodes = episodes_from_store(opts["store"].split(","), cams)
    rng = np.random.default_rng(cfg.experiment.seed)
    order = rng.permutation(len(episodes))
    n_hold = int(round(len(episodes) * float(opts["holdout"])))
    held = [episodes[i] for i in order[:n_hold]]
    train = [episodes[i] for i in order[n_hold:]]
    settings = CriticTrainSettings(steps=int(opts["steps"]), episodes_per_batch=int(opts["episodes_per_batch"]), lr=float(opts["lr"]),
                                   seed=cfg.experiment.seed)
    vlm = None
    if cfg.critic.kind == "vlm":  # policies.critic_vlm: a bare SmolVLM/Idefics3 at critic.vlm_path, or the tiny one
        from policies.critic_vlm import VLMCriticConfig, VLMProgressCritic, load_vlm_critic

        net = VLMCriticConfig(cameras=cams, image_hw=tuple(train[0].frames[f"images/{cams[0]}"].shape[1:3]))
        vlm = (load_vlm_critic(cfg.critic.vlm_path, require_head=False, cfg=net) if cfg.critic.vlm_path
               else VLMProgressCritic.tiny(net, seed=cfg.experiment.seed))
    model, metrics = train_critic(train, settings, model=vlm)
    report = {"train_episodes": len(train), "heldout_episodes": len(held), "train_s": round(metrics["train_s"], 1)}
    if held:
        backend = LocalCriticBackend(model)
        scores = score_episodes(backend, held)
        succ = [s for s in scores if s["success"]]
        fail = [s for s in scores if not s["success"]]
        if succ:
            report["heldout_spearman_mean"] = float(np.nanmean([s["spearman"] for s in succ]))
        if succ and fail:
            rates = detection_rates([s["p_done"][-1] for s in succ], np.concatenate([s["p_done"] for s in fail]))
            report.update({f"heldout_{k}": v for k, v in rates.items()})
    out = model.save_pretrained(opts["out"], extra=report) if vlm is not None else \
        save_critic(opts["out"], model, step=settings.steps, extra=report)
    print(json.dumps(report, indent=2))
    print(f"critic saved to {Path(out)}")
    return 0
