"""Initialising a model for training from a pretrained checkpoint.

Four sources are recognised by their content:

* an official mmdetection v1 checkpoint (``{'state_dict': ...}``): the COCO Mask R-CNN R50-FPN
  1x the official recipe starts from (81 classes, no tracking head), or a (C)MaskTrack R-CNN one;
  converted with :func:`cmasktrack.checkpoint.convert_official_state_dict`;
* torchvision's ``maskrcnn_resnet50_fpn`` COCO weights file (91 classes), by an explicit key
  map (old and new torchvision key names). Its architecture is the same, but torchvision
  trained it with its own conventions (anchors centred on the cell corner, no "+1" boxes), a
  small mismatch that fine-tuning absorbs;
* a torchvision ImageNet ResNet classification weights file (backbone only);
* a cmasktrack model directory (``config.json`` + ``model.safetensors``), for fine-tuning.

Class-specific layers (``box_head.fc_cls``, ``box_head.fc_reg``, ``mask_head.conv_logits``) are
re-initialised when their shape differs (another class count); the parts a source does not
have (the tracking head and calibration of a COCO detector) keep their initialisation.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..checkpoint import CheckpointError, convert_official_state_dict, load_official_state_dict

__all__ = ["InitReport", "initialise_model", "detect_checkpoint_kind", "torchvision_to_cmasktrack_key",
           "normalise_frozen_batchnorm"]

#: Layers whose shape depends on the number of classes.
CLASS_SPECIFIC = ("box_head.fc_cls.", "box_head.fc_reg.", "mask_head.conv_logits.")


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


# torchvision detection names -> cmasktrack names (first match wins).
_TV_RULES: List[Tuple[str, str]] = [
    (r"^backbone\.body\.(.*)$", r"backbone.body.\1"),
    (r"^backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.(?:0\.)?(weight|bias)$", r"backbone.fpn.\1.\2.0.\3"),
    (r"^rpn\.head\.conv\.(?:0\.0\.)?(weight|bias)$", r"rpn.head.rpn_conv.\1"),
    (r"^rpn\.head\.cls_logits\.(weight|bias)$", r"rpn.head.rpn_cls.\1"),
    (r"^rpn\.head\.bbox_pred\.(weight|bias)$", r"rpn.head.rpn_reg.\1"),
    (r"^roi_heads\.box_head\.fc6\.(weight|bias)$", r"box_head.shared_fcs.0.\1"),
    (r"^roi_heads\.box_head\.fc7\.(weight|bias)$", r"box_head.shared_fcs.1.\1"),
    (r"^roi_heads\.box_predictor\.cls_score\.(weight|bias)$", r"box_head.fc_cls.\1"),
    (r"^roi_heads\.box_predictor\.bbox_pred\.(weight|bias)$", r"box_head.fc_reg.\1"),
    (r"^roi_heads\.mask_head\.(\d+)\.0\.(weight|bias)$", r"mask_head.convs.\1.\2"),
    (r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$", None),  # 1-based, handled below
    (r"^roi_heads\.mask_predictor\.conv5_mask\.(weight|bias)$", r"mask_head.upsample.\1"),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.(weight|bias)$", r"mask_head.conv_logits.\1"),
]
_TV_COMPILED = [(re.compile(p), r) for p, r in _TV_RULES]


def torchvision_to_cmasktrack_key(key: str) -> Optional[str]:
    """cmasktrack name of a torchvision Mask R-CNN parameter, or None when nothing maps it."""
    for pat, rep in _TV_COMPILED:
        m = pat.match(key)
        if m:
            if rep is None:
                return f"mask_head.convs.{int(m.group(1)) - 1}.{m.group(2)}"
            return pat.sub(rep, key)
    return None


def detect_checkpoint_kind(sd: Mapping[str, torch.Tensor]) -> str:
    """``"mmdet"``, ``"torchvision_maskrcnn"`` or ``"torchvision_resnet"`` from a state dict's keys."""
    keys = set(sd)
    if any(k.startswith(("rpn_head.", "bbox_head.", "neck.")) for k in keys):
        return "mmdet"
    if any(k.startswith(("roi_heads.", "rpn.head.")) for k in keys):
        return "torchvision_maskrcnn"
    if "conv1.weight" in keys and any(k.startswith("layer4.") for k in keys):
        return "torchvision_resnet"
    raise CheckpointError("unrecognised checkpoint: expected an mmdetection Mask R-CNN, a torchvision Mask R-CNN, "
                          "a torchvision ResNet or a cmasktrack model directory")


