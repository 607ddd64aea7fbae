"""Model benchmarks: VLA ``infer`` latency at batch 1 (two 128x128 cameras, the full Policy path:
validation, instruction lookup, encode, decode, clip) and progress-critic throughput, on this CPU.

    python scripts/bench_models.py [--quick] [--json out.json] [--threads 1,2]

JSON keys (flat): vla_infer_p50_ms (default cpu preset, l1 head, 2 threads), vla_infer_p50_ms_1thread,
vla_flow_infer_p50_ms, vla_params_cpu, vla_params_gpu, vla_gpu_preset_infer_p50_ms (on this CPU,
informational), critic_infer_per_s (frame pairs/s at batch 32, 2 threads), critic_infer_p50_ms_b1,
critic_params. ``measure_*`` functions are importable (scripts/bench_learner.py uses them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _obs(rng: np.random.Generator, hw: int = 128, cameras: tuple[str, ...] = ("front", "wrist")) -> dict:
    obs = {f"images/{c}": rng.integers(0, 255, (hw, hw, 3), dtype=np.uint8) for c in cameras}
    obs.update(state=rng.normal(size=15).astype(np.float32), prompt="pick up the red cube and lift it", timestamp_s=0.0)
    return obs


def make_vla(size: str = "cpu", head: str = "l1", hw: int = 128):
    from hil_robot.config import PolicyConfig, RootConfig
    from policies.vla import make_vla_policy

    cfg = RootConfig(policy=PolicyConfig(size=size, head=head))
    cfg.sim.image_height = cfg.sim.image_width = hw
    return make_vla_policy(cfg)


def measure_vla_infer(size: str = "cpu", head: str = "l1", threads: int = 2, hw: int = 128, n: int = 50) -> dict:
    """p50/p90 ms of ``VLAPolicy.infer`` at batch 1 (after warm-up) and the parameter count."""
    torch.set_num_threads(threads)
    policy = make_vla(size, head, hw)
    rng = np.random.default_rng(0)
    obs = [_obs(rng, hw) for _ in range(4)]
    for o in obs:
        policy.infer(o)  # warm-up (first call embeds the instruction, allocates)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        policy.infer(obs[i % len(obs)])
        times.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "params": int(sum(p.numel() for p in policy.model.parameters()))}


def measure_critic_infer(batch: int = 32, threads: int = 2, hw: int = 64, n: int = 20, n_b1: int = 20) -> dict:
    """Critic frame-pair scores per second through ``LocalCriticBackend.score`` (fresh default net);
    batch-1 latency over max(n, n_b1) calls."""
    from policies.critic import CriticNetConfig, LocalCriticBackend, ProgressCritic

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ProgressCritic(CriticNetConfig(image_hw=(hw, hw)))
    backend = LocalCriticBackend(model)
    rng = np.random.default_rng(0)

    def frames(b: int) -> dict:
        out = {f"images/{c}": rng.integers(0, 255, (b, hw, hw, 3), dtype=np.uint8) for c in model.cfg.cameras}
        out["state"] = rng.normal(size=(b, 15)).astype(np.float32)
        return out

    fa, fb = frames(batch), frames(batch)
    texts = ["pick up the red cube and lift it"] * batch
    backend.score(fa, fb, texts)
    t0 = time.perf_counter()
    for _ in range(n):
        backend.score(fa, fb, texts)
    per_s = batch * n / (time.perf_counter() - t0)
    a1, b1 = frames(1), frames(1)
    lat = []
    for _ in range(max(n, n_b1)):
        t = time.perf_counter()
        backend.score(a1, b1, texts[:1])
        lat.append((time.perf_counter() - t) * 1e3)
    return {"per_s": float(per_s), "p50_ms_b1": float(np.median(lat)),
            "params": int(sum(p.numel() for p in model.parameters()))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (< 60 s)")
    ap.add_argument("--json", type=str, default="", help="write the flat {metric: number} JSON here")
    args = ap.parse_args(argv)
    n = 20 if args.quick else 100
    rows: list[tuple[str, str, float]] = []
    res: dict[str, float] = {}
    # --quick: one thread everywhere (two threads on a loaded 2-core machine wait at every op's
    # barrier: 159 s at load 5.9); the full run measures 2 and 1
    th = 1 if args.quick else 2
    for threads in ((1,) if args.quick else (2, 1)):
        m = measure_vla_infer("cpu", "l1", threads, n=n)
        key = "vla_infer_p50_ms" if threads == 2 else "vla_infer_p50_ms_1thread"
        res[key] = m["p50_ms"]
        res["vla_params_cpu"] = m["params"]
        rows.append((f"VLA cpu/l1 infer p50 ({threads} thr)", "ms", m["p50_ms"]))
        rows.append((f"VLA cpu/l1 infer p90 ({threads} thr)", "ms", m["p90_ms"]))
    m = measure_vla_infer("cpu", "flow", th, n=5 if args.quick else n)  # ~0.6 s a call on a loaded machine
    res["vla_flow_infer_p50_ms"] = m["p50_ms"]
    rows.append((f"VLA cpu/flow (10 steps) infer p50 ({th} thr)", "ms", m["p50_ms"]))
    m = measure_vla_infer("gpu", "l1", th, n=3 if args.quick else max(5, n // 10))  # ~1.7 s a call loaded
    res["vla_params_gpu"] = m["params"]
    res["vla_gpu_preset_infer_p50_ms"] = m["p50_ms"]
    rows.append((f"VLA gpu preset infer p50 on this CPU ({th} thr)", "ms", m["p50_ms"]))
    rows.append(("VLA params cpu preset", "", res["vla_params_cpu"]))
    rows.append(("VLA params gpu preset", "", res["vla_params_gpu"]))
    c = measure_critic_infer(32, th, n=5 if args.quick else 20, n_b1=5 if args.quick else 20)
    res.update(critic_infer_per_s=c["per_s"], critic_infer_p50_ms_b1=c["p50_ms_b1"], critic_params=c["params"])
    rows.append((f"critic pairs/s (batch 32, 2x64x64 cams, {th} thr)", "1/s", c["per_s"]))
    rows.append(("critic infer p50 batch 1", "ms", c["p50_ms_b1"]))
    rows.append(("critic params", "", c["params"]))
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  {'value':>12}  unit")
    for name, unit, value in rows:
        print(f"{name:<{width}}  {value:>12,.2f}  {unit}")
    if args.json:
        Path(args.json).write_text(json.dumps({k: float(v) for k, v in res.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
