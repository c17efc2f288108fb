"""Training: ``cmasktrack.train.train(config, annotations, image_root, out_dir)``.

The official CMaskTrack R-CNN recipe (:class:`TrainConfig`, preset ``"ovis"``) in modern
PyTorch: datasets from OVIS / YouTube-VIS json (:class:`VISTrainDataset`), the official
trained-parameter set and BatchNorm policy (:func:`prepare_model`), the official target
assignment and losses (:func:`forward_train`), SGD with warm-up and step decay, gradient
clipping, checkpoints with exact resume, DDP through ``torchrun`` and AMP on CUDA.

The stable API for a loop of one's own::

    cfg = TrainConfig.preset("ovis")
    state = prepare_model(model, cfg)          # what is trained, BatchNorm policy, train mode
    dataset = VISTrainDataset("train.json", "train_images/")
    batch = collate_train([dataset.pair(video_id, 3, 5)])
    losses = forward_train(model, batch, cfg, generator=torch.Generator().manual_seed(0))
"""

from .config import PRESETS, TrainConfig
from .dataset import GroupedBatchSampler, TrainBatch, TrainSample, VISTrainDataset, collate_train
from .forward import TrainingModule, forward_train
from .losses import total_loss
from .loop import TrainResult, train
from .optim import WarmupStepLR, build_optimizer, lr_factor
from .prepare import TrainingState, prepare_model, restore_inference_state

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
    "build_optimizer",
    "lr_factor",
    "TrainingState",
    "prepare_model",
    "restore_inference_state",
    "train",
]
