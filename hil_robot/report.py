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
] + [f"seg_{s.value}" for s in SEGMENT_ORDER]


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
        self._w.writerow({k: row.get(k, 0) for k in EPISODE_COLUMNS})
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


def round_summary(rows: Iterable[dict[str, Any]]) -> list[dict[str, float]]:
    """Per round: eval success rate, deploy intervention rate (takeovers per episode and human-step
    share), wall clock and env steps at the end of the round."""
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
        out.append(
            {
                "round": rnd,
                "eval_success": _mean(float(r["success"]) for r in ev),
                "deploy_success": _mean(float(r["success"]) for r in dep),
                "interventions_per_episode": _mean(float(r["interventions"]) for r in dep),
                "intervention_rate": human / steps if steps else math.nan,
                "wall_min": max(d["wall"]) / 60.0,
                "env_steps": max(d["env"]),
                "policy_version": max((float(r["policy_version"]) for r in ev + dep), default=math.nan),
            }
        )
    return out


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else math.nan


def format_table(summary: list[dict[str, float]]) -> str:
    head = f"{'round':>5} {'eval succ':>9} {'deploy succ':>11} {'interv/ep':>9} {'human %':>8} {'version':>7} {'min':>6} {'env steps':>9}"
    lines = [head, "-" * len(head)]
    for s in summary:
        lines.append(
            f"{s['round']:>5.0f} {_pct(s['eval_success']):>9} {_pct(s['deploy_success']):>11} "
            f"{s['interventions_per_episode']:>9.2f} {_pct(s['intervention_rate']):>8} "
            f"{s['policy_version']:>7.0f} {s['wall_min']:>6.1f} {s['env_steps']:>9.0f}"
        )
    return "\n".join(lines)


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
    summary = round_summary(rows)
    written = []

    # success and autonomy vs episodes (cumulative deploy episodes) and vs wall clock
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, xkey, xlabel in ((axes[0], "env_steps", "env steps"), (axes[1], "wall_min", "wall clock (min)")):
        xs = [s[xkey] for s in summary]
        ax.plot(xs, [s["eval_success"] for s in summary], "o-", label="eval success (no operator)")
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
