"""The training loop: :func:`train`.

The parts live in their own modules: the model's training state (:mod:`.prepare`), optimiser
and learning-rate schedule (:mod:`.optim`), processes and devices (:mod:`.distributed`),
checkpoints with exact resume (:mod:`.checkpointing`), the log (:mod:`.logger`). This module
wires them: DDP when launched by ``torchrun`` (gloo on the CPU, NCCL on CUDA), float16 autocast
+ GradScaler on CUDA, gradient-norm clipping, a progress bar / log line with the losses,
learning rate, seconds per iteration and ETA (also written as json lines to
``<out>/train_log.jsonl``).

Every random draw of a run is a function of ``TrainConfig.seed``: the data order and each
sample's reference frame and flip (:class:`GroupedBatchSampler`), the anchor / RoI sampling of
iteration ``i`` on process ``r`` (a generator seeded from ``(seed, r, i)``) and the model's
initialisation. Resuming from a checkpoint therefore continues exactly as the uninterrupted
run would have (bit for bit on the CPU; CUDA kernels may not be deterministic).
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..model_config import CMaskTrackConfig
from .checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TRAIN_CONFIG_NAME, TrainConfig
from .dataset import GroupedBatchSampler, VISTrainDataset, collate_train
from ..distributed import DistContext, any_process, reduce_mean, resolve_device, setup_distributed
from .forward import TrainingModule
from .logger import LOG_NAME, TrainLogger, format_duration
from .optim import WarmupStepLR, build_optimizer, lr_factor
from .prepare import prepare_model, restore_inference_state

__all__ = ["train", "TrainResult", "WarmupStepLR", "lr_factor", "iteration_seed", "build_optimizer", "build_model",
           "LOG_NAME"]

PathLike = Union[str, "os.PathLike[str]"]


def iteration_seed(seed: int, rank: int, iteration: int) -> int:
    """Seed of the target-sampling generator of ``iteration`` on process ``rank``."""
    return int(np.random.SeedSequence([int(seed), 7, int(rank), int(iteration)]).generate_state(1)[0])


@dataclass
class TrainResult:
    """What :func:`train` returns: the output directory (``save_pretrained`` format), the
    iterations done, the trained model (eval mode) and the last logged loss averages."""

    out_dir: str
    iterations: int
    model: Any
    last_log: Dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False


def _init_base_config(cfg: TrainConfig) -> Optional[CMaskTrackConfig]:
    """The model config of a cmasktrack model directory given as ``init`` (else None)."""
    return CMaskTrackConfig.load(cfg.init) if cfg.init and os.path.isdir(cfg.init) else None


def build_model(cfg: TrainConfig, dataset: VISTrainDataset, seed: int = 0):
    """The model a run trains: the official config (or the config of a cmasktrack model
    directory given as ``init``) with ``cfg.model`` overrides and the data's classes."""
    from ..model import CMaskTrack

    model_cfg = cfg.model_config(dataset.num_categories + 1, dataset.category_names, base=_init_base_config(cfg))
    torch.manual_seed(seed)
    return CMaskTrack(model_cfg)


def train(
    config: TrainConfig,
    annotations: PathLike,
    image_root: Optional[PathLike],
    out_dir: PathLike,
    *,
    resume: Union[bool, PathLike] = False,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = True,
    callback: Optional[Callable[[int, Dict[str, float]], None]] = None,
) -> TrainResult:
    """Train a CMaskTrack R-CNN (or MaskTrack R-CNN) on an OVIS / YouTube-VIS json.

    Args:
        config: the :class:`TrainConfig` (``TrainConfig.preset("ovis")`` is the official recipe).
        annotations: the training annotation json.
        image_root: directory the json's ``file_names`` are relative to.
        out_dir: receives ``checkpoints/``, ``train_log.jsonl``, ``train_config.json`` and, at
            the end, the model (``config.json`` + ``model.safetensors``, ``save_pretrained``).
        resume: ``True`` continues from the latest checkpoint in ``out_dir`` (starting afresh
            when there is none), a path continues from that checkpoint directory.
        device: default CUDA when available (the local rank's GPU under ``torchrun``), else CPU.
        progress: show a progress bar / log lines on the main process.
        callback: ``callback(iteration, losses)`` after every iteration (1-based count of
            iterations done, this process's loss values); an exception raised in it stops the
            run (the last checkpoint stays).

    Launched by ``torchrun --nproc_per_node N``, every process runs this function and they
    train together with DDP; only the main process writes files.
    """
    out_dir = os.fspath(out_dir)
    device = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    ctx = setup_distributed(device)
    try:
        return _train(config, annotations, image_root, out_dir, resume, device, ctx, progress, callback)
    finally:
        if ctx.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def _build_dataset(cfg: TrainConfig, annotations, image_root) -> VISTrainDataset:
    input_cfg = cfg.model_config(2, None, base=_init_base_config(cfg))
    dataset = VISTrainDataset(annotations, image_root, scale=input_cfg.image_scale, mean=input_cfg.pixel_mean,
                              std=input_cfg.pixel_std, size_divisor=input_cfg.size_divisor,
                              flip_ratio=cfg.flip_ratio, ref_range=cfg.ref_range)
    cat_ids = list(dataset.cat2label)
    if cat_ids != list(range(1, len(cat_ids) + 1)):
        warnings.warn(f"the dataset's category ids {cat_ids[:10]} are not 1..K in file order; the model predicts "
                      "labels 1..K = positions in the file's category list", stacklevel=4)
    return dataset


