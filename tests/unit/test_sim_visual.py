"""Held-out visual variation (sim/visual.py): rendered images differ as configured, the draws are
seeded, held-out offsets lie outside the training ranges, and physics/state are the same under
either appearance distribution."""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np
import pytest

import sim
from hil_robot.config import ConfigError, RobotConfig, SimConfig
from hil_robot.config.sim import VisualRanges
from hil_robot.rotations import relative_rotvec
from sim.expert import make_expert
from sim.visual import offsets

SMALL = dict(image_height=32, image_width=32)


def _rollout(visual: str, seed: int, task: str = "pick_cube", steps: int = 12, render: bool = True):
    env = sim.make_env(SimConfig(task=task, visual=visual, render=render, **SMALL), RobotConfig(), seed=seed)
    obs, _ = env.reset()
    expert = make_expert(task, env.robot_cfg)
    frames, states = [], []
    for _ in range(steps):
        frames.append({k: v.copy() for k, v in obs.items() if k.startswith("images/")})
        states.append(np.concatenate([obs["state"], obs["task_state"]]))
        obs, *_ = env.step(expert.act(obs))
    world = env.robot._w
    model = {"rgba": world.model.geom_rgba.copy(), "light_dir": world.model.light_dir.copy(),
             "light_diffuse": world.model.light_diffuse.copy(), "cam_pos": world.model.cam_pos.copy(),
             "cam_quat": world.model.cam_quat.copy(), "qpos": world.data.qpos.copy()}
    env.close()
    return frames, np.array(states), model


@pytest.mark.parametrize("task", ["pick_cube", "stack_cubes"])
def test_heldout_changes_the_images_and_nothing_of_the_physics(task):
    f_train, s_train, m_train = _rollout("train", seed=3, task=task)
    f_held, s_held, m_held = _rollout("heldout", seed=3, task=task)
    np.testing.assert_array_equal(s_train, s_held)  # state and task state, every step: bit for bit
    np.testing.assert_array_equal(m_train["qpos"], m_held["qpos"])
    for cam in ("images/front", "images/wrist"):
        diff = np.abs(f_train[0][cam].astype(int) - f_held[0][cam].astype(int)).mean()
        assert diff > 3.0, f"{cam}: held-out appearance did not change the image (mean abs diff {diff:.2f})"


def test_appearance_is_seeded_and_varies_across_seeds():
    a, _, ma = _rollout("heldout", seed=5, steps=2)
    b, _, mb = _rollout("heldout", seed=5, steps=2)
    c, _, mc = _rollout("heldout", seed=6, steps=2)
    for cam in a[0]:
        np.testing.assert_array_equal(a[0][cam], b[0][cam])
    np.testing.assert_array_equal(ma["rgba"], mb["rgba"])
    assert not np.array_equal(ma["rgba"], mc["rgba"]), "another seed drew the same colours"
    assert not np.array_equal(a[0]["images/front"], c[0]["images/front"])


def _world_visuals(visual: str, seed: int, **ranges):
    cfg = SimConfig(visual=visual, render=False, **ranges)
    w = sim.make_env(cfg, RobotConfig(), seed=seed, render=False).robot._w
    w.reset(seed)
    return w, cfg


def test_heldout_offsets_lie_beyond_the_training_ranges_and_train_offsets_within():
    train = SimConfig().visual_train
    for seed in range(6):
        for visual in ("train", "heldout"):
            w, cfg = _world_visuals(visual, seed)
            ap, m = w.appearance, w.model
            lo, hi = (0.0, train) if visual == "train" else (train, cfg.visual_heldout)
            lo_of = (lambda k: 0.0) if visual == "train" else (lambda k: getattr(lo, k))
            # table colour offset per channel (nominal 0.62 0.5 0.38: no clipping within these ranges)
            d = np.abs(m.geom_rgba[ap.table, :3] - ap.rgba0[ap.table, :3])
            assert np.all(d >= lo_of("table_rgb") - 1e-6) and np.all(d <= getattr(hi, "table_rgb") + 1e-6), (visual, d)
            # key light intensity scale
            s = abs(m.light_diffuse[0, 0] / ap.light_diffuse0[0, 0] - 1.0)
            assert lo_of("light_intensity") - 1e-6 <= s <= hi.light_intensity + 1e-6, (visual, s)
            # front camera position and rotation offsets per axis
            c = ap.front
            dp = np.abs(m.cam_pos[c] - ap.cam_pos0[c])
            assert np.all(dp >= lo_of("camera_pos_m") - 1e-9) and np.all(dp <= hi.camera_pos_m + 1e-9), (visual, dp)
            rot = np.linalg.norm(relative_rotvec(m.cam_quat[c], ap.cam_quat0[c]))
            assert rot <= np.sqrt(3) * hi.camera_rot_rad + 1e-6
            if visual == "heldout":
                assert rot >= lo.camera_rot_rad - 1e-6
            # the arm: untouched in training (robot_rgb 0), tinted when held out
            arm = np.abs(m.geom_rgba[ap.arm, :3] - ap.rgba0[ap.arm, :3]).max()
            assert (arm == 0.0) if visual == "train" else (arm > 0.0)


def test_offsets_draw_one_value_each_and_respect_their_bounds():
    u = offsets(np.random.default_rng(0), 2000, 0.3, 0.6)
    assert np.all(np.abs(u) >= 0.3) and np.all(np.abs(u) <= 0.6)
    assert 0.4 < np.mean(u > 0) < 0.6  # both signs
    t = offsets(np.random.default_rng(0), 2000, 0.0, 0.3)
    assert np.all(np.abs(t) <= 0.3) and np.abs(t).min() < 0.01
    r1, r2 = np.random.default_rng(1), np.random.default_rng(1)
    offsets(r1, 7, 0.0, 0.3), offsets(r2, 7, 0.3, 0.6)
    assert r1.random() == r2.random()  # the same number of draws under either distribution


def test_visual_config_errors_say_what_to_do():
    with pytest.raises(ConfigError, match="sim.visual"):
        SimConfig(visual="test")
    with pytest.raises(ConfigError, match="visual_heldout.light_dir.*below.*visual_train.light_dir"):
        SimConfig(visual_heldout=dataclasses.replace(VisualRanges(), light_dir=0.1))
    with pytest.raises(ConfigError, match="visual_train.object_rgb"):
        SimConfig(visual_train=VisualRanges(object_rgb=-0.1))


def test_heldout_applies_even_without_pose_randomisation():
    cfg = SimConfig(visual="heldout", randomize=False, render=False)
    w = sim.make_env(cfg, RobotConfig(), seed=0, render=False).robot._w
    w.reset(0)
    assert not np.array_equal(w.model.geom_rgba, w.appearance.rgba0)
    nominal = sim.make_env(SimConfig(randomize=False, render=False), RobotConfig(), seed=0, render=False).robot._w
    nominal.reset(0)
    np.testing.assert_array_equal(nominal.model.geom_rgba, nominal.appearance.rgba0)
    np.testing.assert_array_equal(w.data.qpos, nominal.data.qpos)
    assert mujoco.mj_name2id(w.model, mujoco.mjtObj.mjOBJ_GEOM, "table_top") == w.appearance.table
