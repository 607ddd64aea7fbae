"""The embedded human-in-the-loop run (``hil-robot run``), honest evaluation (``hil-robot eval``)
and plots of a run (``hil-robot report``).

``hil-robot run experiment=sim_pick_cube`` starts, as separate processes on loopback:

    recorder   hil-robot receive-transitions   persists the controller's step stream into the store
    learner    hil-robot learner               tails the store, trains, publishes weights
    policy     hil-robot serve-policy          the VLA, following the learner's weights
    operator   hil-robot operator              the simulated operator
    controller hil-robot controller            sim robot + safety + arbitration (one per phase)

seeds the store with scripted demos, waits for the first trained weights, then runs rounds of
deployment (policy + operator, recorded for learning) and operator-free evaluation (recorded apart,
never trained on). Each evaluation block runs the fixed evaluation seeds (the same every round:
rounds compare) and ``experiment.eval_fresh_episodes`` on fresh seeds drawn per round from a seeded
generator and never used for demos or deployment (a policy cannot overfit them), under the
appearance distribution ``experiment.eval_visual`` (``heldout``: colours, light and camera poses
outside the training ranges, sim/visual.py). Per round the run also samples the CPU time each
process got (psutil) and the learner's updates/s (metrics/rounds.csv), so a loaded machine shows
as such instead of hiding the learning curve. Children are supervised (a crashed service is
reported and restarted; one that keeps crashing stops the run with a message), Ctrl-C or SIGTERM
stops everything with all data flushed, and every child ends on its own if this process is killed
hard (``hil_robot/procs.py``).

Console: one progress bar per phase (demos, waiting for the first weights, deployment, evaluation)
when stderr is a terminal, one line per round, warnings and errors; everything else is in
``logs/<process>.log`` (this process's own log: ``logs/run.log``). ``-v`` shows INFO logs too.

Run directory::

    store/          episode store (demos + deployment)      eval_store/   evaluation episodes
    learner/        checkpoints, metrics.csv, wandb offline  metrics/      episodes.csv (+ plots input)
    plots/*.png     videos/eval_latest.mp4                   logs/*.log    summary.json
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from hil_robot.cli import parse_command_args
from hil_robot.config import ConfigError, RootConfig
from hil_robot.launch.plan import ProcessSpec, child_env
from hil_robot.launch.supervisor import Supervisor, describe_exit
from hil_robot.report import EpisodeLog, draw, format_rate, format_table, read_csv, round_summary, wilson_interval
from hil_robot.types import HUMAN_SEGMENTS, SEGMENT_ORDER

log = logging.getLogger("hil_robot.run")

RUN_OPTIONS = {"run_dir": "", "quiet": False}
EVAL_SEED0 = 1_000_000  # evaluation seeds are the same every round, and never used for deployment
# fresh evaluation seeds: drawn per round from a generator seeded by experiment.seed, far above the
# demo (seed * 100_000 + 90_000 + i), deployment (seed * 100_000 + round * 1000 + i) and fixed
# evaluation (EVAL_SEED0 + seed * 1000 + i) ranges
FRESH_SEED_RANGE = (1 << 30, (1 << 31) - 100_000)


class RunStopped(RuntimeError):
    """The run cannot go on (a service died for good, a controller failed); the message says why."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(name: str, args: Sequence[str], *, restart: str = "on-failure", max_restarts: int = 2) -> ProcessSpec:
    return ProcessSpec(name=name, executable="process", arguments=tuple(args), parameters={}, remappings=(),
                       namespace="", restart=restart, max_restarts=max_restarts, required=True)


class _Bar:
    """A tqdm progress bar on stderr when ``enabled`` (a terminal), else nothing; ``total`` 0 = open-ended."""

    def __init__(self, desc: str, total: int, enabled: bool, unit: str = "ep") -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total or None, desc=desc, unit=unit, leave=False, file=sys.stderr,
                            dynamic_ncols=True, bar_format=None if total else "{desc}: {n} {unit} elapsed")

    def update_to(self, n: int) -> None:
        if self.bar is not None and n != self.bar.n:
            self.bar.n = n
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _EpisodeCounter:
    """Finalised episodes added to a store since construction (a directory listing: cheap enough
    to call every poll)."""

    def __init__(self, store: Path) -> None:
        self.dir = store / "episodes"
        self.start = self._count()

    def _count(self) -> int:
        try:
            return sum(1 for n in os.listdir(self.dir) if n.endswith(".hep"))
        except FileNotFoundError:
            return 0

    def __call__(self) -> int:
        return max(0, self._count() - self.start)


def _cpu_group(name: str) -> str:
    """Process name -> its group in the CPU shares (all controller phases are 'controller')."""
    return "controller" if name.startswith(("deploy", "eval")) and name != "eval_policy" else name


