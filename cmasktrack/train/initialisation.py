"""How a model's weights start before training.

:func:`initialise_model` loads pretrained weights; four sources are recognised by their content
(formats and key maps: :mod:`cmasktrack.weights`):

* an official mmdetection v1 checkpoint (``{'state_dict': ...}``): the COCO Mask R-CNN R50-FPN
  1x the official recipe starts from (81 classes, no tracking head), or a (C)MaskTrack R-CNN one;
* torchvision's ``maskrcnn_resnet50_fpn`` COCO weights file (91 classes), by an explicit key
  map (old and new torchvision key names). Its architecture is the same, but torchvision
  trained it with its own conventions (anchors centred on the cell corner, no "+1" boxes), a
  small mismatch that fine-tuning absorbs;
* a torchvision ImageNet ResNet classification weights file (backbone only);
* a cmasktrack model directory (``config.json`` + ``model.safetensors``), for fine-tuning.

Class-specific layers (``box_head.fc_cls``, ``box_head.fc_reg``, ``mask_head.conv_logits``) are
re-initialised when their shape differs (another class count); the parts a source does not
have (the tracking head and calibration of a COCO detector) keep their initialisation, and a
model without calibration ignores a source's calibration weights.

:func:`normalise_frozen_batchnorm` is the data-dependent start of a from-scratch backbone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List

import torch
from torch import nn

from ..weights import (
    CLASS_SPECIFIC,
    OFFICIAL_KEYS,
    TORCHVISION_KEYS,
    CheckpointError,
    FitReport,
    detect_checkpoint_kind,
    fit_and_load,
    load_official_state_dict,
    read_model_dir,
    torchvision_to_cmasktrack_key,
)

__all__ = ["InitReport", "initialise_model", "detect_checkpoint_kind", "torchvision_to_cmasktrack_key",
           "normalise_frozen_batchnorm"]

#: The detector's parts, which a Mask R-CNN source must provide (the tracking head and the
#: calibration may keep their initialisation).
DETECTOR_PARTS = ("backbone.", "rpn.", "box_head.", "mask_head.")


@dataclass
class InitReport:
    """What :func:`initialise_model` did: the kind of source, the parameters loaded and those
    left at their initialisation."""

    kind: str
    source: str
    loaded: List[str] = field(default_factory=list)
    kept_init: List[str] = field(default_factory=list)

    def summary(self) -> str:
        kept = sorted({".".join(k.split(".")[:2]) for k in self.kept_init})
        return (f"initialised from {self.kind} checkpoint {self.source}: {len(self.loaded)} tensors loaded"
                + (f"; kept initialisation of {', '.join(kept)}" if kept else ""))


def initialise_model(model: nn.Module, source: str) -> InitReport:
    """Load pretrained weights from ``source`` (file or cmasktrack model directory) into
    ``model`` for training; see the module docstring for what is recognised.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        CheckpointError: the source is not recognised or does not fit the model's
            architecture (other than its class count).
    """
    source = os.fspath(source)
    required = DETECTOR_PARTS
    if os.path.isdir(source):
        config, state = read_model_dir(source)
        if config.depth != model.config.depth:
            raise CheckpointError(f"{source} is a ResNet-{config.depth} model, the training config asks for "
                                  f"ResNet-{model.config.depth}")
        kind, unmapped, required = "cmasktrack", [], ()
    else:
        if not os.path.isfile(source):
            raise FileNotFoundError(f"initialisation checkpoint not found: {source}")
        sd = load_official_state_dict(source)  # weights_only, "state_dict" unwrapped, "module." stripped
        kind = detect_checkpoint_kind(sd)
        if kind == "mmdet":
            state, unmapped = OFFICIAL_KEYS.apply(sd)
        elif kind == "torchvision_maskrcnn":
            state, unmapped = TORCHVISION_KEYS.apply(sd)
        else:  # torchvision ResNet (ImageNet classification): the backbone body only
            state = {f"backbone.body.{k}": v for k, v in sd.items()
                     if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
            unmapped, required = [], ("backbone.body.",)
    if model.calibration is None:
        state = {k: v for k, v in state.items() if not k.startswith("calibration.")}
    report: FitReport = fit_and_load(model, state, source, required=required, optional=CLASS_SPECIFIC,
                                     reinit_mismatched=CLASS_SPECIFIC, unmapped=unmapped)
    return InitReport(kind, source, sorted(report.loaded), sorted(report.kept))


@torch.no_grad()
def normalise_frozen_batchnorm(model: nn.Module, images: torch.Tensor, eps: float = 1e-5) -> int:
    """Data-dependent initialisation of a from-scratch backbone's frozen BatchNorm layers.

    A randomly initialised ResNet has frozen BatchNorm layers that are identities
    (mean 0, variance 1, weight 1, bias 0), so nothing normalises its activations. This sets
    each layer's ``running_mean`` / ``running_var`` to the per-channel mean and variance of its
    input on ``images`` (normalised (B, 3, H, W) frames), in network order in one forward pass,
    so that at the start of training every BatchNorm outputs zero-mean, unit-variance channels,
    as a trained BatchNorm would. The layers stay frozen and the architecture is unchanged.

    Returns the number of layers set.
    """
    from torchvision.ops.misc import FrozenBatchNorm2d

    if images.dim() != 4:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    layers = [m for m in model.backbone.body.modules() if isinstance(m, FrozenBatchNorm2d)]

    def hook(module: nn.Module, inputs):
        x = inputs[0].float()
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3), unbiased=False).clamp_min(eps) - module.eps)

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    try:
        model.backbone.body(images.to(next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return len(layers)
