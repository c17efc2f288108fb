"""The processes of a training run: :mod:`cmasktrack.distributed` (shared with dataset
inference), importable from here as before."""

from ..distributed import DistContext, any_process, reduce_mean, resolve_device, setup_distributed

__all__ = ["DistContext", "setup_distributed", "resolve_device", "reduce_mean", "any_process"]
