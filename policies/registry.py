"""Policy registry: a plain dict of name -> "module:function", imported only when used, so
``make_policy`` for the scripted expert never imports torch.

    policy = make_policy(cfg)   # cfg.policy.name in POLICIES
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

POLICIES: dict[str, str] = {
    "vla": "policies.vla:make_vla_policy",
    "expert": "policies.scripted:make_expert_policy",
    "noisy_expert": "policies.scripted:make_noisy_expert_policy",
    "random": "policies.scripted:make_random_policy",
}


def resolve(name: str) -> Callable[[Any], Any]:
    if name not in POLICIES:
        raise KeyError(f"unknown policy {name!r}; registered policies: {', '.join(sorted(POLICIES))}")
    module_name, func_name = POLICIES[name].split(":")
    return getattr(importlib.import_module(module_name), func_name)


def make_policy(cfg: Any) -> Any:
    """RootConfig -> a Policy (``infer``, ``reset``, ``metadata``) named by ``cfg.policy.name``."""
    return resolve(cfg.policy.name)(cfg)
