"""Recorder: the controller hands it every StepRecord; it writes them to the episode store and
labels the run-up to each takeover (DESIGN §3, Sirius).

Pre-intervention relabelling: when a takeover starts (the first ``recovery``/``correction`` step
after a non-intervention step), the last ``pre_intervention_k`` *autonomous* steps before it become
``pre_intervention``. Steps are written immediately (nothing is held back, so the crash-loss bound
stays one flush interval); the relabel is applied in the writer's buffer if those steps are not
flushed yet, else appended as a small RELABEL chunk that readers apply on load. A crash can at
worst lose a relabel together with the steps of the same flush interval.

``pre_intervention="estimated"`` derives the window per takeover from the data instead of a fixed K
(``hil_robot/data/pre_intervention.py``: how long the end effector had stopped making progress, or
the critic's value stalled, before the takeover), between ``pre_intervention_min_k`` and
``pre_intervention_max_k``; the windows are stored in the episode's metadata
(``extra["pre_intervention_windows"]``).
"""

from __future__ import annotations

import collections
import logging
from typing import Any

import numpy as np

from hil_robot.data.pre_intervention import estimate_window
from hil_robot.data.store import EpisodeStore
from hil_robot.data.writer import EpisodeWriter, check_step_record
from hil_robot.types import INTERVENTION_SEGMENTS, ContractError, EpisodeMeta, Segment, StepRecord

log = logging.getLogger(__name__)


class Recorder:
    """In-process recorder. ``add(step)`` for every tick, ``end_episode(success, **meta)`` at the end.

    store: the EpisodeStore to write to.
    pre_intervention_k: how many autonomous steps before a takeover become pre_intervention (0 = off)
        with ``pre_intervention="fixed"``.
    pre_intervention: fixed | estimated (the window per takeover from the run-up's states and
        critic scores, within [pre_intervention_min_k, pre_intervention_max_k]; the EE counts as
        stalled while it stays in a box of half-width pre_intervention_stall_m).
    defaults: metadata for every episode (task, robot, operator, ...); end_episode(**meta) overrides.
    """

    def __init__(self, store: EpisodeStore, pre_intervention_k: int = 15, *, pre_intervention: str = "fixed",
                 pre_intervention_min_k: int = 3, pre_intervention_max_k: int = 60,
                 pre_intervention_stall_m: float = 0.01, **defaults: Any):
        if pre_intervention_k < 0:
            raise ContractError(f"pre_intervention_k must be >= 0, got {pre_intervention_k}")
        if pre_intervention not in ("fixed", "estimated"):
            raise ContractError(f"pre_intervention={pre_intervention!r}: choose fixed or estimated")
        if not 0 <= pre_intervention_min_k <= pre_intervention_max_k:
            raise ContractError(f"need 0 <= pre_intervention_min_k ({pre_intervention_min_k}) <= pre_intervention_max_k "
                                f"({pre_intervention_max_k})")
        if not pre_intervention_stall_m > 0:
            raise ContractError(f"pre_intervention_stall_m must be > 0 metres, got {pre_intervention_stall_m}")
        self.store = store
        self.pre_intervention_k = int(pre_intervention_k)
        self.estimated = pre_intervention == "estimated"
        self.min_k, self.max_k, self.stall_m = int(pre_intervention_min_k), int(pre_intervention_max_k), float(pre_intervention_stall_m)
        self.defaults = defaults
        self._writer: EpisodeWriter | None = None
        span = self.max_k if self.estimated else self.pre_intervention_k
        self._recent_autonomous: collections.deque[int] = collections.deque(maxlen=max(1, span))
        # estimated: the run-up's observation states and critic scores, aligned with _recent_autonomous
        self._recent_states: collections.deque[np.ndarray | None] = collections.deque(maxlen=max(1, span))
        self._recent_critic: collections.deque[float] = collections.deque(maxlen=max(1, span))
        self.windows: list[int] = []  # estimated windows of the open episode, one per takeover
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
        self._clear_run_up()
        self.windows = []
        self._prev_intervention = False

    def _clear_run_up(self) -> None:
        self._recent_autonomous.clear()
        self._recent_states.clear()
        self._recent_critic.clear()

    def _window(self, step: StepRecord) -> int:
        """How many of the recent autonomous steps become pre_intervention at this takeover."""
        if not self.estimated:
            return self.pre_intervention_k
        states = list(self._recent_states) + [_state_of(step)]
        if any(s is None for s in states):  # no state to read progress from: the fixed K
            k = min(self.pre_intervention_k, len(self._recent_autonomous))
        else:
            k = estimate_window(np.stack(states), list(self._recent_critic), stall_m=self.stall_m,
                                min_k=self.min_k, max_k=self.max_k)
        self.windows.append(int(k))
        return k

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
        if is_intervention and not self._prev_intervention and self._recent_autonomous and \
                (self.estimated or self.pre_intervention_k > 0):
            k = self._window(step)
            if k > 0:
                self._writer.relabel(list(self._recent_autonomous)[-k:], Segment.PRE_INTERVENTION)
            self._clear_run_up()
        if step.segment == Segment.AUTONOMOUS:
            self._recent_autonomous.append(step.step)
            if self.estimated:
                self._recent_states.append(_state_of(step))
                self._recent_critic.append(float(step.critic_progress))
        elif step.segment != Segment.PRE_INTERVENTION:
            # only an unbroken run of autonomous steps leads into a takeover
            self._clear_run_up()
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
        if self.estimated and self.windows:
            meta = {"pre_intervention_windows": list(self.windows), **meta}
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


def _state_of(step: StepRecord) -> np.ndarray | None:
    state = step.observation.get("state") if isinstance(step.observation, dict) else None
    if state is None:
        return None
    arr = np.asarray(state, np.float64).reshape(-1)
    return arr if arr.size > 7 and np.all(np.isfinite(arr[:8])) else None


def recorder_options(learner_cfg: Any) -> dict[str, Any]:
    """Recorder keyword arguments from a ``LearnerConfig`` (the labelling settings live there)."""
    return {"pre_intervention_k": learner_cfg.pre_intervention_k, "pre_intervention": learner_cfg.pre_intervention,
            "pre_intervention_min_k": learner_cfg.pre_intervention_min_k,
            "pre_intervention_max_k": learner_cfg.pre_intervention_max_k,
            "pre_intervention_stall_m": learner_cfg.pre_intervention_stall_m}
