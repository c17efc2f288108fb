"""Weight files: the formats cmasktrack reads and writes, their key maps, and how a state dict
fits a model.

Formats:

* **cmasktrack model directory** — ``config.json`` + ``model.safetensors``
  (:meth:`CMaskTrack.save_pretrained <cmasktrack.model.CMaskTrack.save_pretrained>` writes it,
  :func:`read_model_dir` reads it; training checkpoints are model directories too);
* **official mmdetection v1 checkpoint** — a ``.pth`` with a ``state_dict``: CMaskTrack R-CNN,
  MaskTrack R-CNN and the COCO Mask R-CNN the official recipe starts from;
* **torchvision** ``maskrcnn_resnet50_fpn`` COCO weights (old and new key names) and ImageNet
  ResNet classification weights (the backbone only).

``.pth`` files are read with ``torch.load(weights_only=True)`` — nothing but tensors and plain
containers is unpickled (:func:`load_official_state_dict`). Foreign names become cmasktrack's
through one key-map system, :class:`KeyMap` (:data:`OFFICIAL_KEYS`, :data:`TORCHVISION_KEYS`),
and every load goes through one fit check, :func:`fit_state_dict`, whose :class:`FitReport`
lists every missing, unexpected and mis-shaped key.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .categories import OVIS_CATEGORIES, YTVIS2019_CATEGORIES
from .model_config import CONFIG_NAME, CMaskTrackConfig

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CLASS_SPECIFIC",
    "CheckpointError",
    "KeyMap",
    "OFFICIAL_KEYS",
    "TORCHVISION_KEYS",
    "official_to_cmasktrack_key",
    "torchvision_to_cmasktrack_key",
    "load_official_state_dict",
    "checkpoint_file_kind",
    "detect_checkpoint_kind",
    "infer_config",
    "FitReport",
    "fit_state_dict",
    "fit_and_load",
    "convert_official_state_dict",
    "read_model_dir",
]

#: The weights file of a model directory (next to :data:`CONFIG_NAME`).
WEIGHTS_NAME = "model.safetensors"

#: Layers whose shape depends on the number of classes.
CLASS_SPECIFIC: Tuple[str, ...] = ("box_head.fc_cls.", "box_head.fc_reg.", "mask_head.conv_logits.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as the model asked for."""


# ----------------------------------------------------------------------------------------------
# Key maps
# ----------------------------------------------------------------------------------------------

Replacement = Union[str, Callable[["re.Match[str]"], str]]


