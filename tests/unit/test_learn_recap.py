"""RECAP-style advantage conditioning (learner.advantage_conditioning): the VLA's advantage token,
the indicator labels, training that separates better from worse behaviour, serving 'positive',
adding the token to a pre-trained / LoRA model, and the config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hil_robot.config import load_config
from hil_robot.config._build import ConfigError
from hil_robot.learn.weighted_bc import WeightedBC
from hil_robot.types import SEGMENT_INDEX, Segment
from policies.vla import VLAPolicy, apply_finetune, batch_to_torch
from policies.vla_model import ADV_NEGATIVE, ADV_POSITIVE, ADV_UNKNOWN, VLAModel, VLAModelConfig

torch.set_num_threads(1)
HW = 16


def tiny(advantage_cond: bool = True) -> VLAModel:
    torch.manual_seed(0)
    return VLAModel(VLAModelConfig(image_hw=(HW, HW), action_horizon=2, vision_channels=(8, 8, 16, 16), d_model=32,
                                   n_heads=2, enc_layers=1, dec_layers=1, dropout=0.0, augment_shift_px=0,
                                   advantage_cond=advantage_cond))


def two_behaviour_batch(b: int, rng: np.random.Generator) -> dict:
    """Same observation everywhere; half the samples act +0.5 (advantage +1), half -0.5 (advantage -1)."""
    good = rng.random(b) < 0.5
    act = np.where(good[:, None, None], 0.5, -0.5).astype(np.float32) * np.ones((b, 2, 7), np.float32)
    return {"obs/images/front": np.full((b, HW, HW, 3), 90, np.uint8), "obs/images/wrist": np.full((b, HW, HW, 3), 40, np.uint8),
            "obs/state": np.zeros((b, 15), np.float32), "instruction": ["pick up the red cube"] * b,
            "actions": act, "action_is_pad": np.zeros((b, 2), bool), "weight": np.ones(b, np.float32),
            "segment": np.full(b, SEGMENT_INDEX[Segment.AUTONOMOUS], np.int8),
            "advantage": np.where(good, 1.0, -1.0).astype(np.float32)}


def lc(*overrides: str):
    return load_config(["learner=weighted_bc", "learner.advantage_conditioning=true", *overrides]).learner


def test_conditioned_vla_separates_better_from_worse_and_serves_the_better():
    policy = VLAPolicy(tiny())
    cfg = lc("learner.advantage_positive_frac=0.5", "learner.advantage_dropout=0.1", "learner.lr=3e-3")
    algo = WeightedBC(cfg, policy)
    rng = np.random.default_rng(0)
    for _ in range(150):
        m = algo.update(two_behaviour_batch(32, rng))
    assert 0.3 < m["wbc/adv_positive_frac"] < 0.7
    mb = batch_to_torch({k: v[:1] for k, v in two_behaviour_batch(1, rng).items() if k != "instruction"}
                        | {"instruction": ["pick up the red cube"]})
    policy.model.eval()
    out = {}
    for name, ind in (("pos", ADV_POSITIVE), ("neg", ADV_NEGATIVE)):
        out[name] = float(policy.model.sample_actions({**mb, "advantage_indicator": torch.tensor([ind])}).mean())
    served = float(policy.model.sample_actions(mb).mean())  # no indicator: serving asks for 'positive'
    assert out["pos"] > 0.3 and out["neg"] < -0.3, out
    assert abs(served - out["pos"]) < 1e-6


def test_people_are_always_positive_and_dropout_gives_unknown():
    algo = WeightedBC(lc("learner.advantage_positive_frac=0.25", "learner.advantage_dropout=0.0"), VLAPolicy(tiny()))
    seg = np.array([SEGMENT_INDEX[s] for s in (Segment.AUTONOMOUS, Segment.PRE_INTERVENTION, Segment.RECOVERY,
                                                Segment.CORRECTION, Segment.DEMO, Segment.AUTONOMOUS, Segment.AUTONOMOUS,
                                                Segment.AUTONOMOUS)], np.int8)
    adv = np.array([-3, -2, -1, -1, -1, 0, 1, 2], np.float32)
    ind, _ = algo.advantage_indicators({"segment": seg, "advantage": adv}, 8)
    # top quarter by advantage (1, 2) plus every step a person took
    assert ind.tolist() == [ADV_NEGATIVE, ADV_NEGATIVE, ADV_POSITIVE, ADV_POSITIVE, ADV_POSITIVE, ADV_NEGATIVE,
                            ADV_POSITIVE, ADV_POSITIVE]
    algo = WeightedBC(lc("learner.advantage_dropout=1.0"), VLAPolicy(tiny()))
    ind, _ = algo.advantage_indicators({"segment": seg, "advantage": adv}, 8)
    assert (ind == ADV_UNKNOWN).all()
    with pytest.raises(KeyError, match="advantage_source=critic_online"):
        WeightedBC(lc(), VLAPolicy(tiny())).advantage_indicators({"segment": seg}, 8)


def test_token_joins_a_pretrained_lora_model_and_travels_in_its_delta():
    model = tiny(advantage_cond=False)
    cfg = load_config(["learner=weighted_bc", "learner.advantage_conditioning=true", "learner.finetune=lora"])
    apply_finetune(model, cfg)
    assert model.cfg.advantage_cond and "advantage_embed" in model.delta_names()
    assert model.advantage_embed.requires_grad
    assert all(".lora_" in n or n == "advantage_embed" for n in model.delta_names())
    with pytest.raises(ValueError, match=r"advantage_indicator must be int \[2\]"):
        model.encode({**batch_to_torch({k: v[:2] for k, v in two_behaviour_batch(2, np.random.default_rng(0)).items()}),
                      "advantage_indicator": torch.tensor([0, 5])})


def test_config_errors():
    with pytest.raises(ConfigError, match="learner=weighted_bc"):
        load_config(["learner=rlpd", "learner.advantage_conditioning=true"])
    with pytest.raises(ConfigError, match="advantage_source"):
        lc("learner.advantage_source=oracle")
    from policies.vla_vlm import make_vlm_vla_model

    cfg = load_config(["policy=vla_vlm", "learner.advantage_conditioning=true", f"sim.image_height={HW}",
                       f"sim.image_width={HW}"])
    with pytest.raises(ValueError, match="policy.arch=native"):
        apply_finetune(make_vlm_vla_model(cfg), cfg)
