"""Learner benchmarks on this CPU (2 threads by default).

* SAC/RLPD update-to-data steps per second at batch 256 with two cameras at 128x128 and 64x64
  (``utd_ratio=2``: one step = 2 critic updates on 2 x 256 samples + 1 actor/temperature update,
  DrQ random shift on obs and next_obs, conv encoders trained through the critic; the batch dict
  comes from the replay as uint8 images, converting it is inside the timed step), compared with
  LeRobot's SAC measured on this machine with the same batch and utd=2: 0.071 / 0.339 steps/s
  (default config) and 0.035 / 0.138 (gym-hil example config, frozen ResNet-10). Goal: >= 10x.
* Weighted-BC steps/s for the default VLA (cpu preset, l1 head, batch 64, two 128x128 cameras,
  horizon-10 action chunks; the full ``WeightedBC.update`` incl. batch conversion).
* VLA ``infer`` p50 and progress-critic inferences/s (``scripts/bench_models.py`` measurements).

    python scripts/bench_learner.py [--quick] [--json out.json] [--threads 2]

JSON keys: sac_updates_per_s_128, sac_updates_per_s_64, wbc_steps_per_s, vla_infer_p50_ms,
critic_infer_per_s (+ sac_ratio_vs_lerobot_128/_64, sac_state_updates_per_s, rl_recipe_updates_per_s,
rl_recipe_vs_no_bc: the RL recipe's update rate and its ratio to the same updates without the BC term).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

# LeRobot SAC, measured on this machine (batch 256, two cameras, utd_ratio=2), UTD steps/s
LEROBOT_SAC = {128: 0.071, 64: 0.339}
LEROBOT_GYM_HIL_RESNET10 = {128: 0.035, 64: 0.138}


def replay_like_batch(n: int, hw: int | None, rng: np.random.Generator, horizon: int = 1) -> dict:
    """A batch with the replay contract's keys, dtypes and shapes (images uint8 [B, H, W, 3])."""
    b: dict = {}
    for p in ("obs/", "next_obs/"):
        b[p + "state"] = rng.normal(size=(n, 15)).astype(np.float32)
        b[p + "task_state"] = rng.normal(size=(n, 14)).astype(np.float32)
        if hw:
            for cam in ("front", "wrist"):
                b[p + f"images/{cam}"] = rng.integers(0, 255, (n, hw, hw, 3), dtype=np.uint8)
    b["action"] = rng.uniform(-1, 1, (n, 7)).astype(np.float32)
    b["actions"] = rng.uniform(-1, 1, (n, horizon, 7)).astype(np.float32)
    b["action_is_pad"] = np.zeros((n, horizon), bool)
    b["reward"] = (rng.random(n) < 0.1).astype(np.float32)
    b["done"] = (rng.random(n) < 0.02).astype(np.float32)
    b["truncated"] = np.zeros(n, np.float32)
    b["weight"] = rng.uniform(0.1, 3, n).astype(np.float32)
    b["segment"] = rng.integers(0, 5, n).astype(np.int8)
    b["instruction"] = ["pick up the red cube and lift it"] * n
    return b


def measure_sac(hw: int | None, threads: int, steps: int, batch: int = 256, utd: int = 2,
                overrides: tuple[str, ...] | None = None) -> dict:
    """Median seconds per UTD step of ``RLPD.update`` (image mode when hw, else state mode);
    ``overrides`` replace the learner selection (e.g. the RL recipe: ``("recipe=rl",)``)."""
    from hil_robot.config import load_config
    from hil_robot.learn.rlpd import RLPD, obs_spec_from_batch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if overrides is None:
        overrides = ("learner=rlpd_image" if hw else "learner=rlpd",)
    # the sampled batch is utd x batch: the config must split it the same way
    cfg = load_config(list(overrides) + [f"learner.utd_ratio={utd}", f"learner.batch_size={batch}"]).learner
    rng = np.random.default_rng(0)
    batches = [replay_like_batch(batch * utd, hw, rng) for _ in range(2)]
    for b in batches:  # the replay's 50/50 demo+intervention vs online draw (rl_demo_fraction)
        b["is_offline"] = (np.arange(len(b["reward"])) < cfg.rl_demo_fraction * len(b["reward"])).astype(np.float32)
    agent = RLPD(cfg, obs_spec_from_batch(batches[0], cfg))
    agent.update(batches[0])  # warm-up (allocations, kernel selection)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        agent.update(batches[i % 2])
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {"steps_per_s": 1.0 / med, "median_s": med, "p90_s": float(np.percentile(times, 90))}


