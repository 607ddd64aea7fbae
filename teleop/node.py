"""The teleop node: a device, the operator logic and the web server (operator screen + WebXR
page) as one operator source (``command(obs, context)``, ``reset()``, ``close()``)."""

from __future__ import annotations

import importlib
import logging
import time
from typing import Any, Mapping

from hil_robot.config.robot import RobotConfig
from hil_robot.config.teleop import TeleopConfig
from hil_robot.types import IMAGE_PREFIX, OperatorCommand
from teleop.base import Device
from teleop.operator import DeviceOperator
from teleop.web.server import TeleopWebServer

log = logging.getLogger(__name__)

# device name -> "module:factory"; factories take (cfg, server) and return a Device (lazy imports)
DEVICES: dict[str, str] = {
    "spacemouse": "teleop.factories:spacemouse",
    "keyboard": "teleop.factories:keyboard",
    "gamepad": "teleop.factories:gamepad",
    "openxr": "teleop.factories:openxr",
    "webxr": "teleop.factories:webxr",
}


def make_device(cfg: TeleopConfig, server: TeleopWebServer | None) -> Device:
    if cfg.device not in DEVICES:
        raise ValueError(f"teleop.device={cfg.device!r} has no hardware driver; choose one of: {', '.join(DEVICES)}")
    module, func = DEVICES[cfg.device].split(":")
    return getattr(importlib.import_module(module), func)(cfg, server)


class TeleopNode:
    """device=None builds the configured device. serve=False runs without the web server (then
    device=webxr is impossible)."""

    def __init__(
        self,
        cfg: TeleopConfig,
        robot_cfg: RobotConfig,
        device: Device | None = None,
        *,
        serve: bool = True,
        operator_id: str = "operator",
    ) -> None:
        self.cfg = cfg
        self.server: TeleopWebServer | None = None
        if serve:
            self.server = TeleopWebServer(
                cfg.http_host, cfg.http_port, cert_dir=cfg.cert_dir, frame_hz=cfg.screen_fps, token=cfg.http_token,
                status_provider=self._status, event_sink=self._on_screen,
            )
        self.device = device if device is not None else make_device(cfg, self.server)
        self.operator = DeviceOperator(self.device, cfg, robot_cfg, operator_id=operator_id)
        self._last_frame_s = -1e9
        self._started = False

    def start(self) -> "TeleopNode":
        if self.server is not None:
            self.server.start()
        self.device.open()
        self._started = True
        return self

    def __enter__(self) -> "TeleopNode":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _status(self) -> dict[str, Any]:
        return self.operator.status()

    def _on_screen(self, kind: str, value: str) -> None:
        if kind == "event":
            self.operator.post_event(value)
        else:
            self.operator.post_text(value)

    def publish_observation(self, obs: Mapping[str, Any]) -> None:
        """Push the camera images to the screen/headset, at most ``screen_fps`` per second."""
        if self.server is None:
            return
        now = time.monotonic()
        if now - self._last_frame_s < 1.0 / self.cfg.screen_fps:
            return
        self._last_frame_s = now
        for key, img in obs.items():
            if key.startswith(IMAGE_PREFIX):
                self.server.push_image(key[len(IMAGE_PREFIX):], img)

    def command(self, obs: Mapping[str, Any], context: Mapping[str, Any] | None = None) -> OperatorCommand:
        if not self._started:
            self.start()
        self.publish_observation(obs)
        return self.operator.command(obs, context)

    def reset(self) -> None:
        self.operator.reset()

    def close(self) -> None:
        if self._started:
            self.operator.close()
            self._started = False
        if self.server is not None:
            self.server.stop()
