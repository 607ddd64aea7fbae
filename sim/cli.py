"""``hil-robot sim-demo task=pick_cube episodes=3 policy=noisy_expert`` — the expert (or a noisy one)
under the simulated operator, with per-episode success, interventions and segment counts, plus an mp4
and a PNG contact sheet of the first episode.

Options: episodes (int), policy (expert | noisy_expert), noise (std of the noisy expert; default
policy.noise_std or 0.6), seed (first episode's seed; default experiment.seed), operator (true/false),
video (mp4 path; "" or false = none), video_episodes (how many episodes to film), max_steps.
Any Hydra override works too, e.g. ``sim.image_height=64 teleop.sim_operator.stall_steps=10``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from hil_robot.cli import FALSE_WORDS, parse_command_args
from hil_robot.config._build import ConfigError

OPTIONS = {"episodes": 3, "policy": "noisy_expert", "noise": -1.0, "seed": -1, "operator": True,
           "video": "runs/sim_demo/{task}.mp4", "video_episodes": 1, "max_steps": 0}
ALIASES = {"task": "sim.task", "render": "sim.render", "control_hz": "robot.control_hz"}
POLICIES = ("expert", "noisy_expert")


def sim_demo(argv: list[str]) -> int:
    opts, cfg = parse_command_args(argv, options=OPTIONS, aliases=ALIASES)
    if opts["policy"] not in POLICIES:
        raise ConfigError(f"policy={opts['policy']!r} is not allowed; choose one of: {', '.join(POLICIES)}")
    if opts["episodes"] < 1:
        raise ConfigError(f"episodes={opts['episodes']} must be >= 1")
    try:
        import sim  # noqa: F401  (sets a headless GL default before MuJoCo loads)
        from sim.expert import make_expert
        from sim.operator import SimulatedOperator
        from sim.render import RenderBackendError
        from sim.robot import SimRobot
        from sim.rollout import run_episode
        from sim.video import contact_sheet, write_mp4
    except RuntimeError as e:  # e.g. MUJOCO_GL names a backend that does not exist
        print(f"hil-robot sim-demo: {e}. Use MUJOCO_GL=egl (apt-get install libegl1 libegl-mesa0 "
              "libgl1-mesa-dri) or MUJOCO_GL=osmesa (apt-get install libosmesa6).", file=sys.stderr)
        return 2
    task = cfg.sim.task
    noise = opts["noise"] if opts["noise"] >= 0 else (cfg.policy.noise_std or 0.6)
    noise = noise if opts["policy"] == "noisy_expert" else 0.0
    seed0 = opts["seed"] if opts["seed"] >= 0 else cfg.experiment.seed
    # video=false / none / off (as for `hil-robot eval video=false`) means no video, not a file named "false"
    raw = str(opts["video"]).strip()
    video = "" if raw.lower() in ("", "none", *FALSE_WORDS) else raw.format(task=task)
    film = bool(video) and opts["video_episodes"] > 0
    print(f"sim-demo: task={task} policy={opts['policy']} noise={noise:g} episodes={opts['episodes']} "
          f"operator={'on' if opts['operator'] else 'off'} control={cfg.robot.control_hz:g} Hz")
    try:
        robot = SimRobot(cfg.sim, cfg.robot, seed=seed0)
        robot.connect()
    except RenderBackendError as e:
        print(f"hil-robot sim-demo: {e}", file=sys.stderr)
        return 2
    policy = make_expert(task, cfg.robot, noise_std=noise, seed=seed0)
    operator = SimulatedOperator(cfg.teleop.sim_operator, task, seed=seed0, robot_cfg=cfg.robot) if opts["operator"] else None
    header = f"{'ep':>3} {'seed':>5} {'success':>7} {'steps':>5} {'interv':>6}  segments"
    print(header)
    n_success, all_frames, t0 = 0, [], time.perf_counter()
    try:
        with robot:
            for ep in range(opts["episodes"]):
                seed = seed0 + ep
                policy.seed(seed)
                if operator is not None:
                    operator.reset(seed)
                res = run_episode(robot, policy, operator, seed=seed, max_steps=opts["max_steps"] or None,
                                  record_video=film and ep < opts["video_episodes"])
                n_success += res.success
                all_frames += res.frames
                segs = " ".join(f"{k}={v}" for k, v in res.segment_counts.items())
                print(f"{ep:>3} {seed:>5} {str(res.success):>7} {res.steps:>5} {res.interventions:>6}  {segs}")
    except RenderBackendError as e:  # e.g. render=false but a video was asked for on a machine without GL
        print(f"hil-robot sim-demo: {e} (or pass video= for no video)", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    print(f"success {n_success}/{opts['episodes']} ({dt:.1f} s)")
    if film and all_frames:
        mp4 = write_mp4(all_frames, video, fps=cfg.robot.control_hz)
        sheet = contact_sheet(all_frames, Path(video).with_suffix(".png"))
        print(f"video: {mp4}\ncontact sheet: {sheet}")
    return 0
