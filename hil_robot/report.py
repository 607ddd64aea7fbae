"""Run-directory metrics and plots for the human-in-the-loop run.

A run directory holds ``metrics/episodes.csv`` (one row per finished episode, written by the run
supervisor as episodes end) and, when present, ``metrics/critic_values.csv`` (per-step critic value
of evaluation episodes) and the learner's own CSV. ``draw(run_dir)`` turns them into PNGs under
``plots/``; ``hil-robot report RUN_DIR`` calls it again at any time.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Iterable

from hil_robot.types import SEGMENT_ORDER

EPISODE_COLUMNS = [
    "wall_s",  # seconds since the run started, when the episode ended
    "round",  # 0 = seed demos, 1.. deployment rounds
    "phase",  # demo | deploy | eval
    "episode_id",
    "success",  # 0/1
    "steps",
    "env_steps_total",  # all env steps of the run so far (deploy + eval + demo)
    "interventions",  # number of takeovers in the episode
    "human_steps",  # steps where the operator acted
    "policy_version",  # highest policy version used in the episode
] + [f"seg_{s.value}" for s in SEGMENT_ORDER] + [
    "seed_kind",  # eval rows: fixed (the same seeds every round) | fresh (new seeds per round); else empty
    "visual",  # appearance distribution the episode ran under: train | heldout (sim.visual)
    "seed",  # the episode's sim seed (-1 unknown)
]
ROUND_COLUMNS = ["round", "wall_s", "env_steps", "learner_updates", "learner_updates_per_s"]  # + cpu_<process>
WILSON_Z = 1.959964  # 95 % two-sided


def wilson_interval(successes: float, n: float, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval of a success rate (``successes`` of ``n``); (nan, nan) for n = 0. Unlike
    the normal approximation it stays inside [0, 1] and is honest at 0/n and n/n."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def format_rate(successes: float, n: float) -> str:
    """'7/10 = 70% [40%, 89%]' (Wilson 95 %)."""
    if n <= 0:
        return "no episodes"
    lo, hi = wilson_interval(successes, n)
    return f"{successes:.0f}/{n:.0f} = {100 * successes / n:.0f}% [{100 * lo:.0f}%, {100 * hi:.0f}%]"


class EpisodeLog:
    """Append-only CSV of finished episodes; flushed per row so a crash loses nothing written."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._f = open(self.path, "a", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=EPISODE_COLUMNS)
        if new:
            self._w.writeheader()
            self._f.flush()

    def write(self, row: dict[str, Any]) -> None:
        unknown = set(row) - set(EPISODE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown episode log columns {sorted(unknown)}; allowed: {EPISODE_COLUMNS}")
        self._w.writerow({k: row.get(k, "" if k in ("seed_kind", "visual") else 0) for k in EPISODE_COLUMNS})
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def read_csv(path: str | os.PathLike) -> list[dict[str, float | str]]:
    """Rows of a CSV with numeric cells converted to float (others kept as str)."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, float | str] = {}
            for k, v in raw.items():
                try:
                    row[k] = float(v)
                except (TypeError, ValueError):
                    row[k] = v
            rows.append(row)
    return rows


def round_summary(rows: Iterable[dict[str, Any]], round_rows: Iterable[dict[str, Any]] = ()) -> list[dict[str, float]]:
    """Per round: eval success rate (all eval episodes, and apart on fresh and on fixed seeds, each
    with its Wilson 95 % interval), deploy intervention rate (takeovers per episode and human-step
    share), wall clock and env steps at the end of the round; with ``round_rows`` (metrics/rounds.csv)
    also learner updates, updates/s and each process's CPU share."""
    by_round: dict[int, dict[str, list]] = {}
    for r in rows:
        d = by_round.setdefault(int(r["round"]), {"eval": [], "deploy": [], "wall": [], "env": []})
        if r["phase"] in ("eval", "deploy"):
            d[str(r["phase"])].append(r)
        d["wall"].append(float(r["wall_s"]))
        d["env"].append(float(r["env_steps_total"]))
    out = []
    for rnd in sorted(by_round):
        d = by_round[rnd]
        ev, dep = d["eval"], d["deploy"]
        human = sum(float(r["human_steps"]) for r in dep)
        steps = sum(float(r["steps"]) for r in dep)
        fresh = [r for r in ev if r.get("seed_kind") == "fresh"]
        fixed = [r for r in ev if r.get("seed_kind") != "fresh"]  # rows from before seed_kind: fixed seeds
        rates = {}
        for key, group in (("eval", ev), ("eval_fresh", fresh), ("eval_fixed", fixed)):
            k = sum(float(r["success"]) for r in group)
            lo, hi = wilson_interval(k, len(group))
            rates.update({f"{key}_successes": k, f"{key}_episodes": float(len(group)), f"{key}_ci_low": lo, f"{key}_ci_high": hi})
        out.append(
            {
                "round": rnd,
                "eval_success": _mean(float(r["success"]) for r in ev),
                "eval_fresh_success": _mean(float(r["success"]) for r in fresh),
                "eval_fixed_success": _mean(float(r["success"]) for r in fixed),
                **rates,
                "deploy_success": _mean(float(r["success"]) for r in dep),
                "interventions_per_episode": _mean(float(r["interventions"]) for r in dep),
                "intervention_rate": human / steps if steps else math.nan,
                "wall_min": max(d["wall"]) / 60.0,
                "env_steps": max(d["env"]),
                "policy_version": max((float(r["policy_version"]) for r in ev + dep), default=math.nan),
            }
        )
    by_rnd = {int(r["round"]): r for r in round_rows}
    for s in out:
        extra = by_rnd.get(int(s["round"]))
        if extra:
            s.update({k: float(v) for k, v in extra.items() if k not in ("round", "wall_s", "env_steps") and v != ""})
    return out


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else math.nan


def format_table(summary: list[dict[str, float]]) -> str:
    """The round table; below it, the last evaluated round's success with Wilson 95 % intervals."""
    head = (f"{'round':>5} {'eval fresh':>10} {'eval fixed':>10} {'deploy succ':>11} {'interv/ep':>9} {'human %':>8} "
            f"{'version':>7} {'min':>6} {'env steps':>9} {'updates':>8} {'upd/s':>6}")
    lines = [head, "-" * len(head)]
    for s in summary:
        lines.append(
            f"{s['round']:>5.0f} {_pct(s.get('eval_fresh_success', math.nan)):>10} "
            f"{_pct(s.get('eval_fixed_success', s['eval_success'])):>10} {_pct(s['deploy_success']):>11} "
            f"{s['interventions_per_episode']:>9.2f} {_pct(s['intervention_rate']):>8} "
            f"{s['policy_version']:>7.0f} {s['wall_min']:>6.1f} {s['env_steps']:>9.0f} "
            f"{_num(s.get('learner_updates', math.nan), '.0f'):>8} {_num(s.get('learner_updates_per_s', math.nan), '.2f'):>6}"
        )
    last = next((s for s in reversed(summary) if s.get("eval_episodes", 0) > 0), None)
    if last is not None:
        parts = [f"{name} {format_rate(last[f'{key}_successes'], last[f'{key}_episodes'])}"
                 for key, name in (("eval_fresh", "fresh seeds"), ("eval_fixed", "fixed seeds"), ("eval", "all"))
                 if last.get(f"{key}_episodes", 0) > 0]
        lines.append(f"final eval (round {last['round']:.0f}, Wilson 95%): " + "; ".join(parts))
    return "\n".join(lines)


def _num(x: float, fmt: str) -> str:
    return "-" if math.isnan(x) else format(x, fmt)


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.0f}%"


