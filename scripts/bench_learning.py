"""Learning benchmark: does the whole human-in-the-loop run learn image-based pick-cube on this CPU?

Each condition is one real ``hil_robot.run.main(cfg, overrides, run_dir)`` (the same multi-process
run as ``hil-robot run experiment=sim_pick_cube``): expert demos, rounds of deployment with the
simulated operator, operator-free evaluation after each round. Success is the eval success rate;
autonomy is 1 - the human share of deploy steps.

Conditions (same wall-clock budget each):
    main       weighted BC (Sirius weights) on demos + interventions      (the default)
    bc         plain BC (learner.algorithm=bc)
    demos      no intervention: the simulated operator never takes over (demos + own rollouts)
    rlpd_sparse / rlpd_critic   RLPD with sparse reward / progress-critic reward
                                (rlpd_critic needs --critic-checkpoint PATH, else it is skipped)
    rlpd_critic_online          RLPD with the reward of critics the learner trains on the run's episodes
    rlpd_bc    the RL recipe (recipe=rl, configs/recipe/rl.yaml): rlpd_sparse + a Q-filtered BC term on
               the demo and intervention rows (learner.rl_bc_weight=1), two critic updates per actor update
    rlpd_bc_critic_online       the RL recipe with the online critics' reward instead of the sparse one
    dsrl       DSRL: the RLPD SAC steering the frozen pre-trained flow VLA through its noise (learner=dsrl)
    recap      main + RECAP-style advantage conditioning (advantages from the online critics)
    finetune   weighted BC (as main) starting from the pre-trained VLA instead of fresh weights
               (dsrl/finetune use --vla-checkpoint PATH, or build one: --pretrain-steps N of BC on
               experiment.demo_episodes expert demos, policy.head=flow, plus the overrides given)

    python scripts/bench_learning.py --quick                 # <= 1 min spot check (tiny images, main only)
    python scripts/bench_learning.py --minutes 30 --conditions main,bc,demos --json out.json
    python scripts/bench_learning.py --conditions "" --merge a/results.json,b/results.json --json out.json
                                   # conditions run separately: one table, plot and JSON for all

JSON keys: final_success, minutes_to_90pct (null if not reached), final_intervention_rate,
wbc_minus_bc_success, critic_minus_sparse_success, critic_online_minus_sparse_success, rlpd_bc_minus_sparse_success,
recipe_critic_online_minus_sparse_success (the RL recipe with the online critics' reward minus the recipe),
dsrl_minus_base_success, finetune_minus_main_success, recap_minus_main_success (null when a condition was not run),
base_vla_success (the pre-trained VLA evaluated frozen on the runs' eval seeds) — pick_cube's;
per_task: the same keys for each task that has runs; tasks: the per-task table's figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # children inherit it: one torch thread per process

RLPD = ["learner=rlpd", "learner.batch_size=256", "policy=rl"]
CONDITIONS: dict[str, list[str]] = {
    "main": [],
    "bc": ["learner.algorithm=bc"],
    "demos": ["teleop.sim_operator.max_interventions_per_episode=0"],  # the operator never takes over
    # RLPD with the learner=rlpd recipe (batch 256, 2 critics, gamma 0.97, 50/50 demo+intervention vs
    # online; the experiment's BC batch of 32 is overridden): before 2026-12-06 these conditions set
    # only learner.algorithm=rlpd and trained SAC with the BC batch of 32
    "rlpd_sparse": [*RLPD, "learner.reward=sparse"],
    "rlpd_critic": [*RLPD, "learner.reward=critic"],
    "rlpd_critic_online": [*RLPD, "learner.reward=critic_online"],  # critics trained on the run's episodes
    # the RL recipe users run (recipe=rl): rlpd_sparse, and the actor also imitates the demo +
    # intervention rows where the critic rates them above its own action (before 2026-12-07 the same
    # settings were given as [*RLPD, "learner.reward=sparse", "learner.rl_bc_weight=1"])
    "rlpd_bc": ["recipe=rl"],
    # the RL recipe with the reward of the online critics: its matched comparison is rlpd_bc
    "rlpd_bc_critic_online": ["recipe=rl", "learner.reward=critic_online"],
    # the pre-trained VLA (policy.checkpoint is added): steered by DSRL, or fine-tuned by weighted BC
    # (the served chunk is run 5 steps at a time, as the VLA was: per tick, random noise took the
    # frozen BC VLA from 0.20 to 0.05 eval success)
    "dsrl": ["learner=dsrl", "learner.batch_size=256", "policy=rl", "policy.action_horizon=10", "policy.n_action_steps=5"],
    "finetune": [],
    # RECAP-style advantage conditioning of the VLA, advantages from critics trained on the run
    "recap": ["learner.advantage_conditioning=true", "learner.advantage_source=critic_online"],
}
NEEDS_VLA = ("dsrl", "finetune")
# --quick: one round of the smallest sizes that still train and evaluate (~60 s on a loaded machine)
QUICK = ["experiment.demo_episodes=4", "experiment.rounds=1", "experiment.episodes_per_round=2",
         "experiment.eval_episodes=2", "experiment.eval_fresh_episodes=0", "sim.image_height=32", "sim.image_width=32", "sim.max_episode_steps=50",
         "learner.batch_size=16", "learner.min_replay_steps=32"]


TASKS = ("pick_cube", "push_target", "peg_insert", "stack_cubes")  # one experiment each, one shared recipe


def result_key(task: str, name: str) -> str:
    """results.json key of one (task, condition) run: the condition alone for pick_cube (as before
    --tasks existed, so earlier files still merge), ``task/condition`` for the other tasks."""
    return name if task == "pick_cube" else f"{task}/{name}"


def task_and_condition(key: str, res: dict[str, Any]) -> tuple[str, str]:
    """(task, condition) of one results.json entry: its own fields, else read from the key
    (``task/condition``, or the condition alone for pick_cube: see result_key)."""
    task = res.get("task") or (key.split("/")[0] if "/" in key else "pick_cube")
    return str(task), str(res.get("condition") or key.split("/")[-1])


def task_metrics(results: dict[str, dict[str, Any]], task: str, base: float | None) -> dict[str, float | None]:
    """One task's headline figures and ablation differences (final eval success, a minus b; None
    when a condition was not run)."""
    def final(name: str, key: str = "final_eval_success") -> float | None:
        return _num(results.get(result_key(task, name), {}).get(key))

    def diff(a: str, b: str) -> float | None:
        fa, fb = final(a), final(b)
        return None if fa is None or fb is None else fa - fb

    return {
        "final_success": final("main"),
        "minutes_to_90pct": minutes_to(results.get(result_key(task, "main"), {}).get("rounds") or [], 0.9),
        "final_intervention_rate": final("main", "final_intervention_rate"),
        "wbc_minus_bc_success": diff("main", "bc"),
        "critic_minus_sparse_success": diff("rlpd_critic", "rlpd_sparse"),
        "critic_online_minus_sparse_success": diff("rlpd_critic_online", "rlpd_sparse"),
        "rlpd_bc_minus_sparse_success": diff("rlpd_bc", "rlpd_sparse"),
        "recipe_critic_online_minus_sparse_success": diff("rlpd_bc_critic_online", "rlpd_bc"),
        "base_vla_success": base,
        "dsrl_minus_base_success": None if final("dsrl") is None or base is None else final("dsrl") - base,
        "finetune_minus_main_success": diff("finetune", "main"),
        "recap_minus_main_success": diff("recap", "main"),
    }


def run_condition(name: str, extra: list[str], minutes: float, out_dir: Path, task: str = "pick_cube") -> dict[str, Any]:
    from hil_robot import run as hil_run
    from hil_robot.config import load_config

    rounds = [] if any(o.startswith("experiment.rounds=") for o in extra) else ["experiment.rounds=1000"]  # the budget governs
    overrides = [f"experiment=sim_{task}", f"experiment.max_minutes={minutes}", *rounds, *extra]
    cfg = load_config(overrides)
    t0 = time.monotonic()
    run_dir = out_dir / result_key(task, name)
    if run_dir.exists():  # a rerun must start from an empty store, not append to the last run's episodes
        run_dir = out_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = hil_run.main(cfg, overrides, run_dir, quiet=True)
    result["bench_wall_min"] = (time.monotonic() - t0) / 60
    result["overrides"] = overrides
    result["task"] = task
    result["condition"] = name
    return result


def pretrain_vla(out_dir: Path, steps: int, overrides: list[str], task: str = "pick_cube") -> Path:
    """Record experiment.demo_episodes expert demos and train a flow-matching VLA on them with
    ``hil-robot train-bc`` for ``steps`` updates -> the policy directory."""
    from hil_robot.cli import main as cli
    from hil_robot.config import load_config

    base = [f"experiment=sim_{task}", *overrides]
    cfg = load_config(base)
    sub = "" if task == "pick_cube" else f"{task}_"
    demos, ckpt, run_dir = out_dir / f"{sub}pretrain_demos", out_dir / f"{sub}pretrain_vla", out_dir / f"{sub}pretrain_run"
    t0 = time.monotonic()
    if not demos.exists():
        if cli(["collect-demos", *base, f"out={demos}", f"episodes={cfg.experiment.demo_episodes}"]):
            raise RuntimeError(f"collecting the pre-training demos into {demos} failed")
    if cli(["train-bc", *base, f"store={demos}", f"out={ckpt}", f"run_dir={run_dir}", f"steps={steps}",
            "policy.head=flow"]):
        raise RuntimeError(f"pre-training the VLA failed (see {run_dir})")
    print(f"pre-trained VLA: {ckpt} ({steps} BC updates on {cfg.experiment.demo_episodes} demos, "
          f"{(time.monotonic() - t0) / 60:.1f} min)", flush=True)
    return ckpt


def evaluate_frozen(ckpt: Path, out_dir: Path, overrides: list[str], task: str = "pick_cube") -> float | None:
    """The pre-trained VLA, frozen, on the runs' fixed eval seeds (EVAL_SEED0 + seed·1000 + i)."""
    from hil_robot import run as hil_run
    from hil_robot.config import load_config

    base = [f"experiment=sim_{task}", *overrides]
    cfg = load_config(base)
    out = out_dir / ("base_vla_eval" if task == "pick_cube" else f"{task}_base_vla_eval")
    seed0 = hil_run.EVAL_SEED0 + cfg.experiment.seed * 1000
    hil_run.evaluate([*base, f"checkpoint={ckpt}", f"episodes={cfg.experiment.eval_episodes}", f"seed={seed0}",
                      f"out={out}", "video=false"])
    try:
        return float(json.loads((out / "eval.json").read_text())["success_rate"])
    except (OSError, ValueError, KeyError):
        return None


