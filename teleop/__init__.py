"""Operator devices, pose mapping, intervention state machine, operator web screen.

    base.py          Device contract (context manager, ``read() -> OperatorInput``), logical buttons
    spacemouse.py    3Dconnexion HID reports over hidapi (+ RecordedHid mock)
    keyboard.py      terminal keys (cbreak mode)          gamepad.py   Linux joystick js_event structs
    openxr_device.py pyopenxr, headless session           webxr.py     headset page over HTTPS/WSS
    vr.py            controller state + VR button layout  mapping.py   clutch / relative pose / jump guard
    intervention.py  autonomous -> recovery -> correction -> hand-back, marks, language corrections
    operator.py      device + mapping + state machine -> OperatorCommand (an operator source)
    node.py          operator + web server (operator screen, WebXR page) = the teleop node
    cli.py           ``hil-robot teleop device=...`` against the sim robot
    web/             server, certificate, pages;  testing/  browser bridge, scripted OpenXR runtime

See docs/teleop.md for the operator guide.
"""
