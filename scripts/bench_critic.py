"""Progress-critic calibration on held-out sim episodes: the small conv critic and the tiny VLM critic.

Per seed: roll out sim episodes (successes from the scripted expert; failures from a noisy expert or
the expert stopped part-way, ``hil_robot.learn.critic.collect_sim_episodes``), train each critic on
one set, then score a second, disjoint set (other episode seeds) and report

* ``done_auc``: ROC AUC of P(done) separating frames where the task is complete (the final frame of
  each success: the sim ends the episode at success) from frames before it (success frames at least
  3 steps before the end) and every frame of the failures;
* ``spearman_succ`` / ``spearman_fail``: median Spearman rank correlation of the tracked value V
  (VLAC update, ``policies.critic.score_episode``) with time, over successes / failures
  (a failure whose V stays constant counts as 0);
* ``final_v_succ`` / ``final_v_fail``: mean final V over successes / failures;
* ``train_s``: training wall time.

The table shows the median over seeds (min–max in brackets when several).

    python scripts/bench_critic.py [--quick] [--seeds 3] [--json out.json] [--no-vlm]

JSON keys (flat): ``<critic>_<metric>`` with critic ``small`` / ``vlm`` (medians over seeds), plus
``seeds``, ``train_episodes``, ``heldout_episodes``.
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


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a random positive > a random negative), ties count half (Mann–Whitney U / n_pos n_neg)."""
    from scipy.stats import rankdata

    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = rankdata(np.r_[pos, neg])
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def calibration(backend, held) -> dict[str, float]:
    from hil_robot.learn.critic import score_episodes

    scores = score_episodes(backend, held)
    succ = [s for s in scores if s["success"]]
    fail = [s for s in scores if not s["success"]]
    pos = np.array([s["p_done"][-1] for s in succ])
    neg = np.concatenate([s["p_done"][:-3] for s in succ] + [s["p_done"] for s in fail])
    rho = lambda group: float(np.median([0.0 if np.isnan(s["spearman"]) else s["spearman"] for s in group]))  # noqa: E731
    return {"done_auc": roc_auc(pos, neg), "spearman_succ": rho(succ), "spearman_fail": rho(fail),
            "final_v_succ": float(np.mean([s["value"][-1] for s in succ])),
            "final_v_fail": float(np.mean([s["value"][-1] for s in fail]))}


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
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one seed, 32x32 frames, short training (< 60 s)")
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
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="", help="write the flat {metric: number} JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.hw = 1, 32
        args.train_succ, args.train_fail, args.held_succ, args.held_fail = 10, 6, 6, 6
        args.small_steps, args.vlm_steps, args.vlm_batch = 200, 100, 4
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    runs = []
    for seed in range(args.seeds):
        runs.append(run_seed(seed, args))
        print(f"seed {seed}: " + json.dumps({c: {k: round(v, 3) for k, v in m.items()} for c, m in runs[-1].items()}),
              flush=True)
    critics = list(runs[0])
    res: dict[str, float] = {"seeds": args.seeds, "train_episodes": args.train_succ + args.train_fail,
                             "heldout_episodes": args.held_succ + args.held_fail}
    print(f"\n{args.task}, {args.hw}x{args.hw}, train {args.train_succ}+{args.train_fail} / held-out "
          f"{args.held_succ}+{args.held_fail} episodes (succ+fail), median over {args.seeds} seed(s)")
    print(f"{'metric':<15}" + "".join(f"{c:>24}" for c in critics))
    for m in METRICS:
        cells = []
        for c in critics:
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
