"""Shared test fixtures. Tiers are chosen with strict markers (see pyproject.toml).

Process hygiene: no test may leave a process behind, even when the runner itself is stopped.

* Every ``hil-robot`` process a test starts (directly or through a supervisor) watches this pytest
  process (``HIL_ROBOT_PARENT``, see ``hil_robot/procs.py``) and stops when it dies, SIGKILL included.
* ``spawn_process`` starts a child with PR_SET_PDEATHSIG in its own process group, registers it, and
  reaps the group at the end of the test.
* At the end of the session, and when pytest gets SIGTERM/SIGHUP (``timeout``, a CI cancel), every
  registered group and every remaining descendant of this process is reaped (SIGTERM, then SIGKILL)
  before pytest exits.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import threading

import pytest

from hil_robot import procs

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ[procs.PARENT_ENV] = procs.parent_token()  # children of this session end with it

_REGISTERED: set[int] = set()  # process-group leaders started through spawn_process
_SESSION_PID = os.getpid()


def reap_all(grace_s: float = 3.0) -> list[int]:
    """Stop every registered process group and every live descendant of this process."""
    if os.getpid() != _SESSION_PID:  # a forked child of the session is not its owner
        return []
    pids = set(_REGISTERED) | set(procs.descendants())
    _REGISTERED.clear()
    return procs.reap(sorted(pids), grace_s=grace_s) if pids else []


def _on_terminate(signum: int, frame) -> None:
    reap_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)  # die of the same signal, as without this handler


def pytest_configure(config) -> None:
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_terminate)
    atexit.register(reap_all)


def pytest_unconfigure(config) -> None:
    reap_all()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port():
    """A function returning a currently free TCP port on 127.0.0.1."""
    return _free_port


@pytest.fixture
def spawn_process():
    """``spawn_process(cmd, **popen_kwargs) -> Popen``: a long-lived child for this test, in its own
    process group with a parent-death signal; the group is reaped when the test ends."""
    mine: list[subprocess.Popen] = []

    def start(cmd, **kwargs) -> subprocess.Popen:
        proc = procs.spawn(cmd, **kwargs)
        mine.append(proc)
        _REGISTERED.add(proc.pid)
        return proc

    yield start
    live = [p.pid for p in mine if p.poll() is None]
    procs.reap([p.pid for p in mine], grace_s=5.0 if live else 0.0)
    for p in mine:
        _REGISTERED.discard(p.pid)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