class KeyMap:
    """Renames foreign parameter names to cmasktrack's: ``(pattern, replacement)`` rules, the
    first matching pattern wins; a replacement is a :func:`re.sub` template or a function of the
    match. A key no rule matches has no cmasktrack counterpart."""

    def __init__(self, rules: Sequence[Tuple[str, Replacement]]):
        self.rules = [(re.compile(pattern), replacement) for pattern, replacement in rules]

    def __call__(self, key: str) -> Optional[str]:
        """The cmasktrack name of ``key``, or None when no rule matches it."""
        for pattern, replacement in self.rules:
            if pattern.match(key):
                return pattern.sub(replacement, key)
        return None

    def apply(self, state: Mapping[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
        """``(renamed, unmapped)``: ``state`` under cmasktrack names, and the keys no rule maps.
        BatchNorm ``num_batches_tracked`` counters are dropped (cmasktrack's BatchNorm is frozen)."""
        renamed: Dict[str, torch.Tensor] = {}
        unmapped: List[str] = []
        for key, value in state.items():
            if key.endswith("num_batches_tracked"):
                continue
            new = self(key)
            if new is None:
                unmapped.append(key)
            else:
                renamed[new] = value
        return renamed, unmapped


#: Official mmdetection v1 (CMaskTrack R-CNN / MaskTrack R-CNN / Mask R-CNN) names.
OFFICIAL_KEYS = KeyMap([
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
])

#: torchvision ``maskrcnn_resnet50_fpn`` names, old (published COCO file) and new.
TORCHVISION_KEYS = KeyMap([
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
    (r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$",  # 1-based in the old names
     lambda m: f"mask_head.convs.{int(m.group(1)) - 1}.{m.group(2)}"),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.(weight|bias)$", r"mask_head.upsample.\1"),
    (r"^roi_heads\.mask_predictor\.mask_fcn_logits\.(weight|bias)$", r"mask_head.conv_logits.\1"),
])


def official_to_cmasktrack_key(key: str) -> Optional[str]:
    """cmasktrack name of an official parameter, or None when no rule covers it."""
    return OFFICIAL_KEYS(key)


def torchvision_to_cmasktrack_key(key: str) -> Optional[str]:
    """cmasktrack name of a torchvision Mask R-CNN parameter, or None when nothing maps it."""
    return TORCHVISION_KEYS(key)


# ----------------------------------------------------------------------------------------------
# Reading .pth files
# ----------------------------------------------------------------------------------------------


def load_official_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The ``state_dict`` of a ``.pth`` file (an official checkpoint's ``"state_dict"``, or a
    bare state dict as torchvision saves them), read without unpickling objects; a
    ``module.`` prefix (DataParallel) is removed."""
    if not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
    kind = checkpoint_file_kind(path)
    if kind == "safetensors":
        raise CheckpointError(f"{path} is a safetensors file, not a PyTorch checkpoint: put it in a model directory "
                              f"as {WEIGHTS_NAME} next to its {CONFIG_NAME}")
    if kind not in ("zip", "torch-pickle"):
        what = {"pickle": "a plain Python pickle", "text": "a text file"}.get(kind, "not a zip archive or a torch pickle")
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({what})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, truncated files
        text = str(e)
        if "Weights only load failed" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            raise CheckpointError(
                f"{path} holds Python objects besides tensors{f' ({found.group(1)})' if found else ''}; cmasktrack reads "
                "checkpoints as tensors only and never unpickles objects: save its state_dict alone"
            ) from None
        first = text.split(". ")[0].strip().splitlines()[0] if text.strip() else ""
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (damaged or truncated"
                              f"{': ' + first if first and 'weights_only' not in first else ''})") from None
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


_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def checkpoint_file_kind(path: str) -> str:
    """What a file is, from its first bytes: ``"zip"`` (torch.save since PyTorch 1.6),
    ``"torch-pickle"`` (older torch.save, as the official checkpoints), ``"pickle"`` (another
    Python pickle), ``"safetensors"``, ``"text"`` or ``"unknown"``."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch-pickle"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors"
    try:
        head.decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unknown"


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


# ----------------------------------------------------------------------------------------------
# Fitting a state dict to a model
# ----------------------------------------------------------------------------------------------


def _listed(items: Sequence[str], limit: int = 20, sep: str = ", ") -> str:
    return sep.join(items[:limit]) + (" ..." if len(items) > limit else "")


@dataclass
class FitReport:
    """How a state dict (cmasktrack names) fits a model's state dict.

    Attributes:
        loaded: the tensors to load, cast to the model's dtypes.
        kept: model keys that keep their current values (not in ``loaded``).
        missing: model keys the state dict should have had.
        unexpected: state-dict keys the model does not have (or that no key map covers).
        mismatched: ``"key: checkpoint (shape) vs model (shape)"`` for mis-shaped tensors.
        reinitialised: mis-shaped keys that are allowed to keep their initialisation.
    """

    loaded: Dict[str, torch.Tensor] = field(default_factory=dict)
    kept: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[str] = field(default_factory=list)
    reinitialised: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No missing, unexpected or mis-shaped key."""
        return not (self.missing or self.unexpected or self.mismatched)

    def problems(self) -> str:
        """The problems in one line (empty when :attr:`ok`)."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s): {_listed(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s): {_listed(self.unexpected)}")
        if self.mismatched:
            parts.append(f"{len(self.mismatched)} shape mismatch(es): {_listed(self.mismatched, sep='; ')}")
        return " | ".join(parts)

    def check(self, source: str) -> "FitReport":
        """Raise :class:`CheckpointError` naming ``source`` and every problem, unless :attr:`ok`."""
        if not self.ok:
            raise CheckpointError(f"{source} does not fit the model: {self.problems()}")
        return self


def fit_state_dict(
    state: Mapping[str, torch.Tensor],
    model_state: Mapping[str, torch.Tensor],
    *,
    required: Tuple[str, ...] = ("",),
    optional: Tuple[str, ...] = (),
    reinit_mismatched: Tuple[str, ...] = (),
    unmapped: Sequence[str] = (),
) -> FitReport:
    """Compare ``state`` with ``model_state`` key by key (nothing is loaded).

    Args:
        state: tensors under cmasktrack names.
        model_state: the model's ``state_dict()``.
        required: prefixes of the model keys ``state`` must provide (default: every key);
            others may keep their current values.
        optional: prefixes of model keys that may be missing even when ``required``.
        reinit_mismatched: prefixes whose mis-shaped tensors are skipped (the layer keeps its
            initialisation: another class count) instead of being an error.
        unmapped: source keys a key map could not rename; reported as unexpected.
    """
    report = FitReport(unexpected=list(unmapped))
    for key, value in state.items():
        if key not in model_state:
            report.unexpected.append(key)
            continue
        own = model_state[key]
        if tuple(value.shape) != tuple(own.shape):
            note = f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own.shape)}"
            (report.reinitialised if key.startswith(reinit_mismatched) else report.mismatched).append(note)
            continue
        report.loaded[key] = value.to(own.dtype)
    report.kept = [k for k in model_state if k not in report.loaded]
    report.missing = [k for k in report.kept if k.startswith(required) and not k.startswith(optional)
                      and not (k.startswith(reinit_mismatched) and k in state)]
    return report


def fit_and_load(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, **fit: Any) -> FitReport:
    """:func:`fit_state_dict` against ``model``, raise on any problem (naming ``source``), then
    load what fits; the report says what was loaded and what was kept."""
    report = fit_state_dict(state, model.state_dict(), **fit).check(source)
    model.load_state_dict(report.loaded, strict=not report.kept)
    return report


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
    renamed, unmapped = OFFICIAL_KEYS.apply(sd)
    report = fit_state_dict(renamed, model_state, optional=allow_missing_prefixes, unmapped=unmapped)
    return report.check("official checkpoint").loaded


# ----------------------------------------------------------------------------------------------
# Model directories
# ----------------------------------------------------------------------------------------------


def read_model_dir(path: str) -> Tuple[CMaskTrackConfig, Dict[str, torch.Tensor]]:
    """The configuration and the state dict of a cmasktrack model directory.

    Raises:
        FileNotFoundError: ``config.json`` or ``model.safetensors`` is missing.
        CheckpointError: the weights file is not readable safetensors.
    """
    from safetensors.torch import load_file

    path = os.fspath(path)
    cfg_path, w_path = os.path.join(path, CONFIG_NAME), os.path.join(path, WEIGHTS_NAME)
    for p in (cfg_path, w_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"{path} is not a cmasktrack model directory: {os.path.basename(p)} is missing")
    config = CMaskTrackConfig.load(cfg_path)
    try:
        state = load_file(w_path)
    except Exception as e:
        raise CheckpointError(f"{w_path} is not a readable safetensors file: {e}") from None
    return config, state
