"""Optimiser and learning-rate schedule of the training loop.

SGD with momentum and weight decay on every trained parameter (official) or AdamW, and the
per-iteration schedule of mmcv's ``StepLrUpdaterHook`` with ``warmup='linear'``:
:func:`lr_factor` / :class:`WarmupStepLR`.
"""

from __future__ import annotations

from typing import List

import torch
from torch.optim.lr_scheduler import LRScheduler

from .config import TrainConfig

__all__ = ["build_optimizer", "lr_factor", "WarmupStepLR"]


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """SGD (official; weight decay on all trainable parameters) or AdamW (``cfg.optimizer``)
    over the parameters that require a gradient, in ``model.parameters()`` order."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(iteration: int, cfg: TrainConfig, iters_per_epoch: int) -> float:
    """Learning-rate multiplier of (0-based) ``iteration``: ``lr_gamma`` to the number of
    ``lr_steps`` reached (in epochs ``iteration // iters_per_epoch`` when ``by_epoch``, else
    iterations), times the linear warm-up ``r + (1 - r) * i / warmup_iters`` for
    ``i < warmup_iters`` (mmcv's ``StepLrUpdaterHook`` with ``warmup='linear'``)."""
    progress = iteration // max(1, iters_per_epoch) if cfg.by_epoch else iteration
    factor = cfg.lr_gamma ** sum(1 for s in cfg.lr_steps if progress >= s)
    if cfg.warmup_iters > 0 and iteration < cfg.warmup_iters:
        factor *= 1.0 - (1.0 - iteration / cfg.warmup_iters) * (1.0 - cfg.warmup_ratio)
    return factor


class WarmupStepLR(LRScheduler):
    """Per-iteration scheduler: ``lr = base_lr * lr_factor(iteration)`` (see :func:`lr_factor`).
    Call :meth:`step` after every optimiser step. Its state is plain numbers (resumable)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, iters_per_epoch: int,
                 last_epoch: int = -1):
        self.cfg = cfg
        self.iters_per_epoch = int(iters_per_epoch)
        super().__init__(optimizer, last_epoch)

    def state_dict(self):  # noqa: D102 - the config is rebuilt from train_config.json, not pickled
        return {k: v for k, v in super().state_dict().items() if k != "cfg"}

    def get_lr(self) -> List[float]:  # noqa: D102 - LRScheduler API
        f = lr_factor(self.last_epoch, self.cfg, self.iters_per_epoch)
        return [base * f for base in self.base_lrs]
