"""Our GR00T client on real loopback zmq sockets against a small GR00T-protocol test server written
here from the protocol (REP socket; msgpack {endpoint, data, api_token}; arrays as np.save bytes;
errors as {"error": str}), in both server generations, plus our GR00T front. Every wait is bounded."""

from __future__ import annotations

import io
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from hil_robot.obs_mapping import ObsMapping, ObsMappingError
from hil_robot.transport.groot_client import GrootClientPolicy
from hil_robot.transport.groot_server import GrootPolicyServer
from hil_robot.transport.policy_client import RemotePolicyError, TransportTimeout
from hil_robot.types import STATE_DIM

MAP = ObsMapping({"video.front": "images/front", "state.eef": "state[0:7]", "state.gripper": "state.gripper",
                  "annotation.human.task_description": "prompt"})
KEYS = ("action.eef", "action.gripper")


def _enc(obj):
    if isinstance(obj, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, obj, allow_pickle=False)
        return {"__ndarray_class__": True, "as_npy": buf.getvalue()}
    return obj


def _dec(obj):
    if "__ndarray_class__" in obj:
        return np.load(io.BytesIO(obj["as_npy"]), allow_pickle=False)
    return obj


class ProtocolServer:
    """The reference behaviour, independent of our front. ``mode`` picks a misbehaviour."""

    def __init__(self, protocol: str, token: str = "") -> None:
        self.protocol, self.token, self.mode = protocol, token, "ok"
        self.requests: list[dict] = []
        self.sock = zmq.Context.instance().socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            if not self.sock.poll(50):
                continue
            req = msgpack.unpackb(self.sock.recv(), object_hook=_dec)
            self.requests.append(req)
            try:
                reply = self._answer(req)
            except Exception as e:  # GR00T servers answer any failure as {"error": str(e)}
                reply = {"error": str(e)}
            self.sock.send(msgpack.packb(reply, default=_enc))

    def _answer(self, req):
        if self.token and req.get("api_token") != self.token:
            return {"error": "Unauthorized: Invalid API token"}
        ep = req.get("endpoint")
        if ep == "ping":
            return {"status": "ok", "message": "Server is running"}
        if ep == "reset":
            return {}
        if ep == "get_modality_config":
            return {"action": {"__ModalityConfig_class__": True, "as_json": '{"delta_indices": [0, 1], "modality_keys": ["eef"]}'}}
        if ep != "get_action":
            return {"error": f"Unknown endpoint: {ep}"}
        if self.mode == "slow":
            self.mode = "ok"
            time.sleep(0.6)
        data = req["data"]
        if self.protocol == "n1.6":
            state = data["observation"]["state"]["eef"]  # [B, T, 7]
            assert data["observation"]["video"]["front"].shape[:2] == (1, 1)
            assert data["observation"]["language"]["annotation.human.task_description"] == [["stack"]]
            eef = np.repeat(state[:, -1:, :6], 16, axis=1).astype(np.float32)  # [B, 16, 6]
        else:
            state = data["state.eef"]  # [T, 7]
            assert data["video.front"].shape[0] == 1 and data["annotation.human.task_description"] == ["stack"]
            eef = np.repeat(state[-1:, :6], 16, axis=0).astype(np.float32)  # [16, 6]
        grip = np.ones(eef.shape[:-1] + (1,), np.float32)
        if self.mode == "nan":
            eef[..., 5, 1] = np.nan
        if self.mode == "short":
            grip = grip[..., :8, :]
        if self.mode == "error":
            return {"error": "CUDA out of memory"}
        if self.protocol == "n1.6":
            return [{"eef": eef, "gripper": grip}, {"t": 1}]
        return {"action.eef": eef, "action.gripper": grip}

    def close(self):
        self._stop.set()
        self.thread.join(2)
        self.sock.close(0)


def observation(prompt="stack"):
    return {"images/front": np.zeros((24, 32, 3), np.uint8), "state": np.linspace(0, 1.4, STATE_DIM).astype(np.float32),
            "prompt": prompt, "timestamp_s": 0.0}


