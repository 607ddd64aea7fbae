"""LeRobotDataset v3.0 export: exact layout and schema; import round trip."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hil_robot.data import EpisodeStore, Recorder, synthetic
from hil_robot.data.lerobot_import import import_lerobot
from hil_robot.data.cli import export
from hil_robot.data.lerobot_v3 import FileRoller, export_lerobot

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


def assert_same_episodes(store, back):
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
            assert err < 8.0, f"{meta.episode_id} {cam}: video round trip mean error {err:.1f}"
        assert (a.final_obs is None) == (b.final_obs is None)
        if a.final_obs is not None:
            np.testing.assert_array_equal(a.final_frame("front"), b.final_frame("front"))  # PNG: lossless


def test_round_trip_back_into_a_store(store, tmp_path):
    export_lerobot(store, tmp_path / "lr")
    metas = import_lerobot(tmp_path / "lr", EpisodeStore(tmp_path / "back", image_codec="zstd"))
    assert [m.episode_id for m in metas] == ["demo0", "run1", "run2"]
    assert_same_episodes(store, EpisodeStore(tmp_path / "back", read_only=True))


def test_import_refuses_other_versions(tmp_path):
    (tmp_path / "old/meta").mkdir(parents=True)
    (tmp_path / "old/meta/info.json").write_text(json.dumps({"codebase_version": "v2.1"}))
    with pytest.raises(ValueError, match="v2.1"):
        import_lerobot(tmp_path / "old", tmp_path / "s")


def test_file_roller_places_whole_episodes_like_lerobot():
    roller = FileRoller(limit_bytes=10, chunks_size=2)
    placed = [roller.place(n) for n in (4, 4, 4, 4, 10, 1, 12, 3)]
    assert placed == [
        (0, 0, True), (0, 0, False),  # 8 < 10: same file
        (0, 1, True), (0, 1, False),  # 8 + 4 >= 10: next file
        (1, 0, True),                 # file index 1 was the last of chunk 0 (chunks_size 2)
        (1, 1, True),                 # 10 + 1 >= 10
        (2, 0, True), (2, 1, True),   # an episode over the limit gets a file of its own
    ]
    exact = FileRoller(limit_bytes=10, chunks_size=1000)
    assert [exact.place(n)[:2] for n in (6, 3, 1)] == [(0, 0), (0, 0), (0, 1)]  # 9 + 1 == limit rolls over


def _files(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _episode_rows(out):
    rows = []
    for path in sorted((out / "meta/episodes").glob("chunk-*/file-*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return sorted(rows, key=lambda r: r["episode_index"])


def _assert_rows_point_into_their_files(out, info):
    """Every episode's data/video/meta indices name existing files holding exactly its frames."""
    video_keys = [k for k, ft in info["features"].items() if ft["dtype"] == "video"]
    frames_per_video: dict = {}
    for e in _episode_rows(out):
        data = out / info["data_path"].format(chunk_index=e["data/chunk_index"], file_index=e["data/file_index"])
        rows = [r for r in pq.read_table(data).to_pylist() if r["episode_index"] == e["episode_index"]]
        assert [r["index"] for r in rows] == list(range(e["dataset_from_index"], e["dataset_to_index"]))
        assert [r["frame_index"] for r in rows] == list(range(e["length"]))
        meta = out / "meta/episodes/chunk-{:03d}/file-{:03d}.parquet".format(
            e["meta/episodes/chunk_index"], e["meta/episodes/file_index"])
        assert e["episode_index"] in pq.read_table(meta).column("episode_index").to_pylist()
        for vk in video_keys:
            video = out / info["video_path"].format(video_key=vk, chunk_index=e[f"videos/{vk}/chunk_index"],
                                                    file_index=e[f"videos/{vk}/file_index"])
            assert video.is_file(), video
            assert e[f"videos/{vk}/to_timestamp"] - e[f"videos/{vk}/from_timestamp"] == pytest.approx(e["length"] / info["fps"])
            frames_per_video.setdefault(video, []).append((e[f"videos/{vk}/from_timestamp"], e[f"videos/{vk}/to_timestamp"]))
    for video, spans in frames_per_video.items():  # episodes lie back to back from the file's start
        spans.sort()
        assert spans[0][0] == 0.0 and all(a[1] == pytest.approx(b[0]) for a, b in zip(spans, spans[1:])), video
        cap = cv2.VideoCapture(str(video))
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == round(spans[-1][1] * info["fps"]), video
        cap.release()


