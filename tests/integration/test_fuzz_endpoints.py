"""Every zmq endpoint under a storm of malformed frames, in its real process on a loopback port:
the policy server (``hil-robot serve-policy``), the operator link (``hil-robot operator``), the
transition receiver (``hil-robot receive-transitions``) and the weight bus (a hostile PUB feeding
the real ``WeightSubscriber`` inside ``serve-policy``).

Frames come from a seeded generator: random bytes, truncated and bit-flipped valid messages,
missing/extra frames, msgpack of the wrong shape, numpy extensions with hostile dtypes, shapes and
frame indices, and valid messages with one field swapped for a hostile value (NaN, Inf, huge ints
and strings, wrong types, deep nesting). After the storm each process is alive, answers a valid
request correctly, its error counters moved, its memory did not grow, and nothing malformed got
through (the store holds exactly the valid episodes, the served weights are unchanged).

The quick variants (a few thousand frames per endpoint) run in CI; the ``slow`` ones send 10^5.
"""

from __future__ import annotations

import ast
import copy
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import msgpack
import numpy as np
import pytest
import zmq

from hil_robot.data import EpisodeStore
from hil_robot.data.synthetic import observation, step_record
from hil_robot.transport.codec import CodecError, decode, encode
from hil_robot.transport.policy_client import PolicyClient, RemotePolicyError, TransportTimeout
from hil_robot.transport.transitions import TransitionSender
from hil_robot.types import OperatorMode
from hil_robot.transport.weights import chunk_messages, serialize

QUICK_FRAMES = 3000
SLOW_FRAMES = 100_000
RSS_GROWTH_LIMIT_MB = 150  # a storm may warm caches; it must not accumulate what it sends

_NAN = float("nan")
HOSTILE: list[Any] = [_NAN, math.inf, -math.inf, 1e308, -1, 2**63 - 1, -(2**63), 2**64 - 1, "", "x" * 5000, None, [],
                      {}, True, b"\xff" * 64, [[1, 2], [3]], {"a": {"b": {"c": [None]}}}, [[[[[[[[[[1]]]]]]]]]],
                      np.full(3, np.nan, np.float32), np.zeros((2, 2), np.float64), np.zeros(0, np.uint8),
                      np.full((4, 4, 3), np.inf, np.float32), 1.5, "step", -7]