class CpuMeter:
    """CPU seconds (user + system, the process and its descendants) each named group of processes
    used, read with psutil while they run; ``take()`` turns the seconds since the last take into
    shares of the machine (wall time x cores), plus 'other' for the rest of the machine's busy time
    (other users' load)."""

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        # the cores this run may use (a container or taskset may allow fewer than the host has)
        self.cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(psutil.cpu_count() or 1))
        self.cores = len(self.cpus)
        self.last: dict[tuple[str, int], float] = {}  # (group, pid) -> CPU seconds at the last sample
        self.base: dict[tuple[str, int], float] = {}  # ... at the last take
        self.t_take = time.monotonic()
        self.busy_take = self._busy()

    def _busy(self) -> float:
        """Busy CPU seconds so far on this run's cores (all users)."""
        per = self.psutil.cpu_times(percpu=True)
        busy = 0.0
        for i in self.cpus:
            if i < len(per):
                t = per[i]
                busy += sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
        return busy

    def sample(self, group: str, pid: int) -> None:
        try:
            proc = self.psutil.Process(pid)
            total = sum(proc.cpu_times()[:2])
            for child in proc.children(recursive=True):
                try:
                    total += sum(child.cpu_times()[:2])
                except self.psutil.Error:
                    pass
        except self.psutil.Error:
            return  # gone since the last sample: its last reading stands
        self.last[(group, pid)] = max(total, self.last.get((group, pid), 0.0))

    def take(self) -> dict[str, float]:
        now, busy = time.monotonic(), self._busy()
        capacity = max(now - self.t_take, 1e-9) * self.cores
        used: dict[str, float] = {}
        for key, secs in self.last.items():
            used[key[0]] = used.get(key[0], 0.0) + secs - self.base.get(key, 0.0)
        ours = sum(used.values())
        shares = {k: round(v / capacity, 4) for k, v in sorted(used.items(), key=lambda kv: -kv[1])}
        if shares:
            shares["other"] = round(max(0.0, busy - self.busy_take - ours) / capacity, 4)
        # a one-shot child that has ended adds nothing more: forget it (no 0 % entries for it later)
        self.last = {k: v for k, v in self.last.items() if self.psutil.pid_exists(k[1])}
        self.base = dict(self.last)
        self.t_take, self.busy_take = now, busy
        return shares


def _append_round_csv(path: Path, stats: dict[str, Any]) -> None:
    """metrics/rounds.csv: one row per round (ROUND_COLUMNS + cpu_<group>); a new group adds a column
    (the file is rewritten with the wider header)."""
    import csv

    from hil_robot.report import ROUND_COLUMNS

    row = {k: stats[k] for k in ROUND_COLUMNS}
    row.update({f"cpu_{k}": v for k, v in stats["cpu_share"].items()})
    rows = []
    if path.is_file():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    rows.append({k: str(v) for k, v in row.items()})
    cols = list(ROUND_COLUMNS) + sorted({k for r in rows for k in r if k not in ROUND_COLUMNS})
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, restval="")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


