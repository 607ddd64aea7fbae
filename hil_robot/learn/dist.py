"""Multi-process training (DESIGN issue 6 item 4): DistributedDataParallel under ``torchrun``.

``torchrun --nproc_per_node N -m hil_robot learner ...`` sets RANK/WORLD_SIZE/LOCAL_RANK; ``setup``
then joins the process group (NCCL on CUDA, gloo on CPU) and every trainable module goes through
``wrap`` (a no-op in a single process). Each rank samples its own share of the batch; DDP
averages gradients so all ranks keep identical weights; rank 0 alone publishes, checkpoints and
logs.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as tdist
from torch import nn


def world_size() -> int:
    return tdist.get_world_size() if tdist.is_available() and tdist.is_initialized() else 1


def rank() -> int:
    return tdist.get_rank() if tdist.is_available() and tdist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def setup(device: str = "auto", timeout_s: float = 120.0) -> torch.device:
    """Join the process group when launched by torchrun; return this process's device.

    device: "auto" (CUDA when present, one GPU per local rank), "cpu" or "cuda".
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("learner.device=cuda but no CUDA device is visible; use learner.device=cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if launched_by_torchrun() and not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    return dev


def wrap(module: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
    """DDP-wrap ``module`` when several processes train together; otherwise return it unchanged.

    The wrapped module's ``forward`` must compute the loss, so DDP sees every parameter it syncs.
    """
    if world_size() <= 1 or not any(p.requires_grad for p in module.parameters()):
        return module
    dev = next(module.parameters()).device
    ids = [dev.index] if dev.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False,
                                               find_unused_parameters=find_unused_parameters)


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (for modules DDP does not wrap)."""
    if world_size() <= 1:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            tdist.broadcast(t.data, src=0)


def barrier() -> None:
    if world_size() > 1:
        tdist.barrier()


def cleanup() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def agree(flag: bool) -> bool:
    """True on every rank if it is True on any rank (so all ranks stop at the same update)."""
    if world_size() <= 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item() > 0)


def check_in_sync(modules: dict[str, nn.Module]) -> None:
    """Raise if any rank's parameters differ from rank 0's (DDP keeps them identical; a mismatch
    means a rank skipped an update or trained on something else)."""
    if world_size() <= 1:
        return
    with torch.no_grad():
        sums = torch.stack([torch.cat([p.detach().double().reshape(-1) for p in m.parameters()]).sum()
                            for m in modules.values()]).cpu()
    gathered = [torch.zeros_like(sums) for _ in range(world_size())]
    tdist.all_gather(gathered, sums)
    for r, g in enumerate(gathered):
        if not torch.allclose(g, gathered[0], rtol=1e-9, atol=1e-9):
            raise RuntimeError(f"DDP ranks diverged: rank {r} parameter sums {g.tolist()} != rank 0 {gathered[0].tolist()}")
