"""An episode recorded through ROS (sim_driver in lock-step, controller and recorder as separate
nodes over DDS) matches the same episode recorded without ROS: same steps, actions, states, images,
segments, sources and outcome."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
SEED = 3
# the same overrides for both runs; generous timing limits so a slow tick on a loaded 2-core machine
# (which holds the arm in either run) cannot make the two runs differ for reasons other than ROS
OVERRIDES = ["policy=noisy_expert", "sim.max_episode_steps=60", "robot.control_hz=20",
             "control.max_policy_wait_s=2.0", "control.obs_max_age_s=2.0",
             "robot.safety.watchdog_hold_s=2.0", "robot.safety.watchdog_stop_s=4.0", "sim.image_height=64", "sim.image_width=64"]


def _baseline(store_path: Path) -> None:
    from hil_robot.config import load_config
    from hil_robot.control.loop import Controller
    from hil_robot.data import EpisodeStore, Recorder
    from hil_robot_ros.factories import make_inproc_policy, make_operator
    from sim import SimRobot

    cfg = load_config(OVERRIDES)
    robot = SimRobot(cfg.sim, cfg.robot, seed=SEED)
    robot.connect()
    rec = Recorder(EpisodeStore(store_path, image_codec="png"), pre_intervention_k=cfg.learner.pre_intervention_k,
                   robot=cfg.robot.name)
    ctl = Controller(robot, make_inproc_policy(cfg), make_operator(cfg, SEED), rec, cfg)
    try:
        ctl.run_episode(seed=SEED)
    finally:
        ctl.close()
        rec.close()
        robot.close()


def test_episode_through_ros_matches_episode_without_ros(tmp_path):
    from hil_robot.data import EpisodeStore

    base, via_ros = tmp_path / "base", tmp_path / "ros"
    _baseline(base)
    graph = ["graph.nodes.policy_server.enabled=false", "graph.nodes.policy_bridge.enabled=false",
             "graph.nodes.teleop.enabled=false", "graph.nodes.sim_driver.parameters.mode=lockstep",
             f"+graph.nodes.sim_driver.parameters.seed={SEED}",
             "graph.nodes.controller.parameters.policy_source=inproc",
             "graph.nodes.controller.parameters.operator_source=inproc",
             "graph.nodes.controller.parameters.episodes=1", f"+graph.nodes.controller.parameters.seed={SEED}",
             "+graph.nodes.controller.parameters.lockstep=true",
             f"graph.nodes.recorder.parameters.store_path={via_ros}", "+graph.nodes.recorder.parameters.image_codec=png",
             "+graph.nodes.recorder.restart=never"]
    env = dict(os.environ, ROS_DOMAIN_ID=str(int(os.environ["ROS_DOMAIN_ID"]) + 111))
    # the runner stops when the required controller finishes its episode; the recorder gets 3 s more
    proc = subprocess.run([sys.executable, "-m", "hil_robot", "launch", "sim_pick_cube", *OVERRIDES, *graph,
                           "duration_s=150"], cwd=REPO, env=env, capture_output=True, text=True, timeout=200)
    out = proc.stdout + proc.stderr
    assert "controller: exited (exited with code 0)" in out, out[-4000:]

    a = EpisodeStore(base, read_only=True).read_episode(0)
    ros_store = EpisodeStore(via_ros, read_only=True)
    assert len(ros_store) == 1, "the recorder node wrote no episode:\n" + out[-5000:]
    b = ros_store.read_episode(0)
    counters = (b.meta.extra or {}).get("ros_recorder")
    assert len(a) == len(b) > 5, (len(a), len(b), "recorder counters:", counters, out[-3000:])
    assert a.meta.success == b.meta.success and a.meta.segment_counts == b.meta.segment_counts
    assert a.meta.instruction == b.meta.instruction and a.cameras == b.cameras
    assert set(a.columns) == set(b.columns), set(a.columns) ^ set(b.columns)
    for key in a.columns:
        if "timestamp" in key or key in ("episode_id",):
            continue  # wall/monotonic times and the random episode id differ by nature
        va, vb = a.columns[key], b.columns[key]
        if isinstance(va, dict):
            assert va == vb, key
        elif isinstance(va, np.ndarray) and va.dtype.kind == "f":
            np.testing.assert_array_equal(va, vb, err_msg=key)
        else:
            assert [np.asarray(x).tolist() for x in va] == [np.asarray(x).tolist() for x in vb], key
    for cam in a.cameras:
        np.testing.assert_array_equal(a.frames(cam), b.frames(cam), err_msg=f"images/{cam}")
    print("segments", a.meta.segment_counts, "steps", len(a))