def _apply(model: nn.Module, mapped: Dict[str, torch.Tensor], kind: str, source: str,
           allow_partial: bool, required: Tuple[str, ...] = ()) -> InitReport:
    """Load ``mapped`` (cmasktrack names) into ``model``, skipping class-specific layers whose
    shape differs; any other mismatch is an error."""
    own = model.state_dict()
    unexpected = sorted(k for k in mapped if k not in own)
    if unexpected:
        raise CheckpointError(f"{source}: parameters the model does not have: {unexpected[:10]}"
                              + (" ..." if len(unexpected) > 10 else ""))
    load: Dict[str, torch.Tensor] = {}
    bad = []
    for k, v in mapped.items():
        if tuple(v.shape) == tuple(own[k].shape):
            load[k] = v.to(own[k].dtype)
        elif not k.startswith(CLASS_SPECIFIC):
            bad.append(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}")
    if bad:
        raise CheckpointError(f"{source} does not fit the model (another depth or width?): {bad[:5]}")
    missing = sorted(k for k in own if k not in load and not k.startswith(CLASS_SPECIFIC)
                     and (not allow_partial or k.startswith(required)))
    if missing:
        raise CheckpointError(f"{source} lacks parameters of the model (another depth?): {missing[:10]}")
    model.load_state_dict(load, strict=False)
    kept = sorted(k for k in own if k not in load)
    return InitReport(kind, source, sorted(load), kept)


def initialise_model(model: nn.Module, source: str) -> InitReport:
    """Load pretrained weights from ``source`` (file or cmasktrack model directory) into
    ``model`` for training; see the module docstring for what is recognised.

    Raises:
        FileNotFoundError: ``source`` does not exist.
        CheckpointError: the source is not recognised or does not fit the model's
            architecture (other than its class count).
    """
    source = os.fspath(source)
    if os.path.isdir(source):
        from safetensors.torch import load_file

        from ..config import WEIGHTS_NAME, CMaskTrackConfig

        w_path = os.path.join(source, WEIGHTS_NAME)
        if not os.path.isfile(w_path):
            raise FileNotFoundError(f"{source} is not a cmasktrack model directory: {WEIGHTS_NAME} is missing")
        cfg = CMaskTrackConfig.load(source)
        if cfg.depth != model.config.depth:
            raise CheckpointError(f"{source} is a ResNet-{cfg.depth} model, the training config asks for "
                                  f"ResNet-{model.config.depth}")
        state = load_file(w_path)
        if model.calibration is None:
            state = {k: v for k, v in state.items() if not k.startswith("calibration.")}
        return _apply(model, dict(state), "cmasktrack", source, allow_partial=True)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"initialisation checkpoint not found: {source}")
    sd = load_official_state_dict(source)  # weights_only, "state_dict" unwrapped, "module." stripped
    kind = detect_checkpoint_kind(sd)
    if kind == "mmdet":
        own = model.state_dict()
        if model.calibration is None:
            sd = {k: v for k, v in sd.items()
                  if not k.startswith(("track_head.offset_convs", "track_head.conv_offset", "track_head.dconv"))}
        # class-specific layers of another class count stay at their initialisation
        drop = {"bbox_head.fc_cls.": "box_head.fc_cls.", "bbox_head.fc_reg.": "box_head.fc_reg.",
                "mask_head.conv_logits.": "mask_head.conv_logits."}
        filtered = {}
        for k, v in sd.items():
            ours = next((o + k[len(p):] for p, o in drop.items() if k.startswith(p)), None)
            if ours is not None and ours in own and tuple(own[ours].shape) != tuple(v.shape):
                continue
            filtered[k] = v
        converted = convert_official_state_dict(
            filtered, own, allow_missing_prefixes=CLASS_SPECIFIC + ("track_head.", "calibration."))
        return _apply(model, converted, kind, source, allow_partial=True,
                      required=("backbone.", "rpn.", "box_head.", "mask_head."))
    if kind == "torchvision_maskrcnn":
        mapped = {}
        unmapped = []
        for k, v in sd.items():
            if k.endswith("num_batches_tracked"):
                continue
            nk = torchvision_to_cmasktrack_key(k)
            if nk is None:
                unmapped.append(k)
            else:
                mapped[nk] = v
        if unmapped:
            raise CheckpointError(f"{source}: torchvision keys with no cmasktrack counterpart: {unmapped[:10]}")
        return _apply(model, mapped, kind, source, allow_partial=True,
                      required=("backbone.", "rpn.", "box_head.", "mask_head."))
    # torchvision ResNet (ImageNet classification): the backbone body only
    mapped = {f"backbone.body.{k}": v for k, v in sd.items()
              if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    return _apply(model, mapped, kind, source, allow_partial=True, required=("backbone.body.",))


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