class HilRun:
    """One run: its directory, ports, supervised services and the per-phase controllers."""

    def __init__(self, cfg: RootConfig, overrides: Sequence[str], run_dir: Path, *, quiet: bool = False) -> None:
        self.cfg, self.overrides, self.run_dir, self.quiet = cfg, list(overrides), run_dir, quiet
        for sub in ("metrics", "logs", "videos", "plots"):
            (run_dir / sub).mkdir(parents=True, exist_ok=True)
        self.store, self.eval_store, self.learner_dir = run_dir / "store", run_dir / "eval_store", run_dir / "learner"
        # an exploring RL actor is evaluated by its mean action: a second policy server (same weight
        # bus, policy.rl_explore=false) serves the evaluation phase
        self.separate_eval_policy = cfg.policy.name == "rl" and cfg.policy.rl_explore
        names = ("policy", "weights", "transitions", "operator") + (("eval_policy",) if self.separate_eval_policy else ())
        self.ports = {k: _free_port() for k in names}
        self.endpoint = {k: f"tcp://127.0.0.1:{p}" for k, p in self.ports.items()}
        self.endpoint.setdefault("eval_policy", self.endpoint["policy"])
        self.episodes = EpisodeLog(run_dir / "metrics" / "episodes.csv")
        self.fresh_seeds = np.random.default_rng([cfg.experiment.seed, 0xE7A1])
        self.cpu = CpuMeter()
        self.round_stats: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        self.env_steps = 0
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.env = child_env()
        self.services: Supervisor | None = None
        self._files: list[Any] = []
        (run_dir / "config.json").write_text(json.dumps({"overrides": self.overrides, "config": cfg.to_dict()}, indent=1))

    # ------------------------------------------------------------------ processes
    def _supervisor(self, specs: Sequence[ProcessSpec]) -> Supervisor:
        """Node output goes to logs/<name>.log only, the supervisor's events to logs/supervisor.log;
        trouble (a failed child, restarts) is also a warning on the console."""
        from hil_robot.cli import verbose

        out = open(self.run_dir / "logs" / "supervisor.log", "a")
        self._files.append(out)
        return Supervisor(specs, self.env, out=out, log_dir=str(self.run_dir / "logs"), shutdown_timeout_s=20.0,
                          echo=None if verbose() and not self.quiet else (lambda line: False), warn=True,
                          command_for=lambda spec: spec.command(self.python_for(spec)))

    def python_for(self, spec: ProcessSpec) -> str:
        """The learner of a LeRobot policy trains it in the LeRobot environment (hil_robot/lerobot_env.py),
        like its policy server (which re-executes itself there); everything else runs here."""
        if spec.name == "learner" and self.cfg.policy.name == "lerobot":
            from hil_robot.lerobot_env import lerobot_python

            return lerobot_python(self.cfg.policy)
        return sys.executable

    def _bars(self) -> bool:
        return not self.quiet and sys.stderr.isatty()

    def start_services(self, wait_episodes: int = 0) -> None:
        """Start recorder, learner, policy server and operator; ``wait_episodes``: the learner loads
        at once but builds its model only when the store holds that many episodes (the demos being
        collected meanwhile), so its normalisation sees all of them."""
        c, o = self.cfg, self.overrides
        specs = [
            _spec("recorder", ["receive-transitions", f"store={self.store}", f"port={self.ports['transitions']}",
                               f"pre_intervention_k={c.learner.pre_intervention_k}", *o]),
            _spec("learner", ["learner", f"store={self.store}", f"run_dir={self.learner_dir}",
                              f"endpoint=tcp://127.0.0.1:{self.ports['weights']}", "resume=true",
                              f"wait_episodes={wait_episodes}", *o]),
            _spec("policy", ["serve-policy", f"port={self.ports['policy']}", *self.follow_weights(), *o]),
            _spec("operator", ["operator", f"port={self.ports['operator']}",
                               f"log={self.run_dir / 'metrics' / 'operator_log.jsonl'}", *o]),
        ]
        if self.separate_eval_policy:
            keep = [x for x in o if not x.startswith("policy.rl_explore=")]
            specs.append(_spec("eval_policy", ["serve-policy", f"port={self.ports['eval_policy']}", "transport.subscribe_weights=true",
                                               f"transport.weights_port={self.ports['weights']}", *keep, "policy.rl_explore=false"]))
        self.services = self._supervisor(specs)
        self.services.start()

    def check_services(self) -> None:
        assert self.services is not None
        self.services.poll()
        if self.services.failed_required:
            name = self.services.failed_required
            child = next(c for c in self.services.children if c.spec.name == name)
            last = next((line.strip() for line in reversed(child.tail) if line.strip()), "")
            raise RunStopped(f"the {name} process keeps failing{': ' + last[:300] if last else ''}; "
                             f"see {self.run_dir / 'logs' / (name + '.log')}")

    def run_child(self, name: str, args: Sequence[str], *, label: str = "", store: Path | None = None,
                  episodes: int = 0) -> None:
        """Run a one-shot child (demo collection, a controller phase) under supervision, polling the
        services meanwhile; raise RunStopped if it fails or a service gives up. With ``store`` and
        ``episodes``, a progress bar counts the episodes it adds to that store."""
        child = self._supervisor([_spec(name, args, restart="never")])
        bar = _Bar(label or name, episodes, self._bars() and store is not None and episodes > 0, unit="ep")
        count = _EpisodeCounter(store) if store is not None else None
        child.start()
        try:
            while not all(c.finished for c in child.children):
                if self.stop.is_set():
                    raise KeyboardInterrupt
                child.poll()
                if self.services is not None:
                    self.check_services()
                if count is not None:
                    bar.update_to(count())
                for c in child.children:  # a one-shot child's CPU time can only be read while it runs
                    if c.proc is not None and c.proc.poll() is None:
                        self.cpu.sample(_cpu_group(name), c.proc.pid)
                self.stop.wait(0.2)
        finally:
            bar.close()
            child.shutdown()
        proc = child.children[0].proc
        rc = proc.returncode if proc else None
        if rc != 0:
            last = next((line.strip() for line in reversed(child.children[0].tail) if line.strip()), "")
            raise RunStopped(f"{name} {describe_exit(rc) if rc is not None else 'did not start'}"
                             f"{': ' + last[:300] if last else ''}; see {self.run_dir / 'logs' / (name + '.log')}")

    def shutdown(self) -> None:
        if self.services is not None:
            self.services.shutdown()  # SIGINT: the learner checkpoints and publishes, the recorder flushes
            self.services = None
        for f in self._files:
            f.close()
        self._files.clear()

    def follow_weights(self) -> list[str]:
        """serve-policy arguments that make it follow the learner's weight bus."""
        return ["transport.subscribe_weights=true", f"transport.weights_port={self.ports['weights']}"]

    # ------------------------------------------------------------------ phases
    def controller_args(self, phase: str, episodes: int, seed: int, rnd: int, seeds: str = "") -> list[str]:
        policy = self.endpoint["policy" if phase == "deploy" else "eval_policy"]
        which = f"seeds={seeds}" if seeds else f"seed={seed}"
        common = ["controller", f"episodes={episodes}", which, f"endpoint={policy}",
                  f"realtime={'true' if self.cfg.experiment.realtime else 'false'}", "keys=false",
                  f"summary_json={self.run_dir / 'metrics' / f'controller_r{rnd}_{phase}.json'}"]
        if phase == "deploy":
            return [*common, f"operator_endpoint={self.endpoint['operator']}",
                    f"transitions={self.endpoint['transitions']}", *self.overrides]
        keep = [x for x in self.overrides if not x.lstrip("+").startswith("sim.visual=")]
        return [*common, "operator=none", f"store={self.eval_store}", *keep, f"sim.visual={self.eval_visual()}"]

    def eval_visual(self) -> str:
        """The appearance distribution of the evaluation phase (experiment.eval_visual; 'same' = sim.visual)."""
        e = self.cfg.experiment
        return self.cfg.sim.visual if e.eval_visual == "same" else e.eval_visual

    def fresh_seed(self) -> int:
        return int(self.fresh_seeds.integers(*FRESH_SEED_RANGE))

    def wait_for_weights(self, min_version: int, timeout_s: float, server: str = "policy") -> int:
        """Block until the policy server *serves* ``min_version`` (the learner's first trained
        weights, received over the weight bus and swapped in), not merely until they were published."""
        from hil_robot.transport.policy_client import PolicyClient, TransportTimeout

        client = PolicyClient(self.endpoint[server], timeout_s=1.0, heartbeat_s=None)
        deadline = time.monotonic() + timeout_s
        bar = _Bar(f"waiting for the first weights ({server})", 0, self._bars(), unit="s")
        try:
            while time.monotonic() < deadline:
                bar.update_to(int(time.monotonic() - deadline + timeout_s))
                try:
                    version = int(client.health(timeout_s=1.0).get("policy_version", -1))
                except TransportTimeout:
                    version = -1  # still loading
                if version >= min_version:
                    return version
                if self.stop.is_set():
                    raise KeyboardInterrupt
                self.check_services()
                self.stop.wait(0.5)
        finally:
            bar.close()
            client.close()
        raise RunStopped(f"the policy server served no trained weights within {timeout_s:.0f} s (learner published "
                         f"v{self.published_version()}); see {self.run_dir / 'logs'}/learner.log and policy.log")

    def published_version(self) -> int:
        path = self.learner_dir / "checkpoints" / "published.json"
        try:
            return int(json.loads(path.read_text())["version"])
        except (OSError, ValueError, KeyError):
            return 0

    def learner_step(self) -> float:
        """Learner updates so far (the step of the last publish, sub-second behind); NaN before any."""
        try:
            return float(json.loads((self.learner_dir / "checkpoints" / "published.json").read_text())["step"])
        except (OSError, ValueError, KeyError):
            return math.nan

    def learner_rate(self) -> float:
        rows = [r for r in read_csv(self.learner_dir / "metrics.csv") if r.get("metric") == "learner/updates_per_s"]
        return float(rows[-1]["value"]) if rows else math.nan

    def log_new_episodes(self, store_path: Path, phase: str, rnd: int, wait_for: int = 0, timeout_s: float = 30.0,
                         seed_kind: dict[int, str] | None = None, visual: str = "") -> list[dict]:
        """Append rows for episodes of ``store_path`` not logged yet; wait until ``wait_for`` are there
        (the recorder finalises the last streamed episode a moment after the controller exits).
        ``seed_kind``: episode seed -> its eval seed set ("fixed" | "fresh")."""
        from hil_robot.data import EpisodeStore

        deadline = time.monotonic() + timeout_s
        while True:
            metas = [m for m in EpisodeStore(store_path, read_only=True).episodes() if m.episode_id not in self.seen] \
                if store_path.exists() else []
            if len(metas) >= wait_for or time.monotonic() > deadline:
                break
            self.stop.wait(0.3)
        if len(metas) < wait_for:
            log.warning("%s: expected %d new episodes in %s, found %d", phase, wait_for, store_path, len(metas))
        rows = []
        for m in metas:
            seed = -1 if m.seed is None else int(m.seed)
            self.seen.add(m.episode_id)
            self.env_steps += m.num_steps
            counts = {s.value: int(m.segment_counts.get(s.value, 0)) for s in SEGMENT_ORDER}
            row = {"wall_s": round(time.monotonic() - self.t0, 2), "round": rnd, "phase": phase,
                   "episode_id": m.episode_id, "success": int(m.success), "steps": m.num_steps,
                   "env_steps_total": self.env_steps, "interventions": m.num_interventions,
                   "human_steps": sum(counts[s.value] for s in HUMAN_SEGMENTS if s.value != "demo"),
                   "policy_version": max(m.policy_versions, default=-1),
                   **{f"seg_{k}": v for k, v in counts.items()},
                   "seed_kind": (seed_kind or {}).get(seed, ""), "visual": visual or self.cfg.sim.visual, "seed": seed}
            self.episodes.write(row)
            rows.append(row)
        return rows

    def progress(self, rnd: int, deploy: list[dict], evals: list[dict], stats: dict[str, Any] | None = None) -> str:
        def rate(rows: list[dict], key: str) -> str:
            return f"{100 * sum(r[key] for r in rows) / len(rows):.0f}%" if rows else "-"

        steps = sum(r["steps"] for r in deploy)
        human = sum(r["human_steps"] for r in deploy)
        ups = (stats or {}).get("learner_updates_per_s", math.nan)
        ups = self.learner_rate() if math.isnan(ups) else ups
        learner = f"learner {ups:.1f} upd/s"
        fresh = [r for r in evals if r["seed_kind"] == "fresh"]
        fixed = [r for r in evals if r["seed_kind"] != "fresh"]
        ev = f"eval {len(evals)} eps: success {rate(evals, 'success')}" if evals else "no eval this round"
        if fresh:
            ev += f" (fresh {rate(fresh, 'success')}, fixed {rate(fixed, 'success')})"
        if evals and evals[0]["visual"] != "train":
            ev += f", {evals[0]['visual']} visuals"
        cpu = ""
        if stats and stats.get("cpu_share"):
            cpu = " | cpu " + " ".join(f"{k} {100 * v:.0f}%" for k, v in stats["cpu_share"].items())
        return (f"[round {rnd}/{self.cfg.experiment.rounds}] deploy {len(deploy)} eps: success {rate(deploy, 'success')}, "
                f"takeovers/ep {sum(r['interventions'] for r in deploy) / max(len(deploy), 1):.2f}, "
                f"operator steps {100 * human / max(steps, 1):.0f}% | {ev} | "
                f"weights v{self.published_version()} | {learner} | "
                f"{(time.monotonic() - self.t0) / 60:.1f} min, {self.env_steps} env steps{cpu}")

    def round_end(self, rnd: int) -> dict[str, Any]:
        """Per-round throughput and load: learner updates (total and per second this round) and the
        share of the machine's CPU time each process got; appended to metrics/rounds.csv."""
        if self.services is not None:
            for c in self.services.children:
                if c.proc is not None and c.proc.poll() is None:
                    self.cpu.sample(_cpu_group(c.spec.name), c.proc.pid)
        wall = time.monotonic() - self.t0
        prev = self.round_stats[-1] if self.round_stats else {"wall_s": self._services_t - self.t0, "learner_updates": 0.0}
        updates = self.learner_step()
        dt = max(wall - prev["wall_s"], 1e-9)
        prev_updates = prev["learner_updates"] if not math.isnan(prev["learner_updates"]) else 0.0
        share = self.cpu.take()
        stats = {"round": rnd, "wall_s": round(wall, 2), "env_steps": self.env_steps, "learner_updates": updates,
                 "learner_updates_per_s": (updates - prev_updates) / dt if not math.isnan(updates) else math.nan,
                 "cpu_share": share}
        self.round_stats.append(stats)
        _append_round_csv(self.run_dir / "metrics" / "rounds.csv", stats)
        log.info("round %d details: learner %.0f updates (%.2f/s this round); cpu share of %d cores: %s", rnd, updates,
                 stats["learner_updates_per_s"], self.cpu.cores,
                 ", ".join(f"{k} {100 * v:.1f}%" for k, v in share.items()) or "n/a")
        return stats

    def render_latest_eval(self) -> Path | None:
        from hil_robot.data import EpisodeStore
        from hil_robot.data.cli import episode_frames
        from sim.video import write_mp4

        if not self.cfg.sim.render:
            log.info("no eval video: sim.render=false records no camera images")
            return None
        store = EpisodeStore(self.eval_store, read_only=True)
        metas = store.episodes()
        if not metas:
            return None
        ep = store.read_episode(metas[-1].episode_id)
        out = self.run_dir / "videos" / "eval_latest.mp4"
        write_mp4(episode_frames(ep), out, int(round(self.cfg.robot.control_hz)))
        return out

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        e = self.cfg.experiment
        say = print
        say(f"hil_robot run {e.name}: {self.run_dir}  (logs: {self.run_dir / 'logs'})", flush=True)
        # the services load (torch, models, sockets) while the demos are collected; the learner
        # starts training once every demo is in the store
        from hil_robot.data import EpisodeStore

        store = EpisodeStore(self.store)  # creates the store the services open
        have = len(store)
        store.close()
        self.start_services(wait_episodes=have + e.demo_episodes)
        if e.demo_episodes:
            say(f"collecting {e.demo_episodes} scripted demos ...", flush=True)
            self.run_child("demos", ["collect-demos", f"episodes={e.demo_episodes}", f"out={self.store}",
                                     f"seed={e.seed * 100_000 + 90_000}", *self.overrides],
                           label="demos", store=self.store, episodes=e.demo_episodes)
            rows = self.log_new_episodes(self.store, "demo", 0)
            say(f"[round 0] {len(rows)} demos, {sum(r['success'] for r in rows)} successful", flush=True)
        self._services_t = time.monotonic()
        self.cpu.take()  # shares count from here: the demo phase is not a round
        if self.env_steps >= self.cfg.learner.min_replay_steps:  # the learner can train on the demos first
            version = self.wait_for_weights(1, timeout_s=max(120.0, 60.0 * e.max_minutes / 3))
            if self.separate_eval_policy:
                self.wait_for_weights(1, timeout_s=max(120.0, 60.0 * e.max_minutes / 3), server="eval_policy")
            say(f"learner published weights v{version}; deploying", flush=True)
        else:
            say(f"{self.env_steps} demo steps < learner.min_replay_steps={self.cfg.learner.min_replay_steps}: "
                "deploying the untrained policy first", flush=True)
        for rnd in range(1, e.rounds + 1):
            seed = e.seed * 100_000 + rnd * 1000
            self.run_child(f"deploy{rnd}", self.controller_args("deploy", e.episodes_per_round, seed, rnd),
                           label=f"round {rnd}/{e.rounds} deploy", store=self.store, episodes=e.episodes_per_round)
            deploy = self.log_new_episodes(self.store, "deploy", rnd, wait_for=e.episodes_per_round)
            evals: list[dict] = []
            fresh_seed = self.fresh_seed()  # drawn every round, so the seeds of round r do not depend on eval settings
            evaluate = evaluates(rnd, e, out_of_time=(time.monotonic() - self.t0) / 60 >= e.max_minutes)
            # one controller phase runs both seed sets (each phase pays a process start)
            seed_kind = {EVAL_SEED0 + e.seed * 1000 + i: "fixed" for i in range(e.eval_episodes)}
            seed_kind |= {fresh_seed + i: "fresh" for i in range(e.eval_fresh_episodes)}
            if seed_kind and evaluate:
                seeds = ",".join(map(str, seed_kind))
                self.run_child(f"eval{rnd}", self.controller_args("eval", len(seed_kind), -1, rnd, seeds=seeds),
                               label=f"round {rnd}/{e.rounds} eval", store=self.eval_store, episodes=len(seed_kind))
                evals = self.log_new_episodes(self.eval_store, "eval", rnd, wait_for=len(seed_kind), seed_kind=seed_kind,
                                              visual=self.eval_visual())
            line = self.progress(rnd, deploy, evals, self.round_end(rnd))
            log.info("%s", line)
            say(line, flush=True)
            if (time.monotonic() - self.t0) / 60 >= e.max_minutes:
                say(f"wall-clock budget of {e.max_minutes:g} min reached after round {rnd}", flush=True)
                break
        return self.finish()

    def finish(self) -> dict[str, Any]:
        self.shutdown()
        summary = round_summary(read_csv(self.run_dir / "metrics" / "episodes.csv"), read_csv(self.run_dir / "metrics" / "rounds.csv"))
        by_round = {s["round"]: s for s in self.round_stats}
        for s in summary:  # the per-process shares as one dict per round (rounds.csv has them flat)
            if int(s["round"]) in by_round:
                s["cpu_share"] = by_round[int(s["round"])]["cpu_share"]
                for k in [k for k in s if k.startswith("cpu_") and k != "cpu_share"]:
                    del s[k]
        plots = draw(self.run_dir) if summary else []
        video = self.render_latest_eval() if self.eval_store.exists() else None
        final = summary[-1] if summary else {}
        result = {"run_dir": str(self.run_dir), "rounds": summary, "final_eval_success": final.get("eval_success"),
                  "final_eval_fresh_success": final.get("eval_fresh_success"),
                  "final_eval_fixed_success": final.get("eval_fixed_success"),
                  "final_eval_ci95": [final.get("eval_ci_low"), final.get("eval_ci_high")],
                  "eval_visual": self.eval_visual(), "learner_updates": self.learner_step(), "cpu_cores": self.cpu.cores,
                  "final_intervention_rate": final.get("intervention_rate"), "weight_version": self.published_version(),
                  "episodes": len(self.seen), "env_steps": self.env_steps,
                  "minutes": (time.monotonic() - self.t0) / 60, "plots": [str(p) for p in plots],
                  "video": str(video) if video else None}
        (self.run_dir / "summary.json").write_text(json.dumps(result, indent=1, default=float))
        print("\n" + format_table(summary), flush=True)
        print(f"\nrun directory: {self.run_dir}  (plots/, videos/, store/, learner/, metrics/)", flush=True)
        return result


