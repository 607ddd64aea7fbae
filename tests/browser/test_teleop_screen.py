"""The operator screen in headless Chromium: camera feeds, status, buttons, language corrections,
and a screenshot checked for the expected elements."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from hil_robot.config.robot import RobotConfig
from hil_robot.config.teleop import TeleopConfig
from teleop.node import TeleopNode
from teleop.testing.replay import ReplayDevice

pytestmark = pytest.mark.browser


def obs_with_cameras():
    front = np.zeros((96, 128, 3), dtype=np.uint8)
    front[:, :, 0] = 220  # red
    wrist = np.zeros((96, 128, 3), dtype=np.uint8)
    wrist[:, :, 2] = 220  # blue
    state = np.zeros(15, dtype=np.float32)
    state[:7] = [0.5, 0, 0.3, 0, 1, 0, 0]
    return {"images/front": front, "images/wrist": wrist, "state": state, "timestamp_s": 0.0, "prompt": "pick"}


def box(browser, selector):
    return browser.eval(
        f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();"
        " return [r.x, r.y, r.width, r.height]; })()"
    )


def mean_rgb(png, b):
    x, y, w, h = (int(round(v)) for v in b)
    patch = png[y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4]
    return patch.reshape(-1, 3)[:, ::-1].mean(axis=0)  # BGR -> RGB


def test_operator_screen_shows_feeds_status_and_sends_buttons(browser, tmp_path):
    cfg = TeleopConfig(device="keyboard", http_port=0, cert_dir=str(tmp_path / "cert"), screen_fps=50.0)
    node = TeleopNode(cfg, RobotConfig(), device=ReplayDevice()).start()
    try:
        obs = obs_with_cameras()
        node.command(obs, {"step": 7, "policy_version": 3})
        browser.open(node.server.url("/"), viewport=(1100, 700))
        browser.wait("document.body.dataset.statusSeen === '1'", 10)
        browser.wait("document.querySelectorAll('#cameras img').length === 2 &&"
                     " [...document.querySelectorAll('#cameras img')].every(i => i.naturalWidth === 128)", 10)
        assert browser.eval("document.getElementById('policy-version').textContent") == "3"
        assert browser.eval("document.getElementById('mode').textContent") == "autonomous"

        browser.call("click", selector="#btn-takeover")
        for _ in range(400):  # the control loop picks screen events up on its next tick
            if node.command(obs, {"step": 8, "policy_version": 3}).segment is not None:
                break
            browser.eval("new Promise(r => setTimeout(r, 20))")
        browser.wait("document.getElementById('segment').textContent === 'recovery'", 5)  # round trip
        browser.call("fill", selector="#correction-text", text="approach from the left")
        browser.call("click", selector="#btn-send-text")
        browser.call("click", selector="#btn-success")
        marks, texts = [], []
        for _ in range(400):
            c = node.command(obs, {"step": 8, "policy_version": 3})
            marks.append(c.mark)
            texts.append(c.language_correction)
            if c.mark and any(texts):
                break
            browser.eval("new Promise(r => setTimeout(r, 20))")
        assert "success" in marks and "approach from the left" in texts
        browser.wait("document.getElementById('count-successes').textContent === '1'", 15)
        browser.wait("document.getElementById('count-takeovers').textContent === '1'", 15)
        browser.wait("[...document.querySelectorAll('#corrections li')].some(li => li.textContent === 'approach from the left')", 15)

        browser.call("click", selector="#btn-estop")
        for _ in range(400):
            if node.command(obs, {}).estop:
                break
            browser.eval("new Promise(r => setTimeout(r, 20))")
        assert node.operator.machine.estop
        browser.wait("!document.getElementById('estop-state').hidden", 15)

        assert browser.eval("document.getElementById('policy-version').textContent") == "3"
        shot = tmp_path / "operator_screen.png"
        browser.call("screenshot", path=str(shot))
        png = cv2.imread(str(shot))
        assert png is not None and png.shape[:2] == (700, 1100)
        front = mean_rgb(png, box(browser, "figure[data-camera=front] img"))
        wrist = mean_rgb(png, box(browser, "figure[data-camera=wrist] img"))
        assert front[0] > 150 and front[2] < 60, f"front feed not red in the screenshot: {front}"
        assert wrist[2] > 150 and wrist[0] < 60, f"wrist feed not blue in the screenshot: {wrist}"
        estop = mean_rgb(png, box(browser, "#btn-estop"))
        assert estop[0] > 150 and estop[1] < 100, f"e-stop button not red: {estop}"
        banner = mean_rgb(png, box(browser, "header"))
        assert banner[0] > 120, "header should turn red while the e-stop is latched"
        shutil.copy(shot, "/tmp/teleop_operator_screen.png")
    finally:
        node.close()
