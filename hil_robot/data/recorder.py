"""Recorder: the controller hands it every StepRecord; it writes them to the episode store and
labels the run-up to each takeover (DESIGN §3, Sirius).

Pre-intervention relabelling: when a takeover starts (the first ``recovery``/``correction`` step
after a non-intervention step), the last ``pre_intervention_k`` *autonomous* steps before it become
``pre_intervention``. Steps are written immediately (nothing is held back, so the crash-loss bound
stays one flush interval); the relabel is applied in the writer's buffer if those steps are not
flushed yet, else appended as a small RELABEL chunk that readers apply on load. A crash can at
worst lose a relabel together with the steps of the same flush interval.
"""

from __future__ import annotations

import collections
import logging
from typing import Any

from hil_robot.data.store import EpisodeStore
from hil_robot.data.writer import EpisodeWriter, check_step_record
from hil_robot.types import INTERVENTION_SEGMENTS, ContractError, EpisodeMeta, Segment, StepRecord

log = logging.getLogger(__name__)


class Recorder:
    """In-process recorder. ``add(step)`` for every tick, ``end_episode(success, **meta)`` at the end.

    store: the EpisodeStore to write to.
    pre_intervention_k: how many autonomous steps before a takeover become pre_intervention (0 = off).
    defaults: metadata for every episode (task, robot, operator, ...); end_episode(**meta) overrides.
    """

    def __init__(self, store: EpisodeStore, pre_intervention_k: int = 15, **defaults: Any):
        if pre_intervention_k < 0:
            raise ContractError(f"pre_intervention_k must be >= 0, got {pre_intervention_k}")
        self.store = store
        self.pre_intervention_k = int(pre_intervention_k)
        self.defaults = defaults
        self._writer: EpisodeWriter | None = None
        self._recent_autonomous: collections.deque[int] = collections.deque(maxlen=max(1, self.pre_intervention_k))
        self._prev_intervention = False
        self.episodes_written = 0

    @property
    def episode_open(self) -> bool:
        return self._writer is not None

    @property
    def current_episode_id(self) -> str | None:
        return self._writer.episode_id if self._writer else None

    def start_episode(self, episode_id: str, **header: Any) -> None:
        """Optional: open an episode explicitly with per-episode header metadata (task, seed, ...)."""
        if self._writer is not None:
            raise ContractError(f"episode {self._writer.episode_id!r} is still open; call end_episode() first")
        self._writer = self.store.open_episode(episode_id, **{**self.defaults, **header})
        self._recent_autonomous.clear()
        self._prev_intervention = False

    def add(self, step: StepRecord) -> None:
        """Record one tick. The first step of a new episode (step 0) opens it automatically."""
        if self._writer is None:
            check_step_record(step)  # a bad first record must not leave an empty episode open
            if step.step != 0:
                raise ContractError(f"episode {step.episode_id!r} starts at step {step.step}; the first step must be 0")
            self.start_episode(step.episode_id, instruction=step.instruction)
        assert self._writer is not None
        is_intervention = step.segment in INTERVENTION_SEGMENTS
        self._writer.add(step)
        if is_intervention and not self._prev_intervention and self.pre_intervention_k > 0 and self._recent_autonomous:
            self._writer.relabel(list(self._recent_autonomous), Segment.PRE_INTERVENTION)
            self._recent_autonomous.clear()
        if step.segment == Segment.AUTONOMOUS:
            self._recent_autonomous.append(step.step)
        elif step.segment != Segment.PRE_INTERVENTION:
            # only an unbroken run of autonomous steps leads into a takeover
            self._recent_autonomous.clear()
        self._prev_intervention = is_intervention

    def end_episode(self, success: bool, final_observation: dict[str, Any] | None = None, **meta: Any) -> EpisodeMeta:
        """Finalise the open episode atomically and return its metadata.

        final_observation: the observation after the last action (lets replay bootstrap through a
        time limit); meta: task, instruction, robot, operator, seed, extra, or any other key
        (stored under ``extra``).
        """
        if self._writer is None:
            raise ContractError("end_episode() called with no open episode (add at least one step first)")
        writer = self._writer
        if final_observation is not None and not isinstance(final_observation, dict):
            raise ContractError(f"final_observation must be an observation dict, got {type(final_observation).__name__}")
        writer.set_final_observation(final_observation)
        try:
            em = writer.finalize(success, **meta)
        except Exception:
            # bad metadata or final observation: nothing was finalised, the episode stays open (a
            # corrected end_episode can still finish it) and the recorder is not wedged
            if not writer.closed:
                writer.set_final_observation(None)
            raise
        self._writer = None
        self.episodes_written += 1
        log.info(
            "episode %r finalised: %d steps, success=%s, segments=%s", em.episode_id, em.num_steps, em.success, em.segment_counts
        )
        return em

    def abort_episode(self) -> None:
        """Discard the open episode (moved to quarantine/, never deleted)."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.abort()

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush. An episode still open stays in incoming/ and is recovered on the next open."""
        if self._writer is not None:
            log.warning("recorder closed with episode %r open; it will be recovered as a partial episode", self._writer.episode_id)
            self._writer.flush()
        self.store.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