def _overrides(argv: Sequence[str], options: dict[str, Any]) -> list[str]:
    return [a for a in argv if a.partition("=")[0].lstrip("-").replace("-", "_") not in options]


def check_policy_matches_learner(cfg: RootConfig) -> None:
    """The served policy must be able to load what the learner publishes (else every weight update
    would be rejected and the run would deploy an untrained policy for its whole budget). A LeRobot
    policy is fine-tuned by learner=weighted_bc|bc in the LeRobot environment (hil_robot/learn/lerobot_bc.py)."""
    algo, name = cfg.learner.algorithm, cfg.policy.name
    if name == "lerobot":
        from hil_robot.lerobot_env import lerobot_python
        from policies.lerobot_backend import check_finetune_action_space

        if not cfg.policy.checkpoint:
            raise ConfigError("policy=lerobot needs policy.checkpoint=DIR (a LeRobot save_pretrained directory); "
                              "random weights for a first run: .venv-lerobot/bin/python -m policies.lerobot_tiny out=DIR")
        if algo not in ("weighted_bc", "bc"):
            raise ConfigError(f"learner.algorithm={algo} cannot train a LeRobot policy; policy=lerobot is fine-tuned with "
                              "learner=weighted_bc (Sirius weights) or learner=bc")
        check_finetune_action_space(cfg.policy)  # the recorded actions are our EE delta
        lerobot_python(cfg.policy)  # the LeRobot environment exists (else: run make lerobot-env)
        return
    if algo == "rlpd" and name != "rl":
        raise ConfigError(f"learner.algorithm=rlpd publishes SAC actor weights, which policy {name!r} cannot load; "
                          "serve them with policy=rl")
    if cfg.learner.rl_actor == "noise":
        check_dsrl(cfg)
    if algo in ("weighted_bc", "bc") and name != "vla":
        raise ConfigError(f"learner.algorithm={algo} trains the VLA; serve it with policy=vla (got policy={name})")


