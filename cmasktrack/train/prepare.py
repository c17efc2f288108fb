"""A model's training state: which parameters are trained, what BatchNorm does.

:func:`prepare_model` is the one place that decides it (``train()`` calls it, and so can a
user who writes their own loop around :func:`cmasktrack.train.forward_train`);
:func:`restore_inference_state` undoes it.

For the ``"ovis"`` preset (the official recipe: mmdetection v1's ResNet with
``frozen_stages=1``, ``norm_eval=True`` and BN ``frozen=False``) the trained set is exactly
the official one: every parameter except the stem (``conv1``, ``bn1``) and ``layer1``; the
BatchNorm layers of ``layer2``-``layer4`` normalise with their running statistics, which
training never changes, and their affine ``weight`` and ``bias`` are trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from torch import nn

from .config import TrainConfig
from .norm import freeze_batchnorm, prepare_backbone

__all__ = ["TrainingState", "prepare_model", "restore_inference_state"]


@dataclass(frozen=True)
class TrainingState:
    """What :func:`prepare_model` set up: the qualified names of the parameter tensors that
    are trained and of those that are not (BatchNorm weight and bias included: in the
    training state they are parameters, as in the official model), the BatchNorm policy and
    the number of BatchNorm layers whose affine values are trained."""

    trained: Tuple[str, ...]
    frozen: Tuple[str, ...]
    batchnorm: str
    frozen_stages: int
    trained_batchnorm_layers: int
    trained_values: int

    def summary(self) -> str:
        """One line: how many tensors (and values) are trained and frozen."""
        return (f"training {len(self.trained)} parameter tensors ({self.trained_values / 1e6:.2f} M values), "
                f"{len(self.frozen)} frozen (frozen_stages={self.frozen_stages}); BatchNorm {self.batchnorm!r}: "
                f"affine weight and bias of {self.trained_batchnorm_layers} layers trained")

    def __str__(self) -> str:
        return self.summary()


def prepare_model(model: nn.Module, cfg: Optional[TrainConfig] = None) -> TrainingState:
    """Put a :class:`~cmasktrack.modeling.cmasktrack_rcnn.CMaskTrackRCNN` into ``cfg``'s
    training state and return what is trained.

    Every parameter is trained except the backbone's first ``cfg.frozen_stages`` stages;
    the backbone's BatchNorm layers follow ``cfg.batchnorm`` (see
    :attr:`TrainConfig.batchnorm`: ``"affine"`` official, ``"frozen"``, ``"batch"``); the
    calibration's deformable conv uses the ``grid_sample`` form when ``cfg.fast_deform_conv``;
    the model is put in train mode. Calling it again (with another config) starts from the
    model's weights as they are. The state dict's keys and values are unchanged, so the model
    can be saved at any time; :func:`restore_inference_state` returns it to the inference form.

    The presets: ``"ovis"`` — the official set (everything but the stem and layer1; BatchNorm
    affine trained in layer2-layer4, statistics fixed); ``"cpu_small"`` — the same policy on a
    ResNet-18; ``"cpu_synthetic"`` — every stage trained, BatchNorm with batch statistics.
    """
    cfg = cfg or TrainConfig()
    for p in model.parameters():
        p.requires_grad_(True)
    bn_layers = prepare_backbone(model.backbone.body, cfg.frozen_stages, cfg.batchnorm, cfg.bn_momentum)
    if model.calibration is not None:
        model.calibration.deform_impl = "grid_sample" if cfg.fast_deform_conv else "auto"
    model.train()
    named = list(model.named_parameters())
    trained = tuple(n for n, p in named if p.requires_grad)
    frozen = tuple(n for n, p in named if not p.requires_grad)
    values = sum(p.numel() for _, p in named if p.requires_grad)
    return TrainingState(trained, frozen, cfg.batchnorm, cfg.frozen_stages, bn_layers, values)


def restore_inference_state(model: nn.Module) -> nn.Module:
    """Undo :func:`prepare_model`: BatchNorm back to frozen affine maps with the trained
    values (the saved model's form), every parameter ``requires_grad`` as a fresh model has
    it, the automatic deformable-conv choice, eval mode. Returns the model."""
    from ..modeling.backbone import set_frozen_stages

    freeze_batchnorm(model)
    for p in model.parameters():
        p.requires_grad_(True)
    set_frozen_stages(model.backbone.body, 1)
    if model.calibration is not None:
        model.calibration.deform_impl = "auto"
    return model.eval()
