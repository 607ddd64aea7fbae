"""Policy registry: a plain dict of name -> "module:function", imported only when used, so
``make_policy`` for the scripted expert never imports torch.

    policy = make_policy(cfg)   # cfg.policy.name in POLICIES
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

POLICIES: dict[str, str] = {
    "vla": "policies.vla:make_vla_policy",
    "rl": "policies.rl:make_rl_policy",
    "expert": "policies.scripted:make_expert_policy",
    "noisy_expert": "policies.scripted:make_noisy_expert_policy",
    "random": "policies.scripted:make_random_policy",
    "remote": "policies.registry:make_remote_policy",
    "openpi": "hil_robot.transport.openpi_client:make_openpi_policy",  # torch-free robot-side clients
    "groot": "hil_robot.transport.groot_client:make_groot_policy",
    "lerobot": "policies.lerobot_backend:make_lerobot_policy",  # in the LeRobot env (make lerobot-env)
}


def resolve(name: str) -> Callable[[Any], Any]:
    if name not in POLICIES:
        raise KeyError(f"unknown policy {name!r}; registered policies: {', '.join(sorted(POLICIES))}")
    module_name, func_name = POLICIES[name].split(":")
    return getattr(importlib.import_module(module_name), func_name)


def make_policy(cfg: Any) -> Any:
    """RootConfig -> a Policy (``infer``, ``reset``, ``metadata``) named by ``cfg.policy.name``."""
    return resolve(cfg.policy.name)(cfg)


def make_remote_policy(cfg: Any) -> Any:
    """A ``PolicyClient`` for the policy server at ``transport.host:transport.policy_port``."""
    from hil_robot.transport.links import tcp_endpoint
    from hil_robot.transport.policy_client import PolicyClient
    from hil_robot.transport.security import keys_from_config

    t = cfg.transport
    return PolicyClient(tcp_endpoint(t.host, t.policy_port), timeout_s=t.request_timeout_s,
                        curve=keys_from_config(t, server=False), heartbeat_s=t.heartbeat_s)