def check_dsrl(cfg: RootConfig) -> None:
    """learner=dsrl: a local flow VLA (policy.checkpoint), or a remote one (policy.server_url) with its
    noise shape; chunk spans need the stored reward."""
    lc, pc = cfg.learner, cfg.policy
    if not pc.checkpoint and not pc.server_url:
        raise ConfigError("learner=dsrl steers a trained flow-matching VLA: set policy.checkpoint=DIR (a policy "
                          "directory trained with policy.head=flow, e.g. `hil-robot train-bc ... policy.head=flow out=DIR`), "
                          "or policy=rl_openpi policy.server_url=ws://HOST:PORT learner.rl_noise_shape=[H,D] for pi0 behind openpi")
    if pc.checkpoint and pc.server_url:
        raise ConfigError("learner=dsrl: set policy.checkpoint (our VLA, served here) or policy.server_url (a remote flow "
                          "VLA), not both")
    if pc.server_url and not lc.rl_noise_shape:
        raise ConfigError("learner=dsrl with a remote VLA (policy.server_url) needs learner.rl_noise_shape=[action_horizon, "
                          "action_dim] of its noise, e.g. [50, 32] for an openpi pi0 checkpoint")
    if pc.server_url and cfg.experiment.realtime and cfg.control.request_lead_steps > 0:
        raise ConfigError("learner=dsrl with a remote VLA learns only from the noise recorded on the tick whose observation "
                          "chose each chunk; a chunk requested early starts later: set control.request_lead_steps=0")
    if pc.n_action_steps > 1 and lc.reward != "sparse":
        raise ConfigError(f"learner=dsrl with policy.n_action_steps={pc.n_action_steps} sums the recorded reward over each "
                          f"chunk; learner.reward={lc.reward} relabels single steps: use learner.reward=sparse or "
                          "policy.n_action_steps=1")


