"""A device that replays recorded ``OperatorInput`` samples (one per ``read``), for tests and for
driving the operator stack without hardware."""

from __future__ import annotations

import time
from typing import Iterable

import numpy as np

from teleop.base import Clock, Device, OperatorInput


class ReplayDevice(Device):
    kind = "replay"

    def __init__(self, samples: Iterable[OperatorInput] = (), *, pose_based: bool = False, clock: Clock = time.monotonic):
        super().__init__(clock)
        self.samples = list(samples)
        self.pose_based = pose_based
        self.index = 0
        self.opened = False

    def open(self) -> None:
        self.opened = True

    def close(self) -> None:
        self.opened = False

    def read(self) -> OperatorInput:
        if not self.samples:
            return OperatorInput(timestamp_s=self.clock(), motion=np.zeros(6, dtype=np.float32))
        s = self.samples[min(self.index, len(self.samples) - 1)]
        self.index += 1
        return s
