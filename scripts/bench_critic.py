"""Progress-critic calibration on held-out sim episodes: the small conv critic, the tiny VLM critic and
the online critic (``learner.reward=critic_online``, ``hil_robot.learn.online_critic``).

Per seed: roll out sim episodes (successes from the scripted expert; failures from a noisy expert or
the expert stopped part-way, ``hil_robot.learn.critic.collect_sim_episodes``), train each offline critic
on one set, then score a second, disjoint set (other episode seeds) and report

* ``done_auc``: ROC AUC of P(done) separating frames where the task is complete (the final frame of
  each success: the sim ends the episode at success) from frames before it (success frames at least
  3 steps before the end) and every frame of the failures;
* ``spearman_succ`` / ``spearman_fail``: median Spearman rank correlation of the tracked value V
  (VLAC update, ``policies.critic.score_episode``) with time, over successes / failures
  (a failure whose V stays constant counts as 0);
* ``final_v_succ`` / ``final_v_fail``: mean final V over successes / failures;
* ``train_s``: training wall time;
* online critic only: ``done_recall`` / ``done_fpr``: share of the successes' final frames / of the
  negatives whose P(done) exceeds ``learner.critic_online_done_threshold`` (0.75): for ``online``
  (the smallest member's P(done)) exactly where the learner's terminal and success bonus fire.

The table shows the median over seeds (min–max in brackets when several).

The online critic does not see those training episodes: it learns, as in a run, from *run-like*
episodes in an episode store read by ``hil_robot.data.StoreReplay`` (the learner's replay), recorded
by the project's own machinery on other episode seeds (``record_run_episodes``):

* ``--run-demos`` scripted-expert demos (``hil-robot collect-demos``: segment ``demo``, all successes);
* ``--run-deploy`` deploy episodes: the in-process ``hil_robot.control.Controller`` (lock-step
  ``FakeClock``) driving the sim with a noisy scripted expert as the policy (noise cycling through
  ``--run-noise``), the ``sim.operator.SimulatedOperator`` with its default settings (takes over on a
  stall or a failure risk: ``recovery`` then ``correction`` segments, at most 3 takeovers) and the
  ``Recorder`` (``pre_intervention`` relabelling). They end in a success (alone or after takeovers) or
  a failure / the 60-step limit; the counts per seed are printed.

``OnlineCritic`` (the learner defaults ``learner.critic_online_*``: 2 members, warm-up 200 steps then
rounds of 20 steps per member) is trained through its own ``maybe_train`` / ``train`` path while the
episodes arrive: the warm-up once the demos and the first half of the deploy episodes are in the
replay, then ``(--small-steps − 200) / 20`` rounds spread over the arrival of the rest (``refresh()``
before each), so each member gets as many steps as the small critic. The held-out set is the small
critic's. Two readings of the ensemble (``EnsembleBackend``):

* ``online``: what the learner's reward uses (``OnlineCritic.score``): Δ = mean − penalty · std over
  members (``critic_online_penalty``, the success bonus left out of V) and P(done) = the *smallest*
  member's (the terminal fires where every member exceeds ``critic_online_done_threshold``);
* ``online_mean``: the plain ensemble mean of Δ and of P(done).

``train_s`` of the online critic is the critic training time only (both members, all rounds).
``--quick``: 4 demos + 12 deploy episodes, 200 steps (the warm-up only, once all are in).

    python scripts/bench_critic.py [--quick] [--seeds 3] [--json out.json] [--no-vlm] [--no-online]

JSON keys (flat): ``<critic>_<metric>`` with critic ``small`` / ``vlm`` / ``online`` / ``online_mean``
(medians over seeds), plus ``seeds``, ``train_episodes``, ``heldout_episodes``, ``run_episodes`` and
``run_failures`` / ``run_takeover_episodes`` (medians over seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

METRICS = ("done_auc", "spearman_succ", "spearman_fail", "final_v_succ", "final_v_fail", "train_s")
THRESHOLD_METRICS = ("done_recall", "done_fpr")  # the online critic only, at learner.critic_online_done_threshold


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a random positive > a random negative), ties count half (Mann–Whitney U / n_pos n_neg)."""
    from scipy.stats import rankdata

    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = rankdata(np.r_[pos, neg])
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def calibration(backend, held, threshold: float | None = None) -> dict[str, float]:
    """The metrics of the module docstring; with ``threshold`` also ``done_recall`` (share of the
    successes' final frames with P(done) > threshold) and ``done_fpr`` (share of the negatives)."""
    from hil_robot.learn.critic import detection_rates, score_episodes

    scores = score_episodes(backend, held)
    succ = [s for s in scores if s["success"]]
    fail = [s for s in scores if not s["success"]]
    pos = np.array([s["p_done"][-1] for s in succ])
    neg = np.concatenate([s["p_done"][:-3] for s in succ] + [s["p_done"] for s in fail])
    rho = lambda group: float(np.median([0.0 if np.isnan(s["spearman"]) else s["spearman"] for s in group]))  # noqa: E731
    out = {"done_auc": roc_auc(pos, neg), "spearman_succ": rho(succ), "spearman_fail": rho(fail),
           "final_v_succ": float(np.mean([s["value"][-1] for s in succ])),
           "final_v_fail": float(np.mean([s["value"][-1] for s in fail]))}
    if threshold is not None:
        rates = detection_rates(pos, neg, threshold)
        out.update(done_recall=rates["recall"], done_fpr=rates["false_positive_rate"])
    return out


