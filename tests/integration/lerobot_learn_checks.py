"""Checks of LeRobot fine-tuning that run inside the LeRobot environment (real lerobot + peft); driven
by tests/integration/test_lerobot_learn.py, which asserts on the JSON this prints.

    .venv-lerobot/bin/python tests/integration/lerobot_learn_checks.py ACT_DIR SMOLVLA_DIR
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

from hil_robot.config import load_config
from hil_robot.learn.lerobot_bc import LeRobotBC
from policies.lerobot_backend import load_lerobot_policy, make_lerobot_policy

torch.set_num_threads(1)


def replay_batch(n: int = 8, horizon: int = 10, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    pad = np.zeros((n, horizon), bool)
    pad[0, 6:] = True
    return {"obs/images/front": rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8),
            "obs/images/wrist": rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8),
            "obs/state": rng.uniform(-1, 1, (n, 15)).astype(np.float32),
            "instruction": ["pick up the red cube"] * n,
            "actions": rng.uniform(-0.8, 0.8, (n, horizon, 7)).astype(np.float32), "action_is_pad": pad,
            "weight": np.linspace(0.2, 2.0, n).astype(np.float32), "segment": np.arange(n) % 4}


def obs(i: int = 0) -> dict:
    b = replay_batch()
    return {"images/front": b["obs/images/front"][i], "images/wrist": b["obs/images/wrist"][i],
            "state": b["obs/state"][i], "prompt": "pick up the red cube", "timestamp_s": 0.0}


def cfg_for(ckpt: str, kind: str, *extra: str):
    return load_config(["experiment=sim_pick_cube", "policy=lerobot", f"policy.lerobot_type={kind}",
                        f"policy.checkpoint={ckpt}", "learner.lr=0.001", *extra])


def eval_loss(algo: LeRobotBC, batch: dict) -> float:
    torch.manual_seed(0)
    with torch.no_grad():
        algo.model.eval()  # no dropout: a fair before/after comparison
        per = algo.per_sample_loss(algo.lerobot_batch(batch))
        w = torch.as_tensor(batch["weight"])
        return float((w * per).sum() / w.sum())


def train(algo: LeRobotBC, batch: dict, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        algo.update(batch)
    return steps / (time.perf_counter() - t0)


def act_checks(ckpt: str) -> dict:
    out: dict = {}
    batch = replay_batch()
    # full fine-tuning lowers the (Sirius-weighted) loss; per-sample ACT loss = ACT's own mean loss
    cfg = cfg_for(ckpt, "act")
    pol = make_lerobot_policy(cfg)
    algo = LeRobotBC(cfg.learner, pol, "cpu")
    nopad = {**batch, "action_is_pad": np.zeros_like(batch["action_is_pad"])}
    lb = algo.lerobot_batch(nopad)
    algo.model.eval()
    with torch.no_grad():
        ours = float(algo.per_sample_loss(lb).mean())
        theirs = float(algo.model.forward(lb)[0])
    out["act_loss_matches_lerobot"] = abs(ours - theirs) < 1e-5
    before = eval_loss(algo, batch)
    out["full_updates_per_s"] = train(algo, batch, 25)
    out["full_loss"] = [before, eval_loss(algo, batch)]
    # full weights: load_weights into a fresh policy -> same output; a NaN tensor is refused
    fresh = make_lerobot_policy(cfg)
    fresh.load_weights(pol.state_numpy(), 3)
    out["full_load_matches"] = bool(np.allclose(fresh.infer(obs())["actions"], pol.infer(obs())["actions"], atol=1e-5))
    bad = pol.state_numpy()
    bad["model.action_head.weight"][0, 0] = np.nan
    try:
        fresh.load_weights(bad, 4)
        out["full_nan_rejected"] = False
    except ValueError as e:
        out["full_nan_rejected"] = "NaN" in str(e) and fresh.version == 3

    # LoRA: only adapters train (base bit-exact), the delta moves a second policy onto the trained one
    cfg = cfg_for(ckpt, "act", "learner.finetune=lora", "learner.lora_rank=4", "learner.lora_alpha=8")
    pol = make_lerobot_policy(cfg)
    base0 = {k: v.copy() for k, v in pol.base_numpy().items()}
    base_id0 = pol.base_id()
    algo = LeRobotBC(cfg.learner, pol, "cpu")
    out["lora_trainable"] = sorted({n.split(".lora_")[0].rsplit(".", 1)[-1] for n in pol.delta_names()})
    out["lora_all_delta_are_lora"] = all(".lora_A." in n or ".lora_B." in n for n in pol.delta_names())
    before = eval_loss(algo, batch)
    out["lora_updates_per_s"] = train(algo, batch, 25)
    out["lora_loss"] = [before, eval_loss(algo, batch)]
    base1 = pol.base_numpy()
    out["lora_base_bit_exact"] = set(base0) == set(base1) and all(np.array_equal(base0[k], base1[k]) for k in base0)
    out["lora_base_id_stable"] = pol.base_id() == base_id0
    server = make_lerobot_policy(cfg)  # what the policy server builds from the same config
    out["server_base_id_equal"] = server.base_id() == base_id0
    out["server_adapter_info_equal"] = server.adapter_info() == pol.adapter_info()
    with algo.serving_weights():  # what is published: the EMA (experiment sim_pick_cube: learner.ema_decay)
        trained = pol.infer(obs())["actions"]
    before_delta = server.infer(obs())["actions"]
    delta = algo.publish_delta()
    server.load_delta(delta, 5)
    after = server.infer(obs())["actions"]
    out["delta_changed_output"] = float(np.abs(after - before_delta).max())
    out["delta_matches_trained"] = float(np.abs(after - trained).max())
    out["delta_version"] = server.version
    wrong_rank = make_lerobot_policy(cfg_for(ckpt, "act", "learner.finetune=lora", "learner.lora_rank=2",
                                             "learner.lora_alpha=8")).delta_numpy()
    for label, bad in (("rank", wrong_rank), ("nan", {k: v.copy() for k, v in delta.items()})):
        if label == "nan":
            bad[sorted(bad)[0]].flat[0] = np.nan
        try:
            server.load_delta(bad, 6)
            out[f"bad_delta_{label}_rejected"] = False
        except ValueError:
            out[f"bad_delta_{label}_rejected"] = server.version == 5 and bool(
                np.array_equal(server.infer(obs())["actions"], after))
    # the learner's serving checkpoint: LoRA merged into a plain LeRobot checkpoint, same actions
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        algo.save_policy(f"{tmp}/policy")
        plain = load_lerobot_policy(f"{tmp}/policy", "act")
        out["saved_lora_policy_matches"] = float(np.abs(plain.infer(obs())["actions"] - trained).max())

    # expert: the decoder + action head only
    cfg = cfg_for(ckpt, "act", "learner.finetune=expert")
    pol = make_lerobot_policy(cfg)
    out["expert_prefixes"] = sorted({".".join(n.split(".")[:2]) for n in pol.delta_names()})
    algo = LeRobotBC(cfg.learner, pol, "cpu")
    before = eval_loss(algo, batch)
    out["expert_updates_per_s"] = train(algo, batch, 10)
    out["expert_loss"] = [before, eval_loss(algo, batch)]
    return out


def smolvla_checks(ckpt: str) -> dict:
    out: dict = {}
    batch = replay_batch(4)
    for mode in ("full", "lora", "expert"):
        cfg = cfg_for(ckpt, "smolvla", f"learner.finetune={mode}", "learner.lora_rank=4")
        pol = make_lerobot_policy(cfg)
        algo = LeRobotBC(cfg.learner, pol, "cpu")
        out[f"{mode}_loss_kind"] = algo.loss_kind
        m = algo.update(batch)
        out[f"{mode}_loss_finite"] = bool(np.isfinite(m["wbc/loss"]))
        if mode != "full":
            out[f"{mode}_delta_modules"] = sorted({n.split(".lora_")[0].split(".")[2] if ".lora_" in n else n.split(".")[1]
                                                   for n in pol.delta_names()})
            server = make_lerobot_policy(cfg)
            server.load_delta(algo.publish_delta(), 2)
            out[f"{mode}_delta_loaded"] = server.version == 2 and server.base_id() == pol.base_id()
    return out


if __name__ == "__main__":
    result = {"act": act_checks(sys.argv[1])}
    if len(sys.argv) > 2:
        result["smolvla"] = smolvla_checks(sys.argv[2])
    print(json.dumps(result))
