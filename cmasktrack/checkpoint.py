"""Official (mmdetection v1) checkpoints of CMaskTrack R-CNN / MaskTrack R-CNN / Mask R-CNN.

Files are read with ``torch.load(weights_only=True)`` — nothing but tensors and plain containers
is unpickled — and converted to cmasktrack's parameter names by an explicit key map. Any key
that is missing or left over is an error that lists them.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from .categories import OVIS_CATEGORIES, YTVIS2019_CATEGORIES
from .config import CMaskTrackConfig


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as the model asked for."""


# (official pattern, cmasktrack replacement); the first match wins.
_KEY_RULES: List[Tuple[str, str]] = [
    (r"^backbone\.(.*)$", r"backbone.body.\1"),
    (r"^neck\.lateral_convs\.(\d+)\.conv\.(weight|bias)$", r"backbone.fpn.inner_blocks.\1.0.\2"),
    (r"^neck\.fpn_convs\.(\d+)\.conv\.(weight|bias)$", r"backbone.fpn.layer_blocks.\1.0.\2"),
    (r"^rpn_head\.(rpn_conv|rpn_cls|rpn_reg)\.(weight|bias)$", r"rpn.head.\1.\2"),
    (r"^bbox_head\.(shared_fcs\.\d+|fc_cls|fc_reg)\.(weight|bias)$", r"box_head.\1.\2"),
    (r"^mask_head\.convs\.(\d+)\.conv\.(weight|bias)$", r"mask_head.convs.\1.\2"),
    (r"^mask_head\.(upsample|conv_logits)\.(weight|bias)$", r"mask_head.\1.\2"),
    (r"^track_head\.fcs\.(\d+)\.(weight|bias)$", r"track_head.fcs.\1.\2"),
    (r"^track_head\.offset_convs\.(\d+)\.conv\.(weight|bias)$", r"calibration.offset_convs.\1.\2"),
    (r"^track_head\.conv_offset\.(weight|bias)$", r"calibration.conv_offset.\1"),
    (r"^track_head\.dconv_featureflow\.weight$", r"calibration.deform_weight"),
]
_COMPILED = [(re.compile(p), r) for p, r in _KEY_RULES]


def official_to_cmasktrack_key(key: str) -> Optional[str]:
    """cmasktrack name of an official parameter, or None when no rule covers it."""
    for pat, rep in _COMPILED:
        if pat.match(key):
            return pat.sub(rep, key)
    return None


def load_official_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The ``state_dict`` of an official ``.pth`` file, read without unpickling objects."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, truncated files
        raise CheckpointError(
            f"{path} could not be read as a PyTorch checkpoint with weights_only=True ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). cmasktrack never unpickles arbitrary objects; "
            "re-save the file's state_dict alone if it holds custom classes."
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj:
        sd = obj["state_dict"]
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        raise CheckpointError(f"{path} holds no 'state_dict' of tensors: it is not an mmdetection checkpoint")
    out = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{path}: state_dict entry {k!r} is a {type(v).__name__}, not a tensor")
        out[k[7:] if k.startswith("module.") else k] = v
    return out


def infer_config(sd: Mapping[str, torch.Tensor], **overrides: Any) -> CMaskTrackConfig:
    """The configuration an official state dict was trained with (classes, depth, calibration)."""
    if "bbox_head.fc_cls.weight" not in sd:
        raise CheckpointError("no 'bbox_head.fc_cls.weight': not a Mask R-CNN family checkpoint")
    num_classes = int(sd["bbox_head.fc_cls.weight"].shape[0])
    if "backbone.layer1.0.conv3.weight" in sd:  # bottleneck blocks
        depth = {6: 50, 23: 101}.get(_num_blocks(sd, 3))
    else:
        depth = {2: 18, 6: 34}.get(_num_blocks(sd, 3))
    if depth is None:
        raise CheckpointError("backbone is not a ResNet-18/34/50/101 (unexpected number of blocks in layer3)")
    calibration = "track_head.conv_offset.weight" in sd
    names: List[str] = []
    dataset = ""
    if num_classes == 26:
        names, dataset = list(OVIS_CATEGORIES), "ovis"
    elif num_classes == 41:
        names, dataset = list(YTVIS2019_CATEGORIES), "ytvis2019"
    kw: Dict[str, Any] = dict(num_classes=num_classes, depth=depth, calibration=calibration,
                              num_refs=5 if calibration else 0, category_names=names, dataset=dataset)
    if "track_head.fcs.0.weight" in sd:
        kw["track_head_fc"] = int(sd["track_head.fcs.0.weight"].shape[0])
    kw.update(overrides)
    return CMaskTrackConfig(**kw)


def _num_blocks(sd: Mapping[str, torch.Tensor], layer: int) -> int:
    pat = re.compile(rf"^backbone\.layer{layer}\.(\d+)\.")
    idx = {int(m.group(1)) for k in sd for m in [pat.match(k)] if m}
    return len(idx)


def convert_official_state_dict(
    sd: Mapping[str, torch.Tensor],
    model_state: Mapping[str, torch.Tensor],
    *,
    allow_missing_prefixes: Tuple[str, ...] = (),
) -> Dict[str, torch.Tensor]:
    """Map an official state dict onto ``model_state``'s names, shapes and dtypes.

    BatchNorm's ``num_batches_tracked`` counters are dropped (the BatchNorm is frozen).
    Raises :class:`CheckpointError` listing every unexpected, missing or mis-shaped key;
    ``allow_missing_prefixes`` names model parts that may stay at their initialisation (e.g.
    ``("track_head.", "calibration.")`` when starting from a COCO Mask R-CNN).
    """
    out: Dict[str, torch.Tensor] = {}
    unexpected: List[str] = []
    mismatched: List[str] = []
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        nk = official_to_cmasktrack_key(k)
        if nk is None or nk not in model_state:
            unexpected.append(k)
            continue
        ref = model_state[nk]
        if tuple(v.shape) != tuple(ref.shape):
            mismatched.append(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(ref.shape)}")
            continue
        out[nk] = v.to(ref.dtype)
    missing = [k for k in model_state if k not in out and not k.startswith(allow_missing_prefixes)]
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {', '.join(unexpected[:20])}"
                        + (" ..." if len(unexpected) > 20 else ""))
    if missing:
        problems.append(f"{len(missing)} missing key(s): {', '.join(missing[:20])}" + (" ..." if len(missing) > 20 else ""))
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {'; '.join(mismatched[:20])}")
    if problems:
        raise CheckpointError("official checkpoint does not fit the model: " + " | ".join(problems))
    return out