def check_images(cfg: RootConfig) -> None:
    """With sim.render=false the run records no camera images: only a standalone SAC actor from state
    (or a scripted policy) with the sparse reward can run on that (else the learner or the policy
    server would fail at its first batch or observation, minutes into the run)."""
    if cfg.sim.render:
        return
    lc, name = cfg.learner, cfg.policy.name
    needs = []
    if name not in ("rl", "expert", "noisy_expert", "random"):
        needs.append(f"policy={name} reads the cameras")
    if name == "rl" and lc.rl_actor != "standalone":
        needs.append(f"learner.rl_actor={lc.rl_actor} runs the VLA, which reads the cameras")
    if lc.rl_obs == "image":
        needs.append("learner.rl_obs=image trains on the cameras")
    if lc.reward != "sparse":
        needs.append(f"learner.reward={lc.reward} scores camera frames")
    if needs:
        raise ConfigError(f"sim.render=false records no camera images, but {'; '.join(needs)}: set sim.render=true")


def check_paths(cfg: RootConfig) -> None:
    """Checkpoints named in the config exist (else a child would crash at start, three times, and
    the run would stop minutes later with a pointer to its log)."""
    for key, value, what in (("policy.checkpoint", cfg.policy.checkpoint, "a policy directory, e.g. "
                              "RUN_DIR/learner/checkpoints/step_*/policy, or leave it empty for fresh weights"),
                             ("learner.critic_checkpoint", cfg.learner.critic_checkpoint,
                              "a critic directory from `hil-robot train-critic out=DIR`")):
        if value and not Path(value).exists():
            raise ConfigError(f"{key}={value} does not exist; give {what}")


