"""Process lifetime: every process hil_robot starts ends when the process that started it dies.

Two mechanisms, because each has a gap the other closes:

* ``spawn()`` starts a child in its own process group (so a supervisor can signal everything the
  child started) with ``PR_SET_PDEATHSIG(SIGTERM)``: the kernel sends SIGTERM the moment the
  parent dies, even by SIGKILL. The death signal fires when the *thread* that forked exits, so a
  child forked from a short-lived thread would be stopped too early; ``spawn()`` therefore sets it
  only when called from the main thread.
* ``spawn()`` also names the parent in the child's environment (``HIL_ROBOT_PARENT``: pid and
  start time). ``watch_parent()``, called by every ``hil-robot`` command at start, runs a daemon
  thread that notices when that process is gone — also when a shell, ``torchrun`` or a ROS
  wrapper sits in between and the death signal went to the intermediate — and then sends this
  process SIGTERM, so its own handlers flush and close (the episode store, checkpoints), and
  SIGKILL after a short grace period (3 s) if that does not end it: an orphan has nobody left to
  talk to, and waiting for dead peers (a recorder's acknowledgements, a policy reply) is what would
  keep it alive. Episodes are on disk as they are recorded and the learner checkpoints as it goes.

``reap()`` signals process groups and waits, escalating SIGTERM -> SIGKILL; ``descendants()``
lists a process tree (tests collect it before killing a parent).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from typing import Iterable, Sequence

log = logging.getLogger("hil_robot.procs")

PARENT_ENV = "HIL_ROBOT_PARENT"
ORPHAN_GRACE_ENV = "HIL_ROBOT_ORPHAN_GRACE_S"
_PR_SET_PDEATHSIG = 1
try:  # loaded once here: loading a library between fork and exec can deadlock
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
    _libc.prctl  # noqa: B018  (absent outside Linux)
except (OSError, AttributeError):
    _libc = None


def start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot; '' when unknown): with the pid
    it names one process, even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat.rpartition(")")[2].split()[19]  # field 22; the command name may hold spaces
    except (OSError, IndexError):
        return ""


def alive(pid: int, started: str = "") -> bool:
    """Whether process ``pid`` (started at ``started``, if given) still runs (zombies count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if started and start_time(pid) not in ("", started):
        return False  # the pid now belongs to another process
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def parent_token(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{start_time(pid)}"


def child_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) naming this process as the parent to watch."""
    out = dict(os.environ if env is None else env)
    out[PARENT_ENV] = parent_token()
    return out


def _preexec(parent: int, with_death_signal: bool) -> None:  # in the child, between fork and exec
    if with_death_signal and _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)


def spawn(cmd: Sequence[str], *, env: dict[str, str] | None = None, new_group: bool = True,
          **popen_kwargs) -> subprocess.Popen:
    """``subprocess.Popen(cmd)`` for a long-lived child that must not outlive this process.

    new_group: start the child in a new session (its own process group, id = its pid), so
    ``reap([proc.pid])`` reaches what it starts in turn.
    """
    parent = os.getpid()
    death_signal = threading.current_thread() is threading.main_thread()
    return subprocess.Popen(list(cmd), env=child_environment(env), start_new_session=new_group,
                            preexec_fn=lambda: _preexec(parent, death_signal), **popen_kwargs)


# ---------------------------------------------------------------------------- in the child

_watcher: threading.Thread | None = None


def watch_parent(token: str | None = None, *, poll_s: float = 0.5, grace_s: float | None = None) -> bool:
    """Stop this process when the parent named by ``token`` (default: ``$HIL_ROBOT_PARENT``) dies.

    Returns whether a watch runs. On the parent's death: SIGTERM to this process (its handlers
    flush and exit), then SIGKILL after ``grace_s`` (default ``$HIL_ROBOT_ORPHAN_GRACE_S`` or 3).
    """
    global _watcher
    token = os.environ.get(PARENT_ENV, "") if token is None else token
    pid_text, _, started = token.partition(":")
    if not pid_text.isdigit() or _watcher is not None:
        return _watcher is not None
    pid = int(pid_text)
    if grace_s is None:
        try:
            grace_s = float(os.environ.get(ORPHAN_GRACE_ENV, "3"))
        except ValueError:
            grace_s = 3.0

    def watch() -> None:
        while alive(pid, started):
            time.sleep(poll_s)
        log.warning("parent process %d is gone: stopping (SIGTERM, SIGKILL in %.0f s)", pid, grace_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        log.error("still running %.0f s after the parent's death: killing this process", grace_s)
        os.kill(os.getpid(), signal.SIGKILL)

    if not alive(pid, started):  # gone already (or never ours): the watch fires at once
        log.warning("parent process %d is not running", pid)
    _watcher = threading.Thread(target=watch, name="parent-watch", daemon=True)
    _watcher.start()
    return True


# ---------------------------------------------------------------------------- cleanup

def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def descendants(pid: int | None = None) -> list[int]:
    """Pids of every live descendant of ``pid`` (default: this process), found by parent links."""
    import psutil

    try:
        return [p.pid for p in psutil.Process(os.getpid() if pid is None else pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def reap(pids: Iterable[int], *, groups: bool = True, grace_s: float = 5.0) -> list[int]:
    """SIGTERM each of ``pids`` (and, with ``groups``, the process group it leads), wait up to
    ``grace_s`` for them to end, then SIGKILL what remains. Returns the pids that were still
    running when SIGKILL was sent. Does not wait()-collect exit statuses (a Popen still can)."""
    pids = [p for p in dict.fromkeys(pids) if p != os.getpid()]
    started = {p: start_time(p) for p in pids}
    leaders = {p for p in pids if groups and _is_group_leader(p)}

    def send(sig: int) -> None:
        for p in pids:
            if not alive(p, started[p]):
                continue
            if p in leaders:
                signal_group(p, sig)
            else:
                try:
                    os.kill(p, sig)
                except (ProcessLookupError, PermissionError):
                    pass

    send(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p, started[p]) for p in pids):
        time.sleep(0.05)
    stubborn = [p for p in pids if alive(p, started[p])]
    if stubborn:
        send(signal.SIGKILL)
    for p in leaders:  # members that outlived their leader
        signal_group(p, signal.SIGKILL)
    return stubborn


def _is_group_leader(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except (ProcessLookupError, PermissionError):
        return False
