"""Episode store: round trip of every field, relabel overlay, final observation, corruption,
single writer, in-process recovery of an unfinished episode."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from hil_robot.data import EpisodeCorruptError, EpisodeStore, Recorder, StoreError, synthetic
from hil_robot.data.store import read_episode_file
from hil_robot.types import Segment

SMALL = {"hw": (24, 32)}


def _record(store, eid, segments, episode=0, **kw):
    return synthetic.record_episode(Recorder(store, 2), eid, segments, episode=episode, **SMALL, **kw)


def test_round_trip_keeps_every_field_lossless(tmp_path):
    store = EpisodeStore(tmp_path / "s")  # default codec: lossless
    rec = Recorder(store, 0, robot="sim_panda", operator="alice")
    sent = [synthetic.step_record("ep-1", t, "autonomous" if t < 3 else "correction", last=t == 5, **SMALL) for t in range(6)]
    for s in sent:
        rec.add(s)
    meta = rec.end_episode(True, final_observation=synthetic.observation(6, **SMALL), task="pick_cube", seed=7, note="x")
    assert meta.num_steps == 6 and meta.success and meta.task == "pick_cube" and meta.seed == 7
    assert meta.robot == "sim_panda" and meta.operator == "alice" and meta.extra["note"] == "x"
    assert meta.segment_counts == {"autonomous": 3, "correction": 3} and meta.num_interventions == 1
    assert meta.policy_versions == [3]
    ep = EpisodeStore(tmp_path / "s", read_only=True).read_episode("ep-1")
    for s in sent:
        got = ep.step_record(s.step)
        for field in ("step", "source", "segment", "instruction", "policy_version", "reward", "done", "truncated", "success",
                      "timestamp_s", "obs_timestamp_s", "operator_id", "device_id", "safety_flags", "language_correction"):
            assert getattr(got, field) == getattr(s, field), field
        np.testing.assert_array_equal(got.action_executed, s.action_executed)
        np.testing.assert_array_equal(got.action_policy, s.action_policy)  # NaNs included
        assert got.critic_progress == pytest.approx(s.critic_progress)
        for key, value in s.observation.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(got.observation[key], value, err_msg=key)
            else:
                assert got.observation[key] == value
    np.testing.assert_array_equal(ep.final_frame("wrist"), synthetic.observation(6, **SMALL)["images/wrist"])
    assert ep.final_obs["obs/state"][0] == 6


def test_jpeg_codec_is_close(tmp_path):
    store = EpisodeStore(tmp_path / "s", image_codec="jpeg")
    _record(store, "e", ["demo"] * 4)
    ep = store.read_episode(0)
    assert ep.codec == "jpeg"
    original = synthetic.observation(2, **SMALL)["images/front"].astype(int)
    assert np.abs(ep.frames("front")[2].astype(int) - original).mean() < 3.0


@pytest.mark.parametrize("codec", ["zstd", "png", "raw"])
def test_other_lossless_codecs_round_trip(tmp_path, codec):
    store = EpisodeStore(tmp_path / "s", image_codec=codec)
    _record(store, "e", ["demo"] * 3)
    ep = store.read_episode("e")
    assert ep.codec == codec
    np.testing.assert_array_equal(ep.frames("wrist")[1], synthetic.observation(1, **SMALL)["images/wrist"])


def test_relabel_after_flush_is_applied_on_read(tmp_path):
    store = EpisodeStore(tmp_path / "s", image_codec="raw")
    w = store.open_episode("e")
    for t in range(5):
        w.add(synthetic.step_record("e", t, "autonomous", **SMALL))
    w.flush()  # steps 0..4 are on disk now
    w.relabel([3, 4], Segment.PRE_INTERVENTION)
    w.add(synthetic.step_record("e", 5, "recovery", last=True, **SMALL))
    meta = w.finalize(False)
    assert meta.segment_counts == {"autonomous": 3, "pre_intervention": 2, "recovery": 1}
    assert [s.value for s in store.read_episode("e").segments] == ["autonomous"] * 3 + ["pre_intervention"] * 2 + ["recovery"]


def test_readers_see_only_finalised_episodes(tmp_path):
    store = EpisodeStore(tmp_path / "s")
    reader = EpisodeStore(tmp_path / "s", read_only=True)
    w = store.open_episode("open-one")
    w.add(synthetic.step_record("open-one", 0, **SMALL))
    w.flush()
    reader.refresh()
    assert len(reader) == 0 and reader.in_progress()
    w.add(synthetic.step_record("open-one", 1, last=True, **SMALL))
    w.finalize(True)
    assert [m.episode_id for m in reader.refresh()] == ["open-one"]
    assert len(reader.read_episode("open-one")) == 2


def test_corrupt_and_foreign_files_are_named_and_the_rest_opens(tmp_path, caplog):
    store = EpisodeStore(tmp_path / "s")
    for i in range(3):
        _record(store, f"ep{i}", ["autonomous"] * 5, episode=i)
    store.close()
    victim = sorted((tmp_path / "s" / "episodes").iterdir())[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # bit rot in the middle: trailer fine, CRC of a chunk wrong
    victim.write_bytes(bytes(data))
    (tmp_path / "s" / "episodes" / "README.txt").write_text("not an episode")
    truncated = sorted((tmp_path / "s" / "episodes").iterdir())[2]
    truncated.write_bytes(truncated.read_bytes()[:-40])
    with caplog.at_level(logging.ERROR):
        s2 = EpisodeStore(tmp_path / "s")
    assert "README.txt" in caplog.text and "ep2" in caplog.text
    assert [m.episode_id for m in s2.episodes()] == ["ep0", "ep1"]  # ep1's trailer still reads
    assert len(s2.read_episode("ep0")) == 5
    with pytest.raises(EpisodeCorruptError, match="ep1"):
        s2.read_episode("ep1")
    with pytest.raises(EpisodeCorruptError, match="ep2"):
        s2.read_episode("ep2")
    with pytest.raises(EpisodeCorruptError):
        read_episode_file(victim)


def test_foreign_folder_and_newer_version_are_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "data.csv").write_text("a,b")
    with pytest.raises(StoreError, match="not an episode store"):
        EpisodeStore(tmp_path / "x")
    with pytest.raises(StoreError, match="no episode store"):
        EpisodeStore(tmp_path / "missing", read_only=True)


def test_one_writer_per_store(tmp_path):
    a = EpisodeStore(tmp_path / "s")
    a.open_episode("e1")
    b = EpisodeStore(tmp_path / "s")
    with pytest.raises(StoreError, match="one writer per store"):
        b.open_episode("e2")
    with pytest.raises(StoreError, match="still open"):
        a.open_episode("e3")


def test_unfinished_episode_is_recovered_on_next_open(tmp_path, caplog):
    store = EpisodeStore(tmp_path / "s")
    rec = Recorder(store, 0)
    for t in range(7):
        rec.add(synthetic.step_record("crashy", t, **SMALL))
    rec.close()  # flushes and releases, without finalising (what a dying process leaves behind)
    # simulate a torn last write: append half a chunk
    part = next((tmp_path / "s" / "incoming").iterdir())
    with open(part, "ab") as f:
        f.write(b"HCK1\x02\x00\x00\x00" + b"\xff" * 5)
    with caplog.at_level(logging.WARNING):
        s2 = EpisodeStore(tmp_path / "s")
    assert "recovered partial episode 'crashy'" in caplog.text
    ep = s2.read_episode("crashy")
    assert len(ep) == 7 and ep.recovered and not ep.meta.success
    assert not s2.in_progress()


def test_finalised_but_not_renamed_episode_is_completed(tmp_path):
    store = EpisodeStore(tmp_path / "s")
    _record(store, "done-one", ["autonomous"] * 4)
    store.close()
    f = next((tmp_path / "s" / "episodes").iterdir())
    f.rename(tmp_path / "s" / "incoming" / f.name)  # as if killed between fsync and rename
    s2 = EpisodeStore(tmp_path / "s")
    ep = s2.read_episode("done-one")
    assert ep.meta.success and not ep.recovered and len(ep) == 4


def test_empty_partial_episode_is_quarantined(tmp_path, caplog):
    store = EpisodeStore(tmp_path / "s")
    w = store.open_episode("nothing")
    w.release()
    with caplog.at_level(logging.WARNING):
        s2 = EpisodeStore(tmp_path / "s")
    assert "quarantined partial episode" in caplog.text
    assert len(s2) == 0 and any(p.name.endswith(".reason.txt") for p in (tmp_path / "s" / "quarantine").iterdir())


def test_bad_steps_are_refused_with_clear_errors(tmp_path):
    store = EpisodeStore(tmp_path / "s")
    rec = Recorder(store, 3)
    with pytest.raises(ValueError, match="first step must be 0"):
        rec.add(synthetic.step_record("e", 2, **SMALL))
    rec.add(synthetic.step_record("e", 0, **SMALL))
    with pytest.raises(ValueError, match="expected step 1"):
        rec.add(synthetic.step_record("e", 3, **SMALL))
    with pytest.raises(ValueError, match="end the episode first"):
        rec.add(synthetic.step_record("other", 1, **SMALL))
    bad = synthetic.step_record("e", 1, **SMALL)
    bad.observation["images/front"] = bad.observation["images/front"][:8]
    with pytest.raises(ValueError, match="changed for \\['images/front'\\]"):
        rec.add(bad)
    bad.observation["images/front"] = {"not": "an array"}
    with pytest.raises(ValueError, match="numbers, numeric arrays or strings"):
        rec.add(bad)
    rec.add(synthetic.step_record("e", 1, last=True, **SMALL))  # nothing was lost by the refusals
    assert rec.end_episode(True).num_steps == 2
    with pytest.raises(StoreError, match="already exists"):
        store.open_episode("e")


def test_background_flusher_writes_idle_steps(tmp_path):
    store = EpisodeStore(tmp_path / "s", flush_interval_s=0.05)
    w = store.open_episode("idle")
    w.add(synthetic.step_record("idle", 0, **SMALL))
    size0 = w.path.stat().st_size
    import time

    deadline = time.monotonic() + 5.0
    while w.path.stat().st_size == size0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert w.path.stat().st_size > size0, "the idle step was never flushed"
    assert os.path.dirname(w.path).endswith("incoming")
