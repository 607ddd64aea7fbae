"""``hil-robot learner wait_episodes=N``: a learner started beside a demo collection builds its
model only once the store holds N finished episodes (so its normalisation sees every demo)."""

from __future__ import annotations

import threading
import time

import pytest

from hil_robot.data import EpisodeStore, Recorder, synthetic
from hil_robot.learn.cli import wait_for_episodes
from hil_robot.types import Segment


def _record(store: EpisodeStore, eid: str) -> None:
    synthetic.record_episode(Recorder(store, 2), eid, [Segment.DEMO] * 6, hw=(24, 32))


def test_returns_once_the_episodes_are_there_and_times_out_naming_the_count(tmp_path):
    store = EpisodeStore(tmp_path / "s")
    _record(store, "a")
    with pytest.raises(TimeoutError, match=r"hold 1 finished episodes.*wait_episodes=2"):
        wait_for_episodes([str(tmp_path / "s")], 2, 0.5, threading.Event())

    writer = threading.Timer(0.4, _record, args=(store, "b"))
    writer.start()
    t0 = time.monotonic()
    wait_for_episodes([str(tmp_path / "s")], 2, 10.0, threading.Event())
    writer.join()
    assert 0.3 < time.monotonic() - t0 < 5.0
    store.close()


def test_a_store_not_created_yet_counts_as_empty_and_stop_ends_the_wait(tmp_path):
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    t0 = time.monotonic()
    wait_for_episodes([str(tmp_path / "not_yet")], 1, 10.0, stop)
    assert time.monotonic() - t0 < 3.0