def measure_wbc(threads: int, steps: int, batch: int = 64) -> dict:
    """Median seconds per ``WeightedBC.update`` for the default VLA (cpu preset, l1 head)."""
    from bench_models import make_vla

    from hil_robot.config import load_config
    from hil_robot.learn.weighted_bc import WeightedBC

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    policy = make_vla("cpu", "l1", 128)
    cfg = load_config(["learner=weighted_bc", f"learner.batch_size={batch}"]).learner
    rng = np.random.default_rng(0)
    horizon = policy.config.action_horizon
    batches = [replay_like_batch(batch, 128, rng, horizon) for _ in range(2)]
    algo = WeightedBC(cfg, policy)
    algo.update(batches[0])
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        algo.update(batches[i % 2])
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {"steps_per_s": 1.0 / med, "samples_per_s": batch / med, "params": sum(p.numel() for p in policy.model.parameters())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a spot check in < ~60 s (also on a loaded machine)")
    ap.add_argument("--json", type=str, default="", help="write the flat {metric: number} JSON here")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (default 2; --quick 1: two threads on a loaded 2-core machine wait at "
                         "every op's barrier — an 8 ms VLA call took 2.2 s at load 5.6)")
    args = ap.parse_args(argv)
    th = args.threads or (1 if args.quick else 2)
    res: dict[str, float] = {}
    rows: list[tuple[str, str, float, str]] = []

    # --quick: one timed step after the warm-up for the slow updates (on a loaded 2-core machine a
    # 128x128 RLPD step takes ~6 s, a weighted-BC step ~8 s); the full run is unchanged
    n128, n64 = (1, 1) if args.quick else (10, 20)
    for hw, n in ((128, n128), (64, n64)):
        m = measure_sac(hw, th, n)
        res[f"sac_updates_per_s_{hw}"] = m["steps_per_s"]
        res[f"sac_ratio_vs_lerobot_{hw}"] = m["steps_per_s"] / LEROBOT_SAC[hw]
        rows.append((f"RLPD UTD steps/s, B=256, utd=2, 2 cams {hw}x{hw}", "1/s", m["steps_per_s"],
                     f"{m['steps_per_s'] / LEROBOT_SAC[hw]:.1f}x LeRobot SAC ({LEROBOT_SAC[hw]}), "
                     f"{m['steps_per_s'] / LEROBOT_GYM_HIL_RESNET10[hw]:.1f}x gym-hil ResNet-10 ({LEROBOT_GYM_HIL_RESNET10[hw]})"))
    m = measure_sac(None, th, 2 if args.quick else 100)
    res["sac_state_updates_per_s"] = m["steps_per_s"]
    rows.append(("RLPD UTD steps/s, B=256, utd=2, state only", "1/s", m["steps_per_s"], ""))
    # the RL recipe's learner (recipe=rl: state, utd 2, the Q-filtered BC term), anchored to the
    # same updates without the BC term (learner.rl_bc_weight=0), measured alternately
    n_rl = 2 if args.quick else 60
    rl, nobc = [], []
    for _ in range(3):
        rl.append(measure_sac(None, th, n_rl, utd=2, overrides=("recipe=rl",))["steps_per_s"])
        nobc.append(measure_sac(None, th, n_rl, utd=2, overrides=("recipe=rl", "learner.rl_bc_weight=0"))["steps_per_s"])
    res["rl_recipe_updates_per_s"] = float(np.median(rl))
    res["rl_recipe_vs_no_bc"] = float(np.median(rl) / np.median(nobc))
    rows.append(("RL recipe updates/s (recipe=rl: B=256, utd 2, state, Q-filtered BC)", "1/s", res["rl_recipe_updates_per_s"],
                 f"{res['rl_recipe_vs_no_bc']:.2f}x the same without the BC term ({np.median(nobc):.1f}/s)"))

    w = measure_wbc(th, 1 if args.quick else 8)
    res["wbc_steps_per_s"] = w["steps_per_s"]
    rows.append(("weighted-BC steps/s, default VLA, B=64, 2x128x128", "1/s", w["steps_per_s"],
                 f"{w['samples_per_s']:.0f} samples/s, {w['params'] / 1e6:.1f} M params"))

    from bench_models import measure_critic_infer, measure_vla_infer

    v = measure_vla_infer("cpu", "l1", th, n=5 if args.quick else 50)
    res["vla_infer_p50_ms"] = v["p50_ms"]
    rows.append(("VLA infer p50, batch 1, 2x128x128", "ms", v["p50_ms"], "goal <= 30 ms"))
    c = measure_critic_infer(32, th, n=2 if args.quick else 20, n_b1=5 if args.quick else 20)
    res["critic_infer_per_s"] = c["per_s"]
    rows.append(("progress critic inferences/s (batch 32)", "1/s", c["per_s"], f"b1 p50 {c['p50_ms_b1']:.1f} ms"))

    width = max(len(r[0]) for r in rows)
    print(f"torch threads: {th}")
    print(f"{'metric':<{width}}  {'value':>10}  unit  note")
    for name, unit, value, note in rows:
        print(f"{name:<{width}}  {value:>10.3f}  {unit:<4}  {note}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
