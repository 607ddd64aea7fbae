"""``hil-robot sim-demo`` end to end, its bad-input messages, and the missing-GL message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from hil_robot.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_sim_demo_prints_episodes_and_writes_video(tmp_path, capsys):
    video = tmp_path / "demo.mp4"
    rc = main(["sim-demo", "task=pick_cube", "episodes=2", "policy=noisy_expert", "noise=0.3",
               f"video={video}", "sim.image_height=64", "sim.image_width=64"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = [ln for ln in out.splitlines() if ln.strip().startswith(("0 ", "1 "))]
    assert len(rows) == 2
    assert "success" in out and "autonomous=" in out
    assert video.is_file() and video.with_suffix(".png").is_file()
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (64, 128, 3)  # front + wrist side by side


@pytest.mark.parametrize("off", ["", "false"])
def test_sim_demo_expert_without_video(off, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # video=false must not write a file named 'false' (or anything) here
    rc = main(["sim-demo", "task=peg_insert", "episodes=1", "policy=expert", f"video={off}", "render=false"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "True" in out.splitlines()[2], out  # the expert succeeds
    assert "video:" not in out and not list(tmp_path.iterdir())


def test_unknown_task_lists_valid_tasks(capsys):
    rc = main(["sim-demo", "task=juggle"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "pick_cube, push_target, peg_insert, stack_cubes" in err


def test_bad_option_values_name_the_choices(capsys):
    assert main(["sim-demo", "policy=vla"]) == 2
    assert "expert, noisy_expert" in capsys.readouterr().err
    assert main(["sim-demo", "sim.image_height=-3"]) == 2
    assert "sim.image_height" in capsys.readouterr().err


def test_missing_egl_backend_says_what_to_install(tmp_path):
    env = dict(os.environ, MUJOCO_GL="egl", __EGL_VENDOR_LIBRARY_FILENAMES=str(tmp_path / "none.json"),
               EGL_PLATFORM="surfaceless")
    out = subprocess.run(
        [sys.executable, "-m", "hil_robot", "sim-demo", "task=pick_cube", "episodes=1", "video="],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    if out.returncode == 0:  # a non-glvnd libEGL ignores the vendor override: nothing is missing here
        pytest.skip("could not hide the EGL driver on this machine (libEGL is not glvnd)")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri" in out.stderr
    assert "Traceback" not in out.stderr