BAD_DTYPES = ["|O", "<c8", "V8", "<U4", "S3", "M8[s]", "xx", "", "<f4,<f4", "(2,)f4", 5, None, ["<f4"]]
BAD_SHAPES = [[2**40], [-1], [3, "a"], [0, 2**63], [1] * 40, "3", None, [2**31, 2**31], [1.5], [True]]


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into dicts/lists of a decoded message (not into arrays)."""
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _set(obj: Any, path: tuple, value: Any, delete: bool = False) -> None:
    for k in path[:-1]:
        obj = obj[k]
    if delete and isinstance(obj, dict):
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


class Mutator:
    """Seeded generator of malformed multipart messages for one endpoint.

    templates: valid messages, each a list of parts (message dicts); a part's frames follow the
    previous part's on the wire (the transition stream sends control + payload). ``fresh(parts, i)``
    may rewrite a template per message (e.g. a new sender session each time).
    """

    def __init__(self, seed: int, templates: list[list[dict[str, Any]]],
                 fresh: Callable[[list[dict[str, Any]], int], None] | None = None) -> None:
        self.rng = random.Random(seed)
        self.templates = templates
        self.fresh = fresh
        self.count = 0

    def _template(self) -> list[dict[str, Any]]:
        parts = copy.deepcopy(self.rng.choice(self.templates))
        if self.fresh is not None:
            self.fresh(parts, self.count)
        return parts

    @staticmethod
    def _encode(parts: list[dict[str, Any]]) -> list[bytes]:
        return [bytes(f) for p in parts for f in encode(p)]

    def _random_obj(self, depth: int = 0) -> Any:
        r = self.rng
        k = r.randrange(6 if depth < 3 else 3)
        if k == 0:
            return r.choice(HOSTILE[:15])
        if k == 1:
            return r.randrange(-(2**63), 2**64)
        if k == 2:
            return r.choice(["infer", "step", "weights", "payload", "ping", "end_episode", "x" * r.randrange(100)])
        if k == 3:
            return [self._random_obj(depth + 1) for _ in range(r.randrange(4))]
        keys = ["type", "id", "obs", "seq", "session", "base", "record", "version", "data", "chunk", "meta"]
        return {r.choice(keys): self._random_obj(depth + 1) for _ in range(r.randrange(5))}

    def _bad_ext(self) -> msgpack.ExtType:
        r = self.rng
        dtype = r.choice(BAD_DTYPES + ["<f4", "|u1", "<i8"])
        shape = r.choice(BAD_SHAPES + [[3], [2, 2]])
        ref = r.choice([1, 2, 0, -1, 99, 2**40, "1", None, b"\x00" * r.randrange(20)])
        return msgpack.ExtType(r.choice([1, 2, 3, 127]), msgpack.packb([dtype, shape, ref]))

    def __call__(self) -> list[bytes]:
        """One malformed message (a list of frames)."""
        self.count += 1
        r = self.rng
        kind = r.randrange(10)
        if kind == 0:  # random bytes
            return [r.randbytes(r.randrange(0, 400))]
        if kind == 9:  # several random frames
            return [r.randbytes(r.randrange(0, 60)) for _ in range(r.randrange(2, 6))]
        if kind == 4:  # msgpack that is not the message the endpoint expects (wrong types, shapes)
            return [msgpack.packb(self._random_obj(), use_bin_type=True)]
        if kind == 5:  # a message whose numpy extension lies about dtype, shape or frame
            parts = self._template()
            path = r.choice(_paths(parts[0]) or [("type",)])
            head = msgpack.packb({**{k: v for k, v in parts[0].items() if not isinstance(v, np.ndarray)},
                                  str(path[0]): self._bad_ext()}, use_bin_type=True, default=lambda o: None)
            return [head, *[r.randbytes(r.randrange(0, 64)) for _ in range(r.randrange(0, 3))]]
        parts = self._template()
        if kind in (6, 7):  # one field swapped for a hostile value, or dropped, or an unknown one added
            i = r.randrange(len(parts))
            paths = _paths(parts[i])
            if paths:
                path = r.choice(paths)
                if path == ("type",) and r.random() < 0.7:
                    path = r.choice(paths)
                if kind == 7 and r.random() < 0.5:
                    _set(parts[i], path, None, delete=True)
                elif kind == 7:
                    parts[i][r.choice(["zz", "__nd__", "_filled", "extra"])] = r.choice(HOSTILE)
                else:
                    _set(parts[i], path, copy.deepcopy(r.choice(HOSTILE)))
            try:
                return self._encode(parts)
            except CodecError:
                return [r.randbytes(32)]
        frames = self._encode(parts)
        if kind == 1:  # truncated frame
            j = r.randrange(len(frames))
            frames[j] = frames[j][: r.randrange(len(frames[j]) or 1)]
            return frames
        if kind == 2:  # bit flips in a frame
            j = r.randrange(len(frames))
            f = bytearray(frames[j])
            for _ in range(r.randrange(1, 8)):
                if f:
                    f[r.randrange(len(f))] = r.randrange(256)
            frames[j] = bytes(f)
            return frames
        if kind == 3:  # missing or extra frames
            if len(frames) > 1 and r.random() < 0.5:
                del frames[r.randrange(1, len(frames))]
            else:
                frames.insert(r.randrange(1, len(frames) + 1), r.randbytes(r.randrange(0, 32)))
            return frames
        return frames[:1] if len(frames) > 1 else [frames[0] + b"\x00"]  # kind 8: header without its arrays


# ----------------------------------------------------------------------------- process helpers

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}


def spawn(args: list[str], log_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hil_robot", *args], stdout=open(log_path, "w"),
                            stderr=subprocess.STDOUT, env=ENV)


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def rss_mb(proc: subprocess.Popen) -> float:
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def dealers(ctx: zmq.Context, endpoint: str, n: int = 3) -> list[zmq.Socket]:
    out = []
    for _ in range(n):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDTIMEO, 5000)
        s.setsockopt(zmq.RCVHWM, 100000)
        s.connect(endpoint)
        out.append(s)
    return out


def storm(socks: list[zmq.Socket], mutate: Mutator, n: int, reply_types: set[str],
          between: Callable[[int], None] | None = None, max_outstanding: int = 2000) -> int:
    """Send n malformed messages round-robin; every reply that comes back must be a well-formed
    message of an expected type (an endpoint never answers garbage). At most ``max_outstanding``
    messages are sent ahead of the replies (waiting at most 2 s each time), so the storm measures
    the endpoint, not a backlog that starves the honest client. Returns replies checked."""
    replies = 0

    def drain(timeout_ms: int = 0) -> None:
        nonlocal replies
        for s in socks:
            while s.poll(timeout_ms):
                msg = decode(s.recv_multipart(copy=False))
                assert msg["type"] in reply_types, msg
                replies += 1
                timeout_ms = 0

    for i in range(n):
        socks[i % len(socks)].send_multipart(mutate())
        if i % 200 == 199:
            drain()
            deadline = time.monotonic() + 2.0
            while i + 1 - replies > max_outstanding and time.monotonic() < deadline:
                drain(20)
            if between is not None:
                between(i)
    while True:  # the endpoint may still be working through the last messages
        seen = replies
        drain(1000)
        if replies == seen:
            return replies


def wait_for(pred: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            got = pred()
        except TransportTimeout:  # the endpoint is still working through what the storm queued
            continue
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


# ----------------------------------------------------------------------------- policy server

OBS = {"images/front": np.zeros((64, 64, 3), np.uint8), "state": np.zeros(15, np.float32), "prompt": "pick the cube",
       "timestamp_s": 0.0}


def assert_policy_server_survives_fuzz(n: int, free_port, tmp_path: Path) -> None:
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    proc = spawn(["serve-policy", "policy_factory=hil_robot.transport.null_policy:make_null_policy", f"port={port}",
                  "transport.heartbeat_s=0.2", "transport.max_frame_bytes=1000000", "status_every_s=0", "policy.action_horizon=50"],
                 tmp_path / "server.log")
    good = PolicyClient(endpoint, timeout_s=5.0, heartbeat_s=None)
    ctx = zmq.Context()
    try:
        good.wait_ready(60)
        for _ in range(20):
            good.infer(OBS)
        rss0 = rss_mb(proc)
        before = good.fetch_metadata()["server"]["counters"]
        templates = [[{"type": "infer", "id": 3, "obs": OBS}], [{"type": "metadata", "id": 4}],
                     [{"type": "ping", "id": 5}], [{"type": "reset", "id": 6}]]
        mutate = Mutator(1, templates)
        socks = dealers(ctx, endpoint)

        def check_good(i: int) -> None:
            if i % 5000 == 4999:  # the honest robot is served throughout the storm
                assert good.infer(OBS)["actions"].shape == (50, 7)

        replies = storm(socks, mutate, n, {"error", "result", "pong", "metadata", "ok"}, check_good)
        counters = wait_for(lambda: (c := good.fetch_metadata()["server"]["counters"])["requests"] >= before["requests"] + n
                            and c, 60, "the server to take every fuzzed frame")
        assert proc.poll() is None, "serve-policy died under fuzzing"
        out = good.infer(OBS)
        assert out["actions"].shape == (50, 7) and not out["actions"].any() and out["policy_version"] == 0
        assert counters["bad_frames"] - before["bad_frames"] > n // 3, counters
        assert counters["errors"] - before["errors"] >= counters["bad_frames"] - before["bad_frames"], counters
        assert replies > n // 2, f"only {replies} replies to {n} requests"
        for bad_obs in ({"state": np.full(15, np.nan, np.float32)}, {"state": np.zeros(15, np.float32), "t": math.inf},
                        {"context": {"nested": [math.nan]}}):
            with pytest.raises(RemotePolicyError, match="NaN|Inf|inf|nan"):
                good.infer(bad_obs)  # non-finite input never reaches the policy
        grown = rss_mb(proc) - rss0
        assert grown < RSS_GROWTH_LIMIT_MB, f"serve-policy grew by {grown:.0f} MB under fuzzing"
    finally:
        good.close()
        ctx.destroy(linger=0)
        kill(proc)


def test_policy_server_survives_malformed_frames(free_port, tmp_path):
    assert_policy_server_survives_fuzz(QUICK_FRAMES, free_port, tmp_path)


@pytest.mark.soak
def test_policy_server_survives_1e5_malformed_frames(free_port, tmp_path):
    assert_policy_server_survives_fuzz(SLOW_FRAMES, free_port, tmp_path)


# ----------------------------------------------------------------------------- operator link

OP_OBS = {"state": np.zeros(15, np.float32), "task_state": np.zeros(14, np.float32), "prompt": "pick the cube"}


def op_context(step: int) -> dict[str, Any]:
    return {"step": step, "policy_action": None,
            "task_status": {"progress": 0.1, "subtask": "reach", "success": False, "failed": False, "held": False}}


def assert_operator_survives_fuzz(n: int, free_port, tmp_path: Path) -> None:
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    log = tmp_path / "operator_log.jsonl"
    proc = spawn(["operator", f"port={port}", "task=pick_cube", f"log={log}", "seed=0", "transport.heartbeat_s=0.2"],
                 tmp_path / "operator.log")
    good = PolicyClient(endpoint, timeout_s=5.0, heartbeat_s=None)
    ctx = zmq.Context()
    try:
        good.wait_ready(60)

        def command(step: int) -> dict[str, Any]:
            cmd = good.infer({**OP_OBS, "operator_context": op_context(step)})["operator_command"]
            assert cmd["mode"] in {m.value for m in OperatorMode}, cmd
            if cmd.get("action") is not None:
                assert np.asarray(cmd["action"]).shape == (7,) and np.isfinite(cmd["action"]).all()
            return cmd

        for t in range(5):
            command(t)
        rss0 = rss_mb(proc)
        before = good.fetch_metadata()["server"]["counters"]
        templates = [[{"type": "infer", "id": 1, "obs": {**OP_OBS, "operator_context": op_context(3)}}],
                     [{"type": "reset", "id": 2}], [{"type": "metadata", "id": 3}]]
        replies = storm(dealers(ctx, endpoint), Mutator(2, templates), n, {"error", "result", "pong", "metadata", "ok"})
        counters = wait_for(lambda: (c := good.fetch_metadata()["server"]["counters"])["requests"] >= before["requests"] + n
                            and c, 60, "the operator to take every fuzzed frame")
        assert proc.poll() is None, "hil-robot operator died under fuzzing"
        assert counters["bad_frames"] - before["bad_frames"] > n // 3 and replies > n // 2, counters
        assert counters["errors"] > before["errors"]
        good.reset()
        for t in range(5):  # a fresh episode is commanded as before
            command(t)
        good.reset()  # writes the operator's log of everything that reached it
        entries = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} reached the operator"))
                   for line in log.read_text().splitlines()] if log.exists() else []
        for e in entries:
            assert isinstance(e.get("step", 0), int), e
        grown = rss_mb(proc) - rss0
        assert grown < RSS_GROWTH_LIMIT_MB, f"hil-robot operator grew by {grown:.0f} MB under fuzzing"
    finally:
        good.close()
        ctx.destroy(linger=0)
        kill(proc)


def test_operator_link_survives_malformed_frames(free_port, tmp_path):
    assert_operator_survives_fuzz(QUICK_FRAMES, free_port, tmp_path)


@pytest.mark.soak
def test_operator_link_survives_1e5_malformed_frames(free_port, tmp_path):
    assert_operator_survives_fuzz(SLOW_FRAMES, free_port, tmp_path)


# ----------------------------------------------------------------------------- transition receiver

HW = (16, 16)


def last_status(log_path: Path) -> dict[str, Any] | None:
    """The newest ``status {...}`` line receive-transitions logged (status_every_s)."""
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if " status {" in ln]
    return ast.literal_eval(lines[-1].split(" status ", 1)[1]) if lines else None


def legit_episode(tx: TransitionSender, k: int, n: int) -> None:
    for t in range(n):
        assert tx.add(step_record(f"legit{k}", t, "autonomous" if t < n - 2 else "recovery", episode=k,
                                  last=t == n - 1, hw=HW))
    tx.end_episode(True, final_observation=observation(n, k, hw=HW), task="pick_cube")


def assert_receiver_survives_fuzz(n: int, free_port, tmp_path: Path) -> None:
    port = free_port()
    store_path, log_path = tmp_path / "store", tmp_path / "receiver.log"
    proc = spawn(["receive-transitions", f"store={store_path}", f"port={port}", "image_codec=lz4",
                  "transport.heartbeat_s=0.2", "status_every_s=0.3", "transport.max_frame_bytes=1000000"], log_path)
    endpoint = f"tcp://127.0.0.1:{port}"
    tx = TransitionSender(endpoint, heartbeat_s=0.2, ack_timeout_s=2.0, queue_size=8192)
    ctx = zmq.Context()
    sent_eps: dict[str, int] = {}
    try:
        legit_episode(tx, 0, 12)
        sent_eps["legit0"] = 12
        assert tx.flush(60), tx.status()
        wait_for(lambda: last_status(log_path), 30, "a status line")
        rss0 = rss_mb(proc)
        # hostile items: a step in the middle of an episode nobody opened, and an end_episode, each
        # from a new made-up sender session (so each reaches the persisting path, not the duplicate check)
        rec = step_record("hostile", 3, "autonomous", episode=9, hw=HW).to_dict()
        templates = [[{"type": "step", "seq": 0, "session": "s", "base": 0}, {"type": "payload", "record": rec}],
                     [{"type": "end_episode", "seq": 0, "session": "s", "base": 0},
                      {"type": "payload", "success": True, "meta": {"task": "x", "final_observation": None}}],
                     [{"type": "ping", "seq": -1, "session": "s", "base": 0}]]

        def fresh(parts: list[dict[str, Any]], i: int) -> None:
            parts[0]["session"] = f"fz{i:07d}"

        episodes = iter(range(1, 1000))

        def legit_traffic(i: int) -> None:  # the honest robot keeps streaming through the storm
            if i % 1000 == 999:
                k = next(episodes)
                legit_episode(tx, k, 8 + k % 5)
                sent_eps[f"legit{k}"] = 8 + k % 5

        replies = storm(dealers(ctx, endpoint), Mutator(3, templates, fresh), n, {"error", "ack"}, legit_traffic)
        assert tx.flush(120), tx.status()
        st = wait_for(lambda: (s := last_status(log_path)) and s["counters"]["received"] >= n and s, 60,
                      "the receiver to take every fuzzed frame")
        assert proc.poll() is None, "receive-transitions died under fuzzing"
        c = st["counters"]
        assert c["bad_frames"] > n // 4 and c["rejected"] > n // 20 and replies > n // 4, c
        assert len(st["senders"]) <= 256, "sender bookkeeping must stay bounded"
        assert tx.status()["counters"]["rejected_by_receiver"] == 0, tx.status()
        legit_episode(tx, 999, 6)  # still takes a valid episode after the storm
        sent_eps["legit999"] = 6
        assert tx.flush(60), tx.status()
        grown = rss_mb(proc) - rss0
        assert grown < RSS_GROWTH_LIMIT_MB, f"receive-transitions grew by {grown:.0f} MB under fuzzing"
    finally:
        tx.close(2.0)
        ctx.destroy(linger=0)
        kill(proc)
    store = EpisodeStore(store_path, read_only=True)
    assert not store.errors, store.errors
    assert {m.episode_id: m.num_steps for m in store.episodes()} == sent_eps, "the store holds exactly the valid episodes"
    for eid, steps in sent_eps.items():
        k = int(eid[5:])
        ep = store.read_episode(eid)
        assert ep.meta.success and not ep.recovered
        np.testing.assert_array_equal(ep.columns["step"], np.arange(steps))
        for t in (0, steps - 1):
            want = step_record(eid, t, episode=k, last=t == steps - 1, hw=HW)
            np.testing.assert_array_equal(ep.columns["action_executed"][t], want.action_executed)
            np.testing.assert_array_equal(ep.columns["obs/state"][t], want.observation["state"])


def test_transition_receiver_survives_malformed_frames(free_port, tmp_path):
    assert_receiver_survives_fuzz(QUICK_FRAMES, free_port, tmp_path)


@pytest.mark.soak
def test_transition_receiver_survives_1e5_malformed_frames(free_port, tmp_path):
    assert_receiver_survives_fuzz(SLOW_FRAMES, free_port, tmp_path)


# ----------------------------------------------------------------------------- weight bus

SPEC = {"bias": ((7,), "float32"), "body": ((1017,), "float32")}  # NullPolicy(n_params=1024)


def weights(value: float, **override: np.ndarray) -> dict[str, np.ndarray]:
    w = {k: np.full(s, value, d) for k, (s, d) in SPEC.items()}
    w.update(override)
    return w


def update_messages(w: dict[str, np.ndarray], version: int, *, chunk_bytes: int = 1 << 20, algo: str = "sha256",
                    digest: str | None = None) -> list[dict[str, Any]]:
    """The decoded chunk messages of one update (as the publisher would send them)."""
    payload = serialize(w)
    return [decode(frames) for frames in chunk_messages(payload, version=version, step=0, algo=algo,
                                                        chunk_bytes=chunk_bytes, publisher="fuzz", digest=digest)]


def assert_weight_subscriber_survives_fuzz(n: int, free_port, tmp_path: Path) -> None:
    pport, wport = free_port(), free_port()
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 1_000_000)
    pub.bind(f"tcp://127.0.0.1:{wport}")
    proc = spawn(["serve-policy", "policy_factory=hil_robot.transport.null_policy:make_null_policy", f"port={pport}",
                  f"transport.weights_port={wport}", "transport.subscribe_weights=true", "transport.heartbeat_s=0.2",
                  "status_every_s=0"], tmp_path / "server.log")
    good = PolicyClient(f"tcp://127.0.0.1:{pport}", timeout_s=5.0, heartbeat_s=None)

    def bus() -> dict[str, Any]:
        return good.fetch_metadata()["server"]["weights"]

    def heartbeat(name: str) -> Callable[[], bool]:
        def beat() -> bool:
            pub.send_multipart(encode({"type": "heartbeat", "publisher": name, "version": 0}))
            return name in bus()["publishers"]
        return beat

    try:
        good.wait_ready(60)
        wait_for(heartbeat("hello"), 30, "the subscriber to connect to the hostile publisher")
        rss0 = rss_mb(proc)
        # every template is an update the subscriber must refuse, however it is mutated: non-finite
        # or wrongly shaped/typed/named tensors (checksums correct), a wrong checksum, a split that
        # loses its last chunk
        bad_updates = [update_messages(weights(0.5, bias=np.full(7, np.nan, np.float32)), 5),
                       update_messages(weights(0.5, body=np.full(1017, np.inf, np.float32)), 6, chunk_bytes=1500),
                       update_messages(weights(0.5, bias=np.zeros(6, np.float32)), 7),
                       update_messages(weights(0.5, bias=np.zeros(7, np.float64)), 8),
                       update_messages(weights(0.5, extra=np.zeros(2, np.float32)), 9),
                       update_messages(weights(0.5), 10, digest="0" * 64),
                       update_messages(weights(0.5), 11, chunk_bytes=1500)[:-1]]
        templates = [[m] for msgs in bad_updates for m in msgs]
        stale = [encode(m) for m in update_messages(weights(0.9), 0)]  # valid but not newer than version 0
        mutate = Mutator(4, templates)
        for i in range(n):
            if i % 500 == 0:
                for frames in stale:
                    pub.send_multipart(frames)
            if i % 50 == 0:  # whole bad updates in order, so every validation step is reached
                for m in mutate.rng.choice(bad_updates):
                    pub.send_multipart(encode(m))
            else:
                pub.send_multipart(mutate())
            if i % 2000 == 1999:  # a bounded backlog: the storm measures the subscriber, not its queue
                wait_for(heartbeat(f"mark{i}"), 60, "the subscriber to catch up")
        wait_for(heartbeat("sentinel"), 120, "the subscriber to read past the storm")
        assert proc.poll() is None, "serve-policy died while its weight subscriber was fuzzed"
        # the subscriber validates only the newest complete update of what is queued (latest wins):
        # one bad update of each kind, each after the previous was judged, reaches every check
        for msgs in [*bad_updates[:-2], [decode(f) for f in stale], bad_updates[-2]]:
            judged = bus()["counters"]["updates_received"]

            def judge(msgs=msgs, judged=judged) -> bool:  # re-sent: a chunk may meet a half-assembled junk update
                for m in msgs:
                    pub.send_multipart(encode(m))
                time.sleep(0.05)
                return bus()["counters"]["updates_received"] > judged

            wait_for(judge, 30, f"bad update version {msgs[0]['version']} to be judged")
        st = bus()
        assert st["applied_version"] == 0 and st["counters"]["accepted"] == 0, st
        out = good.infer({"state": np.zeros(15, np.float32)})
        assert out["policy_version"] == 0 and not out["actions"].any(), "served weights changed under fuzzing"
        assert st["counters"]["bad_frames"] > n // 10, st
        for reason in ("non_finite", "shape", "dtype", "names", "checksum", "version"):
            assert st["rejected"].get(reason, 0) > 0, (reason, st)
        assert sum(st["dropped"].values()) > 0, st
        assert len(st["publishers"]) <= 256, "publisher bookkeeping must stay bounded"
        # a genuine update still gets through and is served
        real = update_messages(weights(0.5), 12, algo="xxh3_128")

        def served() -> bool:
            for m in real:
                pub.send_multipart(encode(m))
            return good.infer({"state": np.zeros(15, np.float32)})["policy_version"] == 12

        wait_for(served, 30, "the genuine update after the storm")
        out = good.infer({"state": np.zeros(15, np.float32)})
        np.testing.assert_allclose(out["actions"], np.tanh(0.5), rtol=1e-6)
        grown = rss_mb(proc) - rss0
        assert grown < RSS_GROWTH_LIMIT_MB, f"serve-policy grew by {grown:.0f} MB while its weight bus was fuzzed"
    finally:
        good.close()
        ctx.destroy(linger=0)
        kill(proc)


def test_weight_subscriber_survives_malformed_updates(free_port, tmp_path):
    assert_weight_subscriber_survives_fuzz(QUICK_FRAMES, free_port, tmp_path)


@pytest.mark.soak
def test_weight_subscriber_survives_1e5_malformed_updates(free_port, tmp_path):
    assert_weight_subscriber_survives_fuzz(SLOW_FRAMES, free_port, tmp_path)


# ----------------------------------------------------------------------------- regressions found by the storms


def test_a_stray_first_chunk_with_a_huge_version_does_not_lock_out_later_updates():
    from hil_robot.transport.weights import WeightAssembler

    asm = WeightAssembler(1 << 20)
    stray = update_messages(weights(0.5), 2**63, chunk_bytes=1500)[0]  # first of three chunks, rest never come
    stray["publisher"] = "hostile"
    assert asm.feed(stray) is None
    good = update_messages(weights(0.5), 3)  # another publisher, lower version, complete
    assert asm.feed(good[0]) is not None, "a half-assembled update must not block another publisher's"
    asm.feed(stray)
    asm._progress_s -= 2 * asm.stall_s  # the stray stalls: the same publisher's older update is no longer blocked
    same = update_messages(weights(0.5), 4)[0]
    same["publisher"] = "hostile"
    assert asm.feed(same) is not None and asm.dropped["superseded"] >= 2


def test_a_header_no_check_foresaw_does_not_end_the_weight_bus_thread():
    from hil_robot.transport.links import InProcHub
    from hil_robot.transport.null_policy import NullPolicy
    from hil_robot.transport.weights import WeightSubscriber

    hub = InProcHub()
    server = hub.bind()
    sub = WeightSubscriber("inproc", NullPolicy(n_params=1024), link_factory=hub.connect, initial_version=0)
    try:
        bad = update_messages(weights(0.5), 5)
        bad[0]["checksum"] = np.full(3, np.nan, np.float32)  # an array where a string belongs
        bad[0]["sent_time_s"] = "soon"
        server.send(encode(bad[0]))
        server.send(encode({"type": "heartbeat", "publisher": ["not", "a", "name"], "version": 1}))
        wait_for(lambda: sub.status()["counters"]["updates_received"] >= 1, 10, "the bad update to be judged")
        good = update_messages(weights(0.5), 6)[0]
        server.send(encode(good))
        wait_for(lambda: sub.status()["counters"]["accepted"] == 1, 10, "the next good update (bus thread alive)")
        assert sub.status()["counters"]["bad_frames"] >= 1 and sub._thread.is_alive()
    finally:
        sub.close()


def _bad_records() -> list[tuple[str, dict[str, Any]]]:
    base = step_record("ep", 0, hw=HW).to_dict()
    return [("reward", {**base, "reward": "high"}), ("reward", {**base, "reward": math.nan}),
            ("action_executed", {**base, "action_executed": np.full(7, np.nan, np.float32)}),
            ("step", {**base, "step": False}), ("timestamp_s", {**base, "timestamp_s": [1.0]}),
            ("images", {**base, "observation": {**base["observation"], "images/front": np.zeros((16, 16, 3), np.float32)}}),
            ("instruction", {**base, "instruction": 5}), ("done", {**base, "done": "yes"})]


@pytest.mark.parametrize("field,record", _bad_records(), ids=[f for f, _ in _bad_records()])
def test_records_the_flush_could_not_store_are_refused_at_add_and_lose_no_neighbour(tmp_path, field, record):
    """Such a record used to pass add() and break the flush in the flusher thread: the good steps
    buffered with it were lost after being acknowledged, and a bad first step left an empty episode open."""
    from hil_robot.data import Recorder
    from hil_robot.types import ContractError, StepRecord

    store = EpisodeStore(tmp_path / "s")
    rec = Recorder(store, 0)
    with pytest.raises((ContractError, TypeError, ValueError), match=field.split("_")[0]):
        rec.add(StepRecord.from_dict(record))
    assert not rec.episode_open, "a refused first step must not open an episode"
    for t in range(3):
        rec.add(step_record("ep", t, hw=HW))
    bad = dict(record, step=3) if field != "step" else dict(record, step=True)
    with pytest.raises((ContractError, TypeError, ValueError)):
        rec.add(StepRecord.from_dict(bad))
    rec.add(step_record("ep", 3, hw=HW))
    rec.flush()
    rec.end_episode(True)
    assert store.read_episode("ep").meta.num_steps == 4
    store.close()


def test_bad_episode_metadata_leaves_the_episode_open_for_a_corrected_end(tmp_path):
    from hil_robot.data import Recorder
    from hil_robot.types import ContractError

    store = EpisodeStore(tmp_path / "s")
    rec = Recorder(store, 0)
    for t in range(3):
        rec.add(step_record("ep", t, hw=HW))
    with pytest.raises(ValueError):
        rec.end_episode(True, start_time_s="yesterday")
    with pytest.raises(ContractError, match="final observation"):
        rec.end_episode(True, final_observation={"state": np.zeros(3, np.float32)})
    assert rec.episode_open
    rec.end_episode(True, final_observation=observation(3, 0, hw=HW))
    assert store.read_episode("ep").final_obs is not None
    store.close()


def test_a_second_sender_cannot_end_or_extend_the_episode_another_sender_has_open(tmp_path):
    from hil_robot.data import Recorder
    from hil_robot.transport.links import InProcHub
    from hil_robot.transport.transitions import TransitionReceiver

    hub = InProcHub()
    store = EpisodeStore(tmp_path / "s")
    rx = TransitionReceiver(Recorder(store, 0), link=hub.bind())
    honest, hostile = hub.connect(), hub.connect()

    def send(link, kind, seq, session, payload):
        link.send([*encode({"type": kind, "seq": seq, "session": session, "base": 0}), *encode(payload)])
        rx.poll_once(1.0)

    for t in range(2):
        send(honest, "step", t, "robot", {"type": "payload", "record": step_record("ep", t, hw=HW).to_dict()})
    send(hostile, "end_episode", 0, "intruder", {"type": "payload", "success": True, "meta": {}})
    send(hostile, "step", 0, "intruder2", {"type": "payload", "record": step_record("ep", 2, hw=HW).to_dict()})
    assert rx.counters["rejected"] == 2 and rx.sink.episode_open
    send(honest, "step", 2, "robot", {"type": "payload", "record": step_record("ep", 2, hw=HW).to_dict()})
    send(honest, "end_episode", 3, "robot", {"type": "payload", "success": True, "meta": {}})
    assert store.read_episode("ep").meta.num_steps == 3
    stray = {"type": "payload", "record": step_record("x", 5, hw=HW).to_dict()}
    for i in range(1100):  # made-up sessions (more than max_sessions): the bookkeeping stays bounded
        send(hostile, "step", 0, f"s{i}", stray)
    assert rx.counters["rejected"] == 2 + 1100
    assert len(rx.expected) <= rx.max_sessions and len(rx.senders.status()) <= rx.senders.max_peers
    rx.link.close()
    store.close()


def test_bad_input_to_the_endpoint_commands_is_one_line_that_says_what_to_do(tmp_path):
    import re
    import socket

    from hil_robot import procs

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    (tmp_path / "a_file").write_text("not a store")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{")
    (ckpt / "model.safetensors").write_bytes(b"junk")
    null = "policy_factory=hil_robot.transport.null_policy:make_null_policy"
    cases = [
        (["serve-policy", null, f"port={port}"], "another process holds that port"),
        (["receive-transitions", f"store={tmp_path / 'rx'}", f"port={port}"], "another process holds that port"),
        (["operator", f"port={port}"], "another process holds that port"),
        (["receive-transitions", f"store={tmp_path / 'a_file'}", "port=0"], "is a file, not an episode store folder"),
        (["serve-policy", "policy.name=vla", f"policy.checkpoint={ckpt}", "port=0"], "the checkpoint is corrupt"),
        (["learner", f"store={tmp_path / 'nothing'}", f"run_dir={tmp_path / 'l'}"], "record some first"),
    ]
    env = {k: v for k, v in ENV.items() if k != procs.PARENT_ENV}  # as a person runs it
    try:
        for args, hint in cases:
            proc = subprocess.run([sys.executable, "-m", "hil_robot", *args], env=env, capture_output=True, text=True,
                                  timeout=120, cwd=tmp_path)
            out = [ln for ln in proc.stderr.strip().splitlines() if not re.match(r"\d{4}-\d\d-\d\d \d\d:", ln)]
            assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr, (args, proc.stderr[-2000:])
            assert len(out) == 1 and hint in out[0], (args, proc.stderr[-2000:])
    finally:
        busy.close()
