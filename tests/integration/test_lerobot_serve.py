"""LeRobot policies (random-weight ACT and SmolVLA built offline from tiny local configs) served by
our ``serve-policy`` running in the LeRobot environment (.venv-lerobot, Python 3.12), answering our
torch-free PolicyClient over real loopback sockets; bad input gives errors that name what is wrong."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hil_robot.transport.policy_client import PolicyClient, RemotePolicyError

REPO = Path(__file__).resolve().parents[2]
LEROBOT_PY = Path(os.environ.get("HIL_ROBOT_LEROBOT_PYTHON", REPO / ".venv-lerobot" / "bin" / "python"))
pytestmark = pytest.mark.skipif(not LEROBOT_PY.is_file(),
                                reason=f"no LeRobot environment at {LEROBOT_PY}: run make lerobot-env")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MUJOCO_GL": "egl"}


def obs(prompt: str = "pick up the red cube") -> dict:
    rng = np.random.default_rng(0)
    return {"images/front": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
            "images/wrist": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
            "state": rng.uniform(-1, 1, 15).astype(np.float32), "prompt": prompt, "timestamp_s": 0.0}


def build_tiny(kind: str, out: Path) -> Path:
    proc = subprocess.run([str(LEROBOT_PY), "-m", "policies.lerobot_tiny", f"out={out}", f"type={kind}"], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"building a tiny {kind} failed:\n{proc.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot_ckpt")
    return {kind: build_tiny(kind, root / kind) for kind in ("act", "smolvla")}


def serve(port: int, log: Path, *overrides: str) -> subprocess.Popen:
    cmd = [str(LEROBOT_PY), "-m", "hil_robot", "serve-policy", "policy=lerobot", f"port={port}",
           "transport.heartbeat_s=0.5", *overrides]
    return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=open(log, "w"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("kind", ["act", "smolvla"])
def test_lerobot_policy_served_to_our_client(kind, checkpoints, free_port, tmp_path):
    port = free_port()
    proc = serve(port, tmp_path / "server.log", f"policy.lerobot_type={kind}", f"policy.checkpoint={checkpoints[kind]}")
    client = PolicyClient(f"tcp://127.0.0.1:{port}", timeout_s=30.0, heartbeat_s=None)
    try:
        try:
            client.wait_ready(180)
        except Exception:
            raise AssertionError((tmp_path / "server.log").read_text()[-3000:]) from None
        meta = client.fetch_metadata()
        assert meta["backend"] == "lerobot" and meta["lerobot_type"] == kind
        assert meta["features"]["observation.state"] == [15] and meta["action_space"] == "ee_delta"
        out = client.infer(obs())
        actions = out["actions"]
        assert actions.shape == (10, 7) and actions.dtype == np.float32 and np.isfinite(actions).all()
        assert out["policy_version"] == 0
        again = client.infer(obs())["actions"]
        if kind == "act":  # deterministic chunk regression: same observation, same chunk (queues do not leak in)
            np.testing.assert_allclose(again, actions, rtol=1e-5, atol=1e-6)
        else:  # flow matching from fresh noise: a different sample of the same shape
            assert again.shape == actions.shape and not np.allclose(again, actions)
        client.reset()
        # an observation without a camera the checkpoint was trained with: an error naming the feature
        missing = obs()
        del missing["images/wrist"]
        with pytest.raises(RemotePolicyError, match=r"observation\.images\.wrist.*images/wrist"):
            client.infer(missing)
        small = obs()
        small["images/front"] = np.zeros((32, 32, 3), np.uint8)
        with pytest.raises(RemotePolicyError, match=r"observation\.images\.front.*64x64"):
            client.infer(small)
        assert client.infer(obs())["actions"].shape == (10, 7)  # and it keeps serving
    finally:
        client.close()
        stop(proc)


def run_serve_expecting_failure(args: list[str], tmp_path: Path) -> str:
    proc = subprocess.run([str(LEROBOT_PY), "-m", "hil_robot", "serve-policy", "policy=lerobot", *args], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0, proc.stdout
    return proc.stdout + proc.stderr


def test_bad_checkpoints_are_named(checkpoints, tmp_path):
    missing = tmp_path / "no_such_checkpoint"
    text = run_serve_expecting_failure([f"policy.checkpoint={missing}"], tmp_path)
    assert str(missing) in text and "not a directory" in text
    text = run_serve_expecting_failure([f"policy.checkpoint={checkpoints['smolvla']}", "policy.lerobot_type=act"], tmp_path)
    assert "'smolvla'" in text and "policy.lerobot_type=smolvla" in text
    text = run_serve_expecting_failure([f"policy.checkpoint={checkpoints['act']}", "policy.native_action_dim=8"], tmp_path)
    assert "7-D actions" in text and "policy.native_action_dim=8" in text
    text = run_serve_expecting_failure([], tmp_path)
    assert "policy.checkpoint=DIR" in text
    not_lerobot = tmp_path / "not_lerobot"
    not_lerobot.mkdir()
    (not_lerobot / "config.json").write_text('{"hidden_dim": 3}')
    text = run_serve_expecting_failure([f"policy.checkpoint={not_lerobot}"], tmp_path)
    assert "no policy 'type'" in text


def test_obs_map_naming_an_absent_key_fails_at_the_first_request(checkpoints, free_port, tmp_path):
    port = free_port()
    proc = serve(port, tmp_path / "server.log", f"policy.checkpoint={checkpoints['act']}",
                 "policy.obs_map={observation.images.front: images/front, observation.images.wrist: images/side,"
                 " observation.state: state}")
    client = PolicyClient(f"tcp://127.0.0.1:{port}", timeout_s=30.0, heartbeat_s=None)
    try:
        client.wait_ready(180)
        with pytest.raises(RemotePolicyError, match=r"observation\.images\.wrist.*images/side"):
            client.infer(obs())
    finally:
        client.close()
        stop(proc)
