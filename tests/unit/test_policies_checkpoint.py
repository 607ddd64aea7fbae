"""Checkpoints: exact round trip with norm stats, atomic replace, clear rejection of bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from policies import checkpoint
from policies.checkpoint import CheckpointError
from policies_testing import make_obs, tiny_policy

torch.set_num_threads(1)

STATS = {"state_mean": np.arange(15, dtype=np.float32) * 0.1, "state_std": np.full(15, 0.5, np.float32),
         "action_mean": np.full(7, 0.1, np.float32), "action_std": np.full(7, 0.4, np.float32), "count": 99}


@pytest.mark.parametrize("head", ["l1", "flow"])
def test_round_trip_identical_actions_and_stats(tmp_path, head):
    policy = tiny_policy(head)
    policy.set_norm_stats(STATS)
    policy.version = 7
    obs = make_obs(np.random.default_rng(0))
    policy.reset()
    want = policy.infer(obs)["actions"]
    checkpoint.save(tmp_path / "ck", policy, step=123)
    loaded = checkpoint.load(tmp_path / "ck")
    loaded.reset()
    got = loaded.infer(obs)
    np.testing.assert_array_equal(got["actions"], want)
    assert got["policy_version"] == 7 and loaded.checkpoint_step == 123
    np.testing.assert_allclose(loaded.model.norm.state_mean.numpy(), STATS["state_mean"])
    doc = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert doc["kind"] == "vla" and doc["norm_stats"]["count"] == 99 and doc["model_config"]["head"] == head


def test_save_replaces_atomically_and_leaves_no_temp_dirs(tmp_path):
    policy = tiny_policy()
    checkpoint.save(tmp_path / "ck", policy, step=1, version=1)
    checkpoint.save(tmp_path / "ck", policy, step=2, version=2)
    assert checkpoint.load(tmp_path / "ck").version == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        checkpoint.load(tmp_path / "empty")


def test_pickle_file_is_rejected_without_unpickling(tmp_path):
    policy = tiny_policy()
    ck = checkpoint.save(tmp_path / "ck", policy)
    torch.save(policy.model.state_dict(), ck / "model.safetensors")  # a pickle in disguise
    doc = json.loads((ck / "config.json").read_text())
    doc.pop("weights_sha256")
    (ck / "config.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="never unpickled"):
        checkpoint.load(ck)


def test_truncated_weights_fail_the_checksum(tmp_path):
    ck = checkpoint.save(tmp_path / "ck", tiny_policy())
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="sha256"):
        checkpoint.load(ck)


def test_corrupt_json_and_wrong_kind(tmp_path):
    ck = checkpoint.save(tmp_path / "ck", tiny_policy())
    good = (ck / "config.json").read_text()
    (ck / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        checkpoint.load(ck)
    (ck / "config.json").write_text(good.replace('"kind": "vla"', '"kind": "critic"'))
    with pytest.raises(CheckpointError, match="expected 'vla'"):
        checkpoint.load(ck)


def _rewrite_weights(ck, mutate) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(ck / "model.safetensors"))
    mutate(tensors)
    save_file(tensors, str(ck / "model.safetensors"))
    doc = json.loads((ck / "config.json").read_text())
    doc.pop("weights_sha256")
    (ck / "config.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("mutation,match", [
    (lambda t: t.pop("action_out.1.bias"), "missing"),
    (lambda t: t.__setitem__("extra.weight", torch.zeros(2)), "unexpected"),
    (lambda t: t.__setitem__("action_out.1.bias", torch.zeros(5)), "shape"),
    (lambda t: t.__setitem__("action_out.1.bias", torch.full((7,), float("inf"))), "NaN/Inf"),
    (lambda t: t.__setitem__("norm.state_mean", torch.ones(15)), "norm_stats.state_mean"),
])
def test_bad_tensors_rejected_with_clear_errors(tmp_path, mutation, match):
    ck = checkpoint.save(tmp_path / "ck", tiny_policy())
    _rewrite_weights(ck, mutation)
    with pytest.raises(CheckpointError, match=match):
        checkpoint.load(ck)
