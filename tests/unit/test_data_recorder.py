"""Recorder: pre-intervention relabelling of the last K autonomous steps before a takeover."""

from __future__ import annotations

import pytest

from hil_robot.data import EpisodeStore, Recorder, synthetic

SMALL = {"hw": (16, 16)}
A, R, C, P = "autonomous", "recovery", "correction", "perturbation"


def _labels(tmp_path, segments, k, flush_every=None):
    store = EpisodeStore(tmp_path / "s", image_codec="raw")
    rec = Recorder(store, k)
    for t, seg in enumerate(segments):
        rec.add(synthetic.step_record("e", t, seg, last=t == len(segments) - 1, **SMALL))
        if flush_every and t % flush_every == 0:
            rec.flush()  # push steps to disk so relabels must go through the overlay
    meta = rec.end_episode(False)
    return [s.value[0:3] for s in store.read_episode("e").segments], meta


@pytest.mark.parametrize("flush_every", [None, 1])
def test_last_k_autonomous_steps_before_takeover_are_relabelled(tmp_path, flush_every):
    labels, meta = _labels(tmp_path, [A] * 6 + [R] * 2 + [C] * 2 + [A] * 4 + [C] * 2, k=3, flush_every=flush_every)
    assert labels == ["aut"] * 3 + ["pre"] * 3 + ["rec"] * 2 + ["cor"] * 2 + ["aut"] + ["pre"] * 3 + ["cor"] * 2
    assert meta.num_interventions == 2
    assert meta.segment_counts == {"autonomous": 4, "pre_intervention": 6, "recovery": 2, "correction": 4}


def test_k_larger_than_the_autonomous_run_only_touches_autonomous_steps(tmp_path):
    labels, _ = _labels(tmp_path, [P, P, A, A, R, A, C], k=15)
    assert labels == ["per", "per", "pre", "pre", "rec", "pre", "cor"]


def test_k_zero_disables_relabelling_and_demos_are_untouched(tmp_path):
    labels, meta = _labels(tmp_path, [A, A, R, R], k=0)
    assert labels == ["aut", "aut", "rec", "rec"] and meta.num_interventions == 1
    labels, meta = _labels(tmp_path / "d", ["demo"] * 5, k=3)
    assert labels == ["dem"] * 5 and meta.num_interventions == 0


def test_recorder_episode_lifecycle(tmp_path):
    store = EpisodeStore(tmp_path / "s")
    with Recorder(store, 2, task="push") as rec:
        m1 = synthetic.record_episode(rec, "a", [A, A, R], **SMALL)
        m2 = synthetic.record_episode(rec, "b", [A, A], episode=1, **SMALL)
        assert rec.episodes_written == 2 and not rec.episode_open
        with pytest.raises(ValueError, match="no open episode"):
            rec.end_episode(True)
        rec.add(synthetic.step_record("c", 0, **SMALL))
        rec.abort_episode()
    assert [m.episode_id for m in EpisodeStore(tmp_path / "s").episodes()] == [m1.episode_id, m2.episode_id]
    assert m1.task == "pick_cube"  # end_episode(task=...) overrides the recorder default
    assert any(p.name.endswith(".aborted") for p in (tmp_path / "s" / "quarantine").iterdir())
