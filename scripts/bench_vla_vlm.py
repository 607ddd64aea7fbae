"""Sizes and CPU timings of the VLM-backbone VLA (policy=vla_vlm), printed as JSON.

* tiny: the random-init config ``policy=vla_vlm`` builds without a ``policy.vlm_path`` (sim_pick_cube:
  2 cameras at 64x64, H=10, 10 flow steps): parameters, ``policy.infer`` p50 over 20 calls, one
  weighted-BC update at the experiment's batch size.
* smolvlm256m: the SmolVLM-256M shape (SigLIP base-patch16/512 vision tower, SmolLM2-135M decoder,
  pixel shuffle 4) counted on the meta device (no memory), and its inference time extrapolated from
  one vision layer and one decoder layer at full width, timed here on the CPU.

    .venv/bin/python scripts/bench_vla_vlm.py [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch


def _p50(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def tiny(calls: int, batch_size: int) -> dict:
    from hil_robot.config import load_config
    from hil_robot.learn.weighted_bc import WeightedBC
    from policies.vla import make_vla_policy

    cfg = load_config(["experiment=sim_pick_cube", "policy=vla_vlm", f"learner.batch_size={batch_size}"])
    policy = make_vla_policy(cfg)
    model, h, w = policy.model, cfg.sim.image_height, cfg.sim.image_width
    rng = np.random.default_rng(0)
    obs = {f"images/{c}": rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for c in cfg.sim.cameras}
    obs.update(state=rng.normal(size=15).astype(np.float32), prompt="pick up the red cube", timestamp_s=0.0)
    policy.warm_up()
    infer_ms = _p50(lambda: policy.infer(obs), calls)
    b, horizon = batch_size, cfg.policy.action_horizon
    batch = {f"obs/images/{c}": rng.integers(0, 255, (b, h, w, 3), dtype=np.uint8) for c in cfg.sim.cameras}
    batch.update({"obs/state": rng.normal(size=(b, 15)).astype(np.float32), "instruction": ["pick up the red cube"] * b,
                  "actions": rng.uniform(-1, 1, (b, horizon, 7)).astype(np.float32), "weight": np.ones(b, np.float32)})
    algo = WeightedBC(cfg.learner, policy, "cpu")
    algo.update(batch)  # first update allocates the optimiser state
    step_ms = _p50(lambda: algo.update(batch), 5)
    return {"params": sum(p.numel() for p in model.parameters()),
            "vlm_params": sum(p.numel() for p in model.vlm.parameters()),
            "expert_params": sum(p.numel() for p in model.expert.parameters()),
            "prefix_tokens": len(cfg.sim.cameras) * model.tokens_per_image, "image_hw": [h, w],
            "infer_ms_p50": round(infer_ms, 2), "infer_calls": calls,
            "train_step_ms_p50": round(step_ms, 1), "train_batch": b}


def smolvlm_config(vision_layers: int = 12, text_layers: int = 30):
    from transformers import Idefics3Config

    return Idefics3Config(
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=vision_layers,
                           num_attention_heads=12, image_size=512, patch_size=16),
        text_config=dict(model_type="llama", vocab_size=49280, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=text_layers, num_attention_heads=9, num_key_value_heads=3,
                         max_position_embeddings=8192, rope_theta=100000.0, tie_word_embeddings=True),
        scale_factor=4, image_token_id=49190)


def smolvlm256m(cameras: int, text_tokens: int, calls: int) -> dict:
    from transformers import Idefics3Model

    from policies.vla_vlm import ActionExpert, VLMVLAConfig

    with torch.device("meta"):
        full = Idefics3Model(smolvlm_config())
        expert = ActionExpert(VLMVLAConfig(), 576)
    counts = {part: sum(p.numel() for p in getattr(full, part).parameters()) for part in ("vision_model", "connector", "text_model")}
    counts["expert"] = sum(p.numel() for p in expert.parameters())
    # one layer of each tower at full width, real weights-shaped random init (~40 M parameters)
    one = Idefics3Model(smolvlm_config(vision_layers=1, text_layers=1)).eval()
    pixels = torch.randn(cameras, 3, 512, 512)
    with torch.no_grad():
        vis_ms = _p50(lambda: one.vision_model(pixel_values=pixels), calls)
        tokens = cameras * 64 + text_tokens  # 64 connector tokens per 512x512 image (32x32 patches / 4^2)
        emb = torch.randn(1, tokens, 576)
        txt_ms = _p50(lambda: one.text_model(inputs_embeds=emb, use_cache=False), calls)
    est_ms = 12 * vis_ms + 30 * txt_ms
    return {"params": sum(counts.values()), **{f"{k}_params": v for k, v in counts.items()},
            "cpu_vision_layer_ms_all_cameras": round(vis_ms, 1), "cpu_text_layer_ms": round(txt_ms, 1),
            "prefix_tokens": tokens, "cpu_prefix_ms_estimate": round(est_ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the sim experiments train on one)")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    out = {"threads": args.threads, "loadavg_before": os.getloadavg()[0]}
    out["tiny"] = tiny(args.calls, args.batch_size)
    out["smolvlm256m"] = smolvlm256m(cameras=2, text_tokens=12, calls=3)
    out["loadavg_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
