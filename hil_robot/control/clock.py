"""Clocks for the control loop (STYLE 7: time is data, the loop takes an injectable clock).

``MonotonicClock`` is the real one: ``sleep_until`` sleeps coarsely, then spins the last
millisecond so tick periods stay within a fraction of a millisecond on a loaded machine.
``FakeClock`` only moves when someone sleeps or advances it, so tests run faster than real time
and are exactly repeatable.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic time base."""
        ...

    def sleep_until(self, t_s: float) -> None:
        """Return at (or as soon as possible after) time ``t_s``."""
        ...


class MonotonicClock:
    def __init__(self, spin_s: float = 0.001) -> None:
        self.spin_s = spin_s

    def now(self) -> float:
        return time.monotonic()

    def sleep_until(self, t_s: float) -> None:
        while True:
            remaining = t_s - time.monotonic()
            if remaining <= 0:
                return
            if remaining > self.spin_s:
                time.sleep(remaining - self.spin_s)
            else:
                time.sleep(0)  # yield while spinning the last stretch


class FakeClock:
    """Simulated time. ``sleep_until`` jumps forward; ``advance`` adds processing time."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self._t = float(start_s)
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def sleep_until(self, t_s: float) -> None:
        with self._lock:
            self._t = max(self._t, float(t_s))

    def advance(self, dt_s: float) -> None:
        if dt_s < 0:
            raise ValueError("FakeClock cannot go backwards")
        with self._lock:
            self._t += float(dt_s)
