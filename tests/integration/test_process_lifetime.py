"""No process outlives the one that started it: ``hil-robot run`` and ``hil-robot launch`` killed
with SIGTERM (clean stop: children stopped, data flushed) or SIGKILL (children stop on their own:
PR_SET_PDEATHSIG + parent watch), and a pytest runner stopped while its fixtures' children run.
Descendant pids are collected before the kill; none may be alive 5 s after the parent is gone."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from hil_robot import procs
from hil_robot.data import EpisodeStore

ROOT = Path(__file__).resolve().parents[2]
GONE_WITHIN_S = 5.0

TINY_RUN = ["experiment=sim_pick_cube", "experiment.demo_episodes=0", "experiment.rounds=1",
            "experiment.episodes_per_round=50", "experiment.eval_episodes=0", "experiment.wandb_mode=disabled",
            "sim.image_height=32", "sim.image_width=32", "sim.max_episode_steps=30", "learner.batch_size=8",
            "learner.min_replay_steps=16", "experiment.realtime=false"]


def tree(pid: int) -> dict[int, str]:
    """pid -> command line of every live descendant of ``pid``."""
    out = {}
    try:
        for p in psutil.Process(pid).children(recursive=True):
            try:
                out[p.pid] = " ".join(p.cmdline())
            except psutil.Error:
                pass
    except psutil.NoSuchProcess:
        pass
    return out


def wait_for_children(proc: subprocess.Popen, needles: list[str], timeout_s: float, log: Path) -> dict[int, str]:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        kids = tree(proc.pid)
        if all(any(n in cmd for cmd in kids.values()) for n in needles):
            return kids
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    raise AssertionError(f"children {needles} never all ran (rc {proc.poll()}); have {sorted(tree(proc.pid).values())}\n"
                         + log.read_text()[-3000:])


def survivors(pids: dict[int, str], started: dict[int, str], within_s: float) -> list[str]:
    end = time.monotonic() + within_s
    while True:
        alive = [f"{p} {cmd[:120]}" for p, cmd in pids.items() if procs.alive(p, started[p])]
        if not alive or time.monotonic() >= end:
            return alive
        time.sleep(0.1)


def kill_and_check(proc: subprocess.Popen, kids: dict[int, str], sig: int, parent_exit_s: float) -> None:
    started = {p: procs.start_time(p) for p in kids}
    os.kill(proc.pid, sig)  # the parent alone, as `timeout` or the OOM killer would
    proc.wait(timeout=parent_exit_s)
    left = survivors(kids, started, GONE_WITHIN_S)
    assert not left, f"still running {GONE_WITHIN_S:g} s after the parent ({signal.Signals(sig).name}) ended: {left}"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killing_hil_robot_run_leaves_no_process(tmp_path, spawn_process, sig):
    run_dir, log = tmp_path / "run", tmp_path / "run.out"
    with open(log, "wb") as out:
        proc = spawn_process([sys.executable, "-m", "hil_robot", "run", *TINY_RUN, f"run_dir={run_dir}"],
                             cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    kids = wait_for_children(proc, ["receive-transitions", " learner ", "serve-policy", " operator ", " controller "],
                             180, log)
    # the controller's first episodes are in the recorder's store before the kill
    end = time.monotonic() + 120
    while not list((run_dir / "store" / "episodes").glob("*.hep")) and time.monotonic() < end:
        time.sleep(0.3)
    # SIGTERM: the run stops its children and writes its summary; SIGKILL: no say in it
    kill_and_check(proc, kids, sig, parent_exit_s=90 if sig == signal.SIGTERM else 10)
    store = EpisodeStore(run_dir / "store", read_only=True)
    assert store.episodes() and not store.errors, store.errors
    if sig == signal.SIGTERM:
        assert (run_dir / "summary.json").is_file(), log.read_text()[-2000:]


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killing_hil_robot_launch_leaves_no_process(tmp_path, spawn_process, free_port, sig):
    pytest.importorskip("rclpy")
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.Random(os.getpid() + sig).randint(110, 160)),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", RMW_IMPLEMENTATION="rmw_fastrtps_cpp")
    log = tmp_path / "launch.out"
    with open(log, "wb") as out:
        proc = spawn_process([sys.executable, "-m", "hil_robot", "launch", "sim_pick_cube", "policy=expert",
                              f"transport.policy_port={free_port()}", f"experiment.run_dir={tmp_path / 'run'}",
                              f"log_dir={tmp_path / 'logs'}", "sim.image_height=32", "sim.image_width=32"],
                             cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    wait_for_children(proc, ["sim_driver", "serve-policy", "policy_bridge", "teleop", "controller", "recorder"], 180, log)
    ready = tmp_path / "logs" / "sim_driver.log"  # the nodes are up, not merely started
    end = time.monotonic() + 120
    while time.monotonic() < end and "sim robot ready" not in (ready.read_text() if ready.exists() else ""):
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.3)
    assert "sim robot ready" in ready.read_text(), log.read_text()[-3000:]
    kids = tree(proc.pid)
    kill_and_check(proc, kids, sig, parent_exit_s=60 if sig == signal.SIGTERM else 10)


RUNNER_TEST = '''
import os, subprocess, sys, time

def test_holds_children(spawn_process):
    # a fixture child that starts a grandchild in a session of its own
    parent = spawn_process([sys.executable, "-c",
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], "
        "start_new_session=True); time.sleep(300)"])
    # a hil-robot process started with plain Popen: it watches this runner (HIL_ROBOT_PARENT)
    hil = subprocess.Popen([sys.executable, "-m", "hil_robot", "operator", "port=%(port)d", "max_seconds=300"])
    with open(%(pids)r + ".tmp", "w") as f:
        f.write(f"{parent.pid} {hil.pid}")
    os.replace(%(pids)r + ".tmp", %(pids)r)
    time.sleep(300)
'''


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stopped_test_runner_reaps_its_fixtures_children(tmp_path, free_port, sig):
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    pids_file = tmp_path / "pids"
    (tmp_path / "test_child.py").write_text(RUNNER_TEST % {"port": free_port(), "pids": str(pids_file)})
    env = {k: v for k, v in os.environ.items() if k != procs.PARENT_ENV}
    runner = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-s",
                               str(tmp_path / "test_child.py")], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    kids: dict[int, str] = {}
    try:
        end = time.monotonic() + 90
        while not pids_file.exists() and time.monotonic() < end and runner.poll() is None:
            time.sleep(0.2)
        assert pids_file.exists(), runner.communicate(timeout=30)[0].decode()[-3000:]
        time.sleep(1.0)  # the grandchild is started
        kids = tree(runner.pid)
        fixture_child, hil_child = map(int, pids_file.read_text().split())
        assert fixture_child in kids and hil_child in kids, kids
        if sig == signal.SIGKILL:  # the runner has no say: death signal and parent watch only
            kids = {p: c for p, c in kids.items() if p in (fixture_child, hil_child)}
        kill_and_check(runner, kids, sig, parent_exit_s=30)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
        procs.reap([p for p in kids if procs.alive(p)])  # (a failed test leaves nothing either)


# ---------------------------------------------------------------------------- the mechanisms alone

SLEEPER = "import time; time.sleep(120)"


def _wait_gone(pid: int, started: str, within_s: float = GONE_WITHIN_S) -> bool:
    end = time.monotonic() + within_s
    while procs.alive(pid, started) and time.monotonic() < end:
        time.sleep(0.05)
    return not procs.alive(pid, started)


def test_a_spawned_child_gets_the_death_signal_when_its_parent_is_killed(tmp_path):
    middle = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from hil_robot.procs import spawn
        child = spawn([sys.executable, "-c", {SLEEPER!r}])
        print(child.pid, flush=True)
        time.sleep(120)""")], stdout=subprocess.PIPE, text=True, env={k: v for k, v in os.environ.items()
                                                                     if k != procs.PARENT_ENV})
    child = int(middle.stdout.readline())
    started = procs.start_time(child)
    assert os.getpgid(child) == child  # its own process group
    middle.kill()
    middle.wait(timeout=10)
    assert _wait_gone(child, started), "a spawned child outlived its SIGKILLed parent"