@pytest.mark.parametrize("protocol", ["n1.6", "n1.5"])
def test_client_against_the_protocol_test_server(protocol):
    server = ProtocolServer(protocol, token="tok")
    client = GrootClientPolicy(f"tcp://127.0.0.1:{server.port}", MAP, action_keys=KEYS, protocol=protocol,
                               api_token="tok", timeout_s=3.0, native_dim=7)
    try:
        assert client.wait_ready(10)["status"] == "ok"
        assert client.get_modality_config() == {"action": {"delta_indices": [0, 1], "modality_keys": ["eef"]}}
        out = client.infer(observation())
        assert out["actions"].shape == (16, 7) and out["actions"].dtype == np.float32
        np.testing.assert_allclose(out["actions"][3, :6], observation()["state"][:6], rtol=1e-6)
        assert (out["actions"][:, 6] == 1).all()
        client.reset()
        sent = [r["endpoint"] for r in server.requests]
        assert sent == ["ping", "get_modality_config", "get_action"] + (["reset"] if protocol == "n1.6" else [])
        assert all(r["api_token"] == "tok" for r in server.requests)
        assert "data" not in server.requests[0]  # endpoints without input send no data

        server.mode = "nan"
        with pytest.raises(RemotePolicyError, match=r"non-finite.*row 5, column 1"):
            client.infer(observation())
        server.mode = "short"
        with pytest.raises(RemotePolicyError, match=r"disagree on the horizon.*action.gripper: \(8, 1\)"):
            client.infer(observation())
        server.mode = "error"
        with pytest.raises(RemotePolicyError, match="CUDA out of memory"):
            client.infer(observation())
        server.mode = "ok"
        bad = observation()
        del bad["images/front"]
        with pytest.raises(ObsMappingError, match=r"video.front.*images/front"):
            client.infer(bad)
    finally:
        client.close()
        server.close()


def test_timeout_recreates_the_req_socket_and_the_next_call_works():
    server = ProtocolServer("n1.6")
    client = GrootClientPolicy(f"tcp://127.0.0.1:{server.port}", MAP, action_keys=KEYS, timeout_s=0.2)
    try:
        server.mode = "slow"
        with pytest.raises(TransportTimeout, match="fresh socket"):
            client.infer(observation())
        time.sleep(0.6)  # the late reply goes to the closed socket, not to the next request
        client.timeout_s = 3.0
        assert client.infer(observation())["actions"].shape == (16, 7)
        assert client.counters["reconnects"] == 1
    finally:
        client.close()
        server.close()


def test_wrong_token_and_unreachable_server():
    server = ProtocolServer("n1.6", token="right")
    try:
        with GrootClientPolicy(f"tcp://127.0.0.1:{server.port}", MAP, action_keys=KEYS, api_token="wrong") as c:
            with pytest.raises(RemotePolicyError, match="Unauthorized"):
                c.ping()
    finally:
        server.close()
    with GrootClientPolicy(f"tcp://127.0.0.1:{server.port}", MAP, action_keys=KEYS, timeout_s=0.2) as c:
        with pytest.raises(TransportTimeout, match="is it running"):
            c.infer(observation())


def test_protocol_mismatch_says_which_setting_to_change():
    server = ProtocolServer("n1.5")
    try:
        with GrootClientPolicy(f"tcp://127.0.0.1:{server.port}", MAP, action_keys=KEYS, protocol="n1.6") as c:
            with pytest.raises(RemotePolicyError, match=r"policy.groot_protocol \(this client: n1.6\)"):
                c.infer(observation())
    finally:
        server.close()


class Echo:
    metadata = {"name": "echo"}

    def infer(self, obs):
        return {"actions": np.tile(obs["state"][:7], (4, 1)), "policy_version": 2}

    def reset(self):
        pass


@pytest.mark.parametrize("protocol", ["n1.6", "n1.5"])
def test_our_client_against_our_groot_front(protocol):
    mapping = ObsMapping({"video.front": "images/front", "state.s": "state[0:8]", "language.task": "prompt"})
    with GrootPolicyServer(Echo(), mapping, "tcp://127.0.0.1:*", protocol=protocol, api_token="k") as server:
        with GrootClientPolicy(server.endpoint, mapping, protocol=protocol, api_token="k", timeout_s=3) as client:
            out = client.infer(observation())
            np.testing.assert_allclose(out["actions"][0], observation()["state"][:7], rtol=1e-6)
            assert out["actions"].shape == (4, 7)
            with pytest.raises(RemotePolicyError, match="Unknown endpoint: kill"):
                client.call("kill", None)