def first_at(rounds: list[dict[str, Any]], threshold: float, field: str = "wall_min") -> float | None:
    """``field`` of the first round whose eval success reached ``threshold`` (None: never)."""
    for r in rounds:
        s = r.get("eval_success")
        if s is not None and not math.isnan(float(s)) and float(s) >= threshold:
            return _num(r.get(field))
    return None


def minutes_to(rounds: list[dict[str, Any]], threshold: float) -> float | None:
    return first_at(rounds, threshold, "wall_min")


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def last_mean(rounds: list[dict[str, Any]], n: int = 5) -> float | None:
    vals = [float(r["eval_success"]) for r in rounds if _num(r.get("eval_success")) is not None][-n:]  # last n evaluated
    return sum(vals) / len(vals) if vals else None


def task_table(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """results -> {"task/condition": figures}: final eval (fresh + fixed seeds) with its Wilson 95 %
    interval, the last five rounds' mean, minutes / env steps / learner updates to the first round
    at >= 80 % and >= 90 %, and the run's totals, so a loaded machine does not hide the curve."""
    table: dict[str, dict[str, Any]] = {}
    for key, res in results.items():
        rounds = res.get("rounds") or []
        task, cond = task_and_condition(key, res)
        last = rounds[-1] if rounds else {}

        ci = res.get("final_eval_ci95") or [None, None]
        upd = _num(last.get("learner_updates"))
        table[f"{task}/{cond}"] = {
            "task": task, "condition": cond, "rounds": len(rounds), "minutes": _num(last.get("wall_min")),
            "env_steps": _num(last.get("env_steps")), "learner_updates": upd,
            "updates_per_s": None if upd is None or not _num(last.get("wall_min")) else upd / (60 * float(last["wall_min"])),
            "final_success": _num(res.get("final_eval_success")), "final_ci95": [_num(ci[0]), _num(ci[1])],
            "last5_success": last_mean(rounds), "best_success": max((float(r["eval_success"]) for r in rounds
                                                                     if _num(r.get("eval_success")) is not None), default=None),
            "minutes_to_80pct": first_at(rounds, 0.8, "wall_min"), "env_steps_to_80pct": first_at(rounds, 0.8, "env_steps"),
            "updates_to_80pct": first_at(rounds, 0.8, "learner_updates"),
            "minutes_to_90pct": first_at(rounds, 0.9, "wall_min"), "env_steps_to_90pct": first_at(rounds, 0.9, "env_steps"),
            "updates_to_90pct": first_at(rounds, 0.9, "learner_updates"),
            "error": res.get("error"),
        }
    return table


def print_task_table(table: dict[str, dict[str, Any]]) -> None:
    def f(x: Any, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    print(f"\n{'task/condition':<24} {'rounds':>6} {'min':>5} {'env steps':>9} {'updates':>7} {'upd/s':>5} "
          f"{'final [95% CI]':>17} {'last5':>5} {'best':>5} {'to 80%: min/steps/upd':>23} {'to 90%: min/steps/upd':>23}")
    for key, t in table.items():
        ci = t["final_ci95"]
        final = f"{f(t['final_success'], '.2f')} [{f(ci[0], '.2f')},{f(ci[1], '.2f')}]"
        to = [f"{f(t[f'minutes_to_{p}pct'], '.1f')}/{f(t[f'env_steps_to_{p}pct'], '.0f')}/{f(t[f'updates_to_{p}pct'], '.0f')}"
              for p in (80, 90)]
        print(f"{key:<24} {t['rounds']:>6} {f(t['minutes'], '.1f'):>5} {f(t['env_steps'], '.0f'):>9} "
              f"{f(t['learner_updates'], '.0f'):>7} {f(t['updates_per_s'], '.2f'):>5} {final:>17} "
              f"{f(t['last5_success'], '.2f'):>5} {f(t['best_success'], '.2f'):>5} {to[0]:>23} {to[1]:>23}"
              + (f"  ERROR {t['error']}" if t.get("error") else ""))


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FuncFormatter

    # success per wall-clock minute, per env step and per learner update (load slows the clock and
    # the learner, not what a step or an update buys), and the run's autonomy
    fig, ax = plt.subplots(1, 4, figsize=(17, 3.6))
    # several tasks: one colour per task, one line style + marker per condition, so a task's
    # conditions are told apart at a glance; one task: one colour per condition
    pairs = {k: task_and_condition(k, res) for k, res in results.items()}
    tasks = sorted({t for t, _ in pairs.values()})
    conds = list(dict.fromkeys(c for _, c in pairs.values()))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
    for name, res in results.items():
        rounds = res.get("rounds") or []
        if not rounds:
            continue
        task, cond = pairs[name]
        if len(tasks) > 1:
            ls, mk = styles[conds.index(cond) % len(styles)]
            kw = {"color": colours[tasks.index(task) % len(colours)], "linestyle": ls, "marker": mk, "markersize": 4}
            name = f"{task}/{cond}"  # pick_cube's results key is the condition alone
        else:
            kw = {"marker": "o", "linestyle": "-"}
        wall = [r["wall_min"] for r in rounds]
        ev = [r for r in rounds if _num(r.get("eval_success")) is not None]  # evaluated rounds only
        ax[0].plot([r["wall_min"] for r in ev], [r["eval_success"] for r in ev], label=name, **kw)
        ax[1].plot([r["env_steps"] for r in ev], [r["eval_success"] for r in ev], label=name, **kw)
        upd = [r for r in ev if _num(r.get("learner_updates")) is not None]
        ax[2].plot([r["learner_updates"] for r in upd], [r["eval_success"] for r in upd], label=name, **kw)
        ax[3].plot(wall, [1 - r["intervention_rate"] for r in rounds], label=name, **kw)
    kilo = FuncFormatter(lambda v, _pos: f"{v / 1000:g}k" if abs(v) >= 1000 else f"{v:g}")
    for a, xl, yl in zip(ax, ("wall clock [min]", "env steps", "learner updates", "wall clock [min]"),
                         ("eval success (no operator)", "eval success", "eval success",
                          "autonomy (1 - human step share)")):
        a.set_xlabel(xl), a.set_ylabel(yl), a.set_ylim(-0.05, 1.05), a.grid(alpha=0.3)
    ax[1].xaxis.set_major_formatter(kilo), ax[2].xaxis.set_major_formatter(kilo)
    ax[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny images and rounds, main condition only")
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget per condition")
    ap.add_argument("--conditions", default="main,bc,demos,rlpd_sparse,rlpd_critic")
    ap.add_argument("--critic-checkpoint", default="", help="progress-critic checkpoint for rlpd_critic")
    ap.add_argument("--vla-checkpoint", default="", help="pre-trained flow VLA for dsrl / finetune")
    ap.add_argument("--pretrain-steps", type=int, default=0, help="without --vla-checkpoint: pre-train one with this "
                    "many BC updates on expert demos first (for dsrl / finetune)")
    ap.add_argument("--out", default="runs/bench_learning", help="directory for the run dirs and plots")
    ap.add_argument("--json", default="", help="write the flat metric JSON here")
    ap.add_argument("--merge", default="", help="comma-separated results.json files of earlier runs: their "
                    "conditions join the table, plot and JSON (a condition run now wins)")
    ap.add_argument("--tasks", default="pick_cube", help=f"comma-separated sim tasks or 'all' ({', '.join(TASKS)}): "
                    "each condition runs on each task's experiment (configs/experiment/sim_<task>.yaml)")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every condition")
    args = ap.parse_args(argv)

    names = ["main"] if args.quick else [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown:
        ap.error(f"unknown condition(s) {unknown}; choose from {sorted(CONDITIONS)}")
    tasks = list(TASKS) if args.tasks.strip() == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        ap.error(f"--tasks {args.tasks!r}: unknown task(s) {bad}; choose from {', '.join(TASKS)} or 'all'")
    minutes = min(args.minutes, 3.0) if args.quick else args.minutes
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    merged_from: dict[str, str] = {}
    for path in [p.strip() for p in args.merge.split(",") if p.strip()]:
        try:
            earlier = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            ap.error(f"--merge {path}: cannot read a results.json ({exc}); pass the file bench_learning wrote under --out")
        if not isinstance(earlier, dict) or not all(isinstance(v, dict) and "rounds" in v for v in earlier.values()):
            ap.error(f"--merge {path}: not a bench_learning results.json (condition -> {{rounds: [...]}})")
        for k, v in earlier.items():
            if k in names:
                continue  # run now: this run's figures win
            if k in merged_from:
                ap.error(f"--merge: {k!r} is in both {merged_from[k]} and {path}; merge one run per task/condition "
                         "(rename the key in one file if they are different settings)")
            results[k], merged_from[k] = v, path
    quick = QUICK if args.quick else []
    base_success: dict[str, float | None] = {}
    for task in tasks:
        vla_ckpt = args.vla_checkpoint
        if any(n in NEEDS_VLA for n in names):
            if args.vla_checkpoint and len(tasks) > 1:
                ap.error("--vla-checkpoint is one task's VLA; with several --tasks use --pretrain-steps N (one VLA per task)")
            if not vla_ckpt and args.pretrain_steps > 0:
                vla_ckpt = str(pretrain_vla(out, args.pretrain_steps, quick + list(args.overrides), task))
            if vla_ckpt:
                base_success[task] = evaluate_frozen(Path(vla_ckpt), out, quick + list(args.overrides), task)
                print(f"{task}: pre-trained VLA, frozen: eval success {base_success[task]}", flush=True)
        for name in names:
            key = result_key(task, name)
            extra = list(CONDITIONS[name]) + quick + list(args.overrides)
            if name in NEEDS_VLA:
                if not vla_ckpt:
                    print(f"{key}: skipped (pass --vla-checkpoint PATH or --pretrain-steps N)", flush=True)
                    continue
                extra.append(f"policy.checkpoint={vla_ckpt}")
            if name == "rlpd_critic":
                if not args.critic_checkpoint:
                    print("rlpd_critic: skipped (pass --critic-checkpoint PATH from `hil-robot train-critic`)", flush=True)
                    continue
                extra.append(f"learner.critic_checkpoint={args.critic_checkpoint}")
            print(f"== {key}: {minutes:.1f} min budget, overrides {extra}", flush=True)
            try:
                results[key] = run_condition(name, extra, minutes, out, task)
            except Exception as exc:  # one failed condition must not lose the others' figures
                print(f"{key}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                results[key] = {"error": f"{type(exc).__name__}: {exc}", "rounds": [], "task": task, "condition": name}
            # after every condition: a bench stopped later keeps what it measured (--merge reads it)
            (out / "results.json").write_text(json.dumps(results, indent=1, default=float))

    print(f"\n{'condition':<24} {'rounds':>6} {'min':>6} {'env steps':>9} {'eval succ':>9} {'interv rate':>11} "
          f"{'min to 90%':>10}")
    for name, res in results.items():
        rounds = res.get("rounds") or []
        last = rounds[-1] if rounds else {}
        t90 = minutes_to(rounds, 0.9)
        print(f"{name:<24} {len(rounds):>6} {last.get('wall_min', math.nan):>6.1f} {last.get('env_steps', math.nan):>9.0f} "
              f"{last.get('eval_success', math.nan):>9.2f} {last.get('intervention_rate', math.nan):>11.3f} "
              f"{(f'{t90:.1f}' if t90 is not None else '-'):>10}" + (f"  ERROR {res['error']}" if "error" in res else ""))
        for r in rounds:
            print(f"    round {r['round']}: eval {r['eval_success']:.2f}  interventions/ep "
                  f"{r['interventions_per_episode']:.2f}  human share {r['intervention_rate']:.3f}  "
                  f"{r['wall_min']:.1f} min  {r['env_steps']:.0f} steps  v{r['policy_version']:.0f}")

    per_task = task_table(results)
    if len(per_task) > 1 or len(tasks) > 1:
        print_task_table(per_task)

    metrics = {**task_metrics(results, "pick_cube", base_success.get("pick_cube")), "tasks": per_task,
               # the same figures for every task that has runs (pick_cube's are the top-level keys)
               "per_task": {t: task_metrics(results, t, base_success.get(t)) for t in TASKS
                            if any(result_key(t, n) in results for n in CONDITIONS)}}
    plot(results, out / "learning_curves.png")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    print(f"\nplots: {out / 'learning_curves.png'}  per-condition run dirs under {out}")
    print(json.dumps(metrics))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
