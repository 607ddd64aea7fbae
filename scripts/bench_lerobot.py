"""LeRobot backend: CPU latency of tiny random-weight ACT and SmolVLA, and what serving them through our
policy server costs over calling them in-process — measured in the same run.

    .venv/bin/python scripts/bench_lerobot.py [--quick] [--json PATH] [--n 50]

For each model (built offline by policies/lerobot_tiny.py, 2 cameras 64x64, state 15, chunk 10x7):
  in-process (LeRobot env, one process):  predict_action_chunk alone on a preprocessed batch, and our
                                          LeRobotPolicy.infer (obs mapping + checkpoint processors + model)
  served (serve-policy in the LeRobot env, our PolicyClient in this env over loopback zmq):
                                          round trip per request, and overhead = round trip - the
                                          server's own infer time (codec + sockets + scheduling)
Medians (p50) and p90 in ms. Both sides share this machine's cores, as a policy host and controller
on one box would.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEROBOT_PY = REPO / ".venv-lerobot" / "bin" / "python"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MUJOCO_GL": "egl",
       "PYTHONPATH": str(REPO)}
KINDS = ("act", "smolvla")


def _obs(np):
    rng = np.random.default_rng(0)
    return {"images/front": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
            "images/wrist": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
            "state": rng.uniform(-1, 1, 15).astype(np.float32), "prompt": "pick up the red cube", "timestamp_s": 0.0}


def _pct(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]


def inprocess(kind: str, ckpt: str, n: int) -> dict[str, float]:
    """Runs inside the LeRobot environment."""
    import numpy as np
    import torch

    from policies.lerobot_backend import load_lerobot_policy

    torch.set_num_threads(1)
    policy = load_lerobot_policy(ckpt, kind)
    policy.warm_up()
    obs = _obs(np)
    raw, full = [], []
    batch = policy.pre(policy._batch(obs))
    for _ in range(n):
        t0 = time.perf_counter()
        with torch.inference_mode():
            policy.policy.predict_action_chunk(batch)
        raw.append((time.perf_counter() - t0) * 1e3)
    for _ in range(n):
        t0 = time.perf_counter()
        policy.infer(obs)
        full.append((time.perf_counter() - t0) * 1e3)
    params = sum(p.numel() for p in policy.policy.parameters())
    (r50, r90), (f50, f90) = _pct(raw), _pct(full)
    return {"predict_ms_p50": r50, "predict_ms_p90": r90, "infer_ms_p50": f50, "infer_ms_p90": f90, "params": params}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served(kind: str, ckpt: Path, n: int, log: Path) -> dict[str, float]:
    import numpy as np

    from hil_robot.transport.policy_client import PolicyClient

    port = _free_port()
    proc = subprocess.Popen([str(LEROBOT_PY), "-m", "hil_robot", "serve-policy", "policy=lerobot",
                             f"policy.lerobot_type={kind}", f"policy.checkpoint={ckpt}", f"port={port}"],
                            cwd=REPO, env=ENV, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    client = PolicyClient(f"tcp://127.0.0.1:{port}", timeout_s=30.0, heartbeat_s=None)
    try:
        client.wait_ready(180)
        obs = _obs(np)
        for _ in range(3):
            client.infer(obs)
        rtt, overhead = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            out = client.infer(obs)
            ms = (time.perf_counter() - t0) * 1e3
            rtt.append(ms)
            overhead.append(ms - float(out["timing"]["infer_ms"]))
    finally:
        client.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    (t50, t90), (o50, o90) = _pct(rtt), _pct(overhead)
    return {"served_rtt_ms_p50": t50, "served_rtt_ms_p90": t90, "served_overhead_ms_p50": o50, "served_overhead_ms_p90": o90}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="ACT only, 20 requests per measurement (~1 min)")
    ap.add_argument("--json", default="", help="write {metric: number} here")
    ap.add_argument("--n", type=int, default=100, help="requests per measurement")
    ap.add_argument("--inprocess", nargs=3, metavar=("KIND", "CKPT", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inprocess:  # child mode, in the LeRobot env: build the tiny checkpoint, then time it
        kind, ckpt, n = args.inprocess
        from policies.lerobot_tiny import build_tiny

        build_tiny(kind, ckpt)
        print(json.dumps(inprocess(kind, ckpt, int(n))))
        return 0
    if not LEROBOT_PY.is_file():
        print(f"bench_lerobot: skipped, no LeRobot environment at {LEROBOT_PY} (make lerobot-env)")
        return 0
    n = 20 if args.quick else args.n
    kinds = KINDS[:1] if args.quick else KINDS
    metrics: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench_lerobot_") as tmp:
        for kind in kinds:
            ckpt = Path(tmp) / kind
            child = subprocess.run([str(LEROBOT_PY), __file__, "--inprocess", kind, str(ckpt), str(n)], cwd=REPO, env=ENV,
                                   check=True, capture_output=True, text=True, timeout=600)
            res = json.loads(child.stdout.strip().splitlines()[-1])
            res.update(served(kind, ckpt, n, Path(tmp) / f"{kind}_server.log"))
            metrics.update({f"lerobot_{kind}_{k}": float(v) for k, v in res.items()})
    print(f"LeRobot backend, CPU, 1 thread per process, {n} requests each (ms)")
    print(f"{'model':<9}{'params':>10}{'predict p50':>13}{'infer p50':>11}{'served p50':>12}{'overhead p50':>14}{'overhead p90':>14}")
    for kind in kinds:
        m = {k[len(f'lerobot_{kind}_'):]: v for k, v in metrics.items() if k.startswith(f"lerobot_{kind}_")}
        print(f"{kind:<9}{m['params'] / 1e6:>9.2f}M{m['predict_ms_p50']:>13.1f}{m['infer_ms_p50']:>11.1f}"
              f"{m['served_rtt_ms_p50']:>12.1f}{m['served_overhead_ms_p50']:>14.2f}{m['served_overhead_ms_p90']:>14.2f}")
    print("predict = predict_action_chunk alone; infer = + obs mapping and pre/post-processors (in-process);"
          " served = our client's round trip; overhead = served - server-side infer")
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
