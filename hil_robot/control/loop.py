"""The fixed-rate control loop (DESIGN §2): observation -> chunk executor -> arbitration -> safety
filter -> robot, one ``StepRecord`` per tick to the recorder.

Time comes from an injectable clock (``clock.now()``, ``clock.sleep_until(t)``); observations
(``timestamp_s``) and operator commands (``timestamp_s``) must be stamped on the same time base (the
sim robot and the operator sources take a ``clock`` for that). A tick is scheduled at
``t0 + k * period``; a tick that starts more than a whole period late skips the missed slots
(counted as ``overruns``), and a tick whose command leaves later than
``control.deadline_frac * period`` after its slot counts as a ``deadline_miss``. With
``control.observe_lead_s`` > 0 the tick wakes that much before its slot, observes and decides, then
sends exactly on the slot (low command jitter, observations older by the lead).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import time
import uuid
from typing import Any, Callable

import numpy as np

from hil_robot.config import ConfigError, RootConfig
from hil_robot.control.action_space import ActionAdapter
from hil_robot.control.arbitration import Arbiter
from hil_robot.control.chunking import ChunkExecutor
from hil_robot.control.clock import Clock, FakeClock, MonotonicClock
from hil_robot.control.safety import SafetyDecision, SafetyFilter
from hil_robot.types import ACTION_DIM, OperatorCommand, OperatorMode, Policy, Robot, Source, StepRecord, validate_observation

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TickTiming:
    scheduled_s: float  # slot start
    started_s: float  # when the tick woke
    sent_s: float  # when the command went to the robot
    decided_s: float = float("nan")  # when the safety filter had decided (before any observe-lead wait)


@dataclasses.dataclass
class EpisodeResult:
    episode_id: str
    steps: int
    success: bool
    end_reason: str  # success | failure | operator_success | operator_failure | max_steps | stopped
    instruction: str
    interventions: int
    meta: Any = None  # EpisodeMeta from the recorder, if any
    first_chunk_wait_s: float = float("nan")  # wall time spent getting the first chunk before tick 0 (nan: none asked)
    perturbations: int = 0  # deliberate perturbations (not counted in ``interventions``)


class Controller:
    """robot: a Robot (sim or real); policy: a Policy or None (pure teleoperation: demo episodes);
    operator: an operator source (``command(obs, context)``, ``reset()``) or None; recorder: has
    ``add(StepRecord)`` and ``end_episode(success, **meta)`` (or None); cfg: RootConfig."""

    def __init__(
        self,
        robot: Robot,
        policy: Policy | None,
        operator: Any,
        recorder: Any,
        cfg: RootConfig,
        clock: Clock | None = None,
        on_chunk_boundary: Callable[[], None] | None = None,
        timing_log_len: int = 100_000,
    ) -> None:
        self.robot = robot
        self.policy = policy
        self.operator = operator
        self.recorder = recorder
        self.cfg = cfg
        self.clock: Clock = clock or MonotonicClock()
        self.period_s = 1.0 / cfg.robot.control_hz
        self.safety = SafetyFilter(cfg.robot, self.period_s)
        ctl = cfg.control
        ensembling = cfg.policy.temporal_ensembling if ctl.temporal_ensembling is None else ctl.temporal_ensembling
        # On a simulated clock the loop runs lock-step: simulated time stands still while the policy
        # thinks, so each chunk is requested at its boundary and waited for (up to the request
        # timeout) instead of being requested early and dropped as stale.
        lockstep = isinstance(self.clock, FakeClock)
        # the policy's native action space -> our normalised delta, row by row at the tick it runs
        self.adapter = ActionAdapter(cfg.policy, cfg.robot, self.period_s)
        self.executor = (
            ChunkExecutor(
                policy,
                n_action_steps=cfg.policy.n_action_steps,
                request_lead_steps=0 if lockstep else ctl.request_lead_steps,
                max_wait_s=max(cfg.transport.request_timeout_s, ctl.max_policy_wait_s) if lockstep else ctl.max_policy_wait_s,
                temporal_ensembling=ensembling,
                ensemble_decay=ctl.ensemble_decay,
                on_boundary=on_chunk_boundary,
                lockstep=lockstep,
                adapter=self.adapter,
            )
            if policy is not None
            else None
        )
        self.arbiter = Arbiter(ctl.handback_max_delta, ctl.takeover_segment, demo_mode=policy is None)
        self.lead_s = float(ctl.observe_lead_s)
        if self.lead_s >= self.period_s or self.period_s + self.lead_s > cfg.robot.safety.watchdog_hold_s + 1e-9:
            raise ConfigError(
                f"control.observe_lead_s={self.lead_s} must be < one period ({self.period_s:.3f}s) and period + lead must "
                f"be <= robot.safety.watchdog_hold_s={cfg.robot.safety.watchdog_hold_s} (inputs age by the lead)"
            )
        self.counters: collections.Counter[str] = collections.Counter()
        self.timings: collections.deque[TickTiming] = collections.deque(maxlen=timing_log_len)
        self.on_step: Callable[[StepRecord, SafetyDecision], None] | None = None  # e.g. a live display
        self._stop_requested = False
        self._last_log_s = -math.inf
        self._rt_applied = False
        self.instruction = ""

    # ------------------------------------------------------------------ operator-facing API
    def estop(self, reason: str = "api") -> None:
        """Latch the e-stop (thread-safe). The robot stops on the next tick and stays stopped."""
        self.safety.estop(reason)

    def reset_estop(self) -> None:
        self.safety.reset_estop()

    def request_stop(self) -> None:
        """Finish the current episode after this tick (thread-safe)."""
        self._stop_requested = True

    # ------------------------------------------------------------------ episodes
    def run_episode(self, max_steps: int | None = None, seed: int | None = None, instruction: str | None = None) -> EpisodeResult:
        max_steps = int(max_steps or self.cfg.sim.max_episode_steps)
        self._stop_requested = False
        self._enter_realtime()
        obs = self.robot.reset(seed=seed) if hasattr(self.robot, "reset") else self.robot.observe()
        obs = validate_observation(obs)
        now = self.clock.now()
        self.safety.reset(now, obs["state"])
        self.arbiter.reset()
        if self.executor is not None:
            self.executor.reset()
        if self.operator is not None:
            self.operator.reset()
        self.instruction = instruction or str(obs.get("prompt", ""))
        episode_id = f"ep-{uuid.uuid4().hex[:12]}"
        if self.recorder is not None and hasattr(self.recorder, "start_episode"):
            self.recorder.start_episode(episode_id, task=self.cfg.sim.task, instruction=self.instruction, seed=seed)
        first_obs: dict[str, Any] | None = obs
        prime_s = float("nan")
        if self.executor is not None and self.cfg.control.first_chunk_timeout_s > 0:
            t_prime = time.monotonic()
            first_obs = self._prime_policy(obs)
            prime_s = time.monotonic() - t_prime
        t0 = self.clock.now() + self.lead_s
        tick = 0
        step = 0
        end_reason, success = "max_steps", False
        failure: BaseException | None = None
        try:
            while step < max_steps:
                slot = t0 + tick * self.period_s
                self.clock.sleep_until(slot - self.lead_s)
                started = self.clock.now()
                late_slots = int((started - (slot - self.lead_s)) // self.period_s)
                if late_slots >= 1:  # fell behind by whole periods: skip them, do not burst
                    self.counters["overruns"] += late_slots
                    tick += late_slots
                    slot = t0 + tick * self.period_s
                record, decision, ended = self._tick(episode_id, step, tick, slot, started, first_obs, step + 1 >= max_steps)
                first_obs = None
                tick += 1
                step += 1
                if ended:
                    end_reason, success = ended
                    break
                if self._stop_requested:
                    end_reason = "stopped"
                    break
        except BaseException as e:  # Ctrl-C, a driver error: stop the arm first, keep what was recorded
            failure = e
            end_reason = "interrupted" if isinstance(e, KeyboardInterrupt) else f"error: {type(e).__name__}: {e}"
            log.error("episode %s ended by %s; robot stopped", episode_id, end_reason)
            self.robot.stop()
        meta = None
        if self.recorder is not None and step == 0 and hasattr(self.recorder, "abort_episode"):
            self.recorder.abort_episode()  # nothing recorded (opened by start_episode)
        elif self.recorder is not None and step > 0:
            meta = self._end_recording(
                failure,
                success,
                final_observation=self._final_observation(),
                task=self.cfg.sim.task,
                instruction=self.instruction,
                seed=seed,
                extra={"end_reason": end_reason, "safety": self.safety.summary(), "loop": dict(self.counters),
                       "action_space": self.adapter.describe()},
            )
        self._log_counters(force=True)
        if failure is not None:
            raise failure
        return EpisodeResult(episode_id, step, success, end_reason, self.instruction, self.arbiter.interventions, meta, prime_s,
                             perturbations=self.arbiter.perturbations)

    def _prime_policy(self, obs: dict[str, Any]) -> dict[str, Any] | None:
        """Get the chunk for tick 0 before the slots start (the robot stands still after its reset),
        so a policy slow to give its first answer (a cold server) costs start-up time, not control
        ticks. Returns the observation tick 0 should use (None: observe afresh)."""
        max_age = self.cfg.control.obs_max_age_s
        for attempt in range(2):
            if abs(self.clock.now() - float(obs["timestamp_s"])) > max_age:
                return None if attempt else obs  # stale from the start: tick 0 holds on it as usual
            policy_obs = dict(obs)
            policy_obs["prompt"] = self.instruction
            if not self.executor.prime(policy_obs, self.cfg.control.first_chunk_timeout_s):
                self.counters["prime_failures"] += 1
                log.warning("no first chunk within control.first_chunk_timeout_s=%.1f s (%s); ticks hold until one arrives",
                            self.cfg.control.first_chunk_timeout_s, self.executor.last_error or "no reply yet")
                return obs
            if abs(self.clock.now() - float(obs["timestamp_s"])) <= max_age:
                return obs
            # the answer took longer than an observation stays fresh: plan again from a fresh one
            self.executor.drop_chunks()
            obs = validate_observation(self.robot.observe())
        return None

    def _enter_realtime(self) -> None:
        prio = self.cfg.control.rt_priority
        if prio <= 0 or self._rt_applied:
            return
        self._rt_applied = True
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))  # this thread only
            log.info("control loop thread runs SCHED_FIFO priority %d", prio)
        except (OSError, AttributeError) as e:
            log.warning("control.rt_priority=%d not applied (%s); running with normal scheduling", prio, e)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()

    # ------------------------------------------------------------------ one tick
    def _tick(
        self, episode_id: str, step: int, tick: int, slot: float, started: float, obs: dict[str, Any] | None, last: bool
    ) -> tuple[StepRecord, SafetyDecision, tuple[str, bool] | None]:
        if obs is None:
            obs = validate_observation(self.robot.observe())
        now = self.clock.now()
        obs_age = now - float(obs["timestamp_s"])
        stale = not (-self.cfg.control.obs_max_age_s <= obs_age <= self.cfg.control.obs_max_age_s)
        force: list[str] = []
        if stale:
            self.counters["stale_obs"] += 1
            force.append("stale_obs")
        policy_obs = dict(obs)
        policy_obs["prompt"] = self.instruction
        planned = None
        if self.executor is not None and not stale:
            planned = self.executor.action_for_tick(tick, policy_obs)
        status = self.robot.task_status() if hasattr(self.robot, "task_status") else {}
        cmd: OperatorCommand | None = None
        if self.operator is not None:
            context = {"policy_action": None if planned is None else planned.action.copy(), "step": step, "task_status": status}
            try:
                cmd = self.operator.command(policy_obs, context)
            except Exception as e:  # a broken device must not hand the robot to the policy silently
                self.counters["operator_errors"] += 1
                log.warning("operator source failed (%s: %s); holding this tick", type(e).__name__, e)
                force.append("operator_error")
        op_action = None
        if cmd is not None:
            if cmd.estop:
                self.safety.estop(f"operator {cmd.operator_id or cmd.device_id or ''}".strip())
            if cmd.mode != OperatorMode.AUTONOMOUS or self.executor is None:
                if cmd.pose_target is not None:
                    op_action, pflags = self.safety.pose_target_to_action(cmd.pose_target, obs["state"])
                    if pflags:
                        op_action = None
                        force.extend(pflags)
                elif cmd.action is not None:
                    op_action = cmd.action
        arb = self.arbiter.arbitrate(
            None if planned is None else planned.action, slot if planned is not None else None, cmd, op_action
        )
        if arb.takeover_started:
            self.safety.reset_pose_reference()
        self.counters["takeovers"] += arb.intervention_started
        self.counters["perturbations"] += arb.perturbation_started
        if arb.handing_back:
            self.counters["handback_ticks"] += 1
        decision = self.safety.filter(arb.action, arb.input_time_s, slot, obs["state"], force_hold=tuple(force))
        robot_limits: tuple[str, ...] = ()
        if planned is None and self.executor is not None and self.executor.last_rejection:
            # the policy's last reply was unusable: this tick's hold is marked, never a policy action
            robot_limits = (f"bad_chunk:{self.executor.last_rejection}",)
        decided_s = self.clock.now()
        if self.lead_s > 0:
            self.clock.sleep_until(slot)  # observed early; the command goes out on the slot
            if self.safety.estopped and decision.kind != "stop":  # latched while we waited
                decision = SafetyDecision(decision.action * np.array([0, 0, 0, 0, 0, 0, 1], np.float32), "stop", ("estop",))
        if decision.kind == "stop":
            self.robot.stop()
            executed = decision.action
        else:
            sent = self.robot.send_action(decision.action)
            executed = np.asarray(sent.action, dtype=np.float32)
            robot_limits += tuple(f"robot:{x}" for x in sent.limits)
        sent_s = self.clock.now()
        self.arbiter.note_executed(executed)
        self.timings.append(TickTiming(slot, started, sent_s, decided_s))
        self.counters["ticks"] += 1
        if sent_s - slot > self.cfg.control.deadline_frac * self.period_s:
            self.counters["deadline_misses"] += 1

        instruction_used = self.instruction
        correction = cmd.language_correction if cmd is not None else ""
        if correction:
            self.instruction = correction  # the policy sees the new instruction from the next tick on
            self.counters["language_corrections"] += 1
        after = self.robot.task_status() if hasattr(self.robot, "task_status") else {}
        ended: tuple[str, bool] | None = None
        if cmd is not None and cmd.mark:
            ended = (f"operator_{cmd.mark}", cmd.mark == "success")
        elif after.get("success"):
            ended = ("success", True)
        elif after.get("failed"):
            ended = ("failure", False)
        record = StepRecord(
            episode_id=episode_id,
            step=step,
            observation=obs,
            action_executed=executed,
            action_policy=planned.action if planned is not None else np.full(ACTION_DIM, np.nan, np.float32),
            source=arb.source,
            segment=arb.segment,
            instruction=instruction_used,
            policy_version=planned.policy_version if planned is not None and not arb.human_mask.all() else -1,
            reward=1.0 if ended is not None and ended[1] else 0.0,
            done=ended is not None,
            truncated=ended is None and last,
            success=bool(ended is not None and ended[1]),
            timestamp_s=sent_s,
            obs_timestamp_s=float(obs["timestamp_s"]),
            operator_id=cmd.operator_id if cmd is not None and arb.source == Source.HUMAN else "",
            device_id=cmd.device_id if cmd is not None and arb.source == Source.HUMAN else "",
            safety_flags=decision.flags + robot_limits,
            language_correction=correction,
            # DSRL: the noise the chunk was integrated from, where this tick executed its first row
            policy_noise=planned.noise if planned is not None and arb.source == Source.POLICY and not arb.human_mask.any() else None,
        )
        if self.recorder is not None:
            self.recorder.add(record)
        if self.on_step is not None:
            self.on_step(record, decision)
        self._log_counters()
        return record, decision, ended

    def _end_recording(self, failure: BaseException | None, success: bool, **kw: Any) -> Any:
        try:
            return self.recorder.end_episode(success, **kw)
        except Exception:
            if failure is None:
                raise
            log.exception("could not finalise the episode after %r", failure)  # keep the original error
            return None

    def _final_observation(self) -> dict[str, Any] | None:
        try:
            return validate_observation(self.robot.observe())
        except Exception as e:  # the episode is still worth keeping without it
            log.warning("could not read the final observation: %s", e)
            return None

    # ------------------------------------------------------------------ telemetry
    def stats(self) -> dict[str, Any]:
        """Loop, safety and chunk counters plus period statistics (ms) of the recorded ticks."""
        out: dict[str, Any] = {f"loop/{k}": v for k, v in self.counters.items()}
        out.update({f"safety/{k}": v for k, v in self.safety.summary().items()})
        if self.executor is not None:
            out.update({f"chunks/{k}": v for k, v in self.executor.counters.items()})
        jitter = self.period_jitter_ms()
        if jitter.size:
            out["loop/period_jitter_p99_ms"] = float(np.percentile(jitter, 99))
        out["loop/deadline_miss_frac"] = self.counters["deadline_misses"] / max(1, self.counters["ticks"])
        return out

    def period_jitter_ms(self) -> np.ndarray:
        """|actual command period - nominal| in ms for each pair of back-to-back ticks (the gaps
        between episodes and skipped slots are not periods of the loop)."""
        if len(self.timings) < 2:
            return np.zeros(0)
        sched = np.array([t.scheduled_s for t in self.timings])
        sent = np.array([t.sent_s for t in self.timings])
        consecutive = np.abs(np.diff(sched) - self.period_s) < 1e-6
        return np.abs(np.diff(sent) - self.period_s)[consecutive] * 1e3

    def _log_counters(self, force: bool = False) -> None:
        now = self.clock.now()
        if not force and now - self._last_log_s < self.cfg.control.log_every_s:
            return
        self._last_log_s = now
        s = self.stats()
        log.info("controller counters: %s", ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(s.items())))
