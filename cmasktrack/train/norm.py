"""Backbone BatchNorm and stage freezing for training.

The inference model's backbone uses torchvision's :class:`~torchvision.ops.misc.FrozenBatchNorm2d`
(a fixed affine map: statistics and affine values, no parameters). Training swaps every one of
them for a :class:`TrainableBatchNorm2d` (:func:`make_batchnorm_trainable`) whose ``weight`` and
``bias`` are parameters, with one of three behaviours (``TrainConfig.batchnorm``, applied by
:func:`cmasktrack.train.prepare_model`):

* ``"affine"`` — the official recipe (mmdetection v1's ResNet, ``norm_eval=True`` with BN
  ``frozen=False``): normalise with the running statistics, which never change; the affine
  weight and bias of the stages that are not frozen are trained;
* ``"frozen"`` — nothing of BatchNorm is trained;
* ``"batch"`` — for a ResNet trained from random weights, whose activations frozen statistics
  would not normalise: batch statistics in train mode, running averages kept, affine
  parameters learnt (optionally "precise" statistics at the end,
  :func:`recompute_batchnorm_statistics`).

The layers of frozen stages (:func:`set_frozen_stages`) are never trained. :func:`freeze_batchnorm`
swaps back before the model is saved or used for inference. Both modules have the same
state-dict entries (``weight``, ``bias``, ``running_mean``, ``running_var``), so checkpoints
written during training load into the inference model unchanged and the file format does not
change.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops.misc import FrozenBatchNorm2d

from ..modeling.backbone import frozen_prefixes, set_frozen_stages

__all__ = ["TrainableBatchNorm2d", "make_batchnorm_trainable", "freeze_batchnorm", "set_frozen_stages",
           "frozen_prefixes", "prepare_backbone", "recompute_batchnorm_statistics", "recompute_batchnorm_on_dataset"]


class TrainableBatchNorm2d(nn.Module):
    """BatchNorm2d with FrozenBatchNorm2d's state-dict layout (no ``num_batches_tracked``).

    With ``use_batch_stats`` (default), train mode normalises with the batch statistics and
    updates the running ones with ``momentum``; otherwise — and in eval mode — it normalises
    with the running statistics and never changes them (``nn.BatchNorm2d`` in eval mode, the
    official ``norm_eval``; :class:`FrozenBatchNorm2d`'s function up to float rounding), while
    ``weight`` and ``bias`` stay parameters that can be trained.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, use_batch_stats: bool = True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.use_batch_stats = use_batch_stats
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=self.training and self.use_batch_stats, momentum=self.momentum, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, use_batch_stats={self.use_batch_stats}"


def _swap(root: nn.Module, old_type: type, make, skip: tuple = (), prefix: str = "", only=None) -> int:
    """Replace the ``old_type`` modules under ``root`` by ``make(module)`` (not under ``skip``;
    with ``only``, just the modules in that collection)."""
    count = 0
    for name, child in list(root.named_children()):
        full = prefix + name
        if full.startswith(skip):
            continue
        if isinstance(child, old_type):
            if only is None or any(child is m for m in only):
                setattr(root, name, make(child))
                count += 1
        else:
            count += _swap(child, old_type, make, skip, full + ".", only)
    return count


def make_batchnorm_trainable(module: nn.Module, momentum: float = 0.1, skip: tuple = (),
                             use_batch_stats: bool = True) -> int:
    """Replace every FrozenBatchNorm2d under ``module`` (except those whose qualified name
    starts with one of ``skip``) by a :class:`TrainableBatchNorm2d` holding the same statistics
    and affine values; returns how many were replaced."""

    def make(frozen: FrozenBatchNorm2d) -> TrainableBatchNorm2d:
        bn = TrainableBatchNorm2d(frozen.weight.numel(), eps=frozen.eps, momentum=momentum,
                                  use_batch_stats=use_batch_stats)
        bn.to(frozen.weight.device)
        bn.weight.data.copy_(frozen.weight)
        bn.bias.data.copy_(frozen.bias)
        bn.running_mean.copy_(frozen.running_mean)
        bn.running_var.copy_(frozen.running_var)
        return bn

    return _swap(module, FrozenBatchNorm2d, make, tuple(skip))


def freeze_batchnorm(module: nn.Module, only=None) -> int:
    """The inverse of :func:`make_batchnorm_trainable`: back to FrozenBatchNorm2d with the
    learnt affine values and the running statistics (every TrainableBatchNorm2d, or just
    those in ``only``); returns how many were replaced."""

    def make(bn: TrainableBatchNorm2d) -> FrozenBatchNorm2d:
        frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps).to(bn.weight.device)
        for key in ("weight", "bias", "running_mean", "running_var"):
            getattr(frozen, key).copy_(getattr(bn, key).detach())
        return frozen

    return _swap(module, TrainableBatchNorm2d, make, only=only)


