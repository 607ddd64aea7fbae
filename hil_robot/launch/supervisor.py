"""Supervised node processes for the pip path (``hil-robot launch``), where ``launch`` itself is
not installable: prefixed logs, a restart policy, reports of nodes that died (exit code or the
signal that killed them), and a clean shutdown on Ctrl-C that leaves no orphans.

Children are started by ``hil_robot.procs.spawn``: each in its own process group, so the shutdown
signal reaches everything it spawned, with PR_SET_PDEATHSIG and a parent watch, so it ends even if
the supervisor is killed hard (see ``hil_robot/procs.py``).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Sequence, TextIO

from hil_robot import procs
from hil_robot.launch.plan import ProcessSpec

log = logging.getLogger("hil_robot.launch")
_TROUBLE = ("restarting", "gave_up")


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclasses.dataclass
class Event:
    """Something the supervisor did or saw; tests and the summary read these."""

    time_s: float
    node: str
    kind: str  # started | exited | restarting | gave_up | shutdown
    detail: str = ""
    returncode: int | None = None


class _Child:
    def __init__(self, spec: ProcessSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.restart_at: float | None = None
        self.finished = False  # exited for good
        self.reader: threading.Thread | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=20)  # last output lines


class Supervisor:
    """Start ``specs`` as processes and keep them running according to their restart policy.

    out: where the supervisor's event lines and prefixed node output go (default stdout).
    echo: which node output lines also go to ``out`` (default all; with ``log_dir`` every line is in
    ``log_dir/<node>.log`` anyway). warn: also log trouble (a node that failed, restarts, giving up)
    as warnings on the ``hil_robot.launch`` logger, for callers whose ``out`` is a file.
    Call ``run()`` (blocks until ``stop()``, SIGINT/SIGTERM, ``duration_s`` or a required node's
    death), or ``start()``/``poll()``/``shutdown()``.
    """

    def __init__(self, specs: Sequence[ProcessSpec], env: dict[str, str], *, restart_delay_s: float = 1.0,
                 shutdown_timeout_s: float = 5.0, out: TextIO | None = None, python: str = sys.executable,
                 log_dir: str | None = None, command_for: Callable[[ProcessSpec], list[str]] | None = None,
                 echo: Callable[[str], bool] | None = None, warn: bool = False) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must be unique, got {names}")
        self.children = [_Child(s) for s in specs]
        self.env = env
        self.restart_delay_s = restart_delay_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self.out = out or sys.stdout
        self.python = python
        self.log_dir = log_dir
        self.echo = echo
        self.warn = warn
        self.finish_grace_s = 3.0
        self.command_for = command_for or (lambda spec: spec.command(self.python))
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.failed_required: str | None = None
        self._width = max((len(n) for n in names), default=4)

    # ------------------------------------------------------------------ output

    def _emit(self, name: str, line: str) -> None:
        with self._lock:
            self.out.write(f"[{name:<{self._width}}] {line}\n")
            self.out.flush()

    def _event(self, node: str, kind: str, detail: str = "", returncode: int | None = None, note: str = "") -> None:
        self.events.append(Event(time.monotonic(), node, kind, detail, returncode))
        text = f"{node}: {kind}{' (' + detail + ')' if detail else ''}{note}"
        self._emit("launch", text)
        if self.warn and (kind in _TROUBLE or (kind == "exited" and returncode not in (0, None))):
            log.warning("%s", text)

    def log_path(self, name: str) -> str | None:
        return os.path.join(self.log_dir, f"{name}.log") if self.log_dir else None

    def _crash_note(self, child: _Child) -> str:
        """'; last output: ...; log: PATH' for a node that failed (what it said before dying, when
        its output is not on ``out`` already)."""
        last = next((line for line in reversed(child.tail) if line.strip()), "") if self.echo is not None else ""
        path = self.log_path(child.spec.name)
        return (f"; last output: {last.strip()[:300]}" if last else "") + (f"; log: {path}" if path else "")

    def _pump(self, child: _Child, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        logfile = open(os.path.join(self.log_dir, f"{child.spec.name}.log"), "ab") if self.log_dir else None
        try:
            for raw in iter(proc.stdout.readline, b""):
                if logfile:
                    logfile.write(raw)
                    logfile.flush()
                line = raw.decode("utf-8", "replace").rstrip("\n")
                child.tail.append(line)
                if self.echo is None or self.echo(line):
                    self._emit(child.spec.name, line)
        finally:
            if logfile:
                logfile.close()

    # ------------------------------------------------------------------ lifecycle

    def _spawn(self, child: _Child) -> None:
        cmd = self.command_for(child.spec)
        child.tail.clear()
        child.proc = procs.spawn(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        child.reader = threading.Thread(target=self._pump, args=(child, child.proc), daemon=True)
        child.reader.start()
        self._event(child.spec.name, "started", f"pid {child.proc.pid}")

    def start(self) -> None:
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
        for child in self.children:
            self._spawn(child)

    def pid(self, name: str) -> int | None:
        for child in self.children:
            if child.spec.name == name and child.proc is not None and child.proc.poll() is None:
                return child.proc.pid
        return None

    def poll(self) -> None:
        """Notice exits, schedule and perform restarts; set ``failed_required`` when the graph must stop."""
        now = time.monotonic()
        for child in self.children:
            if child.finished or child.proc is None:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at and not self._stop.is_set():
                    child.restart_at = None
                    child.restarts += 1
                    self._spawn(child)
                continue
            rc = child.proc.poll()
            if rc is None:
                continue
            if child.reader is not None:
                child.reader.join(timeout=1.0)
            spec = child.spec
            self._event(spec.name, "exited", describe_exit(rc), rc, self._crash_note(child) if rc != 0 else "")
            wants = spec.restart == "always" or (spec.restart == "on-failure" and rc != 0)
            if wants and child.restarts < spec.max_restarts and not self._stop.is_set():
                child.restart_at = now + self.restart_delay_s
                self._event(spec.name, "restarting", f"{child.restarts + 1}/{spec.max_restarts} in {self.restart_delay_s:g} s")
                continue
            child.finished = True
            if wants:
                self._event(spec.name, "gave_up", f"after {child.restarts} restarts")
            if spec.required and not self._stop.is_set():
                if rc == 0:  # it finished its job (e.g. the controller ran its episodes): a clean end
                    self._event(spec.name, "required node finished: shutting the graph down")
                    # let the others take its last messages — when there are others: a graph of one
                    # (a run's controller phase) has nobody to wait for (the grace was 3 s of every phase)
                    if any(c is not child and not c.finished and c.proc is not None and c.proc.poll() is None
                           for c in self.children):
                        self._stop.wait(self.finish_grace_s)
                    self._stop.set()
                else:
                    self.failed_required = spec.name
                    self._event(spec.name, "required node is gone: shutting the graph down")

    def stop(self) -> None:
        self._stop.set()

    def run(self, duration_s: float = 0.0, poll_s: float = 0.1) -> int:
        """Block until stopped; returns 0 on a requested stop, 1 if a required node died."""
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, lambda *_: self._stop.set())
        try:
            self.start()
            deadline = time.monotonic() + duration_s if duration_s > 0 else None
            while not self._stop.is_set() and self.failed_required is None:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if all(c.finished for c in self.children):
                    break
                self.poll()
                self._stop.wait(poll_s)
        finally:
            self.shutdown()
            for sig, old in handlers.items():
                signal.signal(sig, old)
        return 1 if self.failed_required else 0

    def shutdown(self) -> None:
        """SIGINT every running node's process group, then SIGTERM, then SIGKILL; reap them all."""
        self._stop.set()
        live = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            for child in live:
                _signal_group(child.proc, sig)  # type: ignore[arg-type]
            deadline = time.monotonic() + self.shutdown_timeout_s
            for child in live:
                assert child.proc is not None
                try:
                    child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
            live = [c for c in live if c.proc is not None and c.proc.poll() is None]
            if not live:
                break
            self._emit("launch", f"still running after {sig.name}: {', '.join(c.spec.name for c in live)}")
        for child in self.children:
            if child.proc is not None:
                _signal_group(child.proc, signal.SIGKILL)  # grandchildren that outlived their parent
                if child.reader is not None:
                    child.reader.join(timeout=1.0)
                if not child.finished and child.proc.returncode is not None:
                    child.finished = True
                    self.events.append(Event(time.monotonic(), child.spec.name, "shutdown",
                                             describe_exit(child.proc.returncode), child.proc.returncode))
        self._emit("launch", "all nodes stopped")


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


