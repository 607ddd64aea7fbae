"""``hil-robot teleop device=spacemouse|keyboard|gamepad|openxr|webxr`` — drive the sim robot with
an operator device, through the real control loop and safety filter, to practise (or to record
demos / interventions with ``record=PATH``).

Options: device, episodes (1), policy ("" = none: the whole episode is a teleoperated demo;
expert | noisy_expert: the policy drives and you take over), noise (noisy expert std, 0.6),
max_steps (0 = sim.max_episode_steps), record (episode store folder, "" = do not record),
seed (-1 = experiment.seed). Any Hydra override works too (teleop.translation_scale=0.5,
teleop.http_host=0.0.0.0, robot.control_hz=20, ...).

The operator screen is served at https://<host>:<teleop.http_port>/ and, for device=webxr, the
headset page at /xr. device=openxr without a usable runtime falls back to webxr.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from hil_robot.cli import parse_command_args
from hil_robot.config._build import ConfigError

log = logging.getLogger(__name__)

DEVICES = ("spacemouse", "keyboard", "gamepad", "openxr", "webxr")
OPTIONS: dict[str, Any] = {"episodes": 1, "policy": "", "noise": 0.6, "max_steps": 0, "record": "", "seed": -1}
ALIASES = {"task": "sim.task", "control_hz": "robot.control_hz", "port": "teleop.http_port", "host": "teleop.http_host"}


def _device_overrides(argv: list[str]) -> list[str]:
    """``device=X`` selects the ``configs/teleop/X.yaml`` preset (Hydra group ``teleop``)."""
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and key.lstrip("-") == "device":
            if value not in DEVICES:
                raise ConfigError(f"device={value!r} is not allowed; choose one of: {', '.join(DEVICES)}")
            arg = f"teleop={value}"
        out.append(arg)
    return out


class _VersionTap:
    """Wraps the policy so the operator screen can show the version of the weights driving."""

    def __init__(self, policy: Any, node: Any) -> None:
        self.policy, self.node = policy, node

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        out = self.policy.infer(obs)
        self.node.operator.policy_version = int(out.get("policy_version", -1))
        return out

    def reset(self) -> None:
        self.policy.reset()

    @property
    def metadata(self) -> dict[str, Any]:
        return self.policy.metadata


def _open_node(cfg: Any) -> Any:
    from teleop.base import DeviceUnavailableError
    from teleop.node import TeleopNode

    node = TeleopNode(cfg.teleop, cfg.robot)
    try:
        return node.start()
    except DeviceUnavailableError as e:
        node.close()
        if cfg.teleop.device != "openxr":
            raise
        print(f"hil-robot teleop: OpenXR unavailable ({e}); falling back to device=webxr", file=sys.stderr)
        cfg.teleop.device = "webxr"
        return TeleopNode(cfg.teleop, cfg.robot).start()


def teleop(argv: list[str]) -> int:
    opts, cfg = parse_command_args(_device_overrides(list(argv)), options=OPTIONS, aliases=ALIASES)
    if cfg.teleop.device not in DEVICES:
        raise ConfigError(f"pick an operator device: device={'|'.join(DEVICES)} (teleop.device={cfg.teleop.device!r})")
    if opts["policy"] not in ("", "expert", "noisy_expert"):
        raise ConfigError(f"policy={opts['policy']!r} is not allowed; choose '', expert or noisy_expert")
    from teleop.base import DeviceUnavailableError

    cfg.teleop.demo = not opts["policy"]
    seed = opts["seed"] if opts["seed"] >= 0 else cfg.experiment.seed
    try:
        import sim  # noqa: F401  (headless GL default before MuJoCo loads)
        from hil_robot.control.loop import Controller
        from sim.robot import SimRobot
    except (ImportError, RuntimeError) as e:
        print(f"hil-robot teleop: cannot load the sim/controller ({e})", file=sys.stderr)
        return 2
    try:
        node = _open_node(cfg)
    except DeviceUnavailableError as e:
        print(f"hil-robot teleop: {e}", file=sys.stderr)
        return 2
    policy = None
    if opts["policy"]:
        from sim.expert import make_expert

        noise = opts["noise"] if opts["policy"] == "noisy_expert" else 0.0
        policy = _VersionTap(make_expert(cfg.sim.task, cfg.robot, noise_std=noise, seed=seed), node)
    recorder = None
    if opts["record"]:
        from hil_robot.data.recorder import Recorder
        from hil_robot.data.store import EpisodeStore

        recorder = Recorder(EpisodeStore(opts["record"]), operator="operator", robot=cfg.robot.name)
    assert node.server is not None
    print(f"teleop: device={node.device.device_id} task={cfg.sim.task} "
          f"{'demo (no policy)' if policy is None else 'policy=' + opts['policy']}")
    print(f"operator screen: {node.server.url('/')}" + (f"   headset page: {node.server.url('/xr')}" if cfg.teleop.device == "webxr" else ""))
    robot = SimRobot(cfg.sim, cfg.robot, seed=seed)
    controller = Controller(robot, policy, node, recorder, cfg)
    rc = 0
    try:
        with robot:
            for ep in range(opts["episodes"]):
                res = controller.run_episode(max_steps=opts["max_steps"] or None, seed=seed + ep)
                counts = node.operator.machine.counts
                print(f"episode {ep}: {res.end_reason} success={res.success} steps={res.steps} "
                      f"interventions={res.interventions} takeovers={counts['takeovers']}")
    except KeyboardInterrupt:
        print("teleop: interrupted", file=sys.stderr)
        rc = 130
    finally:
        controller.close()
        node.close()
        if recorder is not None and hasattr(recorder, "close"):
            recorder.close()
    return rc