class EnsembleBackend:
    """A ``CriticBackend`` over an ``OnlineCritic``'s members. ``penalised``: the learner's reading
    (``OnlineCritic.score``: Δ = mean − ``critic_online_penalty`` · std, P(done) = the smallest member's,
    the success bonus left out); else the ensemble mean of Δ and of P(done)."""

    def __init__(self, oc, penalised: bool = True, max_batch: int = 256) -> None:
        self.oc, self.penalised, self.max_batch = oc, penalised, max_batch

    @torch.no_grad()
    def score(self, frames_a, frames_b, instructions):
        from policies.critic import frames_to_torch

        oc, out_d, out_p = self.oc, [], []
        for s in range(0, len(instructions), self.max_batch):
            sl = slice(s, s + self.max_batch)
            fa = frames_to_torch({k: v[sl] for k, v in frames_a.items()}, oc.device)
            fb = frames_to_torch({k: v[sl] for k, v in frames_b.items()}, oc.device)
            text = oc.models[0].encode_text(list(instructions[sl]), oc.device)
            outs = [m(fa, fb, text) for m in oc.models]
            delta = torch.stack([d for d, _ in outs])
            p_done = torch.sigmoid(torch.stack([logit for _, logit in outs]))
            if self.penalised:
                spread = delta.std(0) if len(oc.models) > 1 else torch.zeros_like(delta[0])
                out_d.append(delta.mean(0) - oc.lc.critic_online_penalty * spread)
                out_p.append(p_done.min(0).values)
            else:
                out_d.append(delta.mean(0))
                out_p.append(p_done.mean(0))
        return (torch.cat(out_d).clamp(-1, 1).cpu().numpy().astype(np.float32),
                torch.cat(out_p).cpu().numpy().astype(np.float32))


def record_run_episodes(root: str, task: str, hw: int, n_demos: int, n_deploy: int, seed0: int,
                        noise: tuple[float, ...] = (0.3, 0.6, 0.9), max_steps: int = 60):
    """Yield after each episode written to the store at ``root``: ``("demos", seeds)`` once the demos
    are in, then ``(success, takeovers, seed)`` per deploy episode (module docstring). Episode seeds:
    ``seed0 + i`` (demos), ``seed0 + 10_000 + i`` (deploy)."""
    import contextlib
    import io

    import sim
    from hil_robot.config import load_config
    from hil_robot.control.clock import FakeClock
    from hil_robot.control.loop import Controller
    from hil_robot.data import EpisodeStore, Recorder
    from hil_robot.data.cli import collect_demos
    from sim.expert import make_expert
    from sim.operator import SimulatedOperator

    over = [f"sim.task={task}", f"sim.image_height={hw}", f"sim.image_width={hw}", f"sim.max_episode_steps={max_steps}"]
    with contextlib.redirect_stdout(io.StringIO()):
        collect_demos([f"episodes={n_demos}", f"out={root}", f"seed={seed0}", *over])
    yield "demos", [seed0 + i for i in range(n_demos)]
    cfg = load_config(over)
    store = EpisodeStore(root)
    rec = Recorder(store, cfg.learner.pre_intervention_k, task=task)
    clock = FakeClock()
    robot = sim.SimRobot(cfg.sim, cfg.robot, seed=seed0, clock=clock.now)
    op = SimulatedOperator(cfg.teleop.sim_operator, task, seed=seed0, robot_cfg=cfg.robot)
    policies = [make_expert(task, cfg.robot, noise_std=n, seed=seed0) for n in noise]
    try:
        with robot:
            for i in range(n_deploy):
                ep_seed = seed0 + 10_000 + i
                policy = policies[i % len(policies)]
                policy.seed(ep_seed)
                op.reset(ep_seed)
                ctl = Controller(robot, policy, op, rec, cfg, clock=clock)
                res = ctl.run_episode(max_steps=max_steps, seed=ep_seed)
                ctl.close()
                yield bool(res.success), int(res.interventions), ep_seed
    finally:
        rec.close()
        store.close()


