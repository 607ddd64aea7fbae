"""Replay fed from one or several episode stores, picking up episodes as they are finalised.

    replay = StoreReplay(["runs/a/store", "runs/demos"], capacity_steps=50_000, strategy="lifo_intervention")
    replay.refresh()                         # load episodes finalised since the last call
    batch = replay.sample(256, horizon=10)   # Sirius-weighted BC batch (numpy)
    batch = replay.sample_rlpd(256)          # 50% demo+intervention, 50% online

A store being written by another process is fine: only finalised (renamed) episodes are read.
``state_dict()`` records which episodes were loaded or evicted so a restarted learner rebuilds the
same memory from the stores (the stores are the source of truth).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np

from hil_robot.config.learner import LearnerConfig, SiriusWeights
from hil_robot.data.format import StoreError
from hil_robot.data.replay import ReplayBuffer
from hil_robot.data.store import EpisodeStore

log = logging.getLogger(__name__)


def _open(path: str | os.PathLike) -> EpisodeStore:
    exists = os.path.isfile(os.path.join(path, "store.json"))
    return EpisodeStore(path, read_only=exists)


class StoreReplay:
    def __init__(
        self,
        stores: Sequence[EpisodeStore | str | os.PathLike],
        capacity_steps: int = 200_000,
        strategy: str = "fifo",
        *,
        sirius: SiriusWeights | None = None,
        keep_demos: bool = True,
        seed: int | None = None,
        refresh: bool = True,
        gather_threads: int = 2,
    ):
        if isinstance(stores, (str, os.PathLike, EpisodeStore)):
            stores = [stores]
        # a store that does not exist yet is created empty (the learner may start before the robot)
        self.stores = [s if isinstance(s, EpisodeStore) else _open(s) for s in stores]
        if not self.stores:
            raise StoreError("StoreReplay needs at least one episode store")
        self.buffer = ReplayBuffer(capacity_steps, strategy, sirius=sirius, keep_demos=keep_demos, seed=seed,
                                   gather_threads=gather_threads)
        self._seen: list[set[str]] = [set() for _ in self.stores]
        self.errors: list[str] = []
        if refresh:
            self.refresh()

    @classmethod
    def from_config(cls, cfg: LearnerConfig, stores: Sequence[EpisodeStore | str | os.PathLike], seed: int | None = None) -> "StoreReplay":
        return cls(
            stores, cfg.memory_max_steps, cfg.memory_strategy, sirius=cfg.sirius, keep_demos=getattr(cfg, "memory_keep_demos", True), seed=seed
        )

    def refresh(self, max_episodes: int | None = None) -> int:
        """Load episodes finalised since the last call (in recording order). Returns how many."""
        loaded = 0
        for si, store in enumerate(self.stores):
            store.refresh()
            for idx, meta, _ in store.entries():
                if meta.episode_id in self._seen[si]:
                    continue
                if max_episodes is not None and loaded >= max_episodes:
                    return loaded
                self._seen[si].add(meta.episode_id)
                try:
                    ep = store.read_episode(idx)
                except Exception as e:  # noqa: BLE001 - a bad episode must not stop learning
                    msg = f"skipped episode {meta.episode_id!r} of {store.root}: {e}"
                    log.error(msg)
                    self.errors.append(msg)
                    continue
                if self.buffer.insert(ep, store_index=si):
                    loaded += 1
        return loaded

    def sample(self, batch_size: int, horizon: int = 1, view: str = "bc", rng: np.random.Generator | None = None,
               next_obs: bool = True, images: bool = True) -> dict[str, Any]:
        return self.buffer.sample(batch_size, horizon, view, rng, next_obs, images)

    def sample_rlpd(self, batch_size: int, horizon: int = 1, rng: np.random.Generator | None = None) -> dict[str, Any]:
        return self.buffer.sample_rlpd(batch_size, horizon, rng)

    @property
    def num_steps(self) -> int:
        return self.buffer.num_steps

    @property
    def num_episodes(self) -> int:
        return self.buffer.num_episodes

    def __len__(self) -> int:
        return self.buffer.view_size("all")

    def state_dict(self) -> dict[str, Any]:
        """Which episodes of which store were seen / are held (JSON-friendly)."""
        return {
            "stores": [str(s.root) for s in self.stores],
            "seen": [sorted(s) for s in self._seen],
            "held": [[h.store_index, h.episode_id] for h in self.buffer.held.values()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Rebuild memory: load the held episodes again, mark the rest of ``seen`` as consumed."""
        if len(state["seen"]) != len(self.stores):
            raise StoreError(f"replay state has {len(state['seen'])} stores, this replay {len(self.stores)}")
        held = {(int(si), eid) for si, eid in state["held"]}
        for slot in list(self.buffer.held):
            self.buffer.remove(slot)
        for si, store in enumerate(self.stores):
            store.refresh()
            for idx, meta, _ in store.entries():
                if (si, meta.episode_id) in held:
                    self.buffer.insert(store.read_episode(idx), store_index=si)
            self._seen[si] = set(state["seen"][si])
