"""The WebXR page in headless Chromium with the iwer emulated headset: controller motion and
buttons on the page arrive as operator commands on the Python side."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hil_robot.config.robot import RobotConfig
from hil_robot.config.teleop import TeleopConfig
from hil_robot.types import OperatorMode, Segment
from teleop.operator import DeviceOperator
from hil_robot.rotations import quat_conj, quat_mul, quat_to_rotvec
from teleop.web.server import TeleopWebServer
from teleop.webxr import WebXRDevice

pytestmark = pytest.mark.browser


def robot_obs():
    state = np.zeros(15, dtype=np.float32)
    state[:7] = [0.5, 0.0, 0.3, 0.0, 1.0, 0.0, 0.0]
    state[7] = 1.0
    return {"state": state, "timestamp_s": 0.0, "prompt": "pick"}


@pytest.fixture(scope="module")
def xr(browser, tmp_path_factory):
    server = TeleopWebServer(port=0, cert_dir=tmp_path_factory.mktemp("cert")).start()
    # stale_s generous: a loaded CI machine may stall the page's frames; iwer reports every pose as
    # emulatedPosition, which a real headset does only when the controller is not optically tracked
    device = WebXRDevice(server, stale_s=3.0, require_tracked=False)
    device.open()
    browser.open(server.url("/xr"), emulate_xr=True)
    browser.wait("document.body.dataset.ready === '1'", 10)
    browser.call("click", selector="#enter-vr")
    browser.wait("document.body.dataset.xr === 'running'", 10)
    assert device.wait_sample(-1, 10.0), "the page never streamed a controller sample"
    yield server, device
    device.close()
    server.stop()


def js_controller(code: str) -> str:
    return f"(() => {{ const r = __xr.controllers.right, l = __xr.controllers.left; {code}; return true; }})()"


def step(browser, device, code: str, frames: int = 3) -> None:
    """Apply ``code`` to the emulated controllers and wait until ``frames`` newer samples arrived."""
    browser.eval(js_controller(code))
    seq = device.seq
    assert device.wait_sample(seq + frames, 15.0), "no fresh samples after moving the controller"


def test_controller_stream_drives_operator_commands(browser, xr):
    server, device = xr
    seq = device.seq
    assert device.wait_sample(seq + 5, 10.0), "the page stopped streaming (one sample per XR frame)"

    op = DeviceOperator(device, TeleopConfig(device="webxr"), RobotConfig())
    obs = robot_obs()
    step(browser, device, "r.position.set(0.2, 1.2, -0.3); r.updateButtonValue('squeeze', 0)")
    assert op.command(obs, {}).mode is OperatorMode.AUTONOMOUS

    step(browser, device, "r.updateButtonValue('squeeze', 1.0)")  # grab = take over, latch
    c = op.command(obs, {})
    assert c.mode is OperatorMode.TAKEOVER and c.segment is Segment.RECOVERY
    assert c.pose_target[:3] == pytest.approx([0.5, 0.0, 0.3], abs=1e-5)

    # 3 cm away from the operator (-z) and 2 cm up (+y), trigger pulled
    step(browser, device, "r.position.set(0.2, 1.22, -0.33); r.updateButtonValue('trigger', 1.0)")
    c = op.command(obs, {})
    assert c.pose_target[:3] == pytest.approx([0.53, 0.0, 0.32], abs=2e-3)
    assert c.action[0] == pytest.approx(1.0) and c.action[2] == pytest.approx(1.0)  # clipped 1-tick delta
    assert c.action[6] == pytest.approx(1.0)  # gripper closed

    # yaw the hand 10 degrees left (about XR +y): the gripper yaws 10 degrees about the base +z
    step(browser, device, "r.quaternion.set(0, Math.sin(5 * Math.PI / 180), 0, Math.cos(5 * Math.PI / 180))")
    c = op.command(obs, {})
    delta = quat_mul(c.pose_target[3:7].astype(np.float64), quat_conj(obs["state"][3:7].astype(np.float64)))
    assert quat_to_rotvec(delta) == pytest.approx([0.0, 0.0, np.radians(10)], abs=2e-3)

    step(browser, device, "r.updateButtonValue('a-button', 1)")
    assert op.command(obs, {}).segment is Segment.CORRECTION
    step(browser, device, "r.updateButtonValue('a-button', 0); r.updateButtonValue('squeeze', 0)")
    held = op.command(obs, {})
    step(browser, device, "r.position.set(0.0, 1.0, -0.1)")  # hand moves freely while released
    c = op.command(obs, {})
    assert c.pose_target[:3] == pytest.approx(held.pose_target[:3], abs=1e-6)

    step(browser, device, "r.updateButtonValue('b-button', 1)")  # hand back to the policy
    c = op.command(obs, {})
    assert c.mode is OperatorMode.AUTONOMOUS and c.action is None
    step(browser, device, "r.updateButtonValue('b-button', 0); r.updateButtonValue('trigger', 0)")
    op.command(obs, {})
    assert op.machine.counts["takeovers"] == 1 and op.machine.counts["corrections"] == 1


def test_jump_guard_and_tracking_loss_through_the_page(browser, xr):
    server, device = xr
    op = DeviceOperator(device, TeleopConfig(device="webxr"), RobotConfig())
    obs = robot_obs()
    step(browser, device, "r.position.set(0.2, 1.2, -0.3); r.updateButtonValue('squeeze', 1)")
    op.command(obs, {})
    step(browser, device, "r.position.set(0.2, 1.2, -0.32)")
    before = op.command(obs, {}).pose_target.copy()
    assert before[0] == pytest.approx(0.52, abs=2e-3)
    step(browser, device, "r.position.set(0.2, 1.2, -0.6)")  # 28 cm in one frame: a glitch
    c = op.command(obs, {})
    assert np.allclose(c.pose_target[:3], before[:3], atol=1e-6) and op.mapper.jumps == 1
    step(browser, device, "r.connected = false", frames=2)
    c = op.command(obs, {})
    assert not device.read().tracking_valid
    assert np.allclose(c.pose_target[:3], before[:3], atol=1e-6)  # lost tracking holds
    step(browser, device, "r.connected = true; r.updateButtonValue('squeeze', 0)")
    op.command(obs, {})


def test_camera_feed_reaches_the_page(browser, xr):
    server, device = xr
    img = np.zeros((48, 64, 3), dtype=np.uint8)
    img[:, :, 1] = 200
    server.push_image("front", img)
    browser.wait("(() => { const i = document.querySelector('figure[data-camera=front] img');"
                 " return i && i.naturalWidth === 64; })()", 5)
    assert server.bad_messages == 0
