"""Training configuration: one dataclass that round-trips through json, with named presets.

``TrainConfig()`` (the defaults) and ``TrainConfig.preset("ovis")`` are the official OVIS recipe
of CMaskTrack R-CNN (``configs/cmasktrack_rcnn_r50_fpn_1x_ovis.py`` of the official code); the
``"cpu_small"`` preset is a ResNet-18 model at low resolution that trains on a CPU, and
``"cpu_synthetic"`` the recipe of the demo model (30 minutes on a 2-core CPU, synthetic data).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ..model_config import CMaskTrackConfig, read_json
from ..modeling.roi_heads import MASK_SIZE

__all__ = ["TrainConfig", "PRESETS", "TRAIN_CONFIG_NAME", "BATCHNORM_POLICIES"]

#: File name of the training configuration written next to checkpoints and the final model.
TRAIN_CONFIG_NAME = "train_config.json"

#: Values of :attr:`TrainConfig.batchnorm`.
BATCHNORM_POLICIES = ("affine", "frozen", "batch")

# Keys of CMaskTrackConfig that the training data decides (they may not be set in ``model``).
_DATA_KEYS = ("num_classes", "category_names")


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data paths.

    The defaults are the official OVIS recipe: SGD lr 0.005 for a total batch of 16 frame
    pairs (4 GPUs x 4), momentum 0.9, weight decay 1e-4, gradient-norm clipping at 35, linear
    warm-up over 500 iterations from 1/3 of the learning rate, 12 epochs with x0.1 steps after
    epochs 8 and 11, horizontal flip 0.5, references within +-5 frames; RPN targets IoU 0.7 /
    0.3 (min 0.3), 256 anchors half positive, smooth L1 beta 1/9; RCNN targets IoU 0.5, 512
    RoIs a quarter positive, ground truths added as proposals, 28x28 class-specific masks;
    initialised from the COCO Mask R-CNN R50-FPN 1x checkpoint (give its path in ``init``).

    Attributes are grouped as: model, initialisation, data, optimiser and schedule, target
    assignment, loop. See each field's comment.
    """

    # --- model -------------------------------------------------------------------------------
    #: Overrides of :class:`cmasktrack.model_config.CMaskTrackConfig` (depth, calibration,
    #: image_scale, ...). ``num_classes`` and ``category_names`` come from the training data.
    model: Dict[str, Any] = field(default_factory=dict)
    # --- initialisation ----------------------------------------------------------------------
    #: "" (random init, ResNet included), or the path of: an official mmdetection Mask R-CNN /
    #: (C)MaskTrack R-CNN ``.pth``; torchvision's ``maskrcnn_resnet50_fpn`` COCO weights file;
    #: a torchvision ImageNet ResNet weights file (backbone only); a cmasktrack model directory.
    #: Layers whose shape depends on the class count are re-initialised when it differs.
    init: str = ""
    #: From scratch only (``init`` empty): set the backbone's frozen BatchNorm statistics from
    #: this many training frames before the first iteration, so that they normalise
    #: (:func:`cmasktrack.train.initialisation.normalise_frozen_batchnorm`). 0: leave them identities.
    #: Not used with ``batchnorm="batch"`` (those layers normalise with batch statistics).
    data_init_frames: int = 0
    #: ResNet stages without gradient: -1 none, 0 the stem, 1 the stem and layer1 (official:
    #: they come pretrained), up to 4. From scratch every stage should learn (-1).
    frozen_stages: int = 1
    #: What training does to the backbone's BatchNorm layers outside the frozen stages
    #: (:func:`cmasktrack.train.prepare_model`); the frozen stages' BatchNorm is always fixed:
    #:
    #: * ``"affine"`` (official, mmdetection v1's ``norm_eval=True`` with BN ``frozen=False``):
    #:   normalise with the running statistics, never updated; the affine weight and bias are
    #:   trained;
    #: * ``"frozen"``: nothing trained (statistics and affine values fixed);
    #: * ``"batch"``: normalise with batch statistics, update the running averages
    #:   (``bn_momentum``), train weight and bias — for training from scratch.
    #:
    #: The saved model has frozen BatchNorm with the resulting values in every case
    #: (:mod:`cmasktrack.train.norm`). (Replaces ``train_batchnorm``: true = ``"batch"``.)
    batchnorm: str = "affine"
    #: Deprecated constructor argument (not a field): true = ``batchnorm="batch"``, false =
    #: ``"frozen"`` (what it meant before ``batchnorm`` existed).
    train_batchnorm: dataclasses.InitVar[Optional[bool]] = None
    bn_momentum: float = 0.1  # running-statistics momentum with batchnorm="batch"
    #: With ``batchnorm="batch"``: after the last iteration, set the BatchNorm statistics to the
    #: average batch statistics of this many training batches under the final weights
    #: ("precise BatchNorm"; :func:`cmasktrack.train.norm.recompute_batchnorm_statistics`). 0: off.
    precise_bn_batches: int = 0
    # --- data --------------------------------------------------------------------------------
    images_per_gpu: int = 4  # frame pairs per process and iteration
    workers_per_gpu: int = 4  # DataLoader worker processes per process (0: load in the main one)
    flip_ratio: float = 0.5
    ref_range: int = 5  # the reference frame is within +-ref_range frames of the target
    group_by_aspect_ratio: bool = True  # batches hold frames of one aspect-ratio group (w > h or not)
    # --- optimiser and schedule --------------------------------------------------------------
    #: "sgd" (official: momentum, weight decay on all parameters) or "adamw" (decoupled weight
    #: decay, betas (0.9, 0.999); often faster from scratch, use a smaller ``lr`` e.g. 1e-3).
    optimizer: str = "sgd"
    lr: float = 0.005
    #: The total batch (images_per_gpu x processes) ``lr`` is meant for; the learning rate is
    #: scaled linearly to the actual total batch. 0 disables the scaling.
    lr_reference_batch: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    grad_clip: float = 35.0  # max L2 norm of the gradient; 0 disables clipping
    warmup_iters: int = 500
    warmup_ratio: float = 1.0 / 3.0
    by_epoch: bool = True  # length and lr steps in epochs (True) or iterations (False)
    max_epochs: int = 12
    max_iters: int = 0  # used when by_epoch is False
    lr_steps: Tuple[int, ...] = (8, 11)  # epochs (or iterations) after which lr *= lr_gamma
    lr_gamma: float = 0.1
    # --- target assignment -------------------------------------------------------------------
    rpn_pos_iou: float = 0.7
    rpn_neg_iou: float = 0.3
    rpn_min_pos_iou: float = 0.3
    rpn_num_samples: int = 256
    rpn_pos_fraction: float = 0.5
    rpn_allowed_border: int = 0  # anchors crossing the image border by more are ignored (<0: keep all)
    rpn_smoothl1_beta: float = 1.0 / 9.0
    #: RPN proposal selection during training; None = the model's test-time setting (official).
    train_rpn_pre_nms_top_n: Optional[int] = None
    train_rpn_post_nms_top_n: Optional[int] = None
    train_rpn_max_num: Optional[int] = None
    rcnn_pos_iou: float = 0.5
    rcnn_neg_iou: float = 0.5
    rcnn_min_pos_iou: float = 0.5
    rcnn_num_samples: int = 512
    rcnn_pos_fraction: float = 0.25
    rcnn_add_gt_as_proposals: bool = True
    rcnn_smoothl1_beta: float = 1.0
    #: Crowd boxes make proposals whose IoF with them exceeds this "ignore"; -1 (official) keeps
    #: crowd boxes out of the targets entirely.
    ignore_iof_thr: float = -1.0
    #: Weight of ``loss_match`` in the total loss (1 official). From scratch, the unnormalised
    #: dot-product match logits give large, noisy match gradients that dominate the clipped
    #: gradient norm; a smaller weight lets the detector learn first.
    match_loss_weight: float = 1.0
    #: Train the calibration's deformable conv with the pure-PyTorch ``grid_sample``
    #: implementation (same values and gradients, several times faster backward on the CPU);
    #: the saved model is unaffected (inference picks its own implementation, ``deform_impl``).
    fast_deform_conv: bool = False
    # --- loop --------------------------------------------------------------------------------
    seed: int = 0
    amp: bool = True  # mixed precision (float16 autocast + GradScaler), CUDA only
    checkpoint_interval: int = 1  # save every N epochs (by_epoch) or N iterations; 0: only the end
    checkpoint_iters: int = 0  # additionally every N iterations (0: off)
    keep_checkpoints: int = 3  # most recent checkpoints kept (0: all)
    log_interval: int = 20  # iterations between log lines
    max_time_s: float = 0.0  # stop (and save) after this many seconds of training; 0: no limit

    def __post_init__(self, train_batchnorm: Optional[bool] = None) -> None:
        if train_batchnorm is not None:
            warnings.warn("TrainConfig(train_batchnorm=...) is deprecated: use batchnorm='batch' (true) or 'frozen' "
                          "(false)", DeprecationWarning, stacklevel=3)
            self.batchnorm = "batch" if train_batchnorm else "frozen"
        if isinstance(self.lr_steps, list):
            self.lr_steps = tuple(int(s) for s in self.lr_steps)
        if not isinstance(self.model, dict):
            raise TypeError(f"model must be a dict of CMaskTrackConfig overrides, got {type(self.model).__name__}")
        self.model = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model.items()}  # json form
        bad = [k for k in _DATA_KEYS if k in self.model]
        if bad:
            raise ValueError(f"model overrides may not set {bad}: the class count and names come from the data")
        self.model_config()  # validates the overrides
        checks = [
            (self.images_per_gpu >= 1, "images_per_gpu must be >= 1"),
            (self.data_init_frames >= 0, "data_init_frames must be >= 0"),
            (-1 <= self.frozen_stages <= 4, "frozen_stages must be in [-1, 4]"),
            (0.0 < self.bn_momentum <= 1.0, "bn_momentum must be in (0, 1]"),
            (self.precise_bn_batches >= 0, "precise_bn_batches must be >= 0"),
            (self.batchnorm in BATCHNORM_POLICIES,
             f"batchnorm must be one of {BATCHNORM_POLICIES}, got {self.batchnorm!r}"),
            (self.precise_bn_batches == 0 or self.batchnorm == "batch",
             "precise_bn_batches needs batchnorm='batch' (otherwise the BatchNorm statistics are fixed)"),
            (self.optimizer in ("sgd", "adamw"), f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}"),
            (self.workers_per_gpu >= 0, "workers_per_gpu must be >= 0"),
            (0.0 <= self.flip_ratio <= 1.0, "flip_ratio must be in [0, 1]"),
            (self.ref_range >= 1, "ref_range must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.lr_reference_batch >= 0, "lr_reference_batch must be >= 0"),
            (self.momentum >= 0, "momentum must be >= 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0 disables clipping)"),
            (self.warmup_iters >= 0, "warmup_iters must be >= 0"),
            (0.0 < self.warmup_ratio <= 1.0, "warmup_ratio must be in (0, 1]"),
            (not self.by_epoch or self.max_epochs >= 1, "max_epochs must be >= 1 when by_epoch is true"),
            (self.by_epoch or self.max_iters >= 1, "max_iters must be >= 1 when by_epoch is false"),
            (all(s > 0 for s in self.lr_steps), "lr_steps must be positive"),
            (list(self.lr_steps) == sorted(self.lr_steps), "lr_steps must be increasing"),
            (0.0 < self.rpn_pos_fraction <= 1.0, "rpn_pos_fraction must be in (0, 1]"),
            (0.0 < self.rcnn_pos_fraction <= 1.0, "rcnn_pos_fraction must be in (0, 1]"),
            (self.rpn_num_samples >= 1 and self.rcnn_num_samples >= 1, "sample counts must be >= 1"),
            (self.rpn_neg_iou <= self.rpn_pos_iou, "rpn_neg_iou must be <= rpn_pos_iou"),
            (self.rcnn_neg_iou <= self.rcnn_pos_iou, "rcnn_neg_iou must be <= rcnn_pos_iou"),
            (self.rpn_smoothl1_beta > 0 and self.rcnn_smoothl1_beta > 0, "smooth L1 betas must be > 0"),
            (self.match_loss_weight >= 0, "match_loss_weight must be >= 0"),
            (self.seed >= 0, "seed must be >= 0"),
            (self.checkpoint_interval >= 0 and self.checkpoint_iters >= 0, "checkpoint intervals must be >= 0"),
            (self.keep_checkpoints >= 0, "keep_checkpoints must be >= 0"),
            (self.log_interval >= 1, "log_interval must be >= 1"),
            (self.max_time_s >= 0, "max_time_s must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {message}")

    # ------------------------------------------------------------------ model config
    def model_config(self, num_classes: int = 2, category_names: Optional[list] = None,
                     base: Optional[CMaskTrackConfig] = None, dataset: str = "") -> CMaskTrackConfig:
        """The model configuration: ``base`` (default: the official one) with ``model``
        overrides and the data's classes."""
        d = (base or CMaskTrackConfig()).to_dict()
        d.update(self.model)
        d["num_classes"] = num_classes
        d["category_names"] = list(category_names or [])
        if dataset:
            d["dataset"] = dataset
        try:
            return CMaskTrackConfig.from_dict(d)
        except (TypeError, ValueError) as e:
            raise ValueError(f"TrainConfig.model: {e}") from None

    # ------------------------------------------------------------------ json
    def to_dict(self) -> Dict[str, Any]:
        """A json-serialisable dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        """Build from a dict; unknown keys are an error that names them. A ``"preset"`` key
        starts from that preset, the other keys override it."""
        if not isinstance(d, dict):
            raise TypeError(f"a training config must be a json object, got {type(d).__name__}")
        d = _upgrade_legacy_keys(dict(d))
        preset = d.pop("preset", None)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - {"train_batchnorm"})
        if unknown:
            raise ValueError(f"unknown keys in training config: {unknown} (known: {sorted(known)})")
        if preset is not None:
            base = cls.preset(preset).to_dict()
            if "model" in d:
                base["model"] = {**base["model"], **d.pop("model")}
            base.update(d)
            d = base
        return cls(**d)

    def save(self, path: str) -> None:
        """Write json (``path`` is a file or a directory, which gets ``train_config.json``)."""
        if os.path.isdir(path):
            path = os.path.join(path, TRAIN_CONFIG_NAME)
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    @classmethod
    def load(cls, path: str) -> "TrainConfig":
        """Read a json file written by :meth:`save` (or by hand; ``"preset"`` allowed)."""
        if os.path.isdir(path):
            path = os.path.join(path, TRAIN_CONFIG_NAME)
        return cls.from_dict(read_json(path))

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str) -> "TrainConfig":
        """A named configuration: ``"ovis"`` (the official recipe), ``"cpu_small"`` or
        ``"cpu_synthetic"``."""
        try:
            factory = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown training preset {name!r}; choose one of {sorted(PRESETS)}") from None
        return factory()

    # ------------------------------------------------------------------ derived
    def total_batch(self, world_size: int) -> int:
        return self.images_per_gpu * max(1, world_size)

    def effective_lr(self, world_size: int) -> float:
        """``lr`` scaled linearly from ``lr_reference_batch`` to the actual total batch."""
        if self.lr_reference_batch <= 0:
            return self.lr
        return self.lr * self.total_batch(world_size) / self.lr_reference_batch


def _upgrade_legacy_keys(d: Dict[str, Any]) -> Dict[str, Any]:
    """Read configs written by earlier versions: ``train_batchnorm`` (passed on to the
    constructor, which maps it to ``batchnorm``) and ``mask_size`` (always 28: the mask head's
    output size, not a setting)."""
    if "train_batchnorm" in d and "batchnorm" in d:
        d.pop("train_batchnorm")
    if "mask_size" in d:
        size = d.pop("mask_size")
        if size != MASK_SIZE:
            raise ValueError(f"mask_size {size} is not supported: the mask head predicts {MASK_SIZE}x{MASK_SIZE} masks")
    return d


def _ovis() -> TrainConfig:
    return TrainConfig()


def _cpu_small() -> TrainConfig:
    """ResNet-18-FPN with 128 channels at a 320x192 input, small heads and few proposals and
    samples: a model that learns the synthetic benchmark on a CPU."""
    return TrainConfig(
        model=dict(depth=18, fpn_channels=128, box_head_fc=256, track_head_fc=256, image_scale=(320, 192),
                   rpn_pre_nms_top_n=300, rpn_post_nms_top_n=150, rpn_max_num=150, detections_per_img=30),
        images_per_gpu=2,
        workers_per_gpu=1,
        lr=0.005,  # 0.01 made the match loss spike (x10-x100) within 150 iterations from scratch
        lr_reference_batch=0,
        warmup_iters=200,
        by_epoch=False,
        max_iters=3000,
        lr_steps=(2200, 2800),
        rpn_num_samples=128,
        rcnn_num_samples=128,
        checkpoint_interval=500,
        log_interval=10,
    )


def _cpu_synthetic() -> TrainConfig:
    """The demo model's recipe (``benchmarks/bench_train_synthetic.py``): ResNet-18-FPN with 64
    channels at the synthetic frames' own 320x192, small heads, trained from scratch on the CPU
    for a 30-minute budget: every stage and its BatchNorm layers trained (precise BatchNorm
    statistics at the end), AdamW, and the fast deformable conv for the calibration's backward."""
    return TrainConfig(
        model=dict(depth=18, fpn_channels=64, box_head_fc=96, track_head_fc=64, image_scale=(320, 192),
                   rpn_pre_nms_top_n=300, rpn_post_nms_top_n=100, rpn_max_num=100, detections_per_img=20),
        images_per_gpu=2,
        workers_per_gpu=1,
        frozen_stages=-1,
        batchnorm="batch",
        precise_bn_batches=25,
        optimizer="adamw",
        lr=0.001,  # SGD at 0.02 with trainable BatchNorm diverged in a probe; AdamW 1e-3 learnt ~3x faster
        lr_reference_batch=0,
        grad_clip=10.0,
        match_loss_weight=0.2,  # weight 1 (and clipping at 35) let the match loss explode with SGD
        warmup_iters=50,
        by_epoch=False,
        max_iters=2200,  # ~0.75 s/iter (calibration) with both cores of a 2-core CPU: fits 30 minutes
        lr_steps=(1650, 1980),
        rpn_num_samples=128,
        rcnn_num_samples=128,
        fast_deform_conv=True,
        checkpoint_interval=0,
        log_interval=10,
    )


#: Named presets for :meth:`TrainConfig.preset` (and ``cmasktrack train --preset``).
PRESETS = {"ovis": _ovis, "cpu_small": _cpu_small, "cpu_synthetic": _cpu_synthetic}
