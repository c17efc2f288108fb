"""Training: ``cmasktrack.train.train(config, annotations, image_root, out_dir)``.

The official CMaskTrack R-CNN recipe (:class:`TrainConfig`, preset ``"ovis"``) in modern
PyTorch: datasets from OVIS / YouTube-VIS json (:class:`VISTrainDataset`), the official target
assignment and losses (:func:`forward_train`), SGD with warm-up and step decay, gradient
clipping, checkpoints with exact resume, DDP through ``torchrun`` and AMP on CUDA.
"""

from .config import PRESETS, TrainConfig
from .dataset import GroupedBatchSampler, TrainBatch, TrainSample, VISTrainDataset, collate_train
from .forward import TrainingModule, forward_train
from .losses import total_loss
from .loop import TrainResult, WarmupStepLR, lr_factor, train

__all__ = [
    "PRESETS",
    "TrainConfig",
    "GroupedBatchSampler",
    "TrainBatch",
    "TrainSample",
    "VISTrainDataset",
    "collate_train",
    "TrainingModule",
    "forward_train",
    "total_loss",
    "TrainResult",
    "WarmupStepLR",
    "lr_factor",
    "train",
]
