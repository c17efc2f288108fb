"""Backbone normalisation and freezing for training from scratch.

The model's backbone uses torchvision's :class:`~torchvision.ops.misc.FrozenBatchNorm2d`, as
the official code does (BatchNorm statistics and affine parameters of an ImageNet ResNet,
never updated). That is right for fine-tuning pretrained weights and wrong for a ResNet trained
from random weights, whose activations then nothing normalises. For that case training can

* swap every frozen BatchNorm for a :class:`TrainableBatchNorm2d` (batch statistics in train
  mode, running averages kept, affine parameters learnt) with :func:`make_batchnorm_trainable`,
  and swap them back with :func:`freeze_batchnorm` before the model is used for inference.
  Both modules have the same state-dict entries (``weight``, ``bias``, ``running_mean``,
  ``running_var``), so checkpoints written during training load into the inference model
  unchanged and the model's architecture and file format do not change;
* train the stem and ``layer1`` too (:func:`set_frozen_stages`), which the official recipe
  freezes because they come pretrained.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops.misc import FrozenBatchNorm2d

from ..modeling.backbone import frozen_prefixes, set_frozen_stages

__all__ = ["TrainableBatchNorm2d", "make_batchnorm_trainable", "freeze_batchnorm", "set_frozen_stages",
           "frozen_prefixes", "prepare_backbone", "recompute_batchnorm_statistics"]


class TrainableBatchNorm2d(nn.Module):
    """BatchNorm2d with FrozenBatchNorm2d's state-dict layout (no ``num_batches_tracked``).

    Train mode normalises with the batch statistics and updates the running ones with
    ``momentum``; eval mode is :class:`FrozenBatchNorm2d`'s function (running statistics; the
    same up to float rounding).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=self.training, momentum=self.momentum, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


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


def make_batchnorm_trainable(module: nn.Module, momentum: float = 0.1, skip: tuple = ()) -> int:
    """Replace every FrozenBatchNorm2d under ``module`` (except those whose qualified name
    starts with one of ``skip``) by a :class:`TrainableBatchNorm2d` holding the same statistics
    and affine values; returns how many were replaced."""

    def make(frozen: FrozenBatchNorm2d) -> TrainableBatchNorm2d:
        bn = TrainableBatchNorm2d(frozen.weight.numel(), eps=frozen.eps, momentum=momentum)
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


def prepare_backbone(body: nn.Module, frozen_stages: int = 1, train_batchnorm: bool = False,
                     momentum: float = 0.1) -> int:
    """Set up a ResNet body for training: freeze the first stages (:func:`set_frozen_stages`)
    and, with ``train_batchnorm``, make the BatchNorm layers of the *other* stages trainable
    (frozen stages keep FrozenBatchNorm2d: no gradient, no statistics update). Returns the
    number of BatchNorm layers made trainable."""
    set_frozen_stages(body, frozen_stages)
    if not train_batchnorm:
        return 0
    return make_batchnorm_trainable(body, momentum, skip=frozen_prefixes(frozen_stages))


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
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone()) for m in layers]
    count = 0
    try:
        body.train()
        with torch.no_grad():
            for images in batches:
                for m in layers:  # running = mean of the batch statistics seen so far
                    m.momentum = 1.0 / (count + 1)
                body(images)
                count += 1
    finally:
        for m, (momentum, mean, var) in zip(layers, saved):
            m.momentum = momentum
            if count == 0:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
        body.train(was_training)
        if converted:
            freeze_batchnorm(body, only=new_layers)  # the layers that were trainable stay so
    return count