def _initialise(model, cfg: TrainConfig, dataset: VISTrainDataset, log: TrainLogger) -> None:
    """Weights before the first iteration of a fresh run: ``cfg.init``, or from scratch the
    optional data-driven frozen BatchNorm statistics."""
    from .initialisation import initialise_model, normalise_frozen_batchnorm

    if cfg.init:
        log.info(initialise_model(model, cfg.init).summary())
    elif cfg.data_init_frames > 0 and cfg.batchnorm != "batch":
        n = min(cfg.data_init_frames, len(dataset))
        picks = np.random.default_rng(cfg.seed).choice(len(dataset), n, replace=False)
        frames = collate_train([dataset[(int(i), cfg.seed)] for i in picks]).images
        count = normalise_frozen_batchnorm(model, frames)
        log.info(f"set the statistics of {count} frozen BatchNorm layers from {n} training frames")


def _should_checkpoint(cfg: TrainConfig, it: int, iters_per_epoch: int, max_iters: int) -> bool:
    if it == max_iters:
        return True
    if cfg.checkpoint_iters and it % cfg.checkpoint_iters == 0:
        return True
    if cfg.checkpoint_interval:
        if cfg.by_epoch:
            return it % iters_per_epoch == 0 and (it // iters_per_epoch) % cfg.checkpoint_interval == 0
        return it % cfg.checkpoint_interval == 0
    return False


class _Stepper:
    """One optimisation step: forward under autocast (CUDA AMP), backward (scaled), gradient
    clipping, optimiser and scheduler steps. Returns the loss values and the gradient norm."""

    def __init__(self, module: torch.nn.Module, optimizer, scheduler, scaler, params: List[torch.Tensor],
                 cfg: TrainConfig, amp: bool):
        self.module, self.optimizer, self.scheduler, self.scaler = module, optimizer, scheduler, scaler
        self.params, self.cfg, self.amp = params, cfg, amp

    def __call__(self, batch, generator: torch.Generator, it: int):
        autocast = (torch.autocast(device_type="cuda", dtype=torch.float16) if self.amp
                    else contextlib.nullcontext())
        with autocast:
            losses = self.module(batch, generator)
        loss = losses["total_loss"]
        if not self.amp and not bool(torch.isfinite(loss)):
            raise FloatingPointError(f"iteration {it}: the loss is {float(loss)} "
                                     f"({ {k: float(v) for k, v in losses.items()} }); lower the learning rate")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.cfg.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip))
        else:
            grad_norm = float(torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in self.params if p.grad is not None])))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        values = {k: float(v.detach()) for k, v in losses.items()}
        values["grad_norm"] = grad_norm
        return values, lr


