"""``hil-robot teleop`` end to end in real processes: a gamepad (recorded js_event stream through a
FIFO) drives the sim robot through the control loop and the episode is recorded as a demo; and
device=openxr without a runtime falls back to the WebXR page."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np

from teleop.gamepad import JS_AXIS, JS_BUTTON, JS_INIT, js_event

HIL = [sys.executable, "-m", "hil_robot"]
SMALL_SIM = ["sim.image_height=48", "sim.image_width=48", "port=0"]


def _feed_fifo(path, events, stop):
    fd = os.open(path, os.O_WRONLY)  # blocks until the teleop process opens the device
    try:
        os.write(fd, b"".join(events))
        stop.wait(60)
    finally:
        os.close(fd)


def test_teleop_gamepad_drives_the_sim_and_records_a_demo(tmp_path):
    fifo = tmp_path / "js0"
    os.mkfifo(fifo)
    store = tmp_path / "store"
    events = [js_event(0, 0, JS_BUTTON | JS_INIT, 0), js_event(0, -32767, JS_AXIS | JS_INIT, 5),
              js_event(5, -32767, JS_AXIS, 1)]  # left stick fully forward, held
    stop = threading.Event()
    feeder = threading.Thread(target=_feed_fifo, args=(fifo, events, stop), daemon=True)
    feeder.start()
    cmd = HIL + ["teleop", "device=gamepad", f"teleop.gamepad_path={fifo}", "max_steps=12", f"record={store}",
                 f"teleop.cert_dir={tmp_path / 'cert'}", *SMALL_SIM]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    finally:
        stop.set()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "episode 0: max_steps" in proc.stdout and "operator screen: https://127.0.0.1:" in proc.stdout

    from hil_robot.data.store import EpisodeStore

    ep = EpisodeStore(store, read_only=True).read_episode(0)
    assert len(ep) == 12 and {s.value for s in ep.segments} == {"demo"}
    assert set(ep.columns["device_id"]) == {f"gamepad:{fifo}"}
    actions = ep.columns["action_executed"]
    assert np.all(actions[-4:, 0] > 0.5), actions  # the stick pushed the arm forward (+x)
    x = ep.columns["obs/state"][:, 0]
    assert x[-1] > x[0] + 0.05, x  # ... and the sim arm really moved


def test_openxr_without_runtime_falls_back_to_webxr(tmp_path):
    env = dict(os.environ, XR_RUNTIME_JSON=str(tmp_path / "none.json"))
    cmd = HIL + ["teleop", "device=openxr", "max_steps=3", "sim.render=false", "host=127.0.0.1",
                 f"teleop.cert_dir={tmp_path / 'cert'}", *SMALL_SIM]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "falling back to device=webxr" in proc.stderr
    assert "headset page: https://127.0.0.1:" in proc.stdout and "episode 0:" in proc.stdout
    assert time.monotonic() - t0 < 170


def test_teleop_rejects_unknown_device():
    proc = subprocess.run(HIL + ["teleop", "device=wiimote"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "spacemouse, keyboard, gamepad, openxr, webxr" in proc.stderr