def draw(run_dir: str | os.PathLike) -> list[Path]:
    """Draw the run's PNG plots into ``RUN_DIR/plots``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_csv(run_dir / "metrics" / "episodes.csv")
    if not rows:
        raise FileNotFoundError(f"{run_dir}/metrics/episodes.csv is missing or empty: is {run_dir} a run directory?")
    out_dir = run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = round_summary(rows, read_csv(run_dir / "metrics" / "rounds.csv"))
    written = []

    # success and autonomy per env step, per wall-clock minute and per learner update (load slows
    # the learner: the last panel shows the learning curve without it)
    panels = [("env_steps", "env steps"), ("wall_min", "wall clock (min)")]
    if any(not math.isnan(s.get("learner_updates", math.nan)) for s in summary):
        panels.append(("learner_updates", "learner updates"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (xkey, xlabel) in zip(axes, panels):
        xs = [s.get(xkey, math.nan) for s in summary]
        ev = [s for s in summary if s.get("eval_episodes", 1)]  # rounds without eval (eval_every_rounds > 1): no point
        ax.plot([s.get(xkey, math.nan) for s in ev], [s["eval_success"] for s in ev], "o-", label="eval success (no operator)")
        if any(s.get("eval_fresh_episodes", 0) for s in summary):
            ax.plot([s.get(xkey, math.nan) for s in ev], [s["eval_fresh_success"] for s in ev], "^:", label="eval, fresh seeds")
        ax.plot(xs, [1 - s["intervention_rate"] for s in summary], "s--", label="autonomy (1 - human step share)")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Success and autonomy")
    fig.tight_layout()
    written.append(_save(fig, out_dir / "success_autonomy.png"))

    # steps per segment type per round (deploy episodes)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    rounds = sorted({int(r["round"]) for r in rows})
    bottom = [0.0] * len(rounds)
    for seg in SEGMENT_ORDER:
        vals = [sum(float(r[f"seg_{seg.value}"]) for r in rows if int(r["round"]) == rnd and r["phase"] != "eval") for rnd in rounds]
        if any(vals):
            ax.bar([str(x) for x in rounds], vals, bottom=bottom, label=seg.value)
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xlabel("round (0 = seed demos)")
    ax.set_ylabel("steps")
    ax.set_title("Recorded steps per segment type")
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "segments.png"))

    # critic value curves of evaluation episodes, when the run recorded them
    crit = read_csv(run_dir / "metrics" / "critic_values.csv")
    if crit:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for ep in sorted({str(r["episode_id"]) for r in crit})[-8:]:
            pts = [(float(r["step"]), float(r["value"])) for r in crit if str(r["episode_id"]) == ep]
            ax.plot(*zip(*pts), lw=1, label=ep[-12:])
        ax.set_xlabel("step")
        ax.set_ylabel("critic value V")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title("Progress-critic value, latest evaluation episodes")
        ax.legend(fontsize=6)
        fig.tight_layout()
        written.append(_save(fig, out_dir / "critic_values.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
