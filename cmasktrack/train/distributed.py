"""The processes of a training run: ``torch.distributed`` set up from ``torchrun``'s
environment (NCCL on CUDA, gloo on the CPU), the device of each process, and the two
collective helpers the loop needs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Union

import torch
import torch.distributed as dist

__all__ = ["DistContext", "setup_distributed", "resolve_device", "reduce_mean", "any_process"]


@dataclass
class DistContext:
    """This process's place in the run (one process: world size 1, rank 0)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> DistContext:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1), unless already in
    one; a single process needs none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        here = True
    return DistContext(dist.get_world_size(), dist.get_rank(), local, here)


def resolve_device(device: Optional[Union[str, torch.device]], local_rank: int) -> torch.device:
    """The device of this process: ``device`` (default CUDA when available, else the CPU);
    under ``torchrun`` a bare ``cuda`` means the local rank's GPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _collective_tensor(values) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.float64)
    return t.cuda() if dist.get_backend() == "nccl" else t


def reduce_mean(values: Dict[str, float], ctx: DistContext) -> Dict[str, float]:
    """The mean of each value over the processes (the values themselves with one process)."""
    if not ctx.enabled:
        return values
    keys = sorted(values)
    t = _collective_tensor([values[k] for k in keys])
    dist.all_reduce(t)
    t = (t / ctx.world_size).cpu()
    return {k: float(v) for k, v in zip(keys, t)}


def any_process(flag: bool, ctx: DistContext) -> bool:
    """True on every process when any process says so (keeps DDP processes in step)."""
    if not ctx.enabled:
        return flag
    t = _collective_tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