def main(cfg: RootConfig, overrides: Sequence[str] = (), run_dir: str | Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """Importable entry point: the whole run; returns the summary (also in RUN_DIR/summary.json)."""
    check_policy_matches_learner(cfg)
    check_images(cfg)
    check_paths(cfg)
    run_dir = Path(run_dir or Path(cfg.experiment.run_dir) / time.strftime("%Y%m%d-%H%M%S"))
    hil = HilRun(cfg, overrides, run_dir, quiet=quiet)
    run_log = logging.FileHandler(run_dir / "logs" / "run.log")  # this process's INFO lines
    run_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(run_log)
    level = log.level
    log.setLevel(logging.INFO)  # the round lines and their details always reach logs/run.log
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):  # stop: every child is stopped, data flushed
            previous[sig] = signal.signal(sig, lambda *_: hil.stop.set())
    try:
        return hil.run()
    except KeyboardInterrupt:
        print("interrupted: stopping every process, flushing data ...", flush=True)
        return hil.finish()
    except RunStopped as e:
        print(f"run stopped: {e}", file=sys.stderr, flush=True)
        result = hil.finish()
        result["error"] = str(e)
        return result
    finally:
        hil.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logging.getLogger().removeHandler(run_log)
        log.setLevel(level)
        run_log.close()


