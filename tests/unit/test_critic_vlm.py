"""The VLM progress critic (policies/critic_vlm.py) keeps the critic contract: bounded outputs, exact
antisymmetry, Δ(a, a) = 0, P(done) of b alone, batch = single, request checks, a local-path
round trip, config selection, and training on sim episodes lowers its loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hil_robot.config import load_config
from hil_robot.learn.critic import CriticTrainSettings, PairSampler, collect_sim_episodes, critic_loss, train_critic
from policies.checkpoint import CheckpointError
from policies.critic import ProgressTracker, stack_observations
from policies.critic_remote import CriticPolicyAdapter, make_critic_backend, pack_request
from policies.critic_vlm import (HEAD_FILE, VLMCriticBackend, VLMCriticConfig, VLMProgressCritic, check_frames,
                                 load_vlm_critic)

torch.set_num_threads(1)

CFG = VLMCriticConfig(cameras=("front", "wrist"), image_hw=(32, 32), head_hidden=32)
TEXTS = ["pick up the red cube"] * 3 + ["push the blue block onto the green target, then stop"] * 2


def frames(rng: np.random.Generator, b: int, hw: int = 32) -> dict:
    return {"images/front": rng.integers(0, 255, (b, hw, hw, 3), dtype=np.uint8),
            "images/wrist": rng.integers(0, 255, (b, hw, hw, 3), dtype=np.uint8),
            "state": rng.normal(size=(b, 15)).astype(np.float32)}


@pytest.fixture(scope="module")
def model():
    return VLMProgressCritic.tiny(CFG, seed=0)


@pytest.fixture(scope="module")
def backend(model):
    return VLMCriticBackend(model)


def test_is_a_real_idefics3_backbone_with_the_minilm_vocab(model):
    from transformers import Idefics3Model

    assert isinstance(model.backbone, Idefics3Model)
    assert model.backbone.get_input_embeddings().num_embeddings == len(model.tokenizer) == 30522
    assert model.frame_len == 2 * model.tokens_per_image + 2  # two cameras, state token, frame-end marker


def test_ranges_exact_antisymmetry_and_zero_on_identical_frames(backend):
    rng = np.random.default_rng(0)
    a, b = frames(rng, 5), frames(rng, 5)
    d_ab, p_ab = backend.score(a, b, TEXTS)
    d_ba, p_ba = backend.score(b, a, TEXTS)
    d_aa, _ = backend.score(a, a, TEXTS)
    assert d_ab.shape == p_ab.shape == (5,) and d_ab.dtype == np.float32
    assert np.all(np.abs(d_ab) <= 1) and np.all((p_ab >= 0) & (p_ab <= 1))
    np.testing.assert_array_equal(d_ab, -d_ba)  # exactly, not to rounding
    np.testing.assert_array_equal(d_aa, np.zeros(5, np.float32))
    assert np.any(d_ab != 0) and not np.allclose(p_ab, p_ba)


def test_p_done_reads_frame_b_alone(backend, model):
    rng = np.random.default_rng(1)
    a, b, c = frames(rng, 4), frames(rng, 4), frames(rng, 4)
    _, p_ab = backend.score(a, b, TEXTS[1:])
    _, p_cb = backend.score(c, b, TEXTS[1:])
    np.testing.assert_allclose(p_ab, p_cb, atol=1e-5)  # the decoder is causal: b's read-out never sees a
    with torch.no_grad():
        from policies.critic import frames_to_torch

        fb = model.frame_features(frames_to_torch(b, torch.device("cpu")))
        alone = torch.sigmoid(model.done_logits(fb, model.encode_text(TEXTS[1:], "cpu"))).numpy()
    np.testing.assert_allclose(p_ab, alone, atol=1e-5)


def test_batch_and_single_agree_despite_padding(backend):
    rng = np.random.default_rng(2)
    a, b = frames(rng, 5), frames(rng, 5)
    d, p = backend.score(a, b, TEXTS)
    for i in range(5):
        di, pi = backend.score({k: v[i:i + 1] for k, v in a.items()}, {k: v[i:i + 1] for k, v in b.items()}, TEXTS[i:i + 1])
        np.testing.assert_allclose(di, d[i:i + 1], atol=1e-5)
        np.testing.assert_allclose(pi, p[i:i + 1], atol=1e-5)


def test_bad_frames_get_a_clear_error(backend):
    rng = np.random.default_rng(3)
    a, b = frames(rng, 2), frames(rng, 2)
    no_wrist = {k: v for k, v in b.items() if k != "images/wrist"}
    with pytest.raises(ValueError, match=r"frames b: no images/wrist .*cameras \['front', 'wrist'\]"):
        backend.score(a, no_wrist, TEXTS[:2])
    with pytest.raises(ValueError, match=r"images/front is uint8 \(2, 48, 48, 3\); send uint8 \[2, 32, 32, 3\]"):
        backend.score({**a, "images/front": rng.integers(0, 255, (2, 48, 48, 3), dtype=np.uint8)}, b, TEXTS[:2])
    nan_img = np.full((2, 32, 32, 3), np.nan, np.float32)
    with pytest.raises(ValueError, match="images/front is float32"):
        backend.score({**a, "images/front": nan_img}, b, TEXTS[:2])
    with pytest.raises(ValueError, match="state has NaN"):
        backend.score(a, {**b, "state": np.full((2, 15), np.nan, np.float32)}, TEXTS[:2])
    with pytest.raises(ValueError, match=r"state is float32 \(2, 7\)"):
        check_frames({**a, "state": np.zeros((2, 7), np.float32)}, CFG.cameras, CFG.image_hw, 15, 2, "a")
    with pytest.raises(ValueError, match="missing 'critic/instructions'"):  # through the policy adapter too
        CriticPolicyAdapter(backend).infer({"critic/a/state": a["state"]})
    reply = CriticPolicyAdapter(backend).infer(pack_request(a, b, TEXTS[:2]))
    assert reply["actions"].shape == (2, 7) and reply["critic_delta"].shape == (2,)


def test_local_path_round_trip_and_load_errors(model, tmp_path):
    rng = np.random.default_rng(4)
    a, b = frames(rng, 3), frames(rng, 3)
    model.state_mean.fill_(0.5)  # statistics travel with the heads
    try:
        out = model.save_pretrained(tmp_path / "vlm", extra={"note": "test"})
        assert {"config.json", "model.safetensors", HEAD_FILE, "critic.json"} <= {p.name for p in out.iterdir()}
        loaded = load_vlm_critic(out)
        want = VLMCriticBackend(model).score(a, b, TEXTS[:3])
    finally:
        model.state_mean.fill_(0.0)
    got = VLMCriticBackend(loaded).score(a, b, TEXTS[:3])
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], atol=1e-6)
    assert loaded.cfg == CFG and float(loaded.state_mean[0]) == 0.5

    with pytest.raises(CheckpointError, match=f"critic.vlm_path={tmp_path / 'nope'}: no such model directory"):
        load_vlm_critic(tmp_path / "nope")
    model.backbone.save_pretrained(str(tmp_path / "bare"))  # a VLM without critic heads
    model.tokenizer.save_pretrained(str(tmp_path / "bare"))
    with pytest.raises(CheckpointError, match="bare VLM .*train-critic critic.kind=vlm"):
        load_vlm_critic(tmp_path / "bare")
    fresh = load_vlm_critic(tmp_path / "bare", require_head=False, cfg=CFG)  # a starting point for training
    assert fresh.frame_len == model.frame_len
    doc = json.loads((out / "critic.json").read_text())
    doc["critic_config"]["head_hidden"] = 16  # heads from another config
    (out / "critic.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"progress_head.1.weight has shape \(32, 64\), the model needs \(16, 64\)"):
        load_vlm_critic(out)
    (out / HEAD_FILE).write_bytes((out / HEAD_FILE).read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        load_vlm_critic(out)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="holds a 'bert' model"):
        load_vlm_critic(tmp_path / "other")


def test_config_selects_the_vlm_critic(model, tmp_path):
    model.save_pretrained(tmp_path / "vlm")
    cfg = load_config(["critic.kind=vlm", f"critic.vlm_path={tmp_path / 'vlm'}"])
    be = make_critic_backend(cfg)
    assert isinstance(be, VLMCriticBackend) and be.metadata["architecture"] == "idefics3"
    assert CriticPolicyAdapter(be).metadata["kind"] == "critic"
    with pytest.raises(ValueError, match="critic.kind=vlm needs critic.vlm_path"):
        make_critic_backend(load_config(["critic.kind=vlm"]))
    from hil_robot.config import ConfigError

    with pytest.raises(ConfigError, match="critic.kind='big'"):
        load_config(["critic.kind=big"])


def test_training_on_sim_episodes_lowers_the_loss_and_drives_the_tracker():
    episodes = collect_sim_episodes("pick_cube", 3, 2, seed=0, image_hw=(32, 32))
    settings = CriticTrainSettings(steps=40, episodes_per_batch=4, lr=1e-3, seed=0, log_every=1000)
    model = VLMProgressCritic.tiny(CFG, seed=0)
    probe = PairSampler(episodes, CriticTrainSettings(episodes_per_batch=8, seed=123))
    groups = [probe.sample() for _ in range(2)]  # fixed held-aside groups, scored before and after

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(np.mean([critic_loss(model, probe, g, torch.device("cpu"), settings)[0].item() for g in groups]))

    model.state_mean.copy_(torch.from_numpy(probe.frames["state"].mean(0)))
    model.state_std.copy_(torch.from_numpy(np.maximum(probe.frames["state"].std(0), 1e-2)))
    before = loss()
    train_critic(episodes, settings, model=model)
    after = loss()
    assert after < 0.6 * before, (before, after)

    ep = next(e for e in episodes if e.success)
    tracker = ProgressTracker(VLMCriticBackend(model), done_threshold=0.9)
    obs = [{k: v[i] for k, v in ep.frames.items()} for i in range(len(ep))]
    tracker.reset(obs[0], ep.instruction)
    infos = [tracker.step(o) for o in obs[1:]]
    assert all(0.0 <= i["value"] <= 1.0 and -1.0 <= i["reward"] <= 1.0 for i in infos)
    assert stack_observations(obs[:2])["state"].shape == (2, 15)


def test_bfloat16_by_config_stays_close_and_exactly_antisymmetric(model, tmp_path):
    model.save_pretrained(tmp_path / "vlm")
    be16 = make_critic_backend(load_config(["critic.kind=vlm", f"critic.vlm_path={tmp_path / 'vlm'}",
                                            "critic.dtype=bfloat16"]))
    assert be16.model.dtype == torch.bfloat16 and be16.model.backbone.dtype == torch.bfloat16
    rng = np.random.default_rng(5)
    a, b = frames(rng, 4), frames(rng, 4)
    want, got = VLMCriticBackend(model).score(a, b, TEXTS[:4]), be16.score(a, b, TEXTS[:4])
    assert got[0].dtype == got[1].dtype == np.float32
    np.testing.assert_allclose(got[0], want[0], atol=5e-3)
    np.testing.assert_allclose(got[1], want[1], atol=5e-3)
    np.testing.assert_array_equal(be16.score(b, a, TEXTS[:4])[0], -got[0])
    np.testing.assert_array_equal(be16.score(a, a, TEXTS[:4])[0], np.zeros(4, np.float32))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bfloat16_matches_cpu(model, tmp_path):
    model.save_pretrained(tmp_path / "vlm")
    be = make_critic_backend(load_config(["critic.kind=vlm", f"critic.vlm_path={tmp_path / 'vlm'}",
                                          "critic.dtype=bfloat16", "critic.device=cuda"]))
    assert next(be.model.parameters()).is_cuda
    rng = np.random.default_rng(6)
    a, b = frames(rng, 4), frames(rng, 4)
    want, got = VLMCriticBackend(model).score(a, b, TEXTS[:4]), be.score(a, b, TEXTS[:4])
    np.testing.assert_allclose(got[0], want[0], atol=1e-2)
    np.testing.assert_allclose(got[1], want[1], atol=1e-2)
    np.testing.assert_array_equal(be.score(b, a, TEXTS[:4])[0], -got[0])
