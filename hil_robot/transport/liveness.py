"""Heartbeat bookkeeping: who was heard from when, and a log line whenever a peer comes or goes."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

log = logging.getLogger(__name__)


class Liveness:
    """Tracks peers by name. A peer silent for ``timeout_s`` is *gone* (logged once); hearing from
    it again logs it *back*. ``status()`` gives {peer: {"alive", "age_s", "beats"}} for status pages.
    """

    def __init__(self, what: str, timeout_s: float, clock: Callable[[], float] = time.monotonic,
                 max_peers: int = 256) -> None:
        self.what, self.timeout_s, self.clock = what, timeout_s, clock
        # peer names come off the wire: a flood of made-up names must not grow memory (or the cost
        # of check()) without bound, so beyond max_peers the longest-silent peer is forgotten
        self.max_peers = max_peers
        self._last: dict[str, float] = {}
        self._alive: dict[str, bool] = {}
        self._beats: dict[str, int] = {}
        self.events: list[tuple[float, str, str]] = []  # (time, peer, "up" | "gone"), newest last

    def beat(self, peer: str = "peer") -> None:
        now = self.clock()
        if peer not in self._last and len(self._last) >= self.max_peers:
            self.forget(min(self._last, key=self._last.__getitem__))
        self._last[peer] = now
        self._beats[peer] = self._beats.get(peer, 0) + 1
        if not self._alive.get(peer, False):
            self._alive[peer] = True
            self._event(now, peer, "up")
            log.info("%s %s is alive", self.what, peer)

    def check(self) -> list[str]:
        """Mark peers silent for longer than timeout_s as gone; return those that just went."""
        now = self.clock()
        gone = []
        for peer, last in self._last.items():
            if self._alive.get(peer) and now - last > self.timeout_s:
                self._alive[peer] = False
                gone.append(peer)
                self._event(now, peer, "gone")
                log.warning("%s %s is gone: silent for %.2f s", self.what, peer, now - last)
        return gone

    def _event(self, now: float, peer: str, what: str) -> None:
        self.events.append((now, peer, what))
        del self.events[:-100]

    def alive(self, peer: str = "peer") -> bool:
        self.check()
        return self._alive.get(peer, False)

    def age_s(self, peer: str = "peer") -> float:
        last = self._last.get(peer)
        return float("inf") if last is None else self.clock() - last

    def forget(self, peer: str) -> None:
        for d in (self._last, self._alive, self._beats):
            d.pop(peer, None)

    def status(self) -> dict[str, Any]:
        self.check()
        return {p: {"alive": self._alive.get(p, False), "age_s": round(self.clock() - t, 3), "beats": self._beats.get(p, 0)}
                for p, t in self._last.items()}