def run(argv: list[str]) -> int:
    from hil_robot.cli import console_logging

    console_logging()  # warnings and errors on the console (-v: INFO too); the rest in RUN_DIR/logs/
    opts, cfg = parse_command_args(argv, options=RUN_OPTIONS)
    result = main(cfg, _overrides(argv, RUN_OPTIONS), opts["run_dir"] or None, quiet=opts["quiet"])
    return 1 if "error" in result else 0


def evaluates(rnd: int, e: Any, out_of_time: bool) -> bool:
    """Does round ``rnd`` end with an eval block? Every ``experiment.eval_every_rounds``-th round,
    and the last one (``experiment.rounds``, or the one that used up the wall-clock budget)."""
    return rnd == e.rounds or out_of_time or rnd % e.eval_every_rounds == 0


def evaluate(argv: list[str]) -> int:
    """``hil-robot eval checkpoint=DIR episodes=N [visual=heldout]``: operator-free success rate of a
    checkpoint with its Wilson 95 % interval (``visual=heldout``: appearance outside the training
    ranges, sim/visual.py)."""
    from hil_robot.control.cli import controller
    from hil_robot.data import EpisodeStore

    options = {"episodes": 10, "out": "", "seed": EVAL_SEED0, "video": True}
    opts, cfg = parse_command_args(argv, options=options, aliases={"checkpoint": "policy.checkpoint", "task": "sim.task",
                                                                            "visual": "sim.visual"})
    if cfg.policy.name == "vla" and not cfg.policy.checkpoint:
        raise ConfigError("eval needs checkpoint=DIR (a policy directory, e.g. RUN_DIR/learner/checkpoints/step_*/policy)")
    out = Path(opts["out"] or f"{cfg.experiment.run_dir}/eval-{time.strftime('%Y%m%d-%H%M%S')}")
    rest = [a for a in _overrides(argv, options) if not a.startswith(("checkpoint=", "task=", "visual=", "sim.visual="))]
    extra = [f"policy.checkpoint={cfg.policy.checkpoint}", f"sim.task={cfg.sim.task}", f"sim.visual={cfg.sim.visual}"]
    rc = controller([f"episodes={opts['episodes']}", f"seed={opts['seed']}", "operator=none", f"store={out / 'store'}",
                     "realtime=false", "keys=false", *extra, *rest])
    metas = EpisodeStore(out / "store", read_only=True).episodes()
    ok = sum(m.success for m in metas)
    lo, hi = wilson_interval(ok, len(metas))
    print(f"eval {cfg.sim.task}: {format_rate(ok, len(metas))} successful (Wilson 95% interval), no operator, "
          f"{cfg.sim.visual} visuals, seeds {opts['seed']}..{opts['seed'] + len(metas) - 1}")
    if opts["video"] and metas and not cfg.sim.render:
        print("no video: sim.render=false records no camera images")
    elif opts["video"] and metas:
        from hil_robot.data.cli import episode_frames
        from sim.video import write_mp4

        store = EpisodeStore(out / "store", read_only=True)
        write_mp4(episode_frames(store.read_episode(metas[-1].episode_id)), out / "eval_latest.mp4", int(round(cfg.robot.control_hz)))
    (out / "eval.json").write_text(json.dumps({"episodes": len(metas), "successes": ok, "success_rate": ok / max(len(metas), 1),
                                               "ci95_low": lo, "ci95_high": hi, "visual": cfg.sim.visual,
                                               "seed": opts["seed"]}))
    return rc


def report(argv: list[str]) -> int:
    """``hil-robot report RUN_DIR``: redraw the plots and print the round table."""
    opts, _ = parse_command_args(argv, positional=("run_dir",))
    run_dir = Path(opts["run_dir"])
    try:
        plots = draw(run_dir)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    print(format_table(round_summary(read_csv(run_dir / "metrics" / "episodes.csv"), read_csv(run_dir / "metrics" / "rounds.csv"))))
    for p in plots:
        print(f"wrote {p}")
    return 0
