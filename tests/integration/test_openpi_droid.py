"""The shipped DROID preset end to end: `hil-robot controller policy=openpi_droid` against an
openpi-style server made from openpi-client's own msgpack_numpy (.venv-openpi) that checks DROID's
keys and shapes (224x224 images resized with padding, 7 joints, gripper position) and answers
pi05_droid-shaped chunks [15, 8] of joint velocities + gripper position; the controller converts
them (joint_vel, close_1) and runs the episode with no request failing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hil_robot.data import EpisodeStore

ROOT = Path(__file__).resolve().parents[2]
OPENPI_PY = ROOT / ".venv-openpi" / "bin" / "python"
pytestmark = pytest.mark.skipif(not OPENPI_PY.exists(), reason="needs .venv-openpi (bash scripts/openpi_env.sh)")

DROID_SERVER = r'''
import asyncio, sys, traceback
import numpy as np
import websockets.asyncio.server as ws_server
import websockets.frames
from openpi_client import msgpack_numpy

port, log = int(sys.argv[1]), open(sys.argv[2], "w")

async def handler(ws):
    packer = msgpack_numpy.Packer()
    await ws.send(packer.pack({"policy": "droid-shaped test server"}))
    while True:
        try:
            obs = msgpack_numpy.unpackb(await ws.recv())
            for k in ("observation/exterior_image_1_left", "observation/wrist_image_left"):
                assert obs[k].dtype == np.uint8 and obs[k].shape == (224, 224, 3), (k, obs[k].shape)
            assert obs["observation/joint_position"].shape == (7,)
            g = obs["observation/gripper_position"]
            assert g.shape == (1,) and 0.0 <= g[0] <= 1.0
            assert isinstance(obs["prompt"], str) and obs["prompt"]
            actions = np.zeros((15, 8), np.float32)
            actions[:, 0] = 0.2  # turn the base joint slowly
            actions[:, 7] = 0.0  # gripper open
            log.write(f"{obs['observation/joint_position'][0]:.5f}\n"); log.flush()
            await ws.send(packer.pack({"actions": actions}))
        except websockets.ConnectionClosed:
            break
        except Exception:
            await ws.send(traceback.format_exc())
            await ws.close(code=websockets.frames.CloseCode.INTERNAL_ERROR, reason="Internal server error.")
            raise

async def main():
    async with ws_server.serve(handler, "127.0.0.1", port, compression=None, max_size=None) as server:
        print("ready", flush=True)
        await server.serve_forever()

asyncio.run(main())
'''


def test_droid_preset_drives_the_sim_with_joint_velocity_chunks(tmp_path, free_port):
    port = free_port()
    script = tmp_path / "droid_server.py"
    script.write_text(DROID_SERVER)
    seen = tmp_path / "joints.txt"
    server = subprocess.Popen([str(OPENPI_PY), str(script), str(port), str(seen)], stdout=subprocess.PIPE,
                              stderr=open(tmp_path / "server.log", "w"), text=True)
    try:
        assert server.stdout.readline().strip() == "ready", (tmp_path / "server.log").read_text()
        cmd = [sys.executable, "-m", "hil_robot", "controller", "policy=openpi_droid",
               f"policy.server_url=ws://127.0.0.1:{port}", "operator=none", "episodes=1", "realtime=false",
               "keys=false", "max_steps=24", f"store={tmp_path / 'store'}", f"summary_json={tmp_path / 's.json'}",
               "sim.image_height=48", "sim.image_width=64"]
        env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        summary = json.loads((tmp_path / "s.json").read_text())
        assert summary["steps"] == 24 and summary.get("chunks/errors", 0) == 0 and summary.get("chunks/prime_errors", 0) == 0
        assert summary["chunks/replies"] >= 24 // 8  # 8 of every 15 rows run, then the next chunk
        ep = EpisodeStore(tmp_path / "store").read_episode(0)
        executed = ep.columns["action_executed"]
        assert np.isfinite(executed).all() and np.abs(executed).max() <= 1.0
        assert np.abs(executed[:, :6]).max() > 0  # the joint velocity became EE motion
        base = [float(x) for x in seen.read_text().split()]
        assert base[-1] > base[0]  # and the base joint the server saw turned
    finally:
        server.kill()
        server.wait(10)
