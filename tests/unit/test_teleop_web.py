"""Teleop web server without a browser: pages over HTTPS, the WSS endpoints, bad input, the
self-signed certificate, and the WebXR message parsing."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from teleop.vr import ControllerState, vr_input
from teleop.web.certs import ensure_certificate
from teleop.web.server import TeleopWebServer, encode_frame
from teleop.webxr import WebXRDevice, parse_controller

NO_VERIFY = ssl.create_default_context()
NO_VERIFY.check_hostname = False
NO_VERIFY.verify_mode = ssl.CERT_NONE

GRIP = [0.1, 1.2, -0.3, 1.0, 0.0, 0.0, 0.0]


def xr_message(seq, grip=GRIP, squeeze=1.0):
    buttons = [[False, 0.25], [squeeze > 0.5, squeeze], None, [False, 0], [True, 1], [False, 0]]
    return {"type": "xr", "seq": seq, "t_ms": time.time() * 1000,
            "controllers": {"right": {"grip": grip, "aim": grip, "buttons": buttons, "axes": [0, 0, 0.5, -0.5]}}}


@pytest.fixture
def server(tmp_path):
    events = []
    srv = TeleopWebServer(port=0, cert_dir=tmp_path / "cert", status_provider=lambda: {"mode": "autonomous"},
                          event_sink=lambda kind, value: events.append((kind, value)))
    srv.events = events
    with srv:
        yield srv


def get(url):
    with urllib.request.urlopen(url, context=NO_VERIFY, timeout=10) as r:
        return r.status, r.headers["Content-Type"], r.read().decode()


def test_pages_and_static_files_over_https(server):
    status, ctype, body = get(server.url("/"))
    assert status == 200 and "text/html" in ctype and "E-STOP" in body
    assert "immersive" not in body  # the operator screen, not the headset page
    _, _, xr_page = get(server.url("/xr"))
    assert "/static/webxr.js" in xr_page and "iwer" not in xr_page.lower()  # the product page never loads the emulator
    _, ctype, js = get(server.url("/static/webxr.js"))
    assert "javascript" in ctype and "immersive-vr" in js
    for bad in ("/static/../server.py", "/static/server.py", "/nope"):
        with pytest.raises(urllib.error.HTTPError) as e:
            get(server.url(bad))
        assert e.value.code == 404
        e.value.close()


async def _ws_exchange(url, messages, wait_s=0.3):
    from websockets.asyncio.client import connect

    replies = []
    async with connect(url, ssl=NO_VERIFY) as ws:
        for m in messages:
            await ws.send(m if isinstance(m, str) else json.dumps(m))
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            try:
                replies.append(await asyncio.wait_for(ws.recv(), timeout=max(0.01, end - time.monotonic())))
            except asyncio.TimeoutError:
                break
    return replies


def test_xr_endpoint_feeds_the_device_and_survives_bad_input(server):
    dev = WebXRDevice(server, stale_s=5.0)
    dev.open()
    url = server.url("/ws/xr").replace("https", "wss")
    bad_pose = xr_message(1, grip=[0.1, float("nan"), 0, 1, 0, 0, 0])
    bad_pose_json = json.dumps(bad_pose).replace("NaN", "NaN")
    replies = asyncio.run(_ws_exchange(url, ["not json", bad_pose_json, xr_message(2)]))
    errors = [json.loads(r) for r in replies if isinstance(r, str) and '"error"' in r]
    assert errors and "bad message" in errors[0]["error"]
    assert any(isinstance(r, str) and json.loads(r).get("type") == "status" for r in replies)
    assert dev.bad_samples == 1 and dev.samples == 1 and dev.seq == 2  # the NaN pose never reached the operator
    inp = dev.read()
    assert inp.tracking_valid and inp.buttons["clutch"] and inp.buttons["correction"]
    assert inp.pose.tolist() == pytest.approx(GRIP) and inp.gripper == pytest.approx(-0.5)
    dev.close()


def test_websockets_need_the_session_token(server):
    from websockets.exceptions import InvalidStatus

    url = server.url("/ws/screen").replace("https", "wss")
    for bad in (url.split("?")[0], url.split("?")[0] + "?token=guess"):
        with pytest.raises(InvalidStatus, match="403"):
            asyncio.run(_ws_exchange(bad, [{"event": "estop"}]))
    assert server.events == []  # nothing reached the operator


def test_screen_endpoint_events_and_frames(server):
    server.push_frame("front", b"\xff\xd8jpegbytes")
    url = server.url("/ws/screen").replace("https", "wss")
    replies = asyncio.run(_ws_exchange(url, [{"event": "success"}, {"event": "self_destruct"}, {"text": "go left"}]))
    assert server.events == [("event", "success"), ("text", "go left")]
    assert server.bad_messages == 1
    assert encode_frame("front", b"\xff\xd8jpegbytes") in [r for r in replies if isinstance(r, bytes)]


def test_stale_webxr_stream_reads_as_lost_tracking(server):
    dev = WebXRDevice(server, stale_s=0.05)
    dev.open()
    dev._on_message(xr_message(1), time.monotonic() - 1.0)  # arrived a second ago
    inp = dev.read()
    assert not inp.tracking_valid and inp.pose is None and not inp.buttons["clutch"]
    dev.close()


def test_certificate_is_made_once_with_private_key(tmp_path):
    cert, key = ensure_certificate(tmp_path / "c")
    assert os.stat(key).st_mode & 0o777 == 0o600
    before = cert.read_bytes()
    assert ensure_certificate(tmp_path / "c")[0].read_bytes() == before  # reused, not regenerated
    from cryptography import x509

    c = x509.load_pem_x509_certificate(before)
    names = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(a) for a in names.get_values_for_type(x509.IPAddress)]


def test_vr_button_layout_for_either_hand():
    right = parse_controller({"grip": GRIP, "buttons": [[1, 1.0], [1, 0.9], None, [0, 0], [0, 0], [1, 1]], "axes": []})
    left = parse_controller({"grip": GRIP, "buttons": [[0, 0], [0, 0], None, [1, 1], [1, 1], [0, 0]], "axes": []})
    inp = vr_input({"right": right, "left": left}, "right", 1.0)
    assert inp.buttons == {"clutch": True, "correction": False, "takeover": True, "estop": False,
                           "perturbation": True, "success": False, "failure": True}
    assert inp.gripper == pytest.approx(1.0)
    lefty = vr_input({"right": right, "left": left}, "left", 1.0)
    assert lefty.buttons["estop"] and lefty.buttons["correction"] and not lefty.buttons["clutch"]
    inferred = parse_controller({"grip": GRIP, "tracked": False, "buttons": [], "axes": []})
    assert not vr_input({"right": inferred}, "right", 1.0).tracking_valid  # drifting position: hold
    lost = vr_input({"right": ControllerState(grip=None)}, "right", 1.0)
    assert not lost.tracking_valid and lost.pose is None
    with pytest.raises(ValueError, match="7 finite"):
        parse_controller({"grip": [0, 0, 0]})
    assert np.isfinite(inp.pose).all()
