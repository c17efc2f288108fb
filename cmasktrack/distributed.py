"""The processes of a run: ``torch.distributed`` set up from ``torchrun``'s environment (NCCL
on CUDA, gloo on the CPU), the device and CPU threads of each process, and the collectives
training and dataset inference need (means, flags, gathered objects, a progress count summed
over the processes)."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

import torch
import torch.distributed as dist

__all__ = [
    "DistContext",
    "setup_distributed",
    "resolve_device",
    "reduce_mean",
    "any_process",
    "gather_objects",
    "local_world_size",
    "cpu_threads_per_process",
    "GlobalProgress",
]


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
        count = torch.cuda.device_count()
        if device.index >= count:
            raise RuntimeError(f"{device} does not exist: this machine has {count} GPU(s); under torchrun start at most "
                               "one process per GPU (--nproc_per_node)")
        torch.cuda.set_device(device)
    return device


def local_world_size() -> int:
    """The number of processes ``torchrun`` started on this machine (1 without torchrun)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def cpu_threads_per_process(processes_here: Optional[int] = None) -> int:
    """This process's share of the CPU cores it may run on: the cores of its affinity mask
    divided by the processes on this machine (``LOCAL_WORLD_SIZE``), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // (processes_here or local_world_size()))


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


def gather_objects(obj: Any, ctx: DistContext) -> List[Any]:
    """Every process's ``obj`` (picklable), in rank order, on every process (``[obj]`` with one
    process)."""
    if not ctx.enabled:
        return [obj]
    out: List[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


class GlobalProgress:
    """A count of work done summed over every process, shown as one progress bar on the main
    process (none on the others).

    Each process adds its work with :meth:`update` to a counter in the process group's
    key-value store (the ``torch.distributed`` store ``torchrun`` sets up) at most every
    ``interval`` seconds (one round trip, not one per update); the main process shows the sum.
    No collective and no thread: a process that stops holds up no other. Every process must
    create it (in the same order as its other progress counters) and :meth:`close` it; the main
    process's ``close`` keeps the bar going until every process has closed.
    """

    _counters = itertools.count()  # the same sequence on every process: one key per counter

    def __init__(self, ctx: DistContext, total: Optional[int] = None, *, desc: str = "", unit: str = "it",
                 enabled: bool = True, interval: float = 0.5):
        self.ctx = ctx
        self.interval = interval
        self._local = 0
        self._unsent = 0  # this process's work not yet added to the store
        self._sent = 0.0
        #: The count summed over every process when last read (exact after the main process's
        #: :meth:`close`; this process's own count without a process group).
        self.total_done = 0
        self._store = None
        if ctx.enabled:
            key = f"cmasktrack/progress/{next(self._counters)}/"
            try:
                self._store = dist.PrefixStore(key, _default_store())
            except (RuntimeError, ValueError, ImportError):  # a group without a store: count this process only
                self._store = None
        self.bar = None
        if enabled and ctx.main:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        """Add ``n`` units of this process's work."""
        self._local += n
        if self._store is None:
            self.total_done = self._local
            if self.bar is not None:
                self.bar.update(n)
            return
        self._unsent += n
        if time.monotonic() - self._sent >= self.interval:  # one store round trip per interval
            self._send()
            if self.bar is not None:
                self._show()

    def _send(self) -> None:
        self.total_done = int(self._store.add("done", self._unsent))
        self._unsent = 0
        self._sent = time.monotonic()

    def _show(self) -> None:
        self.bar.n = self.total_done
        self.bar.refresh()

    def close(self, wait: bool = True) -> None:
        """Stop counting. On the main process with ``wait``, first follow the others' work
        until every process has closed."""
        if self._store is not None:
            self._send()
            closed = int(self._store.add("closed", 1))
            while wait and self.ctx.main and closed < self.ctx.world_size:
                time.sleep(self.interval)
                self.total_done = int(self._store.add("done", 0))
                if self.bar is not None:
                    self._show()
                closed = int(self._store.add("closed", 0))
            self.total_done = int(self._store.add("done", 0))
            self._store = None
        if self.bar is not None:
            self._show()
            self.bar.close()
            self.bar = None


def _default_store() -> "dist.Store":
    """The key-value store of the default process group (torchrun's rendezvous store)."""
    from torch.distributed.distributed_c10d import _get_default_store

    return _get_default_store()
