"""Learner metrics: a local CSV (always), PNG plots (redrawn on demand) and wandb (offline by
default; ``experiment.wandb_mode=online`` when the user has configured wandb, ``disabled`` off).

CSV is long-format, one row per metric value, so new metric names can appear at any time::

    step,time_s,metric,value
    120,34.2,wbc/loss,0.0412
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)


class MetricsLogger:
    def __init__(self, run_dir: str | Path, *, wandb_mode: str = "offline", config: Mapping[str, Any] | None = None,
                 name: str = "learner", enabled: bool = True):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.t0 = time.monotonic()
        self._wandb = None
        self._history: dict[str, list[tuple[int, float]]] = defaultdict(list)
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "metrics.csv"
        self._load_history()
        new = not self.csv_path.exists()
        self._csv_file = open(self.csv_path, "a", newline="")
        self._csv = csv.writer(self._csv_file)
        if new:
            self._csv.writerow(["step", "time_s", "metric", "value"])
        if wandb_mode != "disabled":
            try:
                import wandb

                self._wandb = wandb.init(project="hil_robot", name=name, mode=wandb_mode, dir=str(self.run_dir),
                                         config=dict(config or {}), resume="allow", reinit=True)
            except Exception as e:  # wandb problems must never stop training
                log.warning("wandb disabled (%s); metrics still go to %s", e, self.csv_path)
                self._wandb = None

    def _load_history(self) -> None:
        """A resumed run appends to its CSV; keep the earlier points for the plots."""
        if not self.csv_path.exists():
            return
        with open(self.csv_path, newline="") as f:
            for row in csv.DictReader(f):
                try:
                    self._history[row["metric"]].append((int(row["step"]), float(row["value"])))
                except (KeyError, ValueError):
                    continue

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        t = time.monotonic() - self.t0
        for k, v in metrics.items():
            v = float(v)
            self._csv.writerow([step, f"{t:.3f}", k, f"{v:.6g}"])
            if math.isfinite(v):
                self._history[k].append((step, v))
        self._csv_file.flush()
        if self._wandb is not None:
            try:
                self._wandb.log(dict(metrics), step=step)
            except Exception as e:
                log.warning("wandb log failed (%s); continuing with CSV only", e)
                self._wandb = None

    def plot(self, path: str | Path | None = None) -> Path | None:
        """One PNG with a panel per metric (grouped by namespace); returns its path."""
        if not self.enabled or not self._history:
            return None
        return plot_history(self._history, Path(path) if path else self.run_dir / "metrics.png")

    def close(self) -> None:
        if not self.enabled:
            return
        self.plot()
        self._csv_file.close()
        if self._wandb is not None:
            try:
                self._wandb.finish()
            except Exception:
                pass


def read_csv(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    hist: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            hist[row["metric"]].append((int(row["step"]), float(row["value"])))
    return hist


def plot_history(history: Mapping[str, list[tuple[int, float]]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(k for k, pts in history.items() if pts)
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        steps, values = zip(*history[name])
        ax.plot(steps, values, lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("update", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
    return path
