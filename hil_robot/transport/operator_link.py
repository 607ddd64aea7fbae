"""The operator in its own process, over the policy-server machinery.

An operator source (the simulated operator, or a teleop device) answers one question per control
tick: given this observation and context, what does the operator command? That is a request/reply
exactly like a policy's, so the operator process hosts its source behind a ``PolicyServer``
(request ids, timeouts, reconnects, error replies, heartbeats come for free) and the controller
talks to it through ``RemoteOperator``, which is itself an operator source.

    operator process:   OperatorService(SimulatedOperator(...))  ->  PolicyServer(tcp://127.0.0.1:P)
    controller:         RemoteOperator("tcp://127.0.0.1:P").command(obs, context) -> OperatorCommand

A dead or silent operator process makes ``command`` raise after ``timeout_s``; the controller treats
a failing operator source as it treats any driver failure (hold, stop, keep the recording).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hil_robot.types import IMAGE_PREFIX, ContractError, OperatorCommand

log = logging.getLogger(__name__)

CONTEXT_KEY = "operator_context"


def command_to_dict(cmd: OperatorCommand) -> dict[str, Any]:
    """OperatorCommand -> plain dict for the codec (enums as strings, arrays kept)."""
    d = {f.name: getattr(cmd, f.name) for f in dataclasses.fields(cmd)}
    d["mode"] = cmd.mode.value
    d["segment"] = cmd.segment.value if cmd.segment is not None else None
    return d


def command_from_dict(d: Mapping[str, Any]) -> OperatorCommand:
    """Inverse of ``command_to_dict``; unknown or malformed fields raise ContractError."""
    if not isinstance(d, Mapping):
        raise ContractError(f"operator reply must carry a command dict, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(OperatorCommand)}
    unknown = set(d) - names
    if unknown:
        raise ContractError(f"operator command has unknown fields {sorted(unknown)}; allowed: {sorted(names)}")
    return OperatorCommand(**dict(d))


def _plain(value: Any) -> Any:
    """Context values the codec carries: numbers, strings, bools, None, arrays, lists and dicts of them."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class OperatorService:
    """Wraps an operator source so a ``PolicyServer`` can host it (Policy-shaped: infer/reset/metadata)."""

    def __init__(self, operator: Any, name: str = "operator", log_path: str | None = None) -> None:
        self.operator = operator
        self.name = name
        self.log_path = Path(log_path) if log_path else None

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        obs = dict(obs)
        context = obs.pop(CONTEXT_KEY, None) or {}
        if not isinstance(context, dict):
            raise ContractError(f"{CONTEXT_KEY} must be a dict, got {type(context).__name__}")
        cmd = self.operator.command(obs, context)
        action = cmd.action if cmd.action is not None else np.zeros(7, np.float32)
        return {"actions": action[None, :], "policy_version": 0, "operator_command": command_to_dict(cmd)}

    def reset(self) -> None:
        self.dump_log()
        self.operator.reset()

    def dump_log(self) -> None:
        """Append the operator's own per-step log (if it keeps one) to ``log_path`` as JSON lines."""
        entries = getattr(self.operator, "log", None)
        if not self.log_path or not entries:
            return
        with open(self.log_path, "a") as f:
            for entry in entries:
                f.write(json.dumps(_plain(entry), default=str) + "\n")
        entries.clear()

    @property
    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "action_horizon": 1, "action_dim": 7, "kind": "operator"}

    def close(self) -> None:
        self.dump_log()
        close = getattr(self.operator, "close", None)
        if callable(close):
            close()


class RemoteOperator:
    """An operator source whose operator runs in another process (see module docstring).

    send_images: False strips ``images/*`` from what is sent (the simulated operator reads state and
    privileged task state only; a person's screen gets images through the teleop node instead).
    """

    def __init__(self, endpoint: str, *, timeout_s: float = 1.0, send_images: bool = False, curve: Any = None) -> None:
        from hil_robot.transport.policy_client import PolicyClient

        self.endpoint = endpoint
        self.send_images = send_images
        self.client = PolicyClient(endpoint, timeout_s=timeout_s, curve=curve, heartbeat_s=0.5)

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        self.client.wait_ready(timeout_s)

    def command(self, obs: Mapping[str, Any], context: Mapping[str, Any] | None = None) -> OperatorCommand:
        msg = {k: v for k, v in obs.items() if self.send_images or not k.startswith(IMAGE_PREFIX)}
        msg[CONTEXT_KEY] = _plain(dict(context or {}))
        reply = self.client.infer(msg)
        return command_from_dict(reply.get("operator_command"))

    def reset(self) -> None:
        self.client.reset()

    def close(self) -> None:
        self.client.close()


def operator_main(argv: list[str]) -> int:
    """``hil-robot operator``: host an operator source (default: the simulated operator) on a port.

        hil-robot operator port=5560 task=pick_cube log=runs/x/operator_log.jsonl
    """
    from hil_robot.cli import parse_command_args
    from hil_robot.transport.links import tcp_endpoint
    from hil_robot.transport.policy_server import PolicyServer
    from hil_robot.transport.serving import serve_until_stopped

    opts, cfg = parse_command_args(
        argv, options={"port": 5560, "device": "sim_operator", "seed": -1, "log": "", "max_seconds": 0.0},
        aliases={"task": "sim.task"},
    )
    seed = cfg.experiment.seed if opts["seed"] < 0 else opts["seed"]
    if opts["device"] == "sim_operator":
        from sim.operator import SimulatedOperator

        source: Any = SimulatedOperator(cfg.teleop.sim_operator, cfg.sim.task, seed=seed, robot_cfg=cfg.robot)
    else:
        import dataclasses as dc

        from teleop.node import TeleopNode

        source = TeleopNode(dc.replace(cfg.teleop, device=opts["device"]), cfg.robot, serve=True).start()
    service = OperatorService(source, name=f"operator:{opts['device']}", log_path=opts["log"] or None)
    server = PolicyServer(service, tcp_endpoint(cfg.transport.bind_host, opts["port"]), heartbeat_s=cfg.transport.heartbeat_s)
    print(f"operator {opts['device']!r} serving on {server.endpoint}", flush=True)
    try:
        serve_until_stopped(lambda: server.poll_once(0.05), max_seconds=opts["max_seconds"])
    finally:
        server.stop()
        service.close()
    return 0
