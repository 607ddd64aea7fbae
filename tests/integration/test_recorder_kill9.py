"""The networked recorder (``hil-robot receive-transitions``: a ``TransitionReceiver`` persisting into
a ``Recorder`` over an ``EpisodeStore``) SIGKILLed at random moments while a real ``TransitionSender``
streams episodes into it, over many trials on one store.

After every kill: the store opens (recovering what the dead recorder left in ``incoming/``), every
episode the sender saw acknowledged as finished is there intact (all steps, CRC-checked read, same
content), the episode that was open is recovered up to at least its last acknowledged step or
quarantined with a reason when none of it was flushed, and the next recorder appends to the same
store. Acknowledged means durable: the receiver flushes before it acknowledges.

``tests/integration/test_data_crash.py`` kills an in-process writer; this kills the recorder behind
the transition stream, where what must survive is decided by the acknowledgements. To fit many
trials into seconds, recorders are forked from one process that has already imported everything (a
"zygote"); each forked child runs the real ``receive-transitions`` command function and is the
process that gets SIGKILLed.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hil_robot.data import EpisodeStore
from hil_robot.data.synthetic import observation, step_record
from hil_robot.transport.transitions import TransitionSender

ROOT = Path(__file__).resolve().parents[2]
HW = (16, 16)
RECORDER_OVERRIDES = ("transport.heartbeat_s=0.1",)  # the Hydra overrides every recorder gets

ZYGOTE = r"""
import os, sys
import hil_robot.cli
from hil_robot.config import load_config
from hil_robot.transport.cli import receive_transitions
# compose the config once, before any fork: the children run the real command function, but
# composing the same Hydra config in each would dominate a trial's time
_composed = {}
def _load_config(overrides):
    key = tuple(overrides)
    if key not in _composed:
        _composed[key] = load_config(list(overrides))
    return _composed[key]