def prepare_backbone(body: nn.Module, frozen_stages: int = 1, batchnorm: str = "affine",
                     momentum: float = 0.1) -> int:
    """Put a ResNet body into a training state: every BatchNorm becomes a
    :class:`TrainableBatchNorm2d` (any earlier training state is undone first); the first
    ``frozen_stages`` stages get no gradient (:func:`set_frozen_stages`), their BatchNorm
    included; in the other stages BatchNorm follows ``batchnorm`` (``"affine"``: running
    statistics, affine trained; ``"frozen"``: nothing trained; ``"batch"``: batch statistics,
    affine trained — see the module doc). A bool ``batchnorm`` is the deprecated
    ``train_batchnorm`` (true = ``"batch"``, false = ``"frozen"``).

    Returns the number of BatchNorm layers whose affine parameters are trained.
    """
    if isinstance(batchnorm, bool):
        batchnorm = "batch" if batchnorm else "frozen"
    if batchnorm not in ("affine", "frozen", "batch"):
        raise ValueError(f"batchnorm must be 'affine', 'frozen' or 'batch', got {batchnorm!r}")
    freeze_batchnorm(body)
    make_batchnorm_trainable(body, momentum, use_batch_stats=False)
    set_frozen_stages(body, frozen_stages)
    frozen = frozen_prefixes(frozen_stages)
    trained = 0
    for name, m in body.named_modules():
        if not isinstance(m, TrainableBatchNorm2d):
            continue
        learn = batchnorm != "frozen" and not name.startswith(frozen)
        m.use_batch_stats = learn and batchnorm == "batch"
        m.weight.requires_grad_(learn)
        m.bias.requires_grad_(learn)
        trained += int(learn)
    return trained


def recompute_batchnorm_statistics(body: nn.Module, batches, skip: tuple = ()) -> int:
    """"Precise BatchNorm": replace the running statistics of the BatchNorm layers of ``body``
    (FrozenBatchNorm2d or TrainableBatchNorm2d; not those whose name starts with one of
    ``skip``) by the average of their batch statistics over ``batches`` ((B, 3, H, W)
    normalised image tensors), computed with the current weights (as BatchNorm2d's running
    statistics, the variance is the unbiased batch variance). The running averages kept during
    training lag behind weights that are still changing; inference should use these instead.
    Layer types are left as they were. Returns the number of batches used.
    """
    was_training = body.training
    already = [m for m in body.modules() if isinstance(m, TrainableBatchNorm2d)]
    converted = make_batchnorm_trainable(body, skip=tuple(skip))
    layers = [m for n, m in body.named_modules() if isinstance(m, TrainableBatchNorm2d) and not n.startswith(tuple(skip))]
    new_layers = [m for m in layers if not any(m is a for a in already)]
    saved = [(m.momentum, m.use_batch_stats, m.running_mean.clone(), m.running_var.clone()) for m in layers]
    count = 0
    try:
        body.train()
        for m in layers:
            m.use_batch_stats = True
        with torch.no_grad():
            for images in batches:
                for m in layers:  # running = mean of the batch statistics seen so far
                    m.momentum = 1.0 / (count + 1)
                body(images)
                count += 1
    finally:
        for m, (momentum, batch_stats, mean, var) in zip(layers, saved):
            m.momentum = momentum
            m.use_batch_stats = batch_stats
            if count == 0:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
        body.train(was_training)
        if converted:
            freeze_batchnorm(body, only=new_layers)  # the layers that were trainable stay so
    return count


def recompute_batchnorm_on_dataset(model: nn.Module, dataset, cfg, device: torch.device) -> int:
    """Precise BatchNorm for :func:`cmasktrack.train.train`: recompute the trained BatchNorm
    statistics of ``model``'s backbone (:func:`recompute_batchnorm_statistics`, frozen stages
    skipped) on ``cfg.precise_bn_batches`` batches of ``cfg.images_per_gpu`` frame pairs of
    ``dataset`` (frames and their references), drawn with the run's seed — the same on every
    process, so DDP replicas stay identical. Returns the number of batches used."""
    import numpy as np

    from .dataset import collate_train

    n = cfg.precise_bn_batches * cfg.images_per_gpu
    rng = np.random.default_rng([cfg.seed, 11])
    picks = rng.choice(len(dataset), n, replace=n > len(dataset))

    def batches():
        for k in range(0, n, cfg.images_per_gpu):
            b = collate_train([dataset[(int(i), cfg.seed + 1)] for i in picks[k:k + cfg.images_per_gpu]])
            yield torch.cat([b.images, b.ref_images]).to(device)

    return recompute_batchnorm_statistics(model.backbone.body, batches(), skip=frozen_prefixes(cfg.frozen_stages))
