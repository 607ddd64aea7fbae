"""Delta weight sync benchmark (issue #14): LoRA deltas vs a full-state-dict push of the same model,
on loopback through the real weight bus (``WeightPublisher`` -> tcp -> ``WeightSubscriber``), and
learner updates/s of our VLA with full / LoRA / expert fine-tuning.

* The transport model: a transformer stack built from torch modules (d=1024, 36 layers of
  q/k/v/o + 4x MLP Linear layers: ~453 M parameters, fp32 ~1.8 GB; random init, it is a transport
  benchmark) with peft LoRA r=16 on every attention/MLP Linear. ``--quick`` uses 8 layers of
  d=768 (~57 M) and one torch thread; every row names the model size.
* Staleness = ``publish`` called on the learner side -> the subscriber's owner has *installed* the
  update (``apply_pending`` at its boundary, polled every 1 ms): serialisation, checksum, chunking,
  loopback transfer, assembly, validation (shapes, finite) and the copy into the model. Publisher
  and subscriber live in one process on two threads (one clock; the GIL is shared, so this is if
  anything pessimistic). The subscriber starts with another random base, so the first delta makes
  it resync base + delta over the resync endpoint: that time is reported as ``resync_s``.
* Learner updates/s: ``WeightedBC.update`` on the cpu-preset VLA (l1 head, two 64x64 cameras,
  batch 8, horizon 10) for learner.finetune = full, lora (r=16), expert.

    python scripts/bench_delta_sync.py [--quick] [--json out.json] [--threads N]

JSON keys: model_params, lora_params, delta_bytes, full_bytes, delta_staleness_p50_ms,
delta_staleness_p99_ms, full_staleness_p50_ms, full_staleness_p99_ms, resync_s,
learner_updates_per_s_full, learner_updates_per_s_lora, learner_updates_per_s_expert.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from hil_robot.transport.weights import WeightPublisher, WeightSubscriber, compute_base_id  # noqa: E402

LORA_TARGETS = ["q", "k", "v", "o", "up", "down"]


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)


def transformer(d: int, layers: int, rank: int, seed: int) -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(seed)
    model = nn.Sequential(*(Block(d) for _ in range(layers)))
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS), model)
    for n, p in model.named_parameters():
        p.requires_grad_(".lora_" in n)
    return model


class ModuleTarget:
    """The weight-updatable side of a served model (what ``VLAPolicy`` implements for the VLA)."""

    def __init__(self, model: nn.Module, rank: int) -> None:
        self.model, self.rank, self.version = model, rank, 0
        self.delta_names = {n for n, p in model.named_parameters() if p.requires_grad}
        self._params = dict(model.named_parameters())
        self.metadata = {"policy_version": 0}

    def adapter_info(self) -> dict:
        return {"finetune": "lora", "rank": self.rank, "targets": sorted(LORA_TARGETS)}

    def _numpy(self, delta: bool | None) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy() for k, v in self.model.state_dict().items()
                if delta is None or (k in self.delta_names) == delta}

    def weight_spec(self) -> dict:
        return {k: (tuple(v.shape), str(v.dtype)) for k, v in self._numpy(None).items()}

    def delta_spec(self) -> dict:
        return {k: (tuple(v.shape), str(v.dtype)) for k, v in self._numpy(True).items()}

    def base_id(self) -> str:
        return compute_base_id(self._numpy(False), self.adapter_info())

    def load_delta(self, weights: dict, version: int) -> None:
        for k, a in weights.items():  # numpy copies, as VLAPolicy.load_delta does on the CPU
            np.copyto(self._params[k].detach().numpy(), a)
        self.version = version

    def load_weights(self, weights: dict, version: int) -> None:
        state = self.model.state_dict()
        for k, a in weights.items():
            np.copyto(state[k].detach().numpy(), a)
        self.version = version


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_installed(sub: WeightSubscriber, version: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sub.apply_pending()
        if sub.applied_version >= version:
            return time.perf_counter()
        time.sleep(0.001)
    raise TimeoutError(f"version {version} not installed within {timeout_s} s: {sub.status()}")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def bench_transport(d: int, layers: int, rank: int, n_delta: int, n_full: int) -> dict[str, float]:
    learner = ModuleTarget(transformer(d, layers, rank, seed=0), rank)
    served = ModuleTarget(transformer(d, layers, rank, seed=1), rank)  # another base: resyncs first
    params = sum(p.numel() for p in learner.model.parameters())
    lora = sum(p.numel() for n, p in learner.model.named_parameters() if n in learner.delta_names)
    out: dict[str, float] = {"model_params": float(params), "lora_params": float(lora)}
    pub = WeightPublisher(f"tcp://127.0.0.1:{free_port()}", heartbeat_s=0.5)
    pub.resends_per_update, pub.close_linger_s = 0, 0.0  # measure one send per update
    sub = WeightSubscriber(pub.endpoint, served, heartbeat_s=0.5, initial_version=0)
    try:
        time.sleep(0.5)  # connect
        base = learner._numpy(False)
        pub.set_base(base, compute_base_id(base, learner.adapter_info()), learner.adapter_info())
        gen = torch.Generator().manual_seed(0)
        version = 0

        def step_adapters() -> None:  # stands in for an optimiser step
            with torch.no_grad():
                for n in learner.delta_names:
                    p = learner._params[n]
                    p.add_(torch.randn(p.shape, generator=gen) * 1e-3)

        # first delta: the subscriber holds another base -> base + delta resync over the side channel
        version += 1
        t0 = time.perf_counter()
        pub.publish_delta(learner._numpy(True), version, version)
        out["resync_s"] = wait_installed(sub, version, 600) - t0
        delta_ms, delta_bytes = [], 0
        for _ in range(n_delta):
            step_adapters()
            version += 1
            t0 = time.perf_counter()
            delta_bytes = pub.publish_delta(learner._numpy(True), version, version)["bytes"]
            delta_ms.append((wait_installed(sub, version, 60) - t0) * 1e3)
            time.sleep(0.05)
        gc.collect()
        full_ms, full_bytes = [], 0
        for _ in range(n_full):
            step_adapters()
            version += 1
            t0 = time.perf_counter()
            full_bytes = pub.publish(learner._numpy(None), version, version)["bytes"]
            full_ms.append((wait_installed(sub, version, 600) - t0) * 1e3)
            gc.collect()
        with torch.no_grad():  # the served model ends equal to the learner's
            for k, v in learner.model.state_dict().items():
                assert torch.equal(v, served.model.state_dict()[k]), k
        out.update(delta_bytes=float(delta_bytes), full_bytes=float(full_bytes),
                   delta_staleness_p50_ms=pct(delta_ms, 50), delta_staleness_p99_ms=pct(delta_ms, 99),
                   full_staleness_p50_ms=pct(full_ms, 50), full_staleness_p99_ms=pct(full_ms, 99))
        out["rejected"] = float(sum(sub.rejected[r] for r in sub.rejected if r != "base_mismatch"))
    finally:
        sub.close()
        pub.close()
    return out


def bench_learner(n_updates: int, rank: int) -> dict[str, float]:
    from hil_robot.config.learner import LearnerConfig
    from hil_robot.learn.weighted_bc import WeightedBC
    from policies.vla import VLAPolicy
    from policies.vla_model import SIZE_PRESETS, VLAModel, VLAModelConfig

    rng = np.random.default_rng(0)
    n, hw, horizon = 8, 64, 10
    batch = {f"obs/images/{c}": rng.integers(0, 255, (n, hw, hw, 3), dtype=np.uint8) for c in ("front", "wrist")}
    batch.update({"obs/state": rng.normal(size=(n, 15)).astype(np.float32), "instruction": ["pick up the cube"] * n,
                  "actions": rng.uniform(-1, 1, (n, horizon, 7)).astype(np.float32), "weight": np.ones(n, np.float32)})
    out = {}
    for mode in ("full", "lora", "expert"):
        torch.manual_seed(0)
        cfg = VLAModelConfig(image_hw=(hw, hw), action_horizon=horizon, finetune=mode, lora_rank=rank,
                             **SIZE_PRESETS["cpu"])
        algo = WeightedBC(LearnerConfig(finetune=mode), VLAPolicy(VLAModel(cfg)), "cpu")
        algo.update(batch)  # warm-up
        t0 = time.perf_counter()
        for _ in range(n_updates):
            algo.update(batch)
        out[f"learner_updates_per_s_{mode}"] = n_updates / (time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="~57 M model, fewer repetitions, 1 thread (<= ~60 s)")
    ap.add_argument("--json", default="", help="write the metrics as a flat JSON object here")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default 1: two threads on a loaded "
                                                            "2-core machine wait at every op's barrier; 464 M delta p50 309 ms with 2, 98 ms with 1)")
    args = ap.parse_args()
    args.threads = args.threads or 1
    torch.set_num_threads(args.threads)
    d, layers = (768, 8) if args.quick else (1024, 36)
    rank = 16
    res = bench_transport(d, layers, rank, n_delta=10 if args.quick else 30, n_full=2 if args.quick else 3)
    res.update(bench_learner(1 if args.quick else 8, rank))
    size = f"{res['model_params'] / 1e6:.0f} M params (d={d}, {layers} layers), LoRA r={rank}: {res['lora_params'] / 1e6:.1f} M"
    print(f"\nweight sync on loopback, {size}")
    print(f"{'update':<28}{'bytes':>12}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'LoRA delta':<28}{res['delta_bytes'] / 1e6:>10.1f}MB{res['delta_staleness_p50_ms']:>10.1f}"
          f"{res['delta_staleness_p99_ms']:>10.1f}")
    print(f"{'full state dict (anchor)':<28}{res['full_bytes'] / 1e6:>10.1f}MB{res['full_staleness_p50_ms']:>10.1f}"
          f"{res['full_staleness_p99_ms']:>10.1f}")
    print(f"late joiner resync (base + delta): {res['resync_s']:.2f} s; goal delta p50 <= 100 ms: "
          f"{'met' if res['delta_staleness_p50_ms'] <= 100 else 'NOT met'}; rejected updates {res['rejected']:.0f}")
    print(f"\nlearner updates/s, our VLA (cpu preset, 2x64x64, batch 8, {args.threads} threads): "
          f"full {res['learner_updates_per_s_full']:.2f} | lora {res['learner_updates_per_s_lora']:.2f} | "
          f"expert {res['learner_updates_per_s_expert']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({k: float(v) for k, v in res.items()}, indent=1))


if __name__ == "__main__":
    main()
