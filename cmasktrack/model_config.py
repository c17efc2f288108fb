"""Model configuration: one dataclass that round-trips through ``config.json``."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple, Type

#: The configuration file of a model directory (the weights: :data:`cmasktrack.weights.WEIGHTS_NAME`).
CONFIG_NAME = "config.json"


def read_json(path: str, error: Type[Exception] = ValueError) -> Any:
    """The content of a json file; ``error`` naming the file when it is not valid json."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise error(f"{path}: not valid json ({e})") from None


@dataclass
class CMaskTrackConfig:
    """Everything needed to build a CMaskTrack R-CNN and run it on video.

    The defaults are the official OVIS model (``configs/cmasktrack_rcnn_r50_fpn_1x_ovis.py`` of
    the official code): ResNet-50-FPN, 25 OVIS categories (+ background), temporal calibration
    on, test-time settings of the official config.
    """

    # --- network ---------------------------------------------------------------------------
    num_classes: int = 26  # including background (index 0)
    depth: int = 50  # ResNet depth: 18, 34, 50 or 101
    fpn_channels: int = 256
    anchor_ratios: Tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_scale: float = 8.0
    anchor_strides: Tuple[int, ...] = (4, 8, 16, 32, 64)
    box_head_fc: int = 1024
    track_head_fc: int = 1024
    mask_head_convs: int = 4
    calibration: bool = True  # False: MaskTrack R-CNN (no temporal feature calibration)
    corr_patch_size: int = 16
    corr_dilation: int = 2
    calibration_convs: int = 3
    # --- input -----------------------------------------------------------------------------
    image_scale: Tuple[int, int] = (640, 360)  # (long side, short side) limits
    pixel_mean: Tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB, 0-255
    pixel_std: Tuple[float, float, float] = (58.395, 57.12, 57.375)
    size_divisor: int = 32
    # --- test-time settings ----------------------------------------------------------------
    rpn_pre_nms_top_n: int = 1000
    rpn_post_nms_top_n: int = 1000
    rpn_max_num: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_min_size: float = 0.0
    score_threshold: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    mask_threshold: float = 0.5
    match_coeff: Tuple[float, float, float] = (1.0, 2.0, 10.0)  # log score, IoU, same label
    num_refs: int = 5  # references before and after the target frame at test time
    # --- metadata --------------------------------------------------------------------------
    category_names: List[str] = field(default_factory=list)  # without background
    dataset: str = ""

    def __post_init__(self) -> None:
        if self.depth not in (18, 34, 50, 101):
            raise ValueError(f"depth must be one of 18, 34, 50, 101, got {self.depth}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes counts the background and must be >= 2, got {self.num_classes}")
        if self.category_names and len(self.category_names) != self.num_classes - 1:
            raise ValueError(
                f"category_names has {len(self.category_names)} names but num_classes={self.num_classes} "
                f"needs {self.num_classes - 1} (background excluded)"
            )
        # JSON gives lists; keep tuples for hashability and a canonical form.
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, list) and f.name != "category_names":
                setattr(self, f.name, tuple(v))

    @property
    def num_categories(self) -> int:
        """Foreground categories (background excluded)."""
        return self.num_classes - 1

    def category_name(self, category_id: int) -> str:
        """Name of a 1-based category id (``str(id)`` when no names are known)."""
        from .categories import category_name

        return category_name(self.category_names, category_id)

    def to_dict(self) -> Dict[str, Any]:
        """Plain-json form (tuples as lists)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "CMaskTrackConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - {"model_type", "cmasktrack_version"})
        if unknown:
            raise ValueError(f"unknown keys in cmasktrack config: {unknown}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, path: str) -> None:
        """Write ``config.json`` (``path`` is a directory or a file name)."""
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        from . import __version__

        payload = {"model_type": "cmasktrack", "cmasktrack_version": __version__, **self.to_dict()}
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")

    @classmethod
    def load(cls, path: str) -> "CMaskTrackConfig":
        """Read ``config.json`` (``path`` is a directory or the file)."""
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        d = read_json(path)
        if d.get("model_type", "cmasktrack") != "cmasktrack":
            raise ValueError(f"{path} is a config for model_type={d.get('model_type')!r}, not cmasktrack")
        return cls.from_dict(d)


def ovis_config(**overrides: Any) -> CMaskTrackConfig:
    """The official OVIS CMaskTrack R-CNN configuration (25 categories)."""
    from .categories import OVIS_CATEGORIES

    return CMaskTrackConfig(category_names=list(OVIS_CATEGORIES), dataset="ovis", **overrides)
