"""Chunk executor: time alignment, early asynchronous requests, boundaries, ensembling."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from hil_robot.control.chunking import ChunkExecutor
from hil_robot.control.fakes import ChunkPolicy


def tick_coded(h: int):
    """Row i of a chunk planned at tick r has value (r + i): the action says which tick it is for."""

    def fn(call: int, obs: dict) -> np.ndarray:
        r = obs["tick"]
        return np.repeat((r + np.arange(h, dtype=np.float32))[:, None] / 1000.0, 7, axis=1)

    return fn


def run(ex: ChunkExecutor, ticks: int, period_s: float = 0.0) -> list:
    out = []
    for k in range(ticks):
        out.append(ex.action_for_tick(k, {"tick": k}))
        if period_s:
            time.sleep(period_s)
    return out


def test_actions_are_aligned_to_their_tick_and_requested_early_off_thread() -> None:
    pol = ChunkPolicy(tick_coded(10), latency_s=0.005)
    ex = ChunkExecutor(pol, n_action_steps=5, request_lead_steps=2, max_wait_s=0.5)
    got = run(ex, 40, period_s=0.01)
    for k, pa in enumerate(got):
        assert pa is not None, f"tick {k} had no action"
        assert pa.action[0] == pytest.approx(k / 1000.0), f"tick {k} executed the row planned for another tick"
    assert threading.current_thread().name not in pol.threads and all(t.startswith("policy-infer") for t in pol.threads)
    # one request per ~n_action_steps ticks, and only the first tick waited
    assert 4 <= ex.counters["requests"] <= 10  # one per 5..10 ticks (a late chunk stretches the current one)
    assert ex.counters["waits"] <= 3  # the first tick, plus slack for a loaded machine
    ex.close()


def test_slow_policy_never_blocks_the_tick_and_follows_the_plan_beyond_n_steps() -> None:
    pol = ChunkPolicy(tick_coded(10), latency_s=0.3)
    ex = ChunkExecutor(pol, n_action_steps=3, request_lead_steps=1, max_wait_s=0.0)
    ex.action_for_tick(0, {"tick": 0})
    time.sleep(0.45)  # first chunk in
    t0 = time.perf_counter()
    acts = [ex.action_for_tick(k, {"tick": k}) for k in range(1, 8)]  # faster than the policy can answer
    assert time.perf_counter() - t0 < 0.2, "a tick blocked on inference"
    # rows 1..7 of the first chunk keep the robot going past n_action_steps
    assert [round(float(a.action[0]) * 1000) for a in acts if a is not None] == list(range(1, 8))
    ex.close()


def test_single_step_policy_runs_synchronously_each_tick() -> None:
    pol = ChunkPolicy(tick_coded(1), latency_s=0.001)
    ex = ChunkExecutor(pol, n_action_steps=1, request_lead_steps=2, max_wait_s=0.5)
    got = run(ex, 10)
    assert [round(float(p.action[0]) * 1000) for p in got] == list(range(10))
    assert pol.calls == 10
    ex.close()


def test_weight_hook_runs_before_each_infer_so_versions_change_only_at_chunk_boundaries() -> None:
    pol = ChunkPolicy(tick_coded(8), latency_s=0.002)
    staged = {"version": None}

    def install() -> None:  # what a weight subscriber's staged update would do
        if staged["version"] is not None:
            pol.version, staged["version"] = staged["version"], None

    ex = ChunkExecutor(pol, n_action_steps=4, request_lead_steps=1, max_wait_s=0.5, on_boundary=install)
    versions, news = [], []
    for k in range(45):
        if k in (5, 13, 22):
            staged["version"] = pol.version + 1
        pa = ex.action_for_tick(k, {"tick": k})
        versions.append(pa.policy_version)
        news.append(pa.new_chunk)
        time.sleep(0.005)
    changes = [k for k in range(1, 45) if versions[k] != versions[k - 1]]
    assert len(changes) == 3 and versions[-1] == 4
    assert all(news[k] for k in changes), "the policy version changed in the middle of a chunk"
    ex.close()


def test_temporal_ensembling_averages_overlapping_chunks() -> None:
    pol = ChunkPolicy(lambda call, obs: np.full((4, 7), float(call), np.float32))
    ex = ChunkExecutor(pol, n_action_steps=1, max_wait_s=0.5, temporal_ensembling=True, ensemble_decay=0.0)
    got = run(ex, 6, period_s=0.01)
    # the chunk asked for at tick k is collected from tick k+1 on (asynchronous), so tick 3 is
    # covered by the chunks of ticks 0..2 (values 0, 1, 2) -> mean 1.0 with equal weights
    assert got[3].action[0] == pytest.approx(1.0)
    assert got[0].action[0] == pytest.approx(0.0)  # first tick waits for its own chunk
    ex.close()
    pol = ChunkPolicy(lambda call, obs: np.full((4, 7), float(call), np.float32))
    ex = ChunkExecutor(pol, n_action_steps=1, max_wait_s=0.5, temporal_ensembling=True, ensemble_decay=1.0)
    got = run(ex, 6, period_s=0.01)
    w = np.exp(-np.arange(3.0))
    assert got[3].action[0] == pytest.approx(float((w * [0, 1, 2]).sum() / w.sum()), rel=1e-5)  # oldest weighs most
    ex.close()


def test_errors_are_counted_and_the_executor_recovers() -> None:
    calls = {"n": 0}

    def flaky(call: int, obs: dict) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] in (2, 3):
            raise TimeoutError("policy server did not answer")
        return np.zeros((1, 7), np.float32)

    ex = ChunkExecutor(ChunkPolicy(flaky), n_action_steps=1, max_wait_s=0.5)
    got = run(ex, 6)
    assert ex.counters["errors"] == 2 and "TimeoutError" in ex.last_error
    assert got[0] is not None and got[-1] is not None and sum(g is None for g in got) == 2


def test_reset_resets_policy_in_worker_and_drops_chunks() -> None:
    pol = ChunkPolicy(tick_coded(10))
    ex = ChunkExecutor(pol, n_action_steps=5, max_wait_s=0.5)
    run(ex, 3)
    ex.reset()
    assert pol.resets == 1
    assert ex.action_for_tick(0, {"tick": 0}).action[0] == pytest.approx(0.0)
    ex.close()


def test_bad_chunk_shape_is_an_error_not_an_action() -> None:
    ex = ChunkExecutor(ChunkPolicy(lambda c, o: np.zeros((3, 6))), n_action_steps=1, max_wait_s=0.5)
    assert ex.action_for_tick(0, {}) is None
    assert ex.counters["errors"] == 1 and "shape" in ex.last_error


def test_lockstep_waits_for_every_chunk_on_a_simulated_clock():
    """Ticks come back to back (simulated time) while inference takes real time: lock-step mode
    waits at each boundary, so every tick gets the row planned for it and nothing is skipped."""
    slow = ChunkPolicy(tick_coded(10), latency_s=0.02)
    ex = ChunkExecutor(slow, n_action_steps=5, request_lead_steps=0, max_wait_s=2.0, lockstep=True)
    out = run(ex, 30)
    assert all(p is not None for p in out)
    assert [round(float(p.action[0]) * 1000) for p in out] == list(range(30))
    assert ex.counters["skipped_rows"] == 0 and ex.counters["stale_chunks"] == 0

    free = ChunkExecutor(ChunkPolicy(tick_coded(10), latency_s=0.02), n_action_steps=5, request_lead_steps=0, max_wait_s=0.0)
    assert any(p is None for p in run(free, 30)), "without lock-step the back-to-back ticks outrun inference"


def test_prime_resends_timed_out_first_requests_and_leaves_tick_zero_planned() -> None:
    tries = {"n": 0}

    def cold(call: int, obs: dict) -> np.ndarray:
        tries["n"] += 1
        if tries["n"] <= 2:  # a cold server: the first requests time out
            raise TimeoutError("no reply within the request timeout")
        return tick_coded(10)(call, obs)

    ex = ChunkExecutor(ChunkPolicy(cold), n_action_steps=5, request_lead_steps=2, max_wait_s=0.0)
    assert ex.prime({"tick": 0}, timeout_s=5.0)
    assert ex.counters["prime_errors"] == 2 and ex.counters["errors"] == 0
    got = [ex.action_for_tick(k, {"tick": k}) for k in range(3)]
    assert [round(float(p.action[0]) * 1000) for p in got] == [0, 1, 2] and ex.counters["waits"] == 0
    ex.close()


def test_prime_gives_up_at_once_on_a_non_timeout_error() -> None:
    def broken(call: int, obs: dict) -> np.ndarray:
        raise ValueError("bad checkpoint")

    pol = ChunkPolicy(broken)
    ex = ChunkExecutor(pol, n_action_steps=1, max_wait_s=0.0)
    t0 = time.perf_counter()
    assert not ex.prime({"tick": 0}, timeout_s=5.0)
    assert time.perf_counter() - t0 < 1.0 and len(pol.seen) == 1 and ex.counters["prime_errors"] == 1
    ex.close()