def run_online(seed: int, args: argparse.Namespace, held, tmp: str):
    """Record run-like episodes, train ``OnlineCritic`` as the learner does while they arrive, score ``held``."""
    from hil_robot.config import load_config
    from hil_robot.data import StoreReplay
    from hil_robot.learn.online_critic import OnlineCritic

    lc = load_config(["learner.reward=critic_online"]).learner
    rounds = max(0, (args.small_steps - lc.critic_online_warmup_steps) // max(1, lc.critic_online_steps))
    # collect_sim_episodes(seed=k) draws episode seeds k * 100_003 + 1, 2, ... (training k = 2 * seed,
    # held-out 2 * seed + 1): the run's episodes start 50_000 above the training ones
    seed0 = 2 * seed * 100_003 + 50_000
    held_seeds = {int(e.name.rsplit("-", 1)[1]) for e in held}
    root = str(Path(tmp) / f"run{seed}")
    warm_at = args.run_deploy // 2 if rounds else args.run_deploy  # deploy episodes in before the warm-up
    # round r is due once the last deploy episode of its chunk is in (an empty chunk: after the last one)
    due = [int(c[-1]) + 1 if len(c) else args.run_deploy
           for c in (np.array_split(np.arange(warm_at, args.run_deploy), rounds) if rounds else [])]
    replay = oc = None
    n_fail = n_take = 0
    seeds: list[int] = []
    torch.manual_seed(seed)
    for item in record_run_episodes(root, args.task, args.hw, args.run_demos, args.run_deploy, seed0,
                                    tuple(args.run_noise), args.run_max_steps):
        if item[0] == "demos":
            seeds += item[1]
        else:
            success, takeovers, ep_seed = item
            seeds.append(ep_seed)
            n_fail += not success
            n_take += takeovers > 0
        n_deploy = len(seeds) - args.run_demos
        if oc is None and n_deploy == warm_at:
            replay = StoreReplay([root], (args.run_demos + args.run_deploy) * (args.run_max_steps + 2),
                                 lc.memory_strategy, sirius=lc.sirius, keep_demos=lc.memory_keep_demos, seed=seed)
            oc = OnlineCritic(lc, replay.buffer)
            oc.maybe_train()  # the warm-up: critic_online_warmup_steps per member
        for _ in range(due.count(n_deploy) if oc is not None else 0):
            replay.refresh()
            oc.train(lc.critic_online_steps)  # one round (the learner: every critic_online_train_every_s)
    assert replay.num_episodes == len(seeds), (replay.num_episodes, len(seeds))
    assert not held_seeds & set(seeds), "held-out episodes must differ from the run's"
    assert oc.steps == lc.critic_online_warmup_steps + rounds * lc.critic_online_steps, oc.steps
    run = {"run_episodes": float(len(seeds)), "run_failures": float(n_fail), "run_takeover_episodes": float(n_take)}
    train_s = oc.stats["train_s"]
    thr = lc.critic_online_done_threshold
    out = {"online": {**calibration(EnsembleBackend(oc, penalised=True), held, thr), "train_s": train_s},
           "online_mean": {**calibration(EnsembleBackend(oc, penalised=False), held, thr), "train_s": train_s}}
    return out, run, oc


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from hil_robot.learn.critic import CriticTrainSettings, collect_sim_episodes, train_critic
    from policies.critic import LocalCriticBackend
    from policies.critic_vlm import VLMCriticBackend, VLMCriticConfig, VLMProgressCritic

    hw = (args.hw, args.hw)
    train = collect_sim_episodes(args.task, args.train_succ, args.train_fail, seed=2 * seed, image_hw=hw)
    held = collect_sim_episodes(args.task, args.held_succ, args.held_fail, seed=2 * seed + 1, image_hw=hw)
    assert not {e.name for e in train} & {e.name for e in held}, "held-out episodes must differ from training"
    out: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    small, _ = train_critic(train, CriticTrainSettings(steps=args.small_steps, seed=seed))
    out["small"] = {**calibration(LocalCriticBackend(small), held), "train_s": time.perf_counter() - t0}
    if not args.no_vlm:
        t0 = time.perf_counter()
        vlm = VLMProgressCritic.tiny(VLMCriticConfig(cameras=("front", "wrist"), image_hw=hw), seed=seed)
        vlm, _ = train_critic(train, CriticTrainSettings(steps=args.vlm_steps, lr=args.vlm_lr, seed=seed,
                                                         episodes_per_batch=args.vlm_batch), model=vlm)
        out["vlm"] = {**calibration(VLMCriticBackend(vlm), held), "train_s": time.perf_counter() - t0}
    if not args.no_online:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="bench_critic_run") as tmp:
            online, run, _ = run_online(seed, args, held, tmp)
        out.update(online)
        out["_run"] = run
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one seed, 32x32 frames, short training (< 90 s)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--task", default="pick_cube")
    ap.add_argument("--hw", type=int, default=64, help="frame height = width")
    ap.add_argument("--train-succ", type=int, default=24)
    ap.add_argument("--train-fail", type=int, default=10)
    ap.add_argument("--held-succ", type=int, default=10)
    ap.add_argument("--held-fail", type=int, default=8)
    ap.add_argument("--small-steps", type=int, default=500)
    ap.add_argument("--vlm-steps", type=int, default=400)
    ap.add_argument("--vlm-lr", type=float, default=1e-3)
    ap.add_argument("--vlm-batch", type=int, default=8, help="episode groups per VLM step")
    ap.add_argument("--no-vlm", action="store_true", help="the small critic only")
    ap.add_argument("--no-online", action="store_true", help="leave out the online critic")
    ap.add_argument("--run-demos", type=int, default=10, help="online critic: scripted demos in the run's store")
    ap.add_argument("--run-deploy", type=int, default=24, help="online critic: deploy episodes under the sim operator")
    ap.add_argument("--run-noise", type=float, nargs="+", default=[0.3, 0.6, 0.9],
                    help="online critic: the deploy policy's noise, cycled per episode")
    ap.add_argument("--run-max-steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="", help="write the flat {metric: number} JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.hw = 1, 32
        args.train_succ, args.train_fail, args.held_succ, args.held_fail = 10, 6, 6, 6
        args.small_steps, args.vlm_steps, args.vlm_batch = 200, 100, 4
        args.run_demos, args.run_deploy = 4, 12
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    runs = []
    for seed in range(args.seeds):
        runs.append(run_seed(seed, args))
        print(f"seed {seed}: " + json.dumps({c: {k: round(v, 3) for k, v in m.items()} for c, m in runs[-1].items()}),
              flush=True)
    critics = [c for c in runs[0] if not c.startswith("_")]
    res: dict[str, float] = {"seeds": args.seeds, "train_episodes": args.train_succ + args.train_fail,
                             "heldout_episodes": args.held_succ + args.held_fail}
    if "_run" in runs[0]:
        for k in runs[0]["_run"]:
            res[k] = float(np.median([r["_run"][k] for r in runs]))
        print(f"\nonline critic's run: {args.run_demos} demos + {args.run_deploy} deploy episodes per seed; failures "
              f"{[int(r['_run']['run_failures']) for r in runs]}, episodes with takeovers "
              f"{[int(r['_run']['run_takeover_episodes']) for r in runs]} (per seed)")
    print(f"\n{args.task}, {args.hw}x{args.hw}, train {args.train_succ}+{args.train_fail} / held-out "
          f"{args.held_succ}+{args.held_fail} episodes (succ+fail), median over {args.seeds} seed(s)")
    print(f"{'metric':<15}" + "".join(f"{c:>24}" for c in critics))
    for m in METRICS + tuple(m for m in THRESHOLD_METRICS if any(m in runs[0][c] for c in critics)):
        cells = []
        for c in critics:
            if m not in runs[0][c]:
                cells.append("—")
                continue
            vals = np.array([r[c][m] for r in runs])
            res[f"{c}_{m}"] = float(np.median(vals))
            spread = f" [{vals.min():.2f}–{vals.max():.2f}]" if len(vals) > 1 else ""
            cells.append(f"{np.median(vals):.3f}{spread}")
        print(f"{m:<15}" + "".join(f"{cell:>24}" for cell in cells))
    print(f"total {time.perf_counter() - t_start:.1f} s; load {open('/proc/loadavg').read().split()[0]}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
