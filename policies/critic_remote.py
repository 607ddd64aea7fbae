"""Serving a progress critic through the policy-server transport, and reaching one remotely.

A large VLM critic (VLAC-style) runs on a GPU host behind the ordinary ``PolicyServer``: the critic
is wrapped as a Policy (``CriticPolicyAdapter``) whose ``infer`` takes a *critic request* packed in
an observation dict, and ``RemoteCriticBackend`` is the matching ``CriticBackend`` on the robot or
learner side, built on ``PolicyClient``. No new socket code: batching, timeouts, CURVE and error
replies all come from the transport.

Critic request (an observation dict; B pairs, all arrays batched)::

    critic/a/images/<cam>  uint8 [B, H, W, 3]    critic/b/images/<cam>  uint8 [B, H, W, 3]
    critic/a/state         float32 [B, 15]       critic/b/state         float32 [B, 15]
    critic/instructions    list[str] (len B)

Reply: ``critic_delta`` float32 [B], ``critic_p_done`` float32 [B]; ``actions`` float32 [B, 7]
carries the same numbers in columns 0 and 1 (the transport requires an action chunk in every result).

    server = PolicyServer(CriticPolicyAdapter(LocalCriticBackend(model)), "tcp://0.0.0.0:5562")
    backend = RemoteCriticBackend(PolicyClient("tcp://gpu-host:5562", timeout_s=2.0))
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from hil_robot.types import ACTION_DIM

PREFIX_A, PREFIX_B, INSTRUCTIONS = "critic/a/", "critic/b/", "critic/instructions"


def pack_request(frames_a: Mapping[str, np.ndarray], frames_b: Mapping[str, np.ndarray],
                 instructions: Sequence[str]) -> dict[str, Any]:
    req: dict[str, Any] = {PREFIX_A + k: np.ascontiguousarray(v) for k, v in frames_a.items()}
    req.update({PREFIX_B + k: np.ascontiguousarray(v) for k, v in frames_b.items()})
    req[INSTRUCTIONS] = [str(s) for s in instructions]
    return req


def unpack_request(obs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str]]:
    if INSTRUCTIONS not in obs:
        raise ValueError(f"not a critic request: missing {INSTRUCTIONS!r} (see policies.critic_remote)")
    a = {k[len(PREFIX_A):]: np.asarray(v) for k, v in obs.items() if k.startswith(PREFIX_A)}
    b = {k[len(PREFIX_B):]: np.asarray(v) for k, v in obs.items() if k.startswith(PREFIX_B)}
    instructions = [str(s) for s in obs[INSTRUCTIONS]]
    n = len(instructions)
    for side, frames in (("a", a), ("b", b)):
        if "state" not in frames:
            raise ValueError(f"critic request side {side} has no state")
        bad = {k: v.shape for k, v in frames.items() if v.shape[0] != n}
        if bad:
            raise ValueError(f"critic request side {side}: batch sizes {bad} differ from {n} instructions")
    if set(a) != set(b):
        raise ValueError(f"critic request sides carry different keys: {sorted(a)} vs {sorted(b)}")
    return a, b, instructions


class CriticPolicyAdapter:
    """A CriticBackend dressed as a Policy, so ``PolicyServer`` can host it unchanged."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def infer(self, obs: dict[str, Any]) -> dict[str, Any]:
        a, b, instructions = unpack_request(obs)
        delta, p_done = self.backend.score(a, b, instructions)
        actions = np.zeros((len(instructions), ACTION_DIM), np.float32)
        actions[:, 0], actions[:, 1] = delta, p_done
        return {"actions": actions, "critic_delta": np.asarray(delta, np.float32),
                "critic_p_done": np.asarray(p_done, np.float32), "policy_version": 0}

    def reset(self) -> None:
        pass

    @property
    def metadata(self) -> dict[str, Any]:
        meta = dict(getattr(self.backend, "metadata", {}) or {})
        meta.update(kind="critic", action_horizon=1, action_dim=ACTION_DIM, request="policies.critic_remote")
        return meta


class RemoteCriticBackend:
    """CriticBackend that sends critic requests to a server hosting a ``CriticPolicyAdapter``."""

    def __init__(self, client: Any, max_batch: int = 64) -> None:
        self.client = client
        self.max_batch = max_batch

    def score(self, frames_a: Mapping[str, np.ndarray], frames_b: Mapping[str, np.ndarray],
              instructions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        deltas, dones = [], []
        for s in range(0, len(instructions), self.max_batch):
            sl = slice(s, s + self.max_batch)
            reply = self.client.infer(pack_request({k: v[sl] for k, v in frames_a.items()},
                                                   {k: v[sl] for k, v in frames_b.items()}, instructions[sl]))
            if "critic_delta" not in reply or "critic_p_done" not in reply:
                raise RuntimeError("the server at the critic endpoint is not a critic (no critic_delta in its reply)")
            delta = np.asarray(reply["critic_delta"], np.float32)
            p_done = np.asarray(reply["critic_p_done"], np.float32)
            if not (np.isfinite(delta).all() and np.isfinite(p_done).all()):
                raise RuntimeError("remote critic returned non-finite scores")
            deltas.append(np.clip(delta, -1, 1))
            dones.append(np.clip(p_done, 0, 1))
        return np.concatenate(deltas), np.concatenate(dones)


def make_critic_backend(cfg: Any) -> Any:
    """RootConfig -> CriticBackend: remote when ``critic.endpoint`` is set, else the local network:
    the VLM critic from ``critic.vlm_path`` for ``critic.kind=vlm``, the small one from ``critic.checkpoint``."""
    cc = cfg.critic
    if not cc.endpoint and getattr(cc, "kind", "small") == "vlm":
        from policies.critic_vlm import vlm_backend_from_config

        return vlm_backend_from_config(cc)
    if cc.endpoint:
        from hil_robot.transport.policy_client import PolicyClient
        from hil_robot.transport.security import keys_from_config

        client = PolicyClient(cc.endpoint, timeout_s=cc.timeout_s, curve=keys_from_config(cfg.transport, server=False))
        return RemoteCriticBackend(client)
    if not cc.checkpoint:
        raise ValueError("no progress critic configured: set critic.checkpoint=DIR (from `hil-robot train-critic`) "
                         "or critic.endpoint=tcp://host:port (a served critic)")
    import torch

    from policies.checkpoint import load_critic
    from policies.critic import LocalCriticBackend

    device = cc.device if cc.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    return LocalCriticBackend(load_critic(cc.checkpoint), device=device)


def critic_service(cfg: Any) -> CriticPolicyAdapter:
    """Factory for ``hil-robot serve-policy policy_factory=policies.critic_remote:critic_service
    critic.checkpoint=DIR`` (or ``critic.kind=vlm critic.vlm_path=DIR``): the local critic behind the
    policy server. ``hil-robot serve-critic`` is that command line."""
    if cfg.critic.endpoint:
        raise ValueError("critic.endpoint is set: this process would forward to another server; unset it to serve")
    return CriticPolicyAdapter(make_critic_backend(cfg))


def serve_critic(argv: list[str]) -> int:
    """``hil-robot serve-critic [critic.kind=vlm critic.vlm_path=DIR | critic.checkpoint=DIR] [port=N]``:
    ``serve-policy`` with the critic factory (same transport options, CURVE, ``max_seconds``)."""
    from hil_robot.transport.cli import serve_policy

    if any(a.startswith(("policy_factory=", "--policy_factory")) for a in argv):
        raise ValueError("serve-critic sets policy_factory itself; use serve-policy to serve another factory")
    return serve_policy(["policy_factory=policies.critic_remote:critic_service", *argv])