@pytest.mark.parametrize("ignores_sigterm", [False, True], ids=["stops", "ignores-SIGTERM"])
def test_the_parent_watch_stops_a_child_whose_parent_is_gone(ignores_sigterm):
    """No death signal here (as behind a shell or torchrun): the watch alone ends the child, with
    SIGKILL if it does not stop on SIGTERM."""
    parent = subprocess.Popen([sys.executable, "-c", SLEEPER])
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignores_sigterm else ""
    child = subprocess.Popen([sys.executable, "-c", f"import signal, time; from hil_robot.procs import watch_parent; "
                              f"{ignore}assert watch_parent(poll_s=0.1, grace_s=1.0); print('ok', flush=True); "
                              f"time.sleep(120)"], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, procs.PARENT_ENV: procs.parent_token(parent.pid)})
    try:
        assert child.stdout.readline().strip() == "ok"
        parent.kill()
        parent.wait(timeout=10)
        child.wait(timeout=GONE_WITHIN_S)
        assert child.returncode == (-signal.SIGKILL if ignores_sigterm else -signal.SIGTERM)
    finally:
        for p in (parent, child):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_reap_escalates_to_sigkill_and_reaches_the_whole_group():
    leader = procs.spawn([sys.executable, "-c", "import signal, subprocess, sys, time; "
                          "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                          f"g = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}]); print(g.pid, flush=True); "
                          "time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    member = int(leader.stdout.readline())
    started = procs.start_time(member)
    assert procs.reap([leader.pid], grace_s=0.5) == [leader.pid]  # it ignored SIGTERM
    assert leader.wait(timeout=5) == -signal.SIGKILL
    assert _wait_gone(member, started, 2.0), "a member of the reaped group survived"