hil_robot.cli.load_config = _load_config
_load_config(sys.argv[1:])
print("ready", flush=True)
for line in sys.stdin:
    args = line.split()
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    if not args:
        continue
    pid = os.fork()
    if pid == 0:  # the recorder process of one trial
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the zygote's stdout carries only its own replies
        try:
            code = receive_transitions(args)
        except BaseException as e:
            print(f"recorder failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            code = 1
        os._exit(code)
    print(f"pid {pid}", flush=True)
"""


class Zygote:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE, *RECORDER_OVERRIDES], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        self.stderr: list[str] = []
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            self.close()
            pytest.fail(f"recorder zygote did not start: {''.join(self.stderr)}")

    def spawn(self, *args: str) -> int:
        self.proc.stdin.write(" ".join(args) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line.startswith("pid "), (line, "".join(self.stderr))
        return int(line.split()[1])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.005)
    raise AssertionError(f"no recorder listening on port {port} after {timeout_s:.0f} s")


def _gone(pid: int, timeout_s: float = 10.0) -> None:
    """Wait until the killed child is no longer running (the zygote reaps it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] in ("Z", "X"):
                    return
        except FileNotFoundError:
            return
        time.sleep(0.005)
    raise AssertionError(f"recorder {pid} still running after SIGKILL")


def _check_steps(ep, eid: str, k: int, n: int) -> None:
    """The stored episode holds steps 0..n-1 exactly as the sender's records had them."""
    np.testing.assert_array_equal(ep.columns["step"], np.arange(n), err_msg=eid)
    for t in {0, n // 2, n - 1}:
        want = step_record(eid, t, episode=k, hw=HW)
        np.testing.assert_array_equal(ep.columns["action_executed"][t], want.action_executed, err_msg=eid)
        np.testing.assert_array_equal(ep.columns["obs/state"][t], want.observation["state"], err_msg=eid)
    np.testing.assert_array_equal(ep.frames("front")[n - 1], step_record(eid, n - 1, episode=k, hw=HW).observation["images/front"])


def run_trials(tmp_path: Path, trials: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    path = tmp_path / "store"
    zygote = Zygote()
    expected: dict[str, int] = {}  # every acknowledged finished episode so far -> its steps
    stats = {"acked_finished": 0, "finished_unacked": 0, "recovered": 0, "quarantined": 0, "lost_unacked": 0}
    try:
        for trial in range(trials):
            port = _free_port()
            pid = zygote.spawn(f"store={path}", f"port={port}", "image_codec=lz4", "pre_intervention_k=0",
                               "status_every_s=0", *RECORDER_OVERRIDES)
            if rng.random() >= 0.1:
                _listening(port)  # else the sender's reconnect back-off, not the recorder, sets the pace
            tx = TransitionSender(f"tcp://127.0.0.1:{port}", heartbeat_s=0.1, ack_timeout_s=5.0, queue_size=8192)
            plan: list[tuple[str, int, int]] = []  # (episode id, steps, seq of its end_episode)
            stop = threading.Event()
            lengths = [rng.randint(3, 40) for _ in range(40)]

            def robot(trial: int = trial, lengths: list[int] = lengths) -> None:
                # streams like a controller: a step every ~1-2 ms, episodes back to back, until the kill
                seq = 0
                for j, n in enumerate(lengths):
                    eid, k = f"t{trial:03d}e{j:02d}", trial * 100 + j
                    for t in range(n):
                        if stop.is_set():
                            return
                        assert tx.add(step_record(eid, t, episode=k, last=t == n - 1, hw=HW))
                        time.sleep(0.001)
                    tx.end_episode(True, final_observation=observation(n, k, hw=HW))
                    seq += n + 1
                    plan.append((eid, n, seq - 1))

            feeder = threading.Thread(target=robot, daemon=True)
            feeder.start()
            if rng.random() < 0.1:  # during start-up
                time.sleep(rng.uniform(0.0, 0.1))
            else:  # once it records: mid-episode, mid-flush, mid-finalise, between episodes
                deadline = time.monotonic() + 30
                while tx.acked_upto < 0 and time.monotonic() < deadline:
                    time.sleep(0.002)
                assert tx.acked_upto >= 0, f"trial {trial}: the recorder never acknowledged anything"
                time.sleep(rng.uniform(0.0, 0.25))
            os.kill(pid, signal.SIGKILL)
            _gone(pid)
            stop.set()
            feeder.join(10)
            time.sleep(0.05)  # an acknowledgement sent just before the kill may still be on the wire
            acked = tx.acked_upto
            if len(plan) < len(lengths):  # the episode the robot was in when it stopped
                j = len(plan)
                plan.append((f"t{trial:03d}e{j:02d}", lengths[j], (plan[-1][2] if plan else -1) + lengths[j] + 1))
            assert tx.status()["counters"]["rejected_by_receiver"] == 0, tx.status()
            tx.close(0.0)

            store = EpisodeStore(path)  # must open, recovering or quarantining the dead recorder's file
            assert not store.errors, store.errors
            assert not store.in_progress(), "a dead recorder's file must be recovered or quarantined"
            by_id = {m.episode_id: m for m in store.episodes()}
            first_seq = 0
            for eid, n, end_seq in plan:
                k = int(eid[1:4]) * 100 + int(eid[-2:])
                if end_seq <= acked:  # the sender saw it finished: intact
                    expected[eid] = n
                    stats["acked_finished"] += 1
                    ep = store.read_episode(eid)
                    assert ep.meta.success and not ep.recovered and len(ep) == n and ep.final_obs is not None, eid
                    _check_steps(ep, eid, k, n)
                elif first_seq <= acked or eid in by_id:  # the open episode: acknowledged steps survive
                    acked_steps = min(acked - first_seq + 1, n)
                    ep = store.read_episode(eid) if eid in by_id else None
                    if ep is not None and not ep.recovered:  # finalised, killed before its ack went out
                        assert ep.meta.success and len(ep) == n and ep.final_obs is not None, eid
                        _check_steps(ep, eid, k, n)
                        expected[eid] = n
                        stats["finished_unacked"] += 1
                    elif ep is not None:
                        assert not ep.meta.success, eid
                        assert acked_steps <= len(ep) <= n, (eid, acked_steps, len(ep))
                        _check_steps(ep, eid, k, len(ep))
                        expected[eid] = len(ep)
                        stats["recovered"] += 1
                    else:
                        assert acked_steps <= 0, f"{eid}: {acked_steps} acknowledged steps lost"
                        quarantined = [p.name for p in store.quarantine_dir.glob(f"*{eid}.hep")]
                        if quarantined:
                            assert (store.quarantine_dir / (quarantined[0] + ".reason.txt")).is_file()
                            stats["quarantined"] += 1
                else:
                    assert eid not in by_id, f"{eid} was never sent, yet it is in the store"
                    stats["lost_unacked"] += 1
                first_seq = end_seq + 1
            # earlier trials' episodes are all still there, and nothing else is
            assert {m.episode_id: m.num_steps for m in store.episodes()} == expected
            store.close()
    finally:
        zygote.close()
    # the next recorder appends to the store the kills left behind
    stats["episodes"] = len(expected)
    return stats


def test_recorder_sigkilled_at_random_moments_keeps_every_acknowledged_episode(tmp_path):
    stats = run_trials(tmp_path, 50, seed=9)
    assert stats["acked_finished"] > 0 and stats["recovered"] + stats["quarantined"] > 0, (
        f"kills should land both between and inside episodes: {stats}")


@pytest.mark.soak
def test_recorder_sigkilled_over_120_more_trials(tmp_path):
    stats = run_trials(tmp_path, 120, seed=10)
    assert stats["acked_finished"] > 30 and stats["recovered"] > 5, stats
