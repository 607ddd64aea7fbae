"""Teleop benchmarks.

1. WebXR input -> command latency on loopback: the real WebXR page in headless Chromium with the
   iwer emulated headset streams controller poses over WSS to the teleop server; a Python control
   thread turns each new sample into an OperatorCommand. A test-only script in the page moves the
   right controller to a new, decodable position every ``move_ms`` and notes when it did.
   * webxr_latency_p50/p99_ms: from the XR frame that sampled the new pose (the page's frame
     callback, i.e. excluding the wait for the display) to the OperatorCommand at the Python side.
   * webxr_input_to_command_p50/p99_ms: from setting the emulated controller to the command
     (includes waiting for the next XR frame; iwer runs at the browser's frame rate).
   * webxr_wss_floor_p50/p99_ms (anchor, same run): bare timestamped messages over a second WSS
     link to the same endpoint from the same page (timer-driven, XR session still running),
     page send -> arrival in Python: what the transport alone costs on this machine.
   Both clocks are the host's wall clock (same machine): performance.timeOrigin+now() vs time.time().
2. SpaceMouse read loop: the reader thread draining a recorded HID report stream back to back
   (hidapi ``read`` interface), reports parsed per second; and the cost of one ``read()``.
3. OpenXR frame loop through the real loader + scripted runtime (when gcc and headers exist).

    python scripts/bench_teleop.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hil_robot.config.robot import RobotConfig  # noqa: E402
from hil_robot.config.teleop import TeleopConfig  # noqa: E402

STEP_M = 0.0005  # position code: x = x0 + STEP * (k % 100), y = y0 + STEP * (k // 100)
MOVER_JS = """
(async () => {
  const r = __xr.controllers.right, n = %d, period = %f;
  window.__moves = [];
  for (let k = 1; k <= n; k++) {
    await new Promise((res) => setTimeout(res, period));
    r.position.set(0.2 + %f * (k %% 100), 1.2 + %f * Math.floor(k / 100), -0.3);
    window.__moves.push(performance.timeOrigin + performance.now());
  }
  return window.__moves.length;
})()
"""

FLOOR_JS = """
(async () => {
  const ws = new WebSocket(`wss://${location.host}/ws/xr${location.search}`);
  await new Promise((res) => { ws.onopen = res; });
  for (let k = 0; k < %d; k++) {
    await new Promise((res) => setTimeout(res, %f));
    ws.send(JSON.stringify({ type: "xr", seq: 10000000 + k, t_ms: performance.timeOrigin + performance.now(), controllers: {} }));
  }
  ws.close();
  return true;
})()
"""


def pct(a: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(a), q)) if a else math.nan


def bench_webxr(n_moves: int, move_ms: float) -> dict[str, float]:
    from teleop.operator import DeviceOperator
    from teleop.testing.browser import Browser, unavailable_reason
    from teleop.web.server import TeleopWebServer
    from teleop.webxr import WebXRDevice

    reason = unavailable_reason()
    if reason:
        print(f"[webxr] skipped: {reason}")
        return {}
    state = np.zeros(15, dtype=np.float32)
    state[:7] = [0.5, 0.0, 0.3, 0.0, 1.0, 0.0, 0.0]
    obs = {"state": state, "timestamp_s": 0.0, "prompt": ""}
    with tempfile.TemporaryDirectory() as tmp, TeleopWebServer(port=0, cert_dir=tmp) as server, Browser() as browser:
        device = WebXRDevice(server, stale_s=1.0, require_tracked=False)  # iwer poses are all "emulated"
        device.open()
        op = DeviceOperator(device, TeleopConfig(device="webxr", jump_guard_m=1.0), RobotConfig())
        browser.open(server.url("/xr"), emulate_xr=True)
        browser.wait("document.body.dataset.ready === '1'", 10)
        browser.call("click", selector="#enter-vr")
        browser.wait("document.body.dataset.xr === 'running'", 10)
        browser.eval("(() => { const r = __xr.controllers.right; r.position.set(0.2, 1.2, -0.3);"
                     " r.updateButtonValue('squeeze', 1); return 1; })()")
        if not device.wait_sample(device.seq + 5, 10):
            raise RuntimeError("the WebXR page is not streaming")
        base = device.read().pose
        assert base is not None
        first_cmd: dict[int, tuple[float, float, float]] = {}  # k -> (command, sample, arrival) epoch ms
        stop = threading.Event()

        def control() -> None:  # the controller side: one command per new sample, as soon as it lands
            seq = device.seq
            while not stop.is_set():
                if not device.wait_sample(seq, 0.2):
                    continue
                seq = device.seq
                sample_ms, recv_ms = device.sample_t_ms, device.recv_epoch_ms
                cmd = op.command(obs, {})
                t_cmd = time.time() * 1000.0
                inp = op.last_input
                if inp is None or inp.pose is None or cmd.pose_target is None:
                    continue
                dx, dy = (inp.pose[0] - base[0]) / STEP_M, (inp.pose[1] - base[1]) / STEP_M
                k = int(round(dy)) * 100 + int(round(dx))
                if k > 0 and k not in first_cmd:
                    first_cmd[k] = (t_cmd, sample_ms, recv_ms)

        th = threading.Thread(target=control, daemon=True)
        th.start()
        browser.eval(MOVER_JS % (n_moves, move_ms, STEP_M, STEP_M), timeout_s=n_moves * move_ms / 1000 * 3 + 30)
        time.sleep(0.3)
        stop.set()
        th.join(timeout=2)
        moves = browser.eval("window.__moves")
        samples = device.samples
        frame_rate = browser.eval(
            "new Promise(res => { let n = 0; const s = __xr.activeSession; const t0 = performance.now();"
            " const f = () => { n++; if (performance.now() - t0 < 1000) s.requestAnimationFrame(f); else res(n); };"
            " s.requestAnimationFrame(f); })")
        # anchor: the same WSS path with no XR frame loop in front of it (page -> Python arrival)
        stop_floor = threading.Event()
        floor: list[float] = []

        def arrivals() -> None:
            seq = device.seq
            while not stop_floor.is_set():
                if device.wait_sample(seq, 0.2):
                    seq = device.seq
                    if seq >= 10_000_000:
                        floor.append(device.recv_epoch_ms - device.sample_t_ms)

        th2 = threading.Thread(target=arrivals, daemon=True)
        th2.start()
        browser.eval(FLOOR_JS % (min(n_moves, 300), 40.0), timeout_s=60)
        time.sleep(0.3)
        stop_floor.set()
        th2.join(timeout=2)
        device.close()
    frame_lat = [c - s for c, s, _ in first_cmd.values()]
    wire_lat = [r - s for _, s, r in first_cmd.values()]
    input_lat = [c - moves[k - 1] for k, (c, _, _) in first_cmd.items() if k - 1 < len(moves)]
    print(f"[webxr] moves {len(moves)}, commands matched {len(first_cmd)}, samples {samples}, "
          f"XR frames/s in the page {frame_rate}")
    return {
        "webxr_latency_p50_ms": pct(frame_lat, 50),
        "webxr_latency_p99_ms": pct(frame_lat, 99),
        "webxr_frame_to_arrival_p50_ms": pct(wire_lat, 50),
        "webxr_frame_to_arrival_p99_ms": pct(wire_lat, 99),
        "webxr_wss_floor_p50_ms": pct(floor, 50),
        "webxr_wss_floor_p99_ms": pct(floor, 99),
        "webxr_input_to_command_p50_ms": pct(input_lat, 50),
        "webxr_input_to_command_p99_ms": pct(input_lat, 99),
        "webxr_matched_frac": len(first_cmd) / max(1, len(moves)),
        "webxr_page_frame_hz": float(frame_rate),
    }


def bench_spacemouse(seconds: float) -> dict[str, float]:
    from teleop.spacemouse import RecordedHid, SpaceMouse, button_report, rotation_report, translation_report

    rng = np.random.default_rng(0)
    reports = []
    for i in range(3000):
        v = rng.integers(-350, 350, size=6)
        reports += [(0.0, translation_report(*map(int, v[:3]))), (0.0, rotation_report(*map(int, v[3:])))]
        if i % 50 == 0:
            reports.append((0.0, button_report(i // 50 % 4)))
    sm = SpaceMouse(handle=RecordedHid(reports, realtime=False, loop=True), silence_s=1.0)
    with sm:
        time.sleep(0.2)
        n0, t0 = sm.reports_read, time.perf_counter()
        reads = 0
        while time.perf_counter() - t0 < seconds:  # a 1 kHz consumer alongside, like a control loop
            sm.read()
            reads += 1
            time.sleep(0.001)
        n1, t1 = sm.reports_read, time.perf_counter()
    rate = (n1 - n0) / (t1 - t0)
    print(f"[spacemouse] {n1 - n0} reports in {t1 - t0:.2f} s; {reads} read() calls")
    return {"spacemouse_read_loop_hz": rate}


def bench_openxr(seconds: float) -> dict[str, float]:
    from teleop.testing.openxr_runtime import ControllerSample, build_runtime, unavailable_reason, write_script

    if unavailable_reason():
        print(f"[openxr] skipped: {unavailable_reason()}")
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        rt = build_runtime(tmp)
        script = write_script(Path(tmp) / "s.txt", [ControllerSample(0.0), ControllerSample(0.0, hand="left")])
        os.environ["XR_RUNTIME_JSON"], os.environ["HIL_XR_SCRIPT"] = str(rt.manifest), str(script)
        from teleop.openxr_device import OpenXRDevice

        with OpenXRDevice() as dev:
            time.sleep(0.2)
            f0, t0 = dev.frames, time.perf_counter()
            time.sleep(seconds)
            hz = (dev.frames - f0) / (time.perf_counter() - t0)
    print(f"[openxr] scripted runtime at 90 Hz nominal: {hz:.1f} frames/s through the loader")
    return {"openxr_frame_loop_hz": hz}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a run of well under a minute")
    ap.add_argument("--json", type=Path, help="write the metrics as a flat JSON object")
    ap.add_argument("--moves", type=int, default=0, help="WebXR controller moves (default 150 quick / 600)")
    args = ap.parse_args(argv)
    n_moves = args.moves or (150 if args.quick else 600)
    results: dict[str, float] = {}
    results.update(bench_spacemouse(1.0 if args.quick else 3.0))
    results.update(bench_openxr(1.0 if args.quick else 3.0))
    results.update(bench_webxr(n_moves, 40.0))
    print(f"\n{'metric':<34} {'value':>10}")
    for k, v in results.items():
        print(f"{k:<34} {v:>10.3f}")
    goal = results.get("webxr_latency_p99_ms")
    if goal is not None:
        print(f"\nWebXR p99 {goal:.2f} ms vs goal 20 ms: {'met' if goal <= 20 else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
