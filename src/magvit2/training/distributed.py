"""Multi-process data parallelism through ``torch.distributed`` as set up by ``torchrun``.

``torchrun --nproc_per_node N -m magvit2.cli.main train CONFIG.yaml`` sets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; :func:`init_distributed` reads them and joins the process group (gloo on CPU,
NCCL on CUDA). Without those variables everything runs as a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the number of processes, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on the process that writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA (this process's local GPU) when available, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group if launched by torchrun (``WORLD_SIZE`` > 1); else a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def average_gradients(params: list[nn.Parameter], info: DistInfo) -> None:
    """Average the ``.grad`` of ``params`` over ranks with one coalesced all_reduce."""
    if not info.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average_buffers(module: nn.Module, info: DistInfo) -> None:
    """Average a module's floating buffers over ranks (keeps LeCam's logit averages identical)."""
    if not info.distributed:
        return
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf /= info.world_size


def broadcast_module(module: nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not info.distributed:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op for a single process)."""
    if info.distributed:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
