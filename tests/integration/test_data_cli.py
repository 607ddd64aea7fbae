"""collect-demos (scripted expert in the MuJoCo sim) -> inspect -> export -> render."""

from __future__ import annotations

import json

import cv2
import pytest

from hil_robot.cli import main
from hil_robot.data import EpisodeStore, Recorder, synthetic
from hil_robot.data.cli import collect_demos, inspect, render


def test_collect_demos_then_inspect_export_render(tmp_path, capsys):
    pytest.importorskip("mujoco")
    out = tmp_path / "demos"
    assert collect_demos(["task=pick_cube", "episodes=2", f"out={out}", "sim.image_height=64", "sim.image_width=64"]) == 0
    store = EpisodeStore(out, read_only=True)
    metas = store.episodes()
    assert len(metas) == 2 and all(m.segment_counts == {"demo": m.num_steps} for m in metas)
    assert all(m.task == "pick_cube" and m.operator == "scripted_expert" for m in metas)
    ep = store.read_episode(0)
    assert ep.image_shapes == {"front": (64, 64, 3), "wrist": (64, 64, 3)}
    assert ep.columns["obs/task_state"].shape[1] == 14 and ep.final_obs is not None
    assert ep.columns["done"][-1] or ep.columns["truncated"][-1]
    capsys.readouterr()

    assert inspect([str(out)]) == 0
    table = capsys.readouterr().out
    assert metas[0].episode_id[:28] in table and "2 episodes" in table and "demo" in table

    lr = tmp_path / "lr"
    assert main(["export", str(out), "--format", "lerobot", "--out", str(lr)]) == 0
    info = json.loads((lr / "meta/info.json").read_text())
    assert info["total_episodes"] == 2 and info["codebase_version"] == "v3.0"
    assert main(["export", str(out), "--format", "lerobot", "--out", str(lr)]) == 2  # refuses to overwrite

    mp4 = tmp_path / "ep1.mp4"
    assert render([str(out), "--episode", "1", "--out", str(mp4)]) == 0
    cap = cv2.VideoCapture(str(mp4))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == metas[1].num_steps
    assert int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 128  # two 64-px cameras side by side


def test_inspect_shows_interventions_and_errors(tmp_path, capsys):
    store = EpisodeStore(tmp_path / "s")
    synthetic.record_episode(Recorder(store, 2), "run", ["autonomous"] * 6 + ["recovery"] * 2 + ["correction"] * 2, hw=(8, 8))
    (tmp_path / "s" / "episodes" / "000009_junk.hep").write_bytes(b"junk")
    capsys.readouterr()
    assert inspect([str(tmp_path / "s")]) == 1  # a damaged file makes the exit code non-zero
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("0 run"))
    assert row.split()[-2:] == ["1", "40.0%"] and "ERROR 000009_junk.hep" in out
    assert main(["export", str(tmp_path / "s"), "--format", "csv"]) == 2
