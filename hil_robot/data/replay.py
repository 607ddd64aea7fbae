"""Replay buffer over episode stores: bounded memory, Sirius weights, RLPD views (numpy only).

Memory layout: one preallocated row pool. Each step of an episode takes a row; an episode that
ended with a recorded final observation takes one more row for it. Images are decoded once on
insert into ``uint8 [capacity, H, W, 3]`` arrays (so a batch is one fancy-index per camera, no
per-sample decoding); the pool never exceeds ``capacity_steps`` rows (~98 kB per row with two
128x128 cameras; pages are only touched when used). Evicting an episode returns its rows to a
free list, so any strategy works without moving data.

Transitions: row t pairs with ``next_row[t]`` = step t+1 of the same episode, or the final-
observation row after the last step. At the last step ``done`` is the record's terminal flag
(no bootstrap) and ``truncated`` = not done (time limit or cut-off: bootstrap from next_obs). A
last step that is not terminal and has no final observation cannot be bootstrapped correctly and
is not sampled (pass ``final_observation`` to ``Recorder.end_episode``).

Views: ``bc`` (everything but perturbation; Sirius weights), ``offline`` (demo + recovery +
correction), ``online`` (every step of non-demo episodes; interventions are in both), ``all``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from hil_robot.config.learner import SiriusWeights
from hil_robot.data import codec as codecs
from hil_robot.data import memory
from hil_robot.data.episode import Episode
from hil_robot.types import ACTION_DIM, IMAGE_PREFIX, SEGMENT_INDEX, Segment

log = logging.getLogger(__name__)

VIEWS = ("bc", "offline", "online", "all")
_DEMO, _PERT = SEGMENT_INDEX[Segment.DEMO], SEGMENT_INDEX[Segment.PERTURBATION]
_OFFLINE_SEGMENTS = [SEGMENT_INDEX[Segment.DEMO], SEGMENT_INDEX[Segment.RECOVERY], SEGMENT_INDEX[Segment.CORRECTION]]


@dataclasses.dataclass
class _Held:
    rows: np.ndarray  # int64 [n] rows of steps 0..n-1
    final_row: int  # -1 if no final observation
    store_index: int
    episode_index: int
    episode_id: str
    order: int
    intervention_steps: int
    is_demo: bool
    success: bool


class ReplayBuffer:
    """Bounded replay of whole episodes.

    capacity_steps: rows in the pool (steps + one final-observation row per episode that has one).
    strategy: fifo | filo | lifo_intervention | mifo_intervention (see ``memory``).
    """

    def __init__(
        self,
        capacity_steps: int,
        strategy: str = "fifo",
        *,
        sirius: SiriusWeights | None = None,
        keep_demos: bool = True,
        seed: int | None = None,
        gather_threads: int = 2,
    ):
        """gather_threads: threads that copy image rows into a batch in parallel (numpy releases
        the GIL while copying; the copy is the cost of a batch). 0 or 1 = in the calling thread."""
        if strategy not in memory.STRATEGIES:
            raise ValueError(f"unknown memory strategy {strategy!r}; choose one of {', '.join(memory.STRATEGIES)}")
        if capacity_steps <= 0:
            raise ValueError(f"capacity_steps must be > 0, got {capacity_steps}")
        self.capacity = int(capacity_steps)
        self.strategy = strategy
        self.sirius = sirius or SiriusWeights()
        self.keep_demos = keep_demos
        self.rng = np.random.default_rng(seed)
        self.held: dict[int, _Held] = {}  # slot -> episode
        self.evicted: list[tuple[int, str]] = []  # (store_index, episode_id) in eviction order
        self._next_slot = 0
        self._order = 0
        self._free = list(range(self.capacity - 1, -1, -1))  # pop() hands out rows 0, 1, 2, ...
        self._images: dict[str, np.ndarray] = {}
        self._obs: dict[str, np.ndarray] = {}  # numeric observation arrays, e.g. state, task_state
        self._instructions: list[str] = []
        self._instruction_ids: dict[str, int] = {}
        R = self.capacity
        self._action = np.zeros((R, ACTION_DIM), np.float32)
        self._action_policy = np.zeros((R, ACTION_DIM), np.float32)
        self._reward = np.zeros(R, np.float32)
        self._done = np.zeros(R, np.float32)
        self._truncated = np.zeros(R, np.float32)
        self._segment = np.zeros(R, np.int8)
        self._source = np.zeros(R, np.int8)
        self._step = np.zeros(R, np.int64)
        self._slot = np.full(R, -1, np.int64)
        self._instr = np.zeros(R, np.int32)
        self._next = np.arange(R, dtype=np.int64)  # next observation row
        self._succ = np.full(R, -1, np.int64)  # row of the next *step* (-1 at the end), for action chunks
        self._sampleable = np.zeros(R, bool)
        self._no_plan = np.zeros(R, bool)  # policy-source steps without a policy action (safety holds)
        self._noise: np.ndarray | None = None  # DSRL: recorded chunk noise float32 [R, K] (NaN: none), on first use
        self._views: dict[str, np.ndarray] | None = None
        self.gather_threads = max(0, min(int(gather_threads), os.cpu_count() or 1))
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ filling

    @property
    def num_steps(self) -> int:
        return sum(len(h.rows) for h in self.held.values())

    @property
    def num_episodes(self) -> int:
        return len(self.held)

    @property
    def cameras(self) -> list[str]:
        return sorted(self._images)

    def memory_bytes(self) -> int:
        """Bytes the pool can grow to (images + per-row fields)."""
        per_row = sum(a[0].nbytes for a in self._images.values()) + sum(a[0].nbytes for a in self._obs.values()) + 100
        return per_row * self.capacity

    def insert(self, ep: Episode, store_index: int = 0) -> bool:
        """Add an episode (evicting others by the strategy if needed). False if it cannot fit/match."""
        n = len(ep)
        has_final = ep.final_obs is not None
        need = n + int(has_final)
        if n == 0:
            return False
        if need > self.capacity:
            log.warning("episode %r has %d steps, more than the replay capacity %d; skipped", ep.meta.episode_id, n, self.capacity)
            return False
        self._ensure_layout(ep)
        if not self._matches(ep):
            log.error("episode %r has other cameras/shapes/obs keys than the replay holds; skipped", ep.meta.episode_id)
            return False
        while len(self._free) < need:
            self._evict_one()
        rows = np.array([self._free.pop() for _ in range(need)], np.int64)
        step_rows, final_row = rows[:n], (int(rows[n]) if has_final else -1)
        def decode(cam: str) -> None:
            arr, blobs, shape = self._images[cam], ep.images[cam], ep.image_shapes[cam]
            for i, r in enumerate(step_rows):
                codecs.decode_frame(blobs[i], ep.codec, shape, arr[r])
            if has_final:
                codecs.decode_frame(ep.final_obs[IMAGE_PREFIX + cam], ep.codec, shape, arr[final_row])

        if self.gather_threads > 1 and len(self._images) > 1:  # one camera per thread (codecs release the GIL)
            for fut in [self._executor().submit(decode, cam) for cam in self._images]:
                fut.result()
        else:
            for cam in self._images:
                decode(cam)
        for key, arr in self._obs.items():
            arr[step_rows] = ep.columns["obs/" + key]
            if has_final:
                arr[final_row] = ep.final_obs["obs/" + key]
        c = ep.columns
        slot = self._next_slot
        self._next_slot += 1
        self._action[step_rows] = c["action_executed"]
        self._action_policy[step_rows] = c["action_policy"]
        self._insert_noise(ep, step_rows)
        self._reward[step_rows] = c["reward"]
        self._segment[step_rows] = c["segment"]
        self._source[step_rows] = c["source"]
        self._step[step_rows] = np.arange(n)
        self._slot[step_rows] = slot
        self._instr[step_rows] = [self._instruction_id(s) for s in c["instruction"]]
        terminal = bool(c["done"][-1])
        self._done[step_rows] = 0.0
        self._truncated[step_rows] = 0.0
        self._done[step_rows[-1]] = float(terminal)
        self._truncated[step_rows[-1]] = float(not terminal)
        self._succ[step_rows[:-1]] = step_rows[1:]
        self._succ[step_rows[-1]] = -1
        self._next[step_rows[:-1]] = step_rows[1:]
        self._next[step_rows[-1]] = final_row if has_final else step_rows[-1]
        self._sampleable[step_rows] = True
        self._sampleable[step_rows[-1]] = terminal or has_final
        # a tick the policy drove with no usable chunk (none yet, or a rejected one: NaN action_policy)
        # was a safety hold, not the policy's choice: never a sample, never inside an action chunk
        self._no_plan[step_rows] = (np.asarray(c["source"]) == 0) & ~np.isfinite(np.asarray(c["action_policy"])).all(axis=1)
        self._sampleable[step_rows] &= ~self._no_plan[step_rows]
        if has_final:
            self._slot[final_row] = slot
            self._sampleable[final_row] = False
        seg = np.asarray(c["segment"])
        inter = int(np.isin(seg, [SEGMENT_INDEX[Segment.RECOVERY], SEGMENT_INDEX[Segment.CORRECTION]]).sum())
        self.held[slot] = _Held(
            rows=step_rows, final_row=final_row, store_index=store_index, episode_index=ep.index,
            episode_id=ep.meta.episode_id, order=self._order, intervention_steps=inter,
            is_demo=bool((seg == _DEMO).mean() > 0.5), success=bool(ep.meta.success),
        )
        self._order += 1
        self._views = None
        return True

    def _insert_noise(self, ep: Episode, step_rows: np.ndarray) -> None:
        col = ep.columns.get("policy_noise")
        if col is None and self._noise is None:
            return
        if col is not None and self._noise is None:
            self._noise = np.full((self.capacity, col.shape[1]), np.nan, np.float32)
        if col is not None and col.shape[1] != self._noise.shape[1]:
            log.warning("episode %r recorded policy_noise of width %d, the replay holds width %d; its noise is ignored",
                        ep.meta.episode_id, col.shape[1], self._noise.shape[1])
            col = None
        self._noise[step_rows] = np.nan if col is None else col

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.gather_threads, thread_name_prefix="replay")
        return self._pool

    def _ensure_layout(self, ep: Episode) -> None:
        if self._images or self._obs:
            return
        R = self.capacity
        for cam in ep.cameras:
            self._images[cam] = np.zeros((R, *ep.image_shapes[cam]), np.uint8)  # calloc: pages on first use
        for key, kind in ep.header_obs_kinds.items():
            if kind == "array" and key != "timestamp_s":
                col = np.asarray(ep.columns["obs/" + key])
                dtype = np.float32 if np.issubdtype(col.dtype, np.floating) else col.dtype
                self._obs[key] = np.zeros((R, *col.shape[1:]), dtype)
        log.info("replay pool: %d rows, up to %.2f GB once full (%s)", R, self.memory_bytes() / 1e9,
                 ", ".join(f"{c} {a.shape[1]}x{a.shape[2]}" for c, a in self._images.items()) or "no cameras")
        try:
            import psutil

            available = psutil.virtual_memory().available
        except Exception:  # noqa: BLE001 - the warning is advisory
            available = 0
        if available and self.memory_bytes() > 0.8 * available:
            log.warning("replay capacity %d steps needs up to %.1f GB when full but only %.1f GB RAM is available; "
                        "lower learner.memory_max_steps to about %d", R, self.memory_bytes() / 1e9, available / 1e9,
                        int(0.5 * available / max(1, self.memory_bytes() // R)))

    def _matches(self, ep: Episode) -> bool:
        if sorted(ep.images) != sorted(self._images):
            return False
        if any(tuple(ep.image_shapes[c]) != self._images[c].shape[1:] for c in self._images):
            return False
        return all(
            "obs/" + k in ep.columns and np.shape(ep.columns["obs/" + k])[1:] == a.shape[1:] for k, a in self._obs.items()
        )

    def _instruction_id(self, text: str) -> int:
        i = self._instruction_ids.get(text)
        if i is None:
            i = self._instruction_ids[text] = len(self._instructions)
            self._instructions.append(text)
        return i

    def _evict_one(self) -> None:
        slots = list(self.held)
        held = [self.held[s] for s in slots]
        victim = slots[
            memory.pick_victim(
                self.strategy,
                np.array([h.order for h in held]),
                np.array([h.intervention_steps for h in held]),
                np.array([h.is_demo for h in held]),
                self.keep_demos,
            )
        ]
        self.remove(victim)

    def remove(self, slot: int) -> None:
        h = self.held.pop(slot)
        rows = h.rows if h.final_row < 0 else np.append(h.rows, h.final_row)
        self._sampleable[rows] = False
        self._slot[rows] = -1
        self._free.extend(int(r) for r in rows[::-1])
        self.evicted.append((h.store_index, h.episode_id))
        self._views = None

    # ------------------------------------------------------------------ views and weights

    def _build_views(self) -> dict[str, np.ndarray]:
        if self._views is None:
            rows = np.flatnonzero(self._sampleable)
            seg = self._segment[rows]
            demo_episode = np.zeros(len(rows), bool)
            if len(rows):
                demo_slots = np.array([s for s, h in self.held.items() if h.is_demo], np.int64)
                demo_episode = np.isin(self._slot[rows], demo_slots)
            self._views = {
                "all": rows,
                "bc": rows[seg != _PERT],
                "offline": rows[np.isin(seg, _OFFLINE_SEGMENTS)],
                "online": rows[~demo_episode],
            }
        return self._views

    def view_size(self, view: str = "bc") -> int:
        return len(self._build_views()[view])

    def class_counts(self, view: str = "bc") -> np.ndarray:
        """Sampleable transitions per Sirius class (memory.CLASS_NAMES order) in a view."""
        rows = self._build_views()[view]
        return np.bincount(memory.SEGMENT_TO_CLASS[self._segment[rows]], minlength=len(memory.CLASS_NAMES))

    def class_weights(self, view: str = "bc") -> np.ndarray:
        return memory.class_weights(self.class_counts(view), self.sirius)

    # ------------------------------------------------------------------ sampling

    def sample(self, batch_size: int, horizon: int = 1, view: str = "bc", rng: np.random.Generator | None = None,
               next_obs: bool = True, images: bool = True) -> dict[str, Any]:
        """A batch of transitions, uniform over the view; ``weight`` carries the Sirius class weight
        in the ``bc`` view and 1 elsewhere. Shapes: docs/data.md. ``next_obs=False`` leaves out the
        ``next_obs/*`` keys (behaviour cloning needs none; it halves the image copying);
        ``images=False`` leaves out every camera key (state-only RL: the copy was a third of an update)."""
        if view not in VIEWS:
            raise ValueError(f"unknown replay view {view!r}; choose one of {', '.join(VIEWS)}")
        candidates = self._build_views()[view]
        if len(candidates) == 0:
            raise ValueError(f"replay view {view!r} is empty ({self.num_episodes} episodes held); record or refresh first")
        rng = rng or self.rng
        rows = candidates[rng.integers(0, len(candidates), size=batch_size)]
        if view == "bc":
            weight = self.class_weights("bc")[memory.SEGMENT_TO_CLASS[self._segment[rows]]]
        else:
            weight = np.ones(batch_size, np.float32)
        return self.gather(rows, horizon, weight, next_obs, images)

    def sample_rlpd(self, batch_size: int, horizon: int = 1, rng: np.random.Generator | None = None) -> dict[str, Any]:
        """RLPD batch: half from ``offline`` (demo + intervention), half from ``online``; if one view
        is empty, all from the other. Adds ``is_offline`` float32 [B]."""
        views = self._build_views()
        n_off = batch_size // 2 if len(views["offline"]) and len(views["online"]) else (batch_size if len(views["offline"]) else 0)
        rng = rng or self.rng
        parts = []
        if n_off:
            parts.append(views["offline"][rng.integers(0, len(views["offline"]), size=n_off)])
        if batch_size - n_off:
            if not len(views["online"]):
                raise ValueError("replay is empty; record or refresh first")
            parts.append(views["online"][rng.integers(0, len(views["online"]), size=batch_size - n_off)])
        rows = np.concatenate(parts)
        batch = self.gather(rows, horizon, np.ones(batch_size, np.float32))
        batch["is_offline"] = (np.arange(batch_size) < n_off).astype(np.float32)
        return batch

    def n_step(self, rows: np.ndarray, n: int, gamma: float) -> dict[str, np.ndarray]:
        """Transitions that span up to ``n`` steps from ``rows`` (a chunk the policy ran for n ticks):
        -> {"end_row" int64 [B] (the span's last step), "reward" float32 [B] (sum of gamma^i r_{t+i}
        over the span), "discount" float32 [B] (gamma^m for an m-step span), "done", "truncated"
        (the last step's), "valid" bool [B] (False where the span ends on a step that can be neither
        bootstrapped nor is terminal), "steps" int64 [B] (m)}. A span stops early at the episode's end."""
        rows = np.asarray(rows, np.int64)
        cur = rows.copy()
        ret = self._reward[rows].astype(np.float64)
        m = np.ones(len(rows), np.int64)
        alive = np.ones(len(rows), bool)
        for i in range(1, max(1, int(n))):
            succ = self._succ[cur]
            alive &= succ >= 0
            nxt = np.where(alive, succ, cur)
            ret += np.where(alive, gamma ** i * self._reward[nxt], 0.0)
            m += alive
            cur = nxt
        done, truncated = self._done[cur].copy(), self._truncated[cur].copy()
        valid = (self._next[cur] != cur) | (done > 0)  # a last step without a final observation cannot bootstrap
        return {"end_row": cur, "reward": ret.astype(np.float32), "discount": (gamma ** m).astype(np.float32),
                "steps": m, "done": done, "truncated": truncated, "valid": valid}

    def gather(self, rows: np.ndarray, horizon: int, weight: np.ndarray, next_obs: bool = True,
               images: bool = True) -> dict[str, Any]:
        """Assemble the batch dict for transition rows int64 [B]."""
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        nxt = self._next[rows]
        b: dict[str, Any] = {}
        jobs = [(f"obs/images/{cam}", arr, rows) for cam, arr in self._images.items()] if images else []
        if next_obs and images:
            jobs += [(f"next_obs/images/{cam}", arr, nxt) for cam, arr in self._images.items()]
        if self.gather_threads > 1 and len(jobs) > 1:
            futures = [(key, self._executor().submit(arr.__getitem__, idx)) for key, arr, idx in jobs]
        else:
            futures = []
            for key, arr, idx in jobs:
                b[key] = arr[idx]
        for key, arr in self._obs.items():
            b[f"obs/{key}"] = arr[rows]
            if next_obs:
                b[f"next_obs/{key}"] = arr[nxt]
        b["action"] = self._action[rows]
        b["action_policy"] = self._action_policy[rows]
        actions = np.empty((len(rows), horizon, ACTION_DIM), np.float32)
        is_pad = np.zeros((len(rows), horizon), bool)
        cur = rows.copy()
        actions[:, 0] = self._action[cur]
        perturbation = SEGMENT_INDEX[Segment.PERTURBATION]
        for k in range(1, horizon):
            succ = self._succ[cur]
            # a chunk ends at the episode end, and where the operator starts disturbing the scene on
            # purpose: perturbation actions are never imitation targets
            ended = (succ < 0) | (self._segment[np.maximum(succ, 0)] == perturbation) | self._no_plan[np.maximum(succ, 0)]
            is_pad[:, k] = ended | is_pad[:, k - 1]
            cur = np.where(ended, cur, succ)  # past the end: repeat the last executed action (masked)
            actions[:, k] = self._action[cur]
        b["actions"] = actions
        b["action_is_pad"] = is_pad
        b["reward"] = self._reward[rows]
        b["done"] = self._done[rows]
        b["truncated"] = self._truncated[rows]
        b["weight"] = np.asarray(weight, np.float32)
        b["segment"] = self._segment[rows].copy()
        b["source"] = self._source[rows].copy()
        b["instruction"] = [self._instructions[i] for i in self._instr[rows]]
        slots = self._slot[rows]
        b["episode_index"] = np.array([self.held[s].episode_index for s in slots], np.int64)
        b["store_index"] = np.array([self.held[s].store_index for s in slots], np.int64)
        b["episode_success"] = np.array([self.held[s].success for s in slots], np.float32)
        b["step_index"] = self._step[rows].copy()
        b["replay_row"] = np.asarray(rows, np.int64).copy()  # this buffer's rows (valid until the next refresh)
        if self._noise is not None:  # DSRL: the served chunk's noise where recorded (NaN rows elsewhere)
            b["policy_noise"] = self._noise[rows]
        for key, fut in futures:
            b[key] = fut.result()
        return b
