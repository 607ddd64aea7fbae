"""The VLM-backbone VLA (policies/vla_vlm.py, policy=vla_vlm): a tiny random-init Idefics3 with the
bundled MiniLM tokenizer + flow-matching action expert, behind the same VLAPolicy as the small VLA —
shapes, learning, sampling, checkpoints, LoRA / expert fine-tuning with deltas, local-path loading."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hil_robot.config import load_config
from hil_robot.config._build import ConfigError
from hil_robot.learn.weighted_bc import WeightedBC
from policies import checkpoint as policy_ckpt
from policies.checkpoint import CheckpointError
from policies.vla import VLAPolicy, batch_to_torch, make_vla_policy
from policies.vla_vlm import VLMVLAConfig, VLMVLAModel, build_vlm_vla, minilm_tokenizer, tiny_vlm_config

HW = 32
H = 4
TINY = dict(cameras=("front", "wrist"), image_hw=(HW, HW), action_horizon=H, flow_steps=4, expert_width=32,
            expert_layers=1, expert_heads=2, tiny_vision_hidden=32, tiny_vision_layers=1, tiny_text_hidden=32,
            tiny_text_layers=1, tiny_heads=2)
OVERRIDES = ["experiment=sim_pick_cube", "policy=vla_vlm", f"sim.image_height={HW}", f"sim.image_width={HW}",
             f"policy.action_horizon={H}", "policy.n_action_steps=2", "policy.flow_steps=4"]


def tiny_model(seed: int = 0, **kw) -> VLMVLAModel:
    return build_vlm_vla(VLMVLAConfig(**{**TINY, **kw}), seed=seed)


def make_obs(seed: int = 0, prompt: str = "pick up the red cube") -> dict:
    rng = np.random.default_rng(seed)
    o = {f"images/{c}": rng.integers(0, 255, (HW, HW, 3), dtype=np.uint8) for c in ("front", "wrist")}
    o.update(state=rng.normal(size=15).astype(np.float32), prompt=prompt, timestamp_s=0.0)
    return o


def replay_batch(b: int = 8, seed: int = 0) -> dict:
    """Actions that depend on the state and the instruction (something to learn)."""
    rng = np.random.default_rng(seed)
    state = rng.normal(size=(b, 15)).astype(np.float32)
    sign = np.where(np.arange(b) % 2 == 0, 1.0, -1.0)[:, None, None]
    actions = np.clip(sign * np.tanh(state[:, None, :7]) * np.linspace(1.0, 0.5, H)[None, :, None], -1, 1)
    pad = np.zeros((b, H), bool)
    pad[0, -1] = True
    return {f"obs/images/{c}": rng.integers(0, 255, (b, HW, HW, 3), dtype=np.uint8) for c in ("front", "wrist")} | {
        "obs/state": state, "actions": actions.astype(np.float32), "action_is_pad": pad,
        "weight": np.ones(b, np.float32), "segment": np.zeros(b, np.int8),
        "instruction": ["pick up the red cube" if i % 2 == 0 else "push" for i in range(b)]}


def test_forward_shapes_and_tokenizer():
    model = tiny_model()
    tok = model.tokenizer
    assert model.vlm.get_input_embeddings().num_embeddings == len(tok) + 1 == 30523  # MiniLM vocab + image token
    assert model.vision_size == HW and model.tokens_per_image == (HW // 8 // 2) ** 2
    batch = batch_to_torch(replay_batch(3))
    hidden, mask = model.prefix(batch)
    n_text = max(len(tok(s)["input_ids"]) for s in batch["instruction"])
    assert hidden.shape == (3, 2 * model.tokens_per_image + n_text, 32) and mask.shape == hidden.shape[:2]
    assert mask[:, :2 * model.tokens_per_image].all() and not mask[1].all()  # "push" is padded
    loss = model.compute_loss(batch)
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    chunk = model.sample_actions(batch)
    assert chunk.shape == (3, H, 7) and torch.isfinite(chunk).all() and chunk.abs().max() <= 1.0


def test_a_row_scores_the_same_alone_or_in_a_padded_batch():
    model = tiny_model().eval()
    batch = batch_to_torch(replay_batch(4))
    x, t = torch.randn(4, H, 7), torch.rand(4)
    state = model.norm.norm_state(batch["state"])
    with torch.no_grad():
        kv, mask = model._memory(batch)
        both = model.expert(kv, mask, state, x, t)
        one = {"images": {c: v[1:2] for c, v in batch["images"].items()}, "instruction": batch["instruction"][1:2]}
        kv1, mask1 = model._memory(one)
        alone = model.expert(kv1, mask1, state[1:2], x[1:2], t[1:2])
    assert mask1.shape[-1] < mask.shape[-1]  # alone it has no padding at all
    torch.testing.assert_close(alone[0], both[1], atol=1e-5, rtol=1e-4)


def test_training_reduces_the_flow_loss_on_a_fixed_batch():
    model = tiny_model()
    policy = VLAPolicy(model)
    raw = replay_batch(8)
    policy.fit_norm_stats(raw)
    batch = batch_to_torch(raw)

    def eval_loss() -> float:
        model.train()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(123)  # the same noise and times before and after training
            return float(torch.stack([model.compute_loss(batch).mean() for _ in range(4)]).mean())

    before = eval_loss()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    torch.manual_seed(0)
    for _ in range(30):
        loss = model.compute_loss(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.6 * before, (before, after)


def test_policy_infer_gives_a_finite_chunk_and_reproducible_episodes():
    policy = make_vla_policy(load_config(OVERRIDES))
    assert policy.metadata["arch"] == "vlm" and policy.metadata["head"] == "flow"
    first = policy.infer(make_obs())
    assert first["actions"].shape == (H, 7) and first["actions"].dtype == np.float32
    assert np.isfinite(first["actions"]).all() and np.abs(first["actions"]).max() <= 1.0
    policy.reset()
    np.testing.assert_array_equal(policy.infer(make_obs())["actions"], first["actions"])
    batched = policy.infer_batch([make_obs(1), make_obs(2, prompt="push the puck")])
    assert [b["actions"].shape for b in batched] == [(H, 7), (H, 7)]


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    policy = VLAPolicy(tiny_model(), version=3)
    policy.fit_norm_stats(replay_batch(8))
    policy_ckpt.save(tmp_path / "ckpt", policy, step=5)
    assert (tmp_path / "ckpt" / "tokenizer" / "tokenizer.json").is_file()
    loaded = policy_ckpt.load(tmp_path / "ckpt")
    assert loaded.version == 3 and loaded.checkpoint_step == 5 and isinstance(loaded.model, VLMVLAModel)
    for k, v in policy.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[k], v, rtol=0, atol=0)
    policy.reset(), loaded.reset()
    np.testing.assert_array_equal(loaded.infer(make_obs())["actions"], policy.infer(make_obs())["actions"])
    # a checkpoint without its tokenizer is refused by name
    import shutil

    shutil.rmtree(tmp_path / "ckpt" / "tokenizer")
    with pytest.raises(CheckpointError, match="tokenizer"):
        policy_ckpt.load(tmp_path / "ckpt")


def test_lora_trains_only_adapters_and_deltas_round_trip():
    cfg = load_config(OVERRIDES + ["learner.finetune=lora", "learner.lora_rank=4"])
    learner_side = make_vla_policy(cfg)
    served = make_vla_policy(cfg)  # same config and seed: the same base
    model = learner_side.model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert all(n.startswith("vlm.") for n in trainable)  # adapters on the VLM only, never the expert
    wrapped = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert {"q_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "fc1", "out_proj"} <= wrapped
    assert model.adapter_info()["targets"] == sorted(model.cfg.lora_targets)
    assert learner_side.base_id() == served.base_id()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    algo = WeightedBC(cfg.learner, learner_side, "cpu")
    for _ in range(3):
        algo.update(replay_batch(8))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= set(learner_side.delta_spec()), sorted(changed - set(learner_side.delta_spec()))[:3]
    delta = learner_side.delta_numpy()
    assert set(delta) == set(served.delta_spec())
    served.load_delta(delta, version=7)
    assert served.version == 7 and served.base_id() == learner_side.base_id()
    learner_side.reset(), served.reset()
    np.testing.assert_array_equal(served.infer(make_obs())["actions"], learner_side.infer(make_obs())["actions"])
    with pytest.raises(ValueError, match="does not match the model"):
        served.load_delta({k: v for k, v in list(delta.items())[1:]}, version=8)
    with pytest.raises(ValueError, match="q_prj"):
        tiny_model(finetune="lora", lora_targets=("q_prj",))


def test_expert_mode_freezes_the_vlm():
    cfg = load_config(OVERRIDES + ["learner.finetune=expert"])
    policy = make_vla_policy(cfg)
    model = policy.model
    assert all(p.requires_grad == n.startswith("expert.") for n, p in model.named_parameters())
    assert set(policy.delta_spec()) == {f"expert.{n}" for n, _ in model.expert.named_parameters()}
    vlm_before = {k: v.clone() for k, v in model.vlm.state_dict().items()}
    expert_before = {k: v.clone() for k, v in model.expert.state_dict().items()}
    algo = WeightedBC(cfg.learner, policy, "cpu")
    for _ in range(2):
        algo.update(replay_batch(8))
    assert all(torch.equal(v, model.vlm.state_dict()[k]) for k, v in vlm_before.items())
    assert any(not torch.equal(v, model.expert.state_dict()[k]) for k, v in expert_before.items())


def _save_tiny_vlm(directory, conditional: bool = False) -> torch.nn.Module:
    from transformers import Idefics3ForConditionalGeneration, Idefics3Model

    tok = minilm_tokenizer()
    torch.manual_seed(7)
    bcfg = tiny_vlm_config(VLMVLAConfig(**TINY), len(tok), int(tok.pad_token_id))
    vlm = (Idefics3ForConditionalGeneration if conditional else Idefics3Model)(bcfg)
    vlm.save_pretrained(str(directory))
    tok.save_pretrained(str(directory))
    return vlm.model if conditional else vlm


@pytest.mark.parametrize("conditional", [False, True], ids=["Idefics3Model", "ForConditionalGeneration"])
def test_pretrained_vlm_loads_from_a_local_directory(tmp_path, conditional):
    original = _save_tiny_vlm(tmp_path / "vlm", conditional).eval()
    (tmp_path / "vlm" / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.4, 0.5, 0.6],
                                                                           "image_std": [0.2, 0.3, 0.4]}))
    cfg = load_config(OVERRIDES + [f"policy.vlm_path={tmp_path / 'vlm'}"])
    policy = make_vla_policy(cfg)
    model = policy.model.eval()
    assert model.cfg.image_mean == (0.4, 0.5, 0.6) and model.cfg.expert_width == 256  # the full-size expert
    for k, v in original.state_dict().items():
        torch.testing.assert_close(model.vlm.state_dict()[k], v, rtol=0, atol=0)
    # the same VLM, wrapped directly, reads the same prefix
    direct = VLMVLAModel(VLMVLAConfig(**{**TINY, "image_mean": (0.4, 0.5, 0.6), "image_std": (0.2, 0.3, 0.4)}),
                         original, minilm_tokenizer()).eval()
    batch = batch_to_torch(replay_batch(2))
    with torch.no_grad():
        torch.testing.assert_close(model.prefix(batch)[0], direct.prefix(batch)[0], rtol=0, atol=0)


def test_bad_vlm_paths_fail_with_one_line_naming_the_path(tmp_path):
    missing = tmp_path / "no_such_model"
    with pytest.raises(CheckpointError, match=f"policy.vlm_path={missing}: no such model directory") as e:
        make_vla_policy(load_config(OVERRIDES + [f"policy.vlm_path={missing}"]))
    assert "\n" not in str(e.value)
    from policies.text import model_dir  # a real transformers model, but a sentence encoder

    with pytest.raises(CheckpointError, match=r"holds a 'bert' model; the VLM VLA needs one of") as e:
        make_vla_policy(load_config(OVERRIDES + [f"policy.vlm_path={model_dir()}"]))
    assert str(model_dir()) in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="junk: config.json is not a transformers config") as e:
        make_vla_policy(load_config(OVERRIDES + [f"policy.vlm_path={tmp_path / 'junk'}"]))
    assert "\n" not in str(e.value)


def test_config_choices():
    cfg = load_config(OVERRIDES)
    assert (cfg.policy.name, cfg.policy.arch, cfg.policy.head, cfg.policy.dtype) == ("vla", "vlm", "flow", "fp32")
    with pytest.raises(ConfigError, match="policy.arch"):
        load_config(["policy.arch=vit"])
    with pytest.raises(ConfigError, match="policy.dtype"):
        load_config(["policy=vla_vlm", "policy.dtype=fp8"])
    with pytest.raises(ValueError, match="policy.head=flow"):
        make_vla_policy(load_config(OVERRIDES + ["policy.head=l1"]))


def test_bf16_keeps_the_vlm_in_bfloat16_and_the_expert_in_float32():
    """The dtype plumbing of policy.dtype=bf16 (meant for GPUs; run here on the CPU, tiny)."""
    model = tiny_model(dtype="bf16", finetune="lora", lora_rank=2)
    assert model.vlm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.expert.parameters())
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if ".lora_" in n)
    policy = VLAPolicy(model)
    chunk = policy.infer(make_obs())["actions"]
    assert chunk.shape == (H, 7) and np.isfinite(chunk).all()
    spec, state = policy.weight_spec(), policy.state_numpy()  # bf16 travels as float32 on the weight bus
    assert all(state[k].dtype == np.dtype(spec[k][1]) for k in spec) and state and policy.base_id()
    policy.load_weights(state, version=2)
    assert policy.version == 2 and model.vlm.get_input_embeddings().weight.dtype == torch.bfloat16
    full = tiny_model(dtype="bf16")  # full fine-tuning: the learner publishes the bf16 base too
    cfg = load_config(OVERRIDES)
    algo = WeightedBC(cfg.learner, VLAPolicy(full), "cpu")
    algo.update(replay_batch(4))
    published = algo.publish_weights()
    assert published["vlm.text_model.embed_tokens.weight"].dtype == np.float32
    served = VLAPolicy(tiny_model(dtype="bf16"))
    served.load_weights(published, version=1)
    for k, v in served.model.state_dict().items():  # float32 on the wire, back to each tensor's own dtype
        torch.testing.assert_close(v, torch.from_numpy(published[k]).to(v.dtype), rtol=0, atol=0)
    assert served.model.vlm.get_input_embeddings().weight.dtype == torch.bfloat16
