"""openpi protocol on real loopback sockets, against openpi-client itself (in .venv-openpi, whose
numpy < 2 pin conflicts with ours, so it runs in a subprocess):

* our client against a websocket server built from openpi-client's own msgpack_numpy, following
  openpi's serving behaviour (metadata frame first, /healthz, Api-Key header, traceback text frame
  then close 1011), including bad replies (NaN, wrong shape) and a server restart;
* openpi-client's ``WebsocketClientPolicy`` against our server front.
Every wait is bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hil_robot.obs_mapping import ObsMapping, ObsMappingError
from hil_robot.transport.openpi_client import OpenpiClientPolicy, ServerUnreachable
from hil_robot.transport.openpi_server import OpenpiPolicyServer
from hil_robot.transport.policy_client import RemotePolicyError, TransportTimeout
from hil_robot.types import STATE_DIM

ROOT = Path(__file__).resolve().parents[2]
OPENPI_PY = ROOT / ".venv-openpi" / "bin" / "python"
pytestmark = pytest.mark.skipif(not OPENPI_PY.exists(), reason="needs .venv-openpi (bash scripts/openpi_env.sh)")

MAP = ObsMapping({"observation/image": "images/front", "observation/state": "state[0:8]", "prompt": "prompt"})

# An openpi-style policy server made from openpi-client's msgpack_numpy (what openpi's
# websocket_policy_server does); the prompt selects a misbehaviour.
REFERENCE_SERVER = r'''
import asyncio, http, sys, traceback
import numpy as np
import websockets.asyncio.server as ws_server
import websockets.frames
from openpi_client import msgpack_numpy

port, api_key = int(sys.argv[1]), sys.argv[2]

def process_request(conn, request):
    if request.path == "/healthz":
        return conn.respond(http.HTTPStatus.OK, "OK\n")
    if api_key and request.headers.get("Authorization") != f"Api-Key {api_key}":
        return conn.respond(http.HTTPStatus.UNAUTHORIZED, "bad key\n")
    return None

async def handler(ws):
    packer = msgpack_numpy.Packer()
    await ws.send(packer.pack({"reference": True, "action_horizon": 10}))
    while True:
        try:
            obs = msgpack_numpy.unpackb(await ws.recv())
            assert obs["observation/image"].dtype == np.uint8 and obs["observation/image"].shape == (32, 32, 3)
            state = obs["observation/state"]
            assert state.shape == (8,), state.shape
            prompt = obs["prompt"]
            if prompt == "fail":
                raise ValueError("model exploded on purpose")
            actions = np.tile(state[:7], (10, 1)).astype(np.float32)
            if prompt == "nan":
                actions[3, 2] = np.nan
            if prompt == "wrong":
                actions = actions[:, :3]
            await ws.send(packer.pack({"actions": actions, "server_timing": {"infer_ms": 1.0}}))
        except websockets.ConnectionClosed:
            break
        except Exception:
            await ws.send(traceback.format_exc())
            await ws.close(code=websockets.frames.CloseCode.INTERNAL_ERROR, reason="Internal server error.")
            raise

async def main():
    async with ws_server.serve(handler, "127.0.0.1", port, compression=None, max_size=None,
                               process_request=process_request) as server:
        print("ready", flush=True)
        await server.serve_forever()

asyncio.run(main())
'''


def observation(prompt="pick"):
    state = np.linspace(0.0, 1.4, STATE_DIM).astype(np.float32)
    return {"images/front": np.full((32, 32, 3), 7, np.uint8), "state": state, "prompt": prompt, "timestamp_s": 0.0}


def start_reference(tmp_path, port, api_key=""):
    script = tmp_path / "reference_server.py"
    script.write_text(REFERENCE_SERVER)
    proc = subprocess.Popen([str(OPENPI_PY), str(script), str(port), api_key], stdout=subprocess.PIPE,
                            stderr=open(tmp_path / f"ref_{port}.log", "w"), text=True)
    assert proc.stdout.readline().strip() == "ready", (tmp_path / f"ref_{port}.log").read_text()
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@pytest.fixture
def reference(tmp_path, free_port):
    port = free_port()
    proc = start_reference(tmp_path, port, api_key="sesame")
    yield port, proc
    stop(proc)


def test_our_client_against_openpi_clients_own_codec(reference):
    port, _ = reference
    with OpenpiClientPolicy(f"ws://127.0.0.1:{port}", MAP, api_key="sesame", timeout_s=5, native_dim=7) as client:
        assert client.health()
        assert client.wait_ready(10) == {"reference": True, "action_horizon": 10}
        out = client.infer(observation())
        assert out["actions"].shape == (10, 7) and out["actions"].dtype == np.float32
        np.testing.assert_allclose(out["actions"][4], observation()["state"][:7], rtol=1e-6)  # state sent unnormalised
        assert out["server_timing"] == {"infer_ms": 1.0}

        with pytest.raises(RemotePolicyError, match=r"non-finite.*row 3, column 2"):
            client.infer(observation("nan"))
        with pytest.raises(RemotePolicyError, match=r"\(10, 3\).*native_action_dim=7"):
            client.infer(observation("wrong"))
        with pytest.raises(RemotePolicyError, match=r"ValueError: model exploded on purpose"):
            client.infer(observation("fail"))  # traceback text frame, then close 1011
        assert client.infer(observation())["actions"].shape == (10, 7)  # reconnected
        assert client.counters["connects"] == 2


def test_wrong_api_key_and_unreachable_server_say_what_to_do(reference, free_port):
    port, _ = reference
    with OpenpiClientPolicy(f"ws://127.0.0.1:{port}", MAP, api_key="wrong", timeout_s=5) as client:
        with pytest.raises(RemotePolicyError, match=r"HTTP 401.*policy.api_key"):
            client.infer(observation())
    with OpenpiClientPolicy(f"ws://127.0.0.1:{free_port()}", MAP, timeout_s=2) as client:
        with pytest.raises(ServerUnreachable, match=r"cannot connect.*is it running"):
            client.infer(observation())
        with pytest.raises(ServerUnreachable):
            client.health()
    with OpenpiClientPolicy(f"ws://127.0.0.1:{port}", MAP, api_key="sesame") as client:
        bad = observation()
        del bad["images/front"]
        with pytest.raises(ObsMappingError, match=r"observation/image.*images/front"):
            client.infer(bad)  # nothing was sent: the connection is not even opened
        assert client.counters["requests"] == 0


def test_client_reconnects_after_a_server_restart(tmp_path, free_port):
    port = free_port()
    proc = start_reference(tmp_path, port)
    client = OpenpiClientPolicy(f"ws://127.0.0.1:{port}", MAP, timeout_s=3, backoff_max_s=0.2)
    try:
        assert client.infer(observation())["actions"].shape == (10, 7)
        stop(proc)
        with pytest.raises(TransportTimeout):  # closed / refused: a TimeoutError, so the controller retries
            client.infer(observation())
        proc = start_reference(tmp_path, port)
        deadline, served = time.monotonic() + 20, False
        while time.monotonic() < deadline and not served:
            try:
                served = client.infer(observation())["actions"].shape == (10, 7)
            except TransportTimeout:
                time.sleep(0.05)
        assert served, "client never reconnected to the restarted server"
    finally:
        client.close()
        stop(proc)


class Echo:
    """Deterministic policy for the front: the chunk is the state's first 7 values, H=12."""

    metadata = {"name": "echo", "action_horizon": 12, "action_dim": 7}

    def __init__(self):
        self.resets = 0
        self.seen = []

    def infer(self, obs):
        self.seen.append(obs)
        if obs["prompt"] == "fail":
            raise RuntimeError("echo refuses to fail quietly")
        return {"actions": np.tile(obs["state"][:7], (12, 1)), "policy_version": 9}

    def reset(self):
        self.resets += 1


