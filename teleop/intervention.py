"""Intervention state machine: who drives, and how the steps are labelled (DESIGN §3).

    autonomous --takeover/clutch/motion--> recovery --correction--> correction --takeover--> autonomous
    autonomous --perturbation--> perturbation --perturbation/takeover--> autonomous
    demo mode: the whole episode is teleoperated and labelled 'demo'

Marks (success/failure) are emitted once and end the episode; the e-stop latches until
``clear_estop()``; language corrections are attached to the segment that is running when they
arrive (or the next takeover, if typed while autonomous) and emitted once.
"""

from __future__ import annotations

import dataclasses
import logging

from hil_robot.types import OperatorMode, Segment

log = logging.getLogger(__name__)

EVENTS = ("takeover", "correction", "cycle", "perturbation", "engage", "success", "failure", "estop")


@dataclasses.dataclass
class Transition:
    step: int
    event: str
    before: Segment | None
    after: Segment | None


class InterventionStateMachine:
    """Feed it events (``handle``) and read ``mode``/``segment`` every tick (``state``)."""

    def __init__(self, *, demo: bool = False, auto_takeover: bool = True) -> None:
        self.demo = demo
        self.auto_takeover = auto_takeover
        self.estop = False
        self.reset()
        self.counts = {"takeovers": 0, "corrections": 0, "perturbations": 0, "successes": 0, "failures": 0}

    def reset(self) -> None:
        """New episode (counts persist across episodes; the e-stop latch persists too)."""
        self.segment: Segment | None = Segment.DEMO if self.demo else None
        self._pending_mark = ""
        self._pending_text = ""
        self.language_corrections: list[tuple[int, str, str]] = []  # (step, segment, text)
        self.transitions: list[Transition] = []
        self.step = 0

    # ------------------------------------------------------------------ queries
    @property
    def mode(self) -> OperatorMode:
        if self.segment is None:
            return OperatorMode.AUTONOMOUS
        if self.segment is Segment.PERTURBATION:
            return OperatorMode.PERTURBATION
        return OperatorMode.TAKEOVER

    @property
    def human_driving(self) -> bool:
        return self.segment is not None

    # ------------------------------------------------------------------ events
    def handle(self, event: str) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown operator event {event!r}; allowed: {', '.join(EVENTS)}")
        before = self.segment
        seg = self.segment
        if event == "estop":
            if not self.estop:
                log.warning("operator e-stop latched (clear it explicitly to continue)")
            self.estop = True
        elif event in ("success", "failure"):
            self._pending_mark = event
            self.counts["successes" if event == "success" else "failures"] += 1
        elif self.demo:
            pass  # a demo stays a demo; marks end it
        elif event == "takeover":
            self._set(Segment.RECOVERY if seg is None else None)
        elif event == "engage":
            if seg is None and self.auto_takeover:
                self._set(Segment.RECOVERY)
        elif event == "correction":
            if seg is Segment.RECOVERY:
                self._set(Segment.CORRECTION)
        elif event == "cycle":
            nxt = {None: Segment.RECOVERY, Segment.RECOVERY: Segment.CORRECTION, Segment.CORRECTION: None}
            self._set(nxt.get(seg))
        elif event == "perturbation":
            self._set(Segment.PERTURBATION if seg is None else None if seg is Segment.PERTURBATION else seg)
        if self.segment is not before:
            self.transitions.append(Transition(self.step, event, before, self.segment))
            log.info("operator: %s -> %s (%s)", before and before.value, self.segment and self.segment.value, event)

    def _set(self, segment: Segment | None) -> None:
        if segment is Segment.RECOVERY and self.segment is None:
            self.counts["takeovers"] += 1
        if segment is Segment.CORRECTION and self.segment is not Segment.CORRECTION:
            self.counts["corrections"] += 1
        if segment is Segment.PERTURBATION and self.segment is None:
            self.counts["perturbations"] += 1
        self.segment = segment

    def add_language_correction(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        self._pending_text = text
        seg = self.segment.value if self.segment is not None else "autonomous"
        self.language_corrections.append((self.step, seg, text))

    def clear_estop(self) -> None:
        self.estop = False

    # ------------------------------------------------------------------ per tick
    def tick(self) -> tuple[str, str]:
        """Advance one control tick; return (mark, language_correction) to emit this tick (once).
        A mark ends the episode, so the segment goes back to its start state."""
        mark, text = self._pending_mark, self._pending_text
        self._pending_mark = self._pending_text = ""
        if mark:
            before = self.segment
            self.segment = Segment.DEMO if self.demo else None
            if before is not self.segment:
                self.transitions.append(Transition(self.step, mark, before, self.segment))
        self.step += 1
        return mark, text
