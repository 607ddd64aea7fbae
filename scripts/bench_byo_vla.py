"""Bring-your-own-VLA benchmark (issue 13): each backend adapter's round-trip overhead over its raw
protocol floor, measured interleaved in the same run.

    python scripts/bench_byo_vla.py [--quick] [--json out.json] [--rows openpi,groot,hil]

Model compute is excluded: every server hosts ``ConstPolicy`` (a precomputed chunk), so a round trip
is transport + encoding + mapping + validation. Each server runs in its own process on loopback.

Observation: two 224x224x3 uint8 images + state[15] + prompt (the size of a DROID request); reply
chunk: 15x8 float32 (pi05_droid's shape) for openpi, 16x7 for GR00T, 10x7 for ours.

Rows (ROWS below; a row = name, adapter round trip, floor round trip):
* openpi: our ``OpenpiClientPolicy.infer`` (mapping, msgpack_numpy encoding, chunk checks) against
  our openpi front (decode, inverse mapping, policy, encode) vs. FLOOR: a bare websockets client and
  echo server exchanging the same request and reply bytes, pre-encoded;
* groot: our ``GrootClientPolicy.infer`` (N1.6) against our GR00T front vs. FLOOR: bare pyzmq REQ/REP
  exchanging the same pre-encoded bytes;
* hil (reference): our own zmq protocol, ``PolicyClient`` against ``PolicyServer``, vs. FLOOR: bare
  pyzmq REQ/REP with the same frames.
Figures: p50 and p99 of each, the p50/p99 overhead ratios (adapter / floor) and the extra ms at p50.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import sys
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

OPENPI_MAP = {"observation/exterior_image_1_left": "images/front", "observation/wrist_image_left": "images/wrist",
              "observation/state": "state", "prompt": "prompt"}
GROOT_MAP = {"video.front": "images/front", "video.wrist": "images/wrist", "state.all": "state",
             "annotation.human.task_description": "prompt"}
CHUNKS = {"openpi": (15, 8), "groot": (16, 7), "hil": (10, 7)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_obs() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {"images/front": rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
            "images/wrist": rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
            "state": rng.standard_normal(15).astype(np.float32), "prompt": "pick up the red cube and place it in the bin",
            "timestamp_s": time.monotonic()}


class ConstPolicy:
    def __init__(self, shape: tuple[int, int]) -> None:
        self.chunk = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
        self.metadata = {"name": "const", "action_horizon": shape[0], "action_dim": shape[1], "policy_version": 0}

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        return {"actions": self.chunk, "policy_version": 0}

    def reset(self) -> None:
        pass


# ----------------------------------------------------------------------------- server processes


def serve_openpi(port: int, ready: Any) -> None:
    from hil_robot.obs_mapping import ObsMapping
    from hil_robot.transport.openpi_server import OpenpiPolicyServer

    server = OpenpiPolicyServer(ConstPolicy(CHUNKS["openpi"]), ObsMapping(OPENPI_MAP), port=port)
    ready.set()
    server.serve_forever()


def serve_ws_echo(port: int, reply: bytes, ready: Any) -> None:
    from websockets.sync.server import serve

    def handler(ws: Any) -> None:
        ws.send(b"\x80")  # an empty metadata map, as the openpi handshake has one frame first
        for _ in ws:
            ws.send(reply)

    server = serve(handler, "127.0.0.1", port, compression=None, max_size=None)
    ready.set()
    server.serve_forever()


def serve_groot(port: int, ready: Any) -> None:
    from hil_robot.obs_mapping import ObsMapping
    from hil_robot.transport.groot_server import GrootPolicyServer

    server = GrootPolicyServer(ConstPolicy(CHUNKS["groot"]), ObsMapping(GROOT_MAP), f"tcp://127.0.0.1:{port}")
    ready.set()
    server.serve_forever()


def serve_hil(port: int, ready: Any) -> None:
    from hil_robot.transport.policy_server import PolicyServer

    server = PolicyServer(ConstPolicy(CHUNKS["hil"]), f"tcp://127.0.0.1:{port}", heartbeat_s=1.0)
    ready.set()
    server.serve_forever()


def serve_zmq_echo(port: int, reply: list[bytes], ready: Any) -> None:
    import zmq

    sock = zmq.Context.instance().socket(zmq.REP)
    sock.bind(f"tcp://127.0.0.1:{port}")
    ready.set()
    while True:
        sock.recv_multipart(copy=False)
        sock.send_multipart(reply, copy=False)


# ----------------------------------------------------------------------------- rows


class Row:
    """One adapter and its protocol floor: ``setup()`` starts their servers and returns the two
    round-trip callables; ``close()`` stops everything."""

    def __init__(self, name: str, note: str, setup: Callable[["Row"], tuple[Callable[[], Any], Callable[[], Any]]]):
        self.name, self.note, self._setup = name, note, setup
        self.procs: list[mp.Process] = []
        self.closers: list[Callable[[], Any]] = []

    def spawn(self, target: Callable[..., None], *args: Any) -> int:
        port = free_port()
        ready = mp.get_context("spawn").Event()
        proc = mp.get_context("spawn").Process(target=target, args=(port, *args, ready), daemon=True)
        proc.start()
        if not ready.wait(60):
            raise RuntimeError(f"{self.name}: server {target.__name__} did not start")
        self.procs.append(proc)
        return port

    def setup(self) -> tuple[Callable[[], Any], Callable[[], Any]]:
        return self._setup(self)

    def close(self) -> None:
        for c in self.closers:
            c()
        for p in self.procs:
            p.kill()
            p.join(5)


def setup_openpi(row: Row) -> tuple[Callable[[], Any], Callable[[], Any]]:
    from websockets.sync.client import connect

    from hil_robot.obs_mapping import ObsMapping
    from hil_robot.transport.openpi_client import OpenpiClientPolicy
    from hil_robot.transport.openpi_codec import packb

    obs, mapping = make_obs(), ObsMapping(OPENPI_MAP)
    client = OpenpiClientPolicy(f"ws://127.0.0.1:{row.spawn(serve_openpi)}", mapping, timeout_s=5, native_dim=8)
    client.wait_ready(30)
    request = packb(mapping.apply(obs))
    reply = packb({"actions": ConstPolicy(CHUNKS["openpi"]).chunk, "policy_version": 0,
                   "server_timing": {"infer_ms": 0.01, "prev_total_ms": 0.1}})
    import inspect

    legacy = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}
    ws = connect(f"ws://127.0.0.1:{row.spawn(serve_ws_echo, reply)}", compression=None, max_size=None, **legacy)
    ws.recv(timeout=5)
    row.closers += [client.close, ws.close]

    def floor() -> Any:
        ws.send(request)
        return ws.recv(timeout=5)

    return (lambda: client.infer(obs)), floor


def setup_groot(row: Row) -> tuple[Callable[[], Any], Callable[[], Any]]:
    import zmq

    from hil_robot.obs_mapping import ObsMapping
    from hil_robot.transport.groot_client import GrootClientPolicy, nest_observation
    from hil_robot.transport.groot_codec import packb

    obs, mapping = make_obs(), ObsMapping(GROOT_MAP)
    client = GrootClientPolicy(f"tcp://127.0.0.1:{row.spawn(serve_groot)}", mapping, timeout_s=5, native_dim=7)
    client.wait_ready(30)
    request = packb({"endpoint": "get_action", "data": {"observation": nest_observation(mapping.apply(obs)),
                                                        "options": None}})
    chunk = ConstPolicy(CHUNKS["groot"]).chunk
    reply = packb([{"ee_delta": chunk[None, :, :6], "gripper": chunk[None, :, 6:]}, {"policy_version": 0}])
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.connect(f"tcp://127.0.0.1:{row.spawn(serve_zmq_echo, [reply])}")
    row.closers += [client.close, lambda: sock.close(0)]

    def floor() -> Any:
        sock.send(request)
        return sock.recv()

    return (lambda: client.infer(obs)), floor


def setup_hil(row: Row) -> tuple[Callable[[], Any], Callable[[], Any]]:
    import zmq

    from hil_robot.transport.codec import encode
    from hil_robot.transport.policy_client import PolicyClient

    obs = make_obs()
    client = PolicyClient(f"tcp://127.0.0.1:{row.spawn(serve_hil)}", timeout_s=5, heartbeat_s=None)
    client.wait_ready(30)
    request = [bytes(f) for f in encode({"type": "infer", "id": 1, "obs": obs})]
    reply = [bytes(f) for f in encode({"type": "result", "id": 1, "actions": ConstPolicy(CHUNKS["hil"]).chunk,
                                       "policy_version": 0, "timing": {"infer_ms": 0.01, "batch_size": 1}})]
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.connect(f"tcp://127.0.0.1:{row.spawn(serve_zmq_echo, reply)}")
    row.closers += [client.close, lambda: sock.close(0)]

    def floor() -> Any:
        sock.send_multipart(request, copy=False)
        return sock.recv_multipart(copy=False)

    return (lambda: client.infer(obs)), floor


ROWS: dict[str, Row] = {
    "openpi": Row("openpi", "OpenpiClientPolicy -> openpi front | bare websockets echo", setup_openpi),
    "groot": Row("groot", "GrootClientPolicy (N1.6) -> GR00T front | bare zmq REQ/REP echo", setup_groot),
    "hil": Row("hil", "PolicyClient -> PolicyServer (ours, reference) | bare zmq REQ/REP echo", setup_hil),
}


# ----------------------------------------------------------------------------- measurement


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def measure(rows: list[Row], iters: int, block: int = 25, warmup: int = 20) -> dict[str, float]:
    fns = {row.name: row.setup() for row in rows}
    samples: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in fns}
    for adapter, floor in fns.values():
        timed(adapter, warmup)
        timed(floor, warmup)
    for _ in range(max(1, iters // block)):  # interleave adapters and floors so drift hits all alike
        for name, (adapter, floor) in fns.items():
            samples[name][0].extend(timed(adapter, block))
            samples[name][1].extend(timed(floor, block))
    res: dict[str, float] = {}
    for name, (a, f) in samples.items():
        a50, a99, f50, f99 = (float(np.percentile(x, q)) for x in (a, f) for q in (50, 99))
        res.update({f"{name}_rtt_p50_ms": a50, f"{name}_rtt_p99_ms": a99, f"{name}_floor_p50_ms": f50,
                    f"{name}_floor_p99_ms": f99, f"{name}_overhead_ratio_p50": a50 / f50,
                    f"{name}_overhead_ratio_p99": a99 / f99, f"{name}_extra_p50_ms": a50 - f50,
                    f"{name}_samples": float(len(a))})
    return res


def print_table(rows: list[Row], res: dict[str, float]) -> None:
    head = f"{'adapter':<8} {'p50 ms':>8} {'p99 ms':>8} {'floor p50':>10} {'floor p99':>10} {'ratio p50':>10} " \
           f"{'ratio p99':>10} {'extra p50 ms':>13}  what"
    print(head)
    print("-" * len(head))
    for row in rows:
        n = row.name
        print(f"{n:<8} {res[n + '_rtt_p50_ms']:>8.3f} {res[n + '_rtt_p99_ms']:>8.3f} {res[n + '_floor_p50_ms']:>10.3f} "
              f"{res[n + '_floor_p99_ms']:>10.3f} {res[n + '_overhead_ratio_p50']:>10.2f} "
              f"{res[n + '_overhead_ratio_p99']:>10.2f} {res[n + '_extra_p50_ms']:>13.3f}  {row.note}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a run of well under a minute")
    ap.add_argument("--json", help="write {metric: number} here")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--iters", type=int, default=0, help="round trips per adapter and per floor (default 300 quick, 2000)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    rows = [ROWS[n] for n in names]
    iters = args.iters or (300 if args.quick else 2000)
    t0 = time.monotonic()
    try:
        res = measure(rows, iters)
    finally:
        for row in rows:
            row.close()
    print(f"round trips on loopback, {iters} per adapter and per floor, interleaved; obs 2x224x224x3 u8 + state[15]"
          f" + prompt; const policy (no model compute); {time.monotonic() - t0:.1f} s")
    print_table(rows, res)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: round(v, 4) for k, v in res.items()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