OPENPI_CLIENT = r'''
import json, sys
import numpy as np
from openpi_client import websocket_client_policy

port = int(sys.argv[1])
policy = websocket_client_policy.WebsocketClientPolicy(host="127.0.0.1", port=port, api_key="sesame")
meta = policy.get_server_metadata()
obs = {"observation/image": np.zeros((16, 16, 3), np.uint8), "observation/state": np.arange(8, dtype=np.float64) / 10,
       "prompt": "stack"}
out = [policy.infer(obs) for _ in range(3)][-1]
result = {"meta": meta, "shape": list(out["actions"].shape), "dtype": str(out["actions"].dtype),
          "row": out["actions"][0].tolist(), "version": int(out["policy_version"]),
          "timing": sorted(out["server_timing"])}
try:
    policy.infer({**obs, "prompt": "fail"})
except RuntimeError as e:
    result["error"] = str(e)
print(json.dumps(result))
'''


def test_openpi_clients_websocket_policy_against_our_front(tmp_path):
    policy = Echo()
    with OpenpiPolicyServer(policy, MAP, host="127.0.0.1", port=0, api_key="sesame") as server:
        script = tmp_path / "openpi_client_run.py"
        script.write_text(OPENPI_CLIENT)
        run = subprocess.run([str(OPENPI_PY), str(script), str(server.port)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        res = json.loads(run.stdout)
        assert res["meta"]["name"] == "echo" and res["meta"]["protocol"] == "openpi"
        assert res["shape"] == [12, 7] and res["dtype"] == "float32" and res["version"] == 9
        np.testing.assert_allclose(res["row"], np.arange(7) / 10, rtol=1e-6)
        assert res["timing"] == ["infer_ms", "prev_total_ms"]
        assert "Error in inference server" in res["error"] and "echo refuses to fail quietly" in res["error"]
        # the inverse mapping rebuilt our observation: state[0:8] filled, the rest 0, image as sent
        seen = policy.seen[0]
        assert seen["state"].shape == (STATE_DIM,) and (seen["state"][8:] == 0).all()
        assert seen["images/front"].shape == (16, 16, 3) and seen["prompt"] == "stack"
        assert policy.resets == 1 and server.counters["errors"] == 1

        # without the key the handshake is refused; /healthz needs no key
        with OpenpiClientPolicy(server.url, MAP, timeout_s=5) as ours:
            assert ours.health()
            with pytest.raises(RemotePolicyError, match="HTTP 401"):
                ours.infer(observation())
