"""LoRA / action-expert fine-tuning of the VLA: which modules get adapters, which parameters train,
that served outputs include the adapters (also through the encoder's inference fast path), and
that a LoRA checkpoint restores base + adapter exactly."""

import numpy as np
import pytest
import torch

from hil_robot.config import RootConfig
from hil_robot.config.learner import LearnerConfig
from hil_robot.config._build import ConfigError
from hil_robot.learn.weighted_bc import WeightedBC
from policies import checkpoint as policy_ckpt
from policies.vla import VLAPolicy
from policies.vla_model import VLAModel, VLAModelConfig

HW = (32, 32)


def tiny(**kw) -> VLAModelConfig:
    return VLAModelConfig(image_hw=HW, d_model=32, n_heads=2, vision_channels=(8, 8, 16, 16), dropout=0.0,
                          augment_shift_px=0, **kw)


def obs(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    o = {f"images/{c}": rng.integers(0, 255, (*HW, 3), dtype=np.uint8) for c in ("front", "wrist")}
    o.update(state=rng.normal(size=15).astype(np.float32), prompt="pick up the cube", timestamp_s=0.0)
    return o


def replay_batch(n: int = 4, horizon: int = 10, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    b = {f"obs/images/{c}": rng.integers(0, 255, (n, *HW, 3), dtype=np.uint8) for c in ("front", "wrist")}
    b.update({"obs/state": rng.normal(size=(n, 15)).astype(np.float32), "instruction": ["pick up the cube"] * n,
              "actions": rng.uniform(-1, 1, (n, horizon, 7)).astype(np.float32), "weight": np.ones(n, np.float32)})
    return b


def wrapped(model) -> set[str]:
    return {n for n, m in model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")}


def test_lora_wraps_exactly_the_target_modules():
    model = VLAModel(tiny(finetune="lora", lora_rank=4))
    expected = {n for n, m in VLAModel(tiny()).named_modules() if isinstance(m, torch.nn.Linear)
                and n.rsplit(".", 1)[-1] in ("linear1", "linear2", "self_qkv", "self_out", "cross_q", "cross_kv",
                                             "cross_out") or n.endswith(("mlp.0", "mlp.3"))}
    assert wrapped(model) == expected and expected
    only = VLAModel(tiny(finetune="lora", lora_rank=4, lora_targets=("self_qkv",)))
    assert wrapped(only) == {"decoder.0.self_qkv", "decoder.1.self_qkv"}
    assert all(m.lora_A["default"].weight.shape[0] == 4 for n, m in only.named_modules() if n in wrapped(only))


def test_bad_targets_are_refused_by_name():
    with pytest.raises(ValueError, match="nonexistent"):
        VLAModel(tiny(finetune="lora", lora_targets=("nonexistent",)))
    with pytest.raises(ValueError, match="MultiheadAttention"):  # an adapter there would be ignored
        VLAModel(tiny(finetune="lora", lora_targets=("out_proj",)))
    with pytest.raises(ConfigError, match="finetune"):
        LearnerConfig(finetune="adapters")
    with pytest.raises(ConfigError, match="rlpd"):
        LearnerConfig(finetune="lora", algorithm="rlpd")


@pytest.mark.parametrize("mode", ["lora", "expert"])
def test_only_trainable_params_get_gradients_and_change(mode):
    torch.manual_seed(0)
    policy = VLAPolicy(VLAModel(tiny(finetune=mode, lora_rank=4, head="flow")))
    before = {k: v.clone() for k, v in policy.model.state_dict().items()}
    algo = WeightedBC(LearnerConfig(finetune=mode, lr=1e-2), policy, "cpu")
    for _ in range(2):
        algo.update(replay_batch())
    trainable = set(policy.model.delta_names())
    assert trainable and trainable == {n for n, p in policy.model.named_parameters() if p.requires_grad}
    if mode == "lora":
        assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
    else:
        assert all(n.startswith(("decoder.", "query_embed", "action_in.", "time_mlp.", "action_out.")) for n in trainable)
    changed = {k for k, v in policy.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= trainable, sorted(changed - trainable)[:5]
    assert {id(p) for g in algo.opt.param_groups for p in g["params"]} == \
        {id(p) for n, p in policy.model.named_parameters() if n in trainable}


def test_served_output_includes_the_adapters_even_in_the_encoder():
    """Adapter output == a plain model whose weights are W + B·A·scale (the encoder's inference fast
    path reads linear1.weight directly: it must not skip the adapters)."""
    torch.manual_seed(1)
    lora = VLAModel(tiny(finetune="lora", lora_rank=4, lora_alpha=8.0))
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.5)
    merged = VLAModel(tiny())
    state = {}
    for name, mod in lora.named_modules():
        if name in wrapped(lora):
            a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
            state[f"{name}.weight"] = mod.base_layer.weight + (b @ a) * (8.0 / 4)
            state[f"{name}.bias"] = mod.base_layer.bias
    for k, v in lora.state_dict().items():
        plain = k.replace(".base_layer.", ".")
        if "lora_" not in k and plain not in state:
            state[plain] = v
    merged.load_state_dict(state, strict=True)
    p_lora, p_merged, p_base = VLAPolicy(lora), VLAPolicy(merged), VLAPolicy(VLAModel(tiny()))
    with torch.no_grad():
        p_base.model.load_state_dict({k.replace(".base_layer.", "."): v for k, v in lora.state_dict().items()
                                      if "lora_" not in k}, strict=True)
    a, m, b = (p.infer(obs())["actions"] for p in (p_lora, p_merged, p_base))
    np.testing.assert_allclose(a, m, atol=1e-5)
    assert np.abs(a - b).max() > 1e-3  # the adapters do change the output


def test_lora_checkpoint_restores_base_and_adapter(tmp_path):
    torch.manual_seed(2)
    policy = VLAPolicy(VLAModel(tiny(finetune="lora", lora_rank=4, head="l1")), version=3)
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.3)
    policy_ckpt.save(tmp_path / "policy", policy, step=7, version=3)
    back = policy_ckpt.load(tmp_path / "policy")
    assert back.adapter_info() == policy.adapter_info() and back.base_id() == policy.base_id()
    np.testing.assert_array_equal(back.infer(obs())["actions"], policy.infer(obs())["actions"])


def test_make_policy_applies_learner_finetune_on_a_full_checkpoint(tmp_path):
    from policies.vla import make_vla_policy

    torch.manual_seed(3)
    full = VLAPolicy(VLAModel(tiny(head="l1")))
    policy_ckpt.save(tmp_path / "full", full)
    cfg = RootConfig()
    cfg.policy.checkpoint = str(tmp_path / "full")
    cfg.learner.finetune, cfg.learner.lora_rank = "lora", 2
    served = make_vla_policy(cfg)
    assert served.adapter_info()["rank"] == 2 and wrapped(served.model)
    # LoRA B starts at zero: the adapted model serves exactly what the full checkpoint did
    np.testing.assert_array_equal(served.infer(obs())["actions"], full.infer(obs())["actions"])
    cfg.learner.lora_rank = 8  # a LoRA checkpoint with another rank is refused with what to set
    policy_ckpt.save(tmp_path / "lora", served)
    cfg.policy.checkpoint = str(tmp_path / "lora")
    with pytest.raises(ValueError, match="lora_rank"):
        make_vla_policy(cfg)
