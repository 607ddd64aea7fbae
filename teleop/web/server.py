"""HTTPS + WSS server of the teleop node (one port, websockets' asyncio server in its own thread).

    GET  /               operator screen (operator.html)
    GET  /xr             WebXR page for a standalone headset (webxr.html)
    GET  /static/<file>  the pages' JS/CSS, served from this package (no CDN)
    WSS  /ws/xr          headset -> node: controller poses and buttons (JSON, one per XR frame);
                         node -> headset: status (JSON) and camera frames (binary)
    WSS  /ws/screen      node -> screen: status (JSON) and camera frames (binary);
                         screen -> node: {"event": "success"|...} and {"text": "..."}

Binary camera frame: 1 byte name length, the camera name (UTF-8), then a JPEG.
Default bind 127.0.0.1; set host 0.0.0.0 to let a headset on the LAN connect. Both websocket
endpoints require the session token (``?token=...``; random per run unless configured), which the
printed URLs carry and the pages pass on, so another machine on the LAN cannot drive the robot.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import mimetypes
import secrets
import threading
import urllib.parse
import time
from pathlib import Path
from typing import Any, Callable

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent
PAGES = {"/": "operator.html", "/xr": "webxr.html"}
SCREEN_EVENTS = ("takeover", "correction", "perturbation", "success", "failure", "estop", "clear_estop")
MAX_MESSAGE_BYTES = 64 * 1024


def encode_frame(camera: str, jpeg: bytes) -> bytes:
    name = camera.encode()
    if len(name) > 255:
        raise ValueError(f"camera name too long: {camera!r}")
    return bytes([len(name)]) + name + jpeg


def encode_jpeg(image_rgb: Any, quality: int = 80) -> bytes:
    """uint8 [H, W, 3] RGB -> JPEG bytes."""
    import cv2
    import numpy as np

    img = np.ascontiguousarray(np.asarray(image_rgb, dtype=np.uint8)[:, :, ::-1])
    ok, buf = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


class TeleopWebServer:
    """Serves the pages and both websocket endpoints. Thread-safe towards the control loop.

    xr_listeners: called ``fn(message: dict, recv_time_s: float)`` for every headset message
    (on the server thread; keep it short). status_provider: returns the status dict pushed to
    clients. event_sink: ``fn(kind, value)`` with kind "event" or "text" for screen input.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8443,
        *,
        cert_dir: str | Path | None = "~/.cache/hil_robot/teleop_cert",
        status_provider: Callable[[], dict[str, Any]] | None = None,
        event_sink: Callable[[str, str], None] | None = None,
        frame_hz: float = 10.0,
        status_hz: float = 10.0,
        token: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port = host, port
        self.cert_dir = cert_dir
        self.token = token or secrets.token_urlsafe(12)
        self.status_provider = status_provider or (lambda: {})
        self.event_sink = event_sink
        self.frame_period_s = 1.0 / frame_hz
        self.status_period_s = 1.0 / status_hz
        self.clock = clock
        self.xr_listeners: list[Callable[[dict[str, Any], float], None]] = []
        self._frames: dict[str, tuple[int, bytes]] = {}
        self._frame_seq = 0
        self._frames_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.xr_clients = 0
        self.screen_clients = 0
        self.xr_messages = 0
        self.bad_messages = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def scheme(self) -> str:
        return "https" if self.cert_dir else "http"

    def url(self, path: str = "/") -> str:
        """Full URL of ``path`` on this server, with the session token."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"{self.scheme}://{host}:{self.port}{path}?token={self.token}"

    def start(self, timeout_s: float = 10.0) -> "TeleopWebServer":
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="teleop-web", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"teleop web server did not start within {timeout_s} s")
        if self._error is not None:
            raise RuntimeError(f"teleop web server failed to start on {self.host}:{self.port}: {self._error}")
        log.info("operator screen: %s   WebXR page: %s", self.url("/"), self.url("/xr"))
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._thread = None

    def __enter__(self) -> "TeleopWebServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # surfaced by start()
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        from teleop.web.certs import server_ssl_context

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ssl_ctx = server_ssl_context(self.cert_dir) if self.cert_dir else None
        async with serve(
            self._handler, self.host, self.port, ssl=ssl_ctx, process_request=self._http,
            max_size=MAX_MESSAGE_BYTES, compression=None, close_timeout=1.0,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    # ------------------------------------------------------------------ frames (any thread)
    def push_frame(self, camera: str, jpeg: bytes) -> None:
        with self._frames_lock:
            self._frame_seq += 1
            self._frames[camera] = (self._frame_seq, jpeg)

    def push_image(self, camera: str, image_rgb: Any) -> None:
        self.push_frame(camera, encode_jpeg(image_rgb))

    # ------------------------------------------------------------------ HTTP
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        if path.startswith("/ws/"):
            given = urllib.parse.parse_qs(query).get("token", [""])[0]
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                log.warning("websocket %s refused: missing or wrong session token", path)
                return connection.respond(403, "wrong or missing session token: open the URL the teleop node printed\n")
            return None  # websocket handshake
        if path == "/favicon.ico":
            return Response(204, "No Content", Headers([("Content-Length", "0")]), b"")
        if path in PAGES:
            file = WEB_DIR / PAGES[path]
        elif path.startswith("/static/") and "/" not in path[len("/static/"):] and not path.endswith(".py"):
            file = WEB_DIR / path[len("/static/"):]
        else:
            file = None
        if file is None or not file.is_file():
            return connection.respond(404, f"not found: {path}\n")
        body = file.read_bytes()
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        headers = Headers([
            ("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
            ("Connection", "close"),
        ])
        return Response(200, "OK", headers, body)

    # ------------------------------------------------------------------ websockets
    async def _handler(self, ws: ServerConnection) -> None:
        path = ws.request.path.split("?", 1)[0] if ws.request else ""
        if path == "/ws/xr":
            self.xr_clients += 1
            try:
                await self._session(ws, self._on_xr)
            finally:
                self.xr_clients -= 1
        elif path == "/ws/screen":
            self.screen_clients += 1
            try:
                await self._session(ws, self._on_screen)
            finally:
                self.screen_clients -= 1
        else:
            await ws.close(1008, f"unknown endpoint {path}")

    async def _session(self, ws: ServerConnection, on_message: Callable[[ServerConnection, Any], None]) -> None:
        sender = asyncio.create_task(self._push(ws))
        try:
            async for raw in ws:
                recv = self.clock()
                try:
                    msg = json.loads(raw)
                    if not isinstance(msg, dict):
                        raise ValueError("message must be a JSON object")
                except ValueError as e:
                    self.bad_messages += 1
                    await ws.send(json.dumps({"type": "error", "error": f"bad message: {e}"}))
                    continue
                on_message(ws, (msg, recv))
        except ConnectionClosed:
            pass
        finally:
            sender.cancel()

    def _on_xr(self, ws: ServerConnection, item: tuple[dict[str, Any], float]) -> None:
        msg, recv = item
        if msg.get("type") != "xr":
            return
        self.xr_messages += 1
        for fn in list(self.xr_listeners):
            try:
                fn(msg, recv)
            except Exception:  # a bad sample must not kill the connection; the device reports it
                self.bad_messages += 1
                log.exception("bad XR message dropped")

    def _on_screen(self, ws: ServerConnection, item: tuple[dict[str, Any], float]) -> None:
        msg, _ = item
        if self.event_sink is None:
            return
        if "event" in msg:
            if msg["event"] not in SCREEN_EVENTS:
                self.bad_messages += 1
                log.warning("operator screen sent unknown event %r (allowed: %s)", msg["event"], SCREEN_EVENTS)
                return
            self.event_sink("event", str(msg["event"]))
        elif isinstance(msg.get("text"), str):
            self.event_sink("text", msg["text"][:500])

    async def _push(self, ws: ServerConnection) -> None:
        """Push status and new camera frames to one client (latest only: slow clients skip frames)."""
        sent: dict[str, int] = {}
        next_status = next_frame = 0.0
        try:
            while True:
                now = self.clock()
                if now >= next_status:
                    next_status = now + self.status_period_s
                    status = {"type": "status", "server_time_s": time.time(), **self.status_provider()}
                    await ws.send(json.dumps(status))
                if now >= next_frame:
                    next_frame = now + self.frame_period_s
                    with self._frames_lock:
                        frames = dict(self._frames)
                    for cam, (seq, jpeg) in frames.items():
                        if sent.get(cam) != seq:
                            sent[cam] = seq
                            await ws.send(encode_frame(cam, jpeg))
                await asyncio.sleep(min(self.status_period_s, self.frame_period_s) / 2)
        except (ConnectionClosed, asyncio.CancelledError):
            return
