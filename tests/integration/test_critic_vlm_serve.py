"""A VLM critic saved to a local directory, served by a real ``hil-robot serve-critic`` process on a
loopback port: the remote numbers equal the in-process ones and bad requests get error replies."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import torch

from hil_robot.transport.policy_client import PolicyClient, RemotePolicyError
from policies.critic_remote import RemoteCriticBackend, pack_request
from policies.critic_vlm import VLMCriticBackend, VLMCriticConfig, VLMProgressCritic, load_vlm_critic


def test_served_vlm_critic_matches_in_process_and_rejects_bad_requests(tmp_path, free_port, spawn_process):
    torch.set_num_threads(1)
    model = VLMProgressCritic.tiny(VLMCriticConfig(image_hw=(32, 32), head_hidden=32), seed=3)
    path = model.save_pretrained(tmp_path / "vlm_critic")
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = spawn_process([sys.executable, "-m", "hil_robot", "serve-critic", "critic.kind=vlm",
                          f"critic.vlm_path={path}", f"port={port}", "max_seconds=60"],
                         stdout=log, stderr=log)
    rng = np.random.default_rng(0)

    def frames(b: int) -> dict:
        return {"images/front": rng.integers(0, 255, (b, 32, 32, 3), dtype=np.uint8),
                "images/wrist": rng.integers(0, 255, (b, 32, 32, 3), dtype=np.uint8),
                "state": rng.normal(size=(b, 15)).astype(np.float32)}

    a, b = frames(5), frames(5)
    texts = ["pick up the red cube"] * 3 + ["open the drawer"] * 2
    want = VLMCriticBackend(load_vlm_critic(path)).score(a, b, texts)
    client = PolicyClient(f"tcp://127.0.0.1:{port}", timeout_s=10.0, heartbeat_s=None)
    try:
        t0 = time.monotonic()
        while True:  # the server imports torch and transformers first
            try:
                meta = client.wait_ready(2.0)
                break
            except Exception:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
                assert time.monotonic() - t0 < 30, "serve-critic did not come up in 30 s"
        assert meta["kind"] == "critic" and meta["name"] == "vlm_progress_critic" and meta["image_hw"] == [32, 32]
        remote = RemoteCriticBackend(client, max_batch=2)  # 3 requests
        got = remote.score(a, b, texts)
        np.testing.assert_allclose(got[0], want[0], atol=1e-5)
        np.testing.assert_allclose(got[1], want[1], atol=1e-5)
        np.testing.assert_array_equal(remote.score(b, a, texts)[0], -got[0])

        drop = lambda f: {k: v for k, v in f.items() if k != "images/wrist"}  # noqa: E731
        no_cam = pack_request(drop(a), drop(b), texts)
        with pytest.raises(RemotePolicyError, match="no images/wrist"):
            client.infer(no_cam)
        wrong = pack_request({**a, "images/front": a["images/front"][:, :16]}, b, texts)
        with pytest.raises(RemotePolicyError, match=r"send uint8 \[5, 32, 32, 3\]"):
            client.infer(wrong)
        nan = pack_request({**a, "images/front": np.full((5, 32, 32, 3), np.nan, np.float32)}, b, texts)
        with pytest.raises(RemotePolicyError, match="NaN"):
            client.infer(nan)
        with pytest.raises(RemotePolicyError, match="critic/instructions"):
            client.infer({"state": np.zeros(15, np.float32)})
        assert np.allclose(remote.score(a, b, texts)[0], got[0], atol=1e-6)  # still serving after the errors
    finally:
        client.close()
