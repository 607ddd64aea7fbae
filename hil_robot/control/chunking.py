"""Action-chunk execution at the control rate (DESIGN §2).

A policy returns a chunk ``actions[H, Dn]`` planned from the observation of tick ``r``: row ``i`` is
meant for tick ``r + i``. ``H`` is whatever the policy returns (it need not be
``policy.action_horizon``) and the rows are in the policy's native action space; the executor

* checks every reply with its ``ActionAdapter`` (``hil_robot.control.action_space``): a missing
  ``actions`` key, a non-numeric payload, a wrong shape or a non-finite value rejects the whole
  chunk (``BadChunkError``, counted as ``rejected_chunks`` and ``rejected_<kind>``, logged once per
  kind); nothing of it is ever executed or reported as the policy's action, and ``last_rejection``
  names the kind until a good chunk arrives;
* converts the row it executes at each tick into our normalised EE delta from that tick's robot
  state (``obs["state"]``), so absolute targets are measured against where the robot is now;

* runs ``n_action_steps`` of each chunk, then switches to the next one at the chunk boundary,
  skipping rows whose tick has already passed (latency compensation);
* requests the next chunk early, in a worker thread, when ``request_lead_steps`` planned steps are
  left, so the loop never blocks on inference; if the next chunk is late it keeps following the
  current chunk's remaining rows (up to ``H``), and only a tick with no planned row at all waits
  (at most ``max_wait_s``) for the reply in flight; in ``lockstep`` mode (a simulated clock, where
  time stands still while the policy thinks) every request is waited for at its boundary tick;
* optionally averages every chunk that covers the tick (ACT temporal ensembling, weights
  ``exp(-decay * i)``, ``i = 0`` for the oldest chunk);
* calls ``on_boundary()`` in the worker right before each ``infer``: that is where staged weight
  updates are installed, so weights change between chunks and never during one;
* ``prime(obs)`` fetches the first chunk of an episode before its first tick is scheduled (the
  robot stands still after a reset), re-asking after a timeout, so a policy that is slow to answer
  its first request (a cold server: seconds) does not leave the first ticks without a plan.

Only the worker thread calls ``policy.infer``/``reset`` (a zmq client socket stays in one thread).
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import logging
import time
from typing import Any, Callable

import numpy as np

from hil_robot.control.action_space import ActionAdapter, BadChunkError
from hil_robot.types import Policy

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Chunk:
    plan_tick: int  # tick whose observation produced it: row i is for tick plan_tick + i
    actions: np.ndarray  # float32[H, Dn] native rows
    version: int
    active_tick: int = -1  # tick it became the executing chunk
    reply_time_s: float = 0.0
    noise: np.ndarray | None = None  # DSRL: the initial noise the policy integrated it from (flattened)

    @property
    def end_tick(self) -> int:  # first tick it has no row for
        return self.plan_tick + self.actions.shape[0]


@dataclasses.dataclass(frozen=True)
class PlannedAction:
    action: np.ndarray  # float32[7] our normalised delta (converted from the native row, before safety)
    policy_version: int
    chunk_index: int  # row used (for ensembling: of the newest chunk)
    new_chunk: bool  # first row taken from a chunk (a chunk boundary happened this tick)
    native: np.ndarray | None = None  # the native row(s) it came from (float32[Dn]; ensembling: the newest chunk's)
    noise: np.ndarray | None = None  # the chunk's initial noise, on its first row only (the tick whose obs chose it)


class ChunkExecutor:
    def __init__(
        self,
        policy: Policy,
        n_action_steps: int,
        request_lead_steps: int = 2,
        max_wait_s: float = 0.04,
        temporal_ensembling: bool = False,
        ensemble_decay: float = 0.01,
        on_boundary: Callable[[], None] | None = None,
        lockstep: bool = False,
        adapter: ActionAdapter | None = None,
    ) -> None:
        if n_action_steps < 1:
            raise ValueError(f"n_action_steps must be >= 1, got {n_action_steps}")
        self.policy = policy
        self.n_action_steps = int(n_action_steps)
        self.request_lead_steps = int(request_lead_steps)
        self.max_wait_s = float(max_wait_s)
        self.temporal_ensembling = bool(temporal_ensembling)
        self.ensemble_decay = float(ensemble_decay)
        self.on_boundary = on_boundary
        self.lockstep = bool(lockstep)  # simulated clock: wait for every requested chunk (time stands still)
        self.adapter = adapter or ActionAdapter()  # default: ours (normalised ee_delta, D = 7)
        self.last_rejection = ""  # kind of the last rejected reply ("" once a good chunk arrived)
        self._rejections_logged: set[str] = set()
        self.counters: collections.Counter[str] = collections.Counter()
        self.last_error = ""
        self.last_latency_s = float("nan")
        self._pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-infer")
        # start the worker now, from the constructing thread, so it never inherits a real-time
        # scheduling class the loop thread may take later
        self._pool.submit(lambda: None).result()
        self._future: cf.Future | None = None
        self._future_tick = -1
        self._last_request_tick = -1
        self._current: _Chunk | None = None
        self._pending: _Chunk | None = None
        self._ensemble: list[_Chunk] = []

    # ------------------------------------------------------------------ lifecycle
    def reset(self, timeout_s: float = 5.0) -> None:
        """New episode: drop every chunk, let an in-flight request finish, reset the policy."""
        if self._future is not None:
            try:
                self._future.result(timeout=timeout_s)
            except Exception:  # the reply is discarded anyway; errors were counted when raised
                pass
            self._future = None
        self._current = self._pending = None
        self._ensemble = []
        self._last_request_tick = -1
        try:
            self._pool.submit(self.policy.reset).result(timeout=timeout_s)
        except Exception as e:  # a dead/slow remote policy must not stop the loop: ticks hold instead
            self.counters["reset_errors"] += 1
            self.last_error = f"reset: {type(e).__name__}: {e}"
            log.warning("policy reset failed (%s); continuing, ticks hold until the policy answers", self.last_error)

    def drop_chunks(self) -> None:
        """Forget the chunks received so far (a request in flight stays in flight)."""
        self._current = self._pending = None
        self._ensemble = []
        self._last_request_tick = -1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def prime(self, obs: dict[str, Any], timeout_s: float, tick: int = 0) -> bool:
        """Request the chunk for ``tick`` from ``obs`` and wait for it (before the episode's clock
        starts). A timed-out request is re-sent (a cold server may need several request timeouts
        for its first answer) until ``timeout_s`` has passed; other errors end the wait at once.
        Failures count as ``prime_errors``. True when a chunk covering ``tick`` is ready; False
        leaves any request in flight to the ticks, which hold until a chunk arrives."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        pause = 0.02
        while True:
            if self._future is None:
                self._submit(tick, obs)
            cf.wait([self._future], timeout=max(0.0, deadline - time.monotonic()))
            err = self._collect(tick, error_counter="prime_errors")
            if self._pending is not None or self._ensemble:
                return True
            if self._future is not None or not isinstance(err, TimeoutError) or time.monotonic() + pause >= deadline:
                return False
            time.sleep(pause)
            pause = min(2 * pause, 0.5)

    # ------------------------------------------------------------------ per tick
    def action_for_tick(self, tick: int, obs: dict[str, Any]) -> PlannedAction | None:
        """The planned action for ``tick`` (None if no chunk covers it), requesting early as needed.

        obs: this tick's observation (used only when a request is sent)."""
        self._collect(tick)
        if self.temporal_ensembling:
            return self._ensembled(tick, obs)
        new = self._maybe_switch(tick)
        self._maybe_request(tick, obs)
        if self._current is None or tick >= self._current.end_tick or (self.lockstep and self._future is not None):
            if self._wait_for_reply(tick):
                new = self._maybe_switch(tick) or new
        cur = self._current
        if cur is None or not (cur.plan_tick <= tick < cur.end_tick):
            self.counters["no_action"] += 1
            return None
        i = tick - cur.plan_tick
        row = cur.actions[i]
        action = row if self.adapter.identity else self.adapter.to_delta(row, obs["state"]).astype(np.float32)
        return PlannedAction(action, cur.version, i, new, row, cur.noise if i == 0 else None)

    # ------------------------------------------------------------------ internals
    def _boundary_tick(self) -> int:
        cur = self._current
        if cur is None:
            return -1
        return min(cur.active_tick + self.n_action_steps, cur.end_tick)

    def _maybe_switch(self, tick: int) -> bool:
        if self._pending is None:
            return False
        if self._current is not None and tick < self._boundary_tick():
            return False
        nxt, self._pending = self._pending, None
        if tick >= nxt.end_tick:
            self.counters["stale_chunks"] += 1  # arrived too late to have a row for this tick
            return False
        self.counters["skipped_rows"] += tick - nxt.plan_tick
        nxt.active_tick = tick
        self._current = nxt
        self.counters["chunks_used"] += 1
        return True

    def _maybe_request(self, tick: int, obs: dict[str, Any]) -> None:
        if self._future is not None or tick == self._last_request_tick:
            return
        if self.temporal_ensembling:
            self._submit(tick, obs)
            return
        if self._pending is not None:
            return
        cur = self._current
        if cur is None or tick >= cur.end_tick:
            self._submit(tick, obs)
            return
        boundary = self._boundary_tick()
        if boundary - tick <= self.request_lead_steps and tick + self._horizon_guess() - 1 >= boundary:
            self._submit(tick, obs)

    def _horizon_guess(self) -> int:
        return self._current.actions.shape[0] if self._current is not None else 1

    def _submit(self, tick: int, obs: dict[str, Any]) -> None:
        self._last_request_tick = tick
        self._future_tick = tick
        self.counters["requests"] += 1
        self._future = self._pool.submit(self._infer, dict(obs))

    def _infer(self, obs: dict[str, Any]) -> tuple[np.ndarray, int, float, np.ndarray | None]:
        if self.on_boundary is not None:
            self.on_boundary()
        t0 = time.perf_counter()
        out = self.policy.infer(obs)
        if not isinstance(out, dict):
            raise BadChunkError("non_numeric", f"policy.infer must return a dict with 'actions', got {type(out).__name__}")
        actions = self.adapter.check_chunk(out.get("actions"), "actions")
        try:
            version = int(out.get("policy_version", -1))
        except (TypeError, ValueError):
            raise BadChunkError("non_numeric", f"policy reply 'policy_version' must be an int, got {out.get('policy_version')!r}") from None
        noise = out.get("noise")
        if noise is not None:  # DSRL: recorded with the chunk's first step; a bad one rejects the chunk
            try:
                noise = np.asarray(noise, dtype=np.float32).reshape(-1)
            except (TypeError, ValueError):
                raise BadChunkError("non_numeric", "policy reply 'noise' must be a numeric array (the chunk's initial noise)") from None
            if noise.size == 0 or not np.isfinite(noise).all():
                raise BadChunkError("non_finite", "policy reply 'noise' is empty or has NaN/inf; the chunk it produced is not trusted")
        return np.array(actions, dtype=np.float32), version, time.perf_counter() - t0, noise

    def _collect(self, tick: int, error_counter: str = "errors") -> BaseException | None:
        """Take a finished reply (as the pending chunk); returns the request's error, if it failed."""
        fut = self._future
        if fut is None or not fut.done():
            return None
        self._future = None
        try:
            actions, version, latency, noise = fut.result()
        except BadChunkError as e:  # an unusable chunk: never executed, never recorded as the policy's action
            self.counters[error_counter] += 1
            self.counters["rejected_chunks"] += 1
            self.counters[f"rejected_{e.kind}"] += 1
            self.last_rejection = e.kind
            self.last_error = f"{type(e).__name__}: {e}"
            if e.kind not in self._rejections_logged:  # once per kind; the counters keep the rest
                self._rejections_logged.add(e.kind)
                log.error("policy chunk rejected (%s): %s", e.kind, e)
            return e
        except Exception as e:  # remote timeouts, contract errors: count, log, ask again next tick
            self.counters[error_counter] += 1
            msg = f"{type(e).__name__}: {e}"
            if msg != self.last_error or self.counters[error_counter] % 50 == 1:
                log.warning("policy request failed (%s: %d so far): %s", error_counter, self.counters[error_counter], msg)
            self.last_error = msg
            return e
        self.last_latency_s = latency
        self.counters["replies"] += 1
        self.last_rejection = ""
        chunk = _Chunk(self._future_tick, actions, version, reply_time_s=time.monotonic(), noise=noise)
        if self.temporal_ensembling:
            self._ensemble.append(chunk)
        else:
            self._pending = chunk
        return None

    def _wait_for_reply(self, tick: int) -> bool:
        if self._future is None or self.max_wait_s <= 0:
            return False
        self.counters["waits"] += 1
        try:
            cf.wait([self._future], timeout=self.max_wait_s)
        finally:
            self._collect(tick)
        return self._pending is not None or bool(self._ensemble)

    def _ensembled(self, tick: int, obs: dict[str, Any]) -> PlannedAction | None:
        self._maybe_request(tick, obs)
        self._ensemble = [c for c in self._ensemble if c.end_tick > tick]
        if not any(c.plan_tick <= tick for c in self._ensemble):
            self._wait_for_reply(tick)
            self._ensemble = [c for c in self._ensemble if c.end_tick > tick]
        covering = [c for c in self._ensemble if c.plan_tick <= tick < c.end_tick]
        if not covering:
            self.counters["no_action"] += 1
            return None
        native = np.stack([c.actions[tick - c.plan_tick] for c in covering])
        if self.adapter.identity:
            rows = native.astype(np.float64)
        else:  # every covering row converted from this tick's state, then averaged (any rotation format)
            rows = np.array([self.adapter.to_delta(r, obs["state"]) for r in native])
        w = np.exp(-self.ensemble_decay * np.arange(len(covering)))
        action = (w[:, None] * rows).sum(axis=0) / w.sum()
        newest = covering[-1]
        return PlannedAction(action.astype(np.float32), newest.version, tick - newest.plan_tick, len(covering) == 1, native[-1])
