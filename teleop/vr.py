"""Controller state shared by both VR paths (OpenXR and WebXR) and its button layout.

    grip (squeeze), driving hand   clutch / deadman: hold to drive, release to hold the arm
    trigger, driving hand          gripper (released = open, pulled = closed)
    A (X if driving left)          recovery -> correction
    B (Y)                          take over / hand back to the policy
    thumbstick press, driving hand e-stop (latched)
    X (A) on the other hand        perturbation on/off
    Y (B) on the other hand        mark success
    thumbstick press, other hand   mark failure
"""

from __future__ import annotations

import dataclasses

import numpy as np

from teleop.base import OperatorInput

CLUTCH_THRESHOLD = 0.5


@dataclasses.dataclass
class ControllerState:
    """One controller at one instant. Poses are ``[x, y, z, qw, qx, qy, qz]`` in the XR reference
    space (metres; x right, y up, z towards the user), None when not tracked."""

    grip: np.ndarray | None = None
    aim: np.ndarray | None = None
    trigger: float = 0.0
    squeeze: float = 0.0
    primary: bool = False  # A on the right controller, X on the left
    secondary: bool = False  # B / Y
    stick_click: bool = False
    thumbstick: tuple[float, float] = (0.0, 0.0)
    valid: bool = False


def vr_input(controllers: dict[str, ControllerState], hand: str, timestamp_s: float) -> OperatorInput:
    """Both controllers -> the device-independent OperatorInput (driving ``hand`` + the other one)."""
    drive = controllers.get(hand) or ControllerState()
    other = controllers.get("left" if hand == "right" else "right") or ControllerState()
    valid = bool(drive.valid and drive.grip is not None and np.all(np.isfinite(drive.grip)))
    buttons = {
        "clutch": drive.squeeze >= CLUTCH_THRESHOLD,
        "correction": drive.primary,
        "takeover": drive.secondary,
        "estop": drive.stick_click,
        "perturbation": other.primary,
        "success": other.secondary,
        "failure": other.stick_click,
    }
    return OperatorInput(
        timestamp_s=timestamp_s,
        pose=drive.grip if valid else None,
        gripper=float(np.clip(2.0 * drive.trigger - 1.0, -1.0, 1.0)),
        buttons=buttons,
        tracking_valid=valid,
    )