def _train(cfg: TrainConfig, annotations, image_root, out_dir: str, resume, device: torch.device,
           ctx: DistContext, progress: bool, callback) -> TrainResult:
    log = TrainLogger(out_dir, ctx.main, progress)
    if ctx.main:
        os.makedirs(out_dir, exist_ok=True)

    # ---------------------------------------------------------------- data
    dataset = _build_dataset(cfg, annotations, image_root)
    flags = dataset.group_flags if cfg.group_by_aspect_ratio else np.zeros(len(dataset), dtype=np.int64)
    sampler = GroupedBatchSampler(flags, cfg.images_per_gpu, ctx.world_size, ctx.rank, seed=cfg.seed)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers_per_gpu, collate_fn=collate_train,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.workers_per_gpu > 0)
    iters_per_epoch = len(sampler)
    max_iters = cfg.max_epochs * iters_per_epoch if cfg.by_epoch else cfg.max_iters

    # ---------------------------------------------------------------- model
    model = build_model(cfg, dataset, cfg.seed)
    resume_from: Optional[str] = None
    if resume:
        resume_from = latest_checkpoint(out_dir) if resume is True else os.fspath(resume)
        if resume_from is None:
            log.info(f"no checkpoint in {out_dir}: starting from the beginning")
    if resume_from is None:
        _initialise(model, cfg, dataset, log)
    state = prepare_model(model, cfg)
    log.info(state.summary())
    model.to(device)
    module: torch.nn.Module = TrainingModule(model, cfg)
    if ctx.enabled:
        module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)
    lr = cfg.effective_lr(ctx.world_size)
    optimizer = build_optimizer(model, cfg, lr)
    scheduler = WarmupStepLR(optimizer, cfg, iters_per_epoch)
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if amp else None
    start = 0
    if resume_from is not None:
        start = load_checkpoint(resume_from, model, optimizer, scheduler, scaler)
        log.info(f"resumed from {resume_from} at iteration {start}")
    if ctx.main:
        cfg.save(os.path.join(out_dir, TRAIN_CONFIG_NAME))
    log.info(f"training {model.config.depth}-layer {'CMaskTrack' if model.config.calibration else 'MaskTrack'} "
             f"R-CNN on {len(dataset)} frames ({dataset.num_categories} categories), {ctx.world_size} process(es) "
             f"x {cfg.images_per_gpu} pairs, {iters_per_epoch} iterations/epoch, {max_iters} iterations, lr {lr:g}, "
             f"device {device}{', AMP' if amp else ''}")

    # ---------------------------------------------------------------- loop
    step = _Stepper(module, optimizer, scheduler, scaler, [p for p in model.parameters() if p.requires_grad],
                    cfg, amp)

    def checkpoint(iteration: int) -> None:
        save_checkpoint(out_dir, iteration, model, optimizer, scheduler, scaler, cfg, cfg.keep_checkpoints)

    it = start
    t_start = time.time()
    stopped_early = False
    last_log: Dict[str, float] = {}
    window: Dict[str, List[float]] = {}
    times: List[float] = []
    log.start(max_iters, start)
    while it < max_iters and not stopped_early:
        epoch, pos = divmod(it, iters_per_epoch)
        sampler.set_epoch(epoch)
        sampler.set_start(pos)
        for batch in loader:
            t0 = time.time()
            gen = torch.Generator().manual_seed(iteration_seed(cfg.seed, ctx.rank, it))
            values, cur_lr = step(batch.to(device), gen, it)
            it += 1
            for k, v in values.items():
                window.setdefault(k, []).append(v)
            times = (times + [time.time() - t0])[-50:]
            if callback is not None:
                callback(it, values)
            if it % cfg.log_interval == 0 or it == max_iters:
                last_log = reduce_mean({k: float(np.mean(v)) for k, v in window.items()}, ctx)
                window = {}
                sec = float(np.mean(times))
                log.log(it, max_iters, epoch, last_log, cur_lr, sec, sec * (max_iters - it))
            log.tick(values, cur_lr)
            if _should_checkpoint(cfg, it, iters_per_epoch, max_iters) and ctx.main:
                checkpoint(it)
            if cfg.max_time_s > 0 and any_process(time.time() - t_start > cfg.max_time_s, ctx):
                stopped_early = it < max_iters
                break
            if it >= max_iters:
                break
    if stopped_early:
        log.info(f"time budget of {cfg.max_time_s:g} s reached at iteration {it}")
        if ctx.main and not _should_checkpoint(cfg, it, iters_per_epoch, max_iters):
            checkpoint(it)
    log.close()
    if cfg.batchnorm == "batch" and cfg.precise_bn_batches > 0:
        from .norm import recompute_batchnorm_on_dataset

        n = recompute_batchnorm_on_dataset(model, dataset, cfg, device)
        log.info(f"BatchNorm statistics recomputed on {n} batches of {cfg.images_per_gpu} frame pairs")
    restore_inference_state(model)  # same state dict; the inference model's frozen BatchNorm
    if ctx.main:
        model.save_pretrained(out_dir)
        log.info(f"saved the model to {out_dir} ({it} iterations, {format_duration(time.time() - t_start)})")
    if ctx.enabled:
        dist.barrier()
    return TrainResult(out_dir, it, model, last_log, stopped_early)