def test_tiny_size_limits_give_one_file_per_episode_across_chunk_folders(store, tmp_path):
    out = tmp_path / "lr"
    info = export_lerobot(store, out, chunks_size=2, data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6)
    assert info["chunks_size"] == 2 and info["data_files_size_in_mb"] == 1e-6 and info["video_files_size_in_mb"] == 1e-6
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    placed = ["chunk-000/file-000", "chunk-000/file-001", "chunk-001/file-000"]
    assert _files(out) == sorted(
        [f"data/{p}.parquet" for p in placed] + [f"meta/episodes/{p}.parquet" for p in placed]
        + ["meta/info.json", "meta/stats.json", "meta/tasks.parquet"]
        + [f"videos/observation.images.{cam}/{p}.mp4" for cam in ("front", "wrist") for p in placed])
    eps = _episode_rows(out)
    assert [(e["data/chunk_index"], e["data/file_index"]) for e in eps] == [(0, 0), (0, 1), (1, 0)]
    assert [(e["videos/observation.images.wrist/chunk_index"], e["videos/observation.images.wrist/file_index"]) for e in eps] == [
        (0, 0), (0, 1), (1, 0)]
    assert [e["videos/observation.images.front/from_timestamp"] for e in eps] == [0.0, 0.0, 0.0]
    _assert_rows_point_into_their_files(out, info)
    import_lerobot(out, EpisodeStore(tmp_path / "back", image_codec="zstd"))
    assert_same_episodes(store, EpisodeStore(tmp_path / "back", read_only=True))


def test_size_limits_group_whole_episodes_and_files_stay_under_them(store, tmp_path):
    single = tmp_path / "single"  # one episode per file: the size of each episode alone
    export_lerobot(store, single, data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6)
    mib = 1024 ** 2
    d = [(single / f"data/chunk-000/file-00{i}.parquet").stat().st_size for i in range(3)]
    v = [(single / f"videos/observation.images.front/chunk-000/file-00{i}.mp4").stat().st_size for i in range(3)]
    w = [(single / f"videos/observation.images.wrist/chunk-000/file-00{i}.mp4").stat().st_size for i in range(3)]
    data_mb, front_mb = (d[0] + d[1] + d[2] / 2) / mib, (v[0] + v[1] + v[2] / 2) / mib  # room for episodes 0+1, not 2
    out = tmp_path / "lr"
    info = export_lerobot(store, out, data_files_size_in_mb=data_mb, video_files_size_in_mb=front_mb)
    data_files = sorted(out.glob("data/chunk-000/file-*.parquet"))
    assert [pq.read_table(p).column("episode_index").to_pylist() for p in data_files] == [[0] * 6 + [1] * 10, [2] * 4]
    assert data_files[0].stat().st_size < data_mb * mib
    front = sorted(out.glob("videos/observation.images.front/chunk-000/*.mp4"))
    assert [p.name for p in front] == ["file-000.mp4", "file-001.mp4"] and front[0].stat().st_size < front_mb * mib
    eps = _episode_rows(out)
    vk = "videos/observation.images.front"
    assert [(e[f"{vk}/file_index"], e[f"{vk}/from_timestamp"], e[f"{vk}/to_timestamp"]) for e in eps] == [
        (0, 0.0, pytest.approx(0.6)), (0, pytest.approx(0.6), pytest.approx(1.6)), (1, 0.0, pytest.approx(0.4))]
    wrist = FileRoller(front_mb * mib, 1000)  # each camera rolls on its own sizes (same limit here)
    assert [e["videos/observation.images.wrist/file_index"] for e in eps] == [wrist.place(n)[1] for n in w]
    _assert_rows_point_into_their_files(out, info)
    metas = import_lerobot(out, EpisodeStore(tmp_path / "back", image_codec="zstd"))
    assert [m.episode_id for m in metas] == ["demo0", "run1", "run2"]
    assert_same_episodes(store, EpisodeStore(tmp_path / "back", read_only=True))


def test_import_names_the_file_an_episode_points_at_when_it_is_missing(store, tmp_path):
    out = tmp_path / "lr"
    export_lerobot(store, out, data_files_size_in_mb=1e-6)
    (out / "data/chunk-000/file-001.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="episode 1 points at .*file-001.parquet"):
        import_lerobot(out, EpisodeStore(tmp_path / "back"))


def test_export_command_takes_the_size_options(store, tmp_path, capsys):
    out = tmp_path / "lr"
    argv = [str(store.root), "--out", str(out), "--chunks-size", "2", "--data-files-size-in-mb", "1e-6",
            "--video-files-size-in-mb", "1e-6"]
    assert export(argv) == 0
    assert "3 data file(s), 6 video file(s)" in capsys.readouterr().out
    info = json.loads((out / "meta/info.json").read_text())
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (2, 1e-6, 1e-6)
    assert (out / "data/chunk-001/file-000.parquet").is_file()
    assert export([str(store.root), "--out", str(tmp_path / "bad"), "--data-files-size-in-mb", "0"]) == 2
    assert "data_files_size_in_mb=0.0 must be > 0" in capsys.readouterr().out and not (tmp_path / "bad").exists()
