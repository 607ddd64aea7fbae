"""Build the plain-Python cores a node wraps (lazy imports: a node pays only for what it uses)."""

from __future__ import annotations

from typing import Any

from hil_robot.config import ConfigError, RootConfig


def make_operator(cfg: RootConfig, seed: int | None = None) -> Any:
    """The configured operator source (teleop.device): the simulated operator or a device."""
    if cfg.teleop.device == "none":
        return None
    if cfg.teleop.device == "sim_operator":
        from sim.operator import SimulatedOperator

        return SimulatedOperator(cfg.teleop.sim_operator, cfg.sim.task, seed, robot_cfg=cfg.robot)
    from teleop.node import TeleopNode

    return TeleopNode(cfg.teleop, cfg.robot)


def make_inproc_policy(cfg: RootConfig) -> Any:
    from policies.registry import make_policy

    return make_policy(cfg)


def make_policy_client(cfg: RootConfig) -> Any:
    """A PolicyClient for the policy server named by ``transport`` (host, policy_port, CURVE keys)."""
    from hil_robot.transport.policy_client import PolicyClient

    t = cfg.transport
    from hil_robot.transport.security import keys_from_config

    curve = keys_from_config(t, server=False)
    if not isinstance(t.policy_port, int):
        raise ConfigError("transport.policy_port must be an integer")
    return PolicyClient(f"tcp://{t.host}:{t.policy_port}", timeout_s=t.request_timeout_s, curve=curve,
                        heartbeat_s=t.heartbeat_s)
