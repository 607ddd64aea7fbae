"""``hil-robot collect-demos | inspect | export | render`` (see docs/data.md).

    hil-robot collect-demos task=pick_cube episodes=20 out=runs/demos/pick_cube
    hil-robot inspect runs/demos/pick_cube
    hil-robot export runs/demos/pick_cube --format lerobot --out runs/pick_cube_lerobot
    hil-robot render runs/demos/pick_cube --episode 3 --out ep3.mp4
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import cv2
import numpy as np

from hil_robot.cli import parse_command_args
from hil_robot.config import ConfigError
from hil_robot.data import codec as codecs
from hil_robot.data.format import StoreError
from hil_robot.data.recorder import Recorder
from hil_robot.data.store import EpisodeStore
from hil_robot.types import INTERVENTION_SEGMENTS, SEGMENT_ORDER, Segment, StepRecord

log = logging.getLogger(__name__)
_SHORT = {"autonomous": "aut", "pre_intervention": "pre", "recovery": "rec", "correction": "cor", "demo": "demo",
          "perturbation": "pert"}
SEGMENT_COLOURS = {  # RGB strip under rendered frames
    Segment.AUTONOMOUS: (60, 140, 230), Segment.PRE_INTERVENTION: (240, 200, 40), Segment.RECOVERY: (230, 80, 50),
    Segment.CORRECTION: (230, 50, 200), Segment.DEMO: (60, 190, 90), Segment.PERTURBATION: (120, 120, 120),
}


def collect_demos(argv: list[str]) -> int:
    """Scripted expert in the sim -> ``demo`` episodes in a store (failures kept unless keep_failures=false)."""
    opts, cfg = parse_command_args(
        argv, options={"episodes": 5, "out": "", "seed": 0, "image_codec": codecs.DEFAULT_CODEC, "keep_failures": True, "noise_std": 0.0},
        aliases={"task": "sim.task", "max_steps": "sim.max_episode_steps"},
    )
    import sim  # lazy: only this command needs MuJoCo

    out = Path(opts["out"] or f"runs/demos/{cfg.sim.task}")
    store = EpisodeStore(out, image_codec=opts["image_codec"])
    sim_time = [0.0]
    robot = sim.SimRobot(cfg.sim, cfg.robot, seed=opts["seed"], clock=lambda: sim_time[0])
    expert = sim.expert.make_expert(cfg.sim.task, cfg.robot, noise_std=opts["noise_std"], seed=opts["seed"])
    dt = 1.0 / cfg.robot.control_hz
    recorder = Recorder(store, cfg.learner.pre_intervention_k, task=cfg.sim.task, robot=cfg.robot.name, operator="scripted_expert")
    successes = 0
    t0 = time.monotonic()
    with robot:
        for i in range(opts["episodes"]):
            seed = opts["seed"] + i
            expert.reset()
            obs = robot.reset(seed)
            eid = f"demo-{cfg.sim.task}-{seed:05d}-{uuid.uuid4().hex[:6]}"
            recorder.start_episode(eid, seed=seed)
            status = robot.task_status()
            for t in range(cfg.sim.max_episode_steps):
                action = np.asarray(expert.infer(obs)["actions"][0], np.float32)
                sent = robot.send_action(action)
                sim_time[0] += dt
                status = robot.task_status()
                terminal = bool(status["success"] or status["failed"])
                last = terminal or t == cfg.sim.max_episode_steps - 1
                recorder.add(StepRecord(
                    episode_id=eid, step=t, observation=obs, action_executed=sent.action, action_policy=action,
                    source="human", segment=Segment.DEMO, instruction=str(obs.get("prompt", "")), policy_version=-1,
                    reward=1.0 if status["success"] else 0.0, done=terminal, truncated=last and not terminal,
                    success=bool(status["success"]), timestamp_s=sim_time[0], obs_timestamp_s=float(obs["timestamp_s"]),
                    operator_id="scripted_expert", device_id="sim", safety_flags=tuple(sent.limits),
                ))
                obs = robot.observe()
                if last:
                    break
            if status["success"] or opts["keep_failures"]:
                meta = recorder.end_episode(bool(status["success"]), final_observation=obs, subtask=status.get("subtask", ""))
                successes += int(meta.success)
                print(f"episode {i + 1}/{opts['episodes']}: {meta.episode_id} {meta.num_steps} steps success={meta.success}")
            else:
                recorder.abort_episode()
                print(f"episode {i + 1}/{opts['episodes']}: failed, discarded (keep_failures=false)")
    store.close()
    print(f"{successes}/{opts['episodes']} successful demos in {out} ({time.monotonic() - t0:.1f} s)")
    return 0


def inspect(argv: list[str]) -> int:
    """Print one row per episode: steps, success, segment counts, takeovers, intervention rate."""
    opts, _ = parse_command_args(argv, options={"limit": 0}, positional=("path",))
    store = EpisodeStore(opts["path"], read_only=True)
    print(format_table(store, opts["limit"]))
    return 1 if store.errors else 0


def format_table(store: EpisodeStore, limit: int = 0) -> str:
    cols = [_SHORT[s.value] for s in SEGMENT_ORDER]
    head = f"{'idx':>5} {'episode':<28} {'task':<12} {'steps':>5} {'ok':>3} " + " ".join(f"{c:>5}" for c in cols)
    head += f" {'takeovers':>9} {'interv%':>7}"
    lines = [head, "-" * len(head)]
    entries = store.entries()
    shown = entries[-limit:] if limit else entries
    tot_steps = tot_inter = tot_ok = tot_take = 0
    tot_seg = dict.fromkeys(cols, 0)
    for idx, m, _ in entries:
        inter = sum(m.segment_counts.get(s.value, 0) for s in INTERVENTION_SEGMENTS)
        tot_steps += m.num_steps
        tot_inter += inter
        tot_ok += int(m.success)
        tot_take += m.num_interventions
        for s in SEGMENT_ORDER:
            tot_seg[_SHORT[s.value]] += m.segment_counts.get(s.value, 0)
        if (idx, m, _) in shown:
            flag = "R" if m.extra.get("recovered") else ""
            lines.append(
                f"{idx:>5} {(m.episode_id + flag)[:28]:<28} {m.task[:12]:<12} {m.num_steps:>5} {'yes' if m.success else 'no':>3} "
                + " ".join(f"{m.segment_counts.get(s.value, 0):>5}" for s in SEGMENT_ORDER)
                + f" {m.num_interventions:>9} {100.0 * inter / max(1, m.num_steps):>6.1f}%"
            )
    lines.append("-" * len(head))
    n = len(entries)
    lines.append(
        f"{'all':>5} {f'{n} episodes, {tot_ok} successful':<28} {'':<12} {tot_steps:>5} {100.0 * tot_ok / max(1, n):>2.0f}% "
        + " ".join(f"{tot_seg[c]:>5}" for c in cols) + f" {tot_take:>9} {100.0 * tot_inter / max(1, tot_steps):>6.1f}%"
    )
    if store.in_progress():
        lines.append(f"being written (or awaiting recovery): {', '.join(store.in_progress())}")
    for name, err in sorted(store.errors.items()):
        lines.append(f"ERROR {name}: {err}")
    return "\n".join(lines)


def export(argv: list[str]) -> int:
    """``export PATH --format lerobot [--out DIR] [--fps N] [--overwrite true] [--chunks-size N]
    [--data-files-size-in-mb MB] [--video-files-size-in-mb MB]`` (LeRobot v3 defaults 1000 / 100 / 500)."""
    from hil_robot.data import lerobot_v3

    opts, _ = parse_command_args(argv, options={
        "format": "lerobot", "out": "", "fps": 0, "overwrite": False, "chunks_size": lerobot_v3.CHUNKS_SIZE,
        "data_files_size_in_mb": float(lerobot_v3.DATA_FILES_SIZE_IN_MB),
        "video_files_size_in_mb": float(lerobot_v3.VIDEO_FILES_SIZE_IN_MB)}, positional=("path",))
    if opts["format"] != "lerobot":
        raise ConfigError(f"export format={opts['format']!r} is not supported; choose: lerobot")
    out = opts["out"] or str(Path(opts["path"]).with_name(Path(opts["path"]).name + "_lerobot"))
    try:
        info = lerobot_v3.export_lerobot(
            opts["path"], out, fps=opts["fps"] or None, overwrite=opts["overwrite"], chunks_size=opts["chunks_size"],
            data_files_size_in_mb=opts["data_files_size_in_mb"], video_files_size_in_mb=opts["video_files_size_in_mb"])
    except (FileExistsError, ValueError, StoreError) as e:
        print(f"hil-robot export: {e}")
        return 2
    n_data = len(list(Path(out).glob("data/chunk-*/file-*.parquet")))
    n_video = len(list(Path(out).glob("videos/*/chunk-*/file-*.mp4")))
    print(f"wrote LeRobotDataset {info['codebase_version']} to {out}: {info['total_episodes']} episodes, "
          f"{info['total_frames']} frames, fps {info['fps']}; {n_data} data file(s), {n_video} video file(s)")
    return 0


def render(argv: list[str]) -> int:
    """``render PATH --episode I [--out FILE.mp4] [--fps N]``: all cameras side by side + segment strip."""
    opts, cfg = parse_command_args(argv, options={"episode": "0", "out": "", "fps": 0}, positional=("path",))
    store = EpisodeStore(opts["path"], read_only=True)
    key: int | str = int(opts["episode"]) if str(opts["episode"]).isdigit() else opts["episode"]
    try:
        ep = store.read_episode(key)
    except KeyError as e:
        print(f"hil-robot render: {e.args[0]}")
        return 2
    out = Path(opts["out"] or f"{Path(opts['path']).name}_episode{ep.index}.mp4")
    fps = opts["fps"] or int(round(cfg.robot.control_hz))
    frames = episode_frames(ep)
    write_mp4(frames, out, fps)
    print(f"wrote {out}: episode {ep.meta.episode_id} ({len(ep)} steps, cameras {', '.join(ep.cameras)}) at {fps} fps")
    return 0


def episode_frames(ep) -> np.ndarray:
    """uint8 [N, H + 14, W * cameras, 3]: cameras side by side, a strip coloured by segment below."""
    cams = [ep.frames(c) for c in ep.cameras]
    if not cams:
        raise StoreError(f"episode {ep.meta.episode_id!r} has no camera images to render")
    row = np.concatenate(cams, axis=2)
    n, h, w, _ = row.shape
    out = np.zeros((n, h + 14, w, 3), np.uint8)
    out[:, :h] = row
    for i, seg in enumerate(ep.segments):
        out[i, h:] = SEGMENT_COLOURS[seg]
        cv2.putText(out[i], f"{i} {seg.value}", (2, h + 11), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255), 1)
    return out


def write_mp4(frames: np.ndarray, path: Path, fps: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    n, h, w, _ = frames.shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise StoreError(f"OpenCV cannot write {path}")
    for f in frames:
        writer.write(np.ascontiguousarray(f[:, :, ::-1]))
    writer.release()
