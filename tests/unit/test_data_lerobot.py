"""LeRobotDataset v3.0 export: exact layout and schema; import round trip."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hil_robot.data import EpisodeStore, Recorder, synthetic
from hil_robot.data.lerobot_import import import_lerobot
from hil_robot.data.lerobot_v3 import export_lerobot

A, R, C, D = "autonomous", "recovery", "correction", "demo"
KW = {"hw": (32, 48)}


@pytest.fixture
def store(tmp_path):
    s = EpisodeStore(tmp_path / "store", image_codec="zstd")
    rec = Recorder(s, 2, robot="sim_panda")
    synthetic.record_episode(rec, "demo0", [D] * 6, episode=0, **KW)
    synthetic.record_episode(rec, "run1", [A] * 5 + [R] * 2 + [C] * 3, episode=1, terminal=False, **KW)
    synthetic.record_episode(rec, "run2", [A] * 4, episode=2, final_obs=False, success=False, **KW)
    return s


def test_export_has_the_v3_layout_and_schema(store, tmp_path):
    out = tmp_path / "lr"
    export_lerobot(store, out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == [
        "data/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-000.parquet", "meta/info.json",
        "meta/stats.json", "meta/tasks.parquet",
        "videos/observation.images.front/chunk-000/file-000.mp4", "videos/observation.images.wrist/chunk-000/file-000.mp4",
    ]
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["robot_type"] == "sim_panda"
    assert info["total_episodes"] == 3 and info["total_frames"] == 20 and info["total_tasks"] == 1
    assert info["splits"] == {"train": "0:3"} and info["chunks_size"] == 1000
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    feats = info["features"]
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert key in feats and feats[key]["shape"] == [1]
    assert feats["observation.images.front"]["dtype"] == "video" and feats["observation.images.front"]["shape"] == [32, 48, 3]
    assert feats["observation.images.front"]["names"] == ["height", "width", "channels"]
    assert feats["observation.state"] == {"dtype": "float32", "shape": [15], "names": feats["observation.state"]["names"]}
    assert feats["action"]["shape"] == [7] and feats["segment"]["names"][2] == "recovery"
    assert all("/" not in k for k in feats)

    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert set(data.column_names) == {k for k, ft in feats.items() if ft["dtype"] != "video"}
    assert data.schema.field("observation.state").type == pa.list_(pa.float32(), 15)
    assert data.schema.field("action").type == pa.list_(pa.float32(), 7)
    assert data.schema.field("index").type == pa.int64() and data.schema.field("timestamp").type == pa.float32()
    assert data.column("index").to_pylist() == list(range(20))
    assert data.column("frame_index").to_pylist()[:7] == [0, 1, 2, 3, 4, 5, 0]
    rows = data.to_pylist()
    run1 = [r for r in rows if r["episode_index"] == 1]
    assert [r["is_intervention"] for r in run1] == [False] * 5 + [True] * 5
    assert sum(r["segment"] == 1 for r in run1) == 2  # two pre_intervention steps before the takeover
    assert run1[-1]["next.truncated"] and not run1[-1]["next.done"]

    eps = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(e["episode_index"], e["length"], e["dataset_from_index"], e["dataset_to_index"]) for e in eps] == [
        (0, 6, 0, 6), (1, 10, 6, 16), (2, 4, 16, 20)]
    assert eps[1]["videos/observation.images.front/from_timestamp"] == pytest.approx(0.6)
    assert eps[1]["videos/observation.images.front/to_timestamp"] == pytest.approx(1.6)
    for key in ("tasks", "data/chunk_index", "data/file_index", "meta/episodes/chunk_index", "meta/episodes/file_index",
                "stats/action/mean", "videos/observation.images.wrist/chunk_index"):
        assert key in eps[0], key

    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert tasks.column("__index_level_0__").to_pylist() == ["pick up the red cube"]
    assert tasks.column("task_index").to_pylist() == [0]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["__index_level_0__"]

    stats = json.loads((out / "meta/stats.json").read_text())
    for stat in ("min", "max", "mean", "std", "count", "q01", "q50", "q99"):
        assert stat in stats["action"]
    assert np.asarray(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    assert stats["action"]["count"] == [20]


def test_round_trip_back_into_a_store(store, tmp_path):
    export_lerobot(store, tmp_path / "lr")
    metas = import_lerobot(tmp_path / "lr", EpisodeStore(tmp_path / "back", image_codec="zstd"))
    back = EpisodeStore(tmp_path / "back", read_only=True)
    assert [m.episode_id for m in metas] == ["demo0", "run1", "run2"]
    for meta in store.episodes():
        a, b = store.read_episode(meta.episode_id), back.read_episode(meta.episode_id)
        assert b.meta.segment_counts == a.meta.segment_counts and b.meta.success == a.meta.success
        assert b.meta.num_interventions == a.meta.num_interventions
        for col in ("segment", "source", "step", "done", "truncated", "policy_version", "instruction", "operator_id"):
            assert list(a.columns[col]) == list(b.columns[col]), col
        for col in ("action_executed", "action_policy", "obs/state", "obs/task_state", "timestamp_s"):
            np.testing.assert_array_equal(a.columns[col], b.columns[col], err_msg=col)
        assert [tuple(f) for f in a.columns["safety_flags"]] == [tuple(f) for f in b.columns["safety_flags"]]
        for cam in ("front", "wrist"):
            err = np.abs(a.frames(cam).astype(int) - b.frames(cam).astype(int)).mean()
            assert err < 8.0, f"{cam}: video round trip mean error {err:.1f}"
        assert (a.final_obs is None) == (b.final_obs is None)
        if a.final_obs is not None:
            np.testing.assert_array_equal(a.final_frame("front"), b.final_frame("front"))  # PNG: lossless


def test_import_refuses_other_versions(tmp_path):
    (tmp_path / "old/meta").mkdir(parents=True)
    (tmp_path / "old/meta/info.json").write_text(json.dumps({"codebase_version": "v2.1"}))
    with pytest.raises(ValueError, match="v2.1"):
        import_lerobot(tmp_path / "old", tmp_path / "s")
