"""Build each device from the teleop config (imported lazily by ``teleop.node.DEVICES``)."""

from __future__ import annotations

from hil_robot.config.teleop import TeleopConfig
from teleop.base import Device
from teleop.web.server import TeleopWebServer


def spacemouse(cfg: TeleopConfig, server: TeleopWebServer | None) -> Device:
    from teleop.spacemouse import SpaceMouse

    return SpaceMouse(cfg.spacemouse_path, deadzone=cfg.deadzone, use_dominant_axis=cfg.dominant_axis,
                      silence_s=cfg.silence_s)


def keyboard(cfg: TeleopConfig, server: TeleopWebServer | None) -> Device:
    from teleop.keyboard import Keyboard

    return Keyboard(key_hold_s=cfg.key_hold_s, use_dominant_axis=cfg.dominant_axis)


def gamepad(cfg: TeleopConfig, server: TeleopWebServer | None) -> Device:
    from teleop.gamepad import Gamepad

    return Gamepad(cfg.gamepad_path, deadzone=cfg.deadzone, use_dominant_axis=cfg.dominant_axis)


def openxr(cfg: TeleopConfig, server: TeleopWebServer | None) -> Device:
    from teleop.openxr_device import OpenXRDevice

    return OpenXRDevice(hand=cfg.hand, headless=cfg.openxr_headless)


def webxr(cfg: TeleopConfig, server: TeleopWebServer | None) -> Device:
    from teleop.webxr import WebXRDevice

    if server is None:
        raise ValueError("device=webxr needs the teleop web server (the headset loads its page from it)")
    return WebXRDevice(server, hand=cfg.hand, require_tracked=cfg.webxr_require_tracked)
