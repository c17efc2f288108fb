"""The training loop: :func:`train`.

SGD (momentum, weight decay on every parameter), linear warm-up then step decay
(:class:`WarmupStepLR`, mmcv's ``StepLrUpdaterHook`` with ``warmup='linear'``), gradient-norm
clipping, checkpoints with exact resume (:mod:`.checkpointing`), DDP when launched by
``torchrun`` (gloo on the CPU, NCCL on CUDA), float16 autocast + GradScaler on CUDA, and a
progress bar / log line with the losses, learning rate, seconds per iteration and ETA (also
written as json lines to ``<out>/train_log.jsonl``).

Every random draw of a run is a function of ``TrainConfig.seed``: the data order and each
sample's reference frame and flip (:class:`GroupedBatchSampler`), the anchor / RoI sampling of
iteration ``i`` on process ``r`` (a generator seeded from ``(seed, r, i)``) and the model's
initialisation. Resuming from a checkpoint therefore continues exactly as the uninterrupted
run would have (bit for bit on the CPU; CUDA kernels may not be deterministic).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from ..config import CMaskTrackConfig
from .checkpointing import latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TRAIN_CONFIG_NAME, TrainConfig
from .dataset import GroupedBatchSampler, VISTrainDataset, collate_train
from .forward import TrainingModule

__all__ = ["train", "TrainResult", "WarmupStepLR", "lr_factor", "iteration_seed", "build_optimizer"]

PathLike = Union[str, "os.PathLike[str]"]
LOG_NAME = "train_log.jsonl"


def _factor(iteration: int, steps: Sequence[int], gamma: float, warmup_iters: int, warmup_ratio: float,
            by_epoch: bool, iters_per_epoch: int) -> float:
    progress = iteration // max(1, iters_per_epoch) if by_epoch else iteration
    factor = gamma ** sum(1 for s in steps if progress >= s)
    if warmup_iters > 0 and iteration < warmup_iters:
        factor *= 1.0 - (1.0 - iteration / warmup_iters) * (1.0 - warmup_ratio)
    return factor


def lr_factor(iteration: int, cfg: TrainConfig, iters_per_epoch: int) -> float:
    """Learning-rate multiplier of (0-based) ``iteration``: ``lr_gamma`` to the number of
    ``lr_steps`` reached (in epochs ``iteration // iters_per_epoch`` when ``by_epoch``, else
    iterations), times the linear warm-up ``r + (1 - r) * i / warmup_iters`` for
    ``i < warmup_iters`` (mmcv's ``StepLrUpdaterHook`` with ``warmup='linear'``)."""
    return _factor(iteration, cfg.lr_steps, cfg.lr_gamma, cfg.warmup_iters, cfg.warmup_ratio, cfg.by_epoch,
                   iters_per_epoch)


class WarmupStepLR(LRScheduler):
    """Per-iteration scheduler: ``lr = base_lr * lr_factor(iteration)`` (see :func:`lr_factor`).
    Call :meth:`step` after every optimiser step. Its state is plain numbers (resumable)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, iters_per_epoch: int,
                 last_epoch: int = -1):
        self.steps = [int(s) for s in cfg.lr_steps]
        self.gamma = float(cfg.lr_gamma)
        self.warmup_iters = int(cfg.warmup_iters)
        self.warmup_ratio = float(cfg.warmup_ratio)
        self.by_epoch = bool(cfg.by_epoch)
        self.iters_per_epoch = int(iters_per_epoch)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:  # noqa: D102 - LRScheduler API
        f = _factor(self.last_epoch, self.steps, self.gamma, self.warmup_iters, self.warmup_ratio, self.by_epoch,
                    self.iters_per_epoch)
        return [base * f for base in self.base_lrs]


def iteration_seed(seed: int, rank: int, iteration: int) -> int:
    """Seed of the target-sampling generator of ``iteration`` on process ``rank``."""
    return int(np.random.SeedSequence([int(seed), 7, int(rank), int(iteration)]).generate_state(1)[0])


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """SGD (official; weight decay on all trainable parameters) or AdamW (``cfg.optimizer``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@dataclass
class TrainResult:
    """What :func:`train` returns: the output directory (``save_pretrained`` format), the
    iterations done, the trained model (eval mode) and the last logged loss averages."""

    out_dir: str
    iterations: int
    model: Any
    last_log: Dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False


# ------------------------------------------------------------------------------------------
# distributed helpers


@dataclass
class _Dist:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: torch.device) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        here = True
    return _Dist(dist.get_world_size(), dist.get_rank(), local, here)


def _resolve_device(device: Optional[Union[str, torch.device]], local_rank: int) -> torch.device:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


# ------------------------------------------------------------------------------------------


def build_model(cfg: TrainConfig, dataset: VISTrainDataset, seed: int = 0):
    """The model a run trains: the official config (or the config of a cmasktrack model
    directory given as ``init``) with ``cfg.model`` overrides and the data's classes."""
    from ..model import CMaskTrack

    base = None
    if cfg.init and os.path.isdir(cfg.init):
        base = CMaskTrackConfig.load(cfg.init)
    mcfg = cfg.model_config(dataset.num_categories + 1, dataset.category_names, base=base)
    torch.manual_seed(seed)
    return CMaskTrack(mcfg)


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
    dev0 = _resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    dd = _setup_distributed(dev0)
    device = dev0
    try:
        return _train(config, annotations, image_root, out_dir, resume, device, dd, progress, callback)
    finally:
        if dd.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, annotations, image_root, out_dir: str, resume, device: torch.device, dd: _Dist,
           progress: bool, callback) -> TrainResult:
    from .init import initialise_model

    log = _Logger(out_dir, dd.main, progress)
    if dd.main:
        os.makedirs(out_dir, exist_ok=True)

    # ---------------------------------------------------------------- data
    probe_base = CMaskTrackConfig.load(cfg.init) if cfg.init and os.path.isdir(cfg.init) else None
    probe = cfg.model_config(2, None, base=probe_base)
    dataset = VISTrainDataset(annotations, image_root, scale=probe.image_scale, mean=probe.pixel_mean,
                              std=probe.pixel_std, size_divisor=probe.size_divisor, flip_ratio=cfg.flip_ratio,
                              ref_range=cfg.ref_range)
    cat_ids = list(dataset.cat2label)
    if cat_ids != list(range(1, len(cat_ids) + 1)):
        warnings.warn(f"the dataset's category ids {cat_ids[:10]} are not 1..K in file order; the model predicts "
                      "labels 1..K = positions in the file's category list", stacklevel=3)
    flags = dataset.group_flags if cfg.group_by_aspect_ratio else np.zeros(len(dataset), dtype=np.int64)
    sampler = GroupedBatchSampler(flags, cfg.images_per_gpu, dd.world_size, dd.rank, seed=cfg.seed)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers_per_gpu, collate_fn=collate_train,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.workers_per_gpu > 0)
    ipe = len(sampler)
    max_iters = cfg.max_epochs * ipe if cfg.by_epoch else cfg.max_iters

    # ---------------------------------------------------------------- model
    model = build_model(cfg, dataset, cfg.seed)
    resume_from: Optional[str] = None
    if resume:
        resume_from = latest_checkpoint(out_dir) if resume is True else os.fspath(resume)
        if resume_from is None:
            log.info(f"no checkpoint in {out_dir}: starting from the beginning")
    if resume_from is None and cfg.init:
        report = initialise_model(model, cfg.init)
        log.info(report.summary())
    if resume_from is None and not cfg.init and cfg.data_init_frames > 0 and not cfg.train_batchnorm:
        from .init import normalise_frozen_batchnorm

        n = min(cfg.data_init_frames, len(dataset))
        picks = np.random.default_rng(cfg.seed).choice(len(dataset), n, replace=False)
        frames = collate_train([dataset[(int(i), cfg.seed)] for i in picks]).images
        count = normalise_frozen_batchnorm(model, frames)
        log.info(f"set the statistics of {count} frozen BatchNorm layers from {n} training frames")
    from .norm import freeze_batchnorm, prepare_backbone

    n_bn = prepare_backbone(model.backbone.body, cfg.frozen_stages, cfg.train_batchnorm, cfg.bn_momentum)
    if n_bn:
        log.info(f"training {n_bn} BatchNorm layers (saved as frozen BatchNorm)")
    model.to(device).train()
    if cfg.fast_deform_conv and model.calibration is not None:
        model.calibration.deform_impl = "grid_sample"
    module: torch.nn.Module = TrainingModule(model, cfg)
    if dd.enabled:
        module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None)
    lr = cfg.effective_lr(dd.world_size)
    optimizer = build_optimizer(model, cfg, lr)
    scheduler = WarmupStepLR(optimizer, cfg, ipe)
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp) if amp else None
    start = 0
    if resume_from is not None:
        start = load_checkpoint(resume_from, model, optimizer, scheduler, scaler)
        log.info(f"resumed from {resume_from} at iteration {start}")
    if dd.main:
        cfg.save(os.path.join(out_dir, TRAIN_CONFIG_NAME))
    log.info(f"training {model.config.depth}-layer {'CMaskTrack' if model.config.calibration else 'MaskTrack'} "
             f"R-CNN on {len(dataset)} frames ({dataset.num_categories} categories), {dd.world_size} process(es) "
             f"x {cfg.images_per_gpu} pairs, {ipe} iterations/epoch, {max_iters} iterations, lr {lr:g}, "
             f"device {device}{', AMP' if amp else ''}")

    # ---------------------------------------------------------------- loop
    params = [p for p in model.parameters() if p.requires_grad]
    it = start
    t_start = time.time()
    stopped_early = False
    last_log: Dict[str, float] = {}
    window: Dict[str, List[float]] = {}
    times: List[float] = []
    log.start(max_iters, start)
    while it < max_iters:
        epoch, pos = divmod(it, ipe)
        sampler.set_epoch(epoch)
        sampler.set_start(pos)
        for batch in loader:
            t0 = time.time()
            batch = batch.to(device)
            gen = torch.Generator().manual_seed(iteration_seed(cfg.seed, dd.rank, it))
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=amp) if amp else _null():
                losses = module(batch, gen)
            loss = losses["total_loss"]
            if not amp and not bool(torch.isfinite(loss)):
                raise FloatingPointError(f"iteration {it}: the loss is {float(loss)} "
                                         f"({ {k: float(v) for k, v in losses.items()} }); lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if cfg.grad_clip > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
            else:
                grad_norm = float(torch.linalg.vector_norm(
                    torch.stack([p.grad.norm() for p in params if p.grad is not None])))
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            cur_lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            it += 1
            values = {k: float(v.detach()) for k, v in losses.items()}
            values["grad_norm"] = grad_norm
            for k, v in values.items():
                window.setdefault(k, []).append(v)
            times.append(time.time() - t0)
            times = times[-50:]
            if callback is not None:
                callback(it, values)
            if it % cfg.log_interval == 0 or it == max_iters:
                last_log = _reduce_mean({k: float(np.mean(v)) for k, v in window.items()}, dd)
                window = {}
                sec = float(np.mean(times))
                log.log(it, max_iters, epoch, last_log, cur_lr, sec, sec * (max_iters - it))
            log.tick(it, values, cur_lr)
            if _should_checkpoint(cfg, it, ipe, max_iters) and dd.main:
                save_checkpoint(out_dir, it, model, optimizer, scheduler, scaler, cfg, cfg.keep_checkpoints)
            if cfg.max_time_s > 0 and _agree(time.time() - t_start > cfg.max_time_s, dd):
                stopped_early = it < max_iters
                break
            if it >= max_iters:
                break
        if stopped_early:
            log.info(f"time budget of {cfg.max_time_s:g} s reached at iteration {it}")
            if dd.main and not _should_checkpoint(cfg, it, ipe, max_iters):
                save_checkpoint(out_dir, it, model, optimizer, scheduler, scaler, cfg, cfg.keep_checkpoints)
            break
    log.close()
    if cfg.train_batchnorm and cfg.precise_bn_batches > 0:
        n = _precise_batchnorm(model, dataset, cfg, device)
        log.info(f"BatchNorm statistics recomputed on {n} batches of {cfg.images_per_gpu} frame pairs")
    freeze_batchnorm(model)  # same state dict; eval-mode behaviour of the inference model
    if dd.main:
        model.save_pretrained(out_dir)
        log.info(f"saved the model to {out_dir} ({it} iterations, {_fmt_time(time.time() - t_start)})")
    if dd.enabled:
        dist.barrier()
    model.eval()
    if model.calibration is not None:
        model.calibration.deform_impl = "auto"  # inference
    return TrainResult(out_dir, it, model, last_log, stopped_early)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _precise_batchnorm(model, dataset: VISTrainDataset, cfg: TrainConfig, device: torch.device) -> int:
    """Recompute the trained BatchNorm statistics on ``cfg.precise_bn_batches`` batches drawn
    with the run's seed (the same on every process, so DDP replicas stay identical)."""
    from .norm import frozen_prefixes, recompute_batchnorm_statistics

    n = cfg.precise_bn_batches * cfg.images_per_gpu
    rng = np.random.default_rng([cfg.seed, 11])
    picks = rng.choice(len(dataset), n, replace=n > len(dataset))

    def batches():
        for k in range(0, n, cfg.images_per_gpu):
            b = collate_train([dataset[(int(i), cfg.seed + 1)] for i in picks[k:k + cfg.images_per_gpu]])
            yield torch.cat([b.images, b.ref_images]).to(device)

    return recompute_batchnorm_statistics(model.backbone.body, batches(), skip=frozen_prefixes(cfg.frozen_stages))


def _should_checkpoint(cfg: TrainConfig, it: int, ipe: int, max_iters: int) -> bool:
    if it == max_iters:
        return True
    if cfg.checkpoint_iters and it % cfg.checkpoint_iters == 0:
        return True
    if cfg.checkpoint_interval:
        if cfg.by_epoch:
            return it % ipe == 0 and (it // ipe) % cfg.checkpoint_interval == 0
        return it % cfg.checkpoint_interval == 0
    return False


def _reduce_mean(values: Dict[str, float], dd: _Dist) -> Dict[str, float]:
    if not dd.enabled:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    t = (t / dd.world_size).cpu()
    return {k: float(v) for k, v in zip(keys, t)}


def _agree(flag: bool, dd: _Dist) -> bool:
    """True on every process when any process says so (keeps DDP processes in step)."""
    if not dd.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


class _Logger:
    """Progress bar (tqdm, on a terminal) or log lines on the main process; json lines to
    ``<out>/train_log.jsonl``."""

    def __init__(self, out_dir: str, main: bool, progress: bool):
        self.out_dir = out_dir
        self.main = main
        self.progress = progress and main
        self.bar = None

    def info(self, message: str) -> None:
        if not self.main:
            return
        if self.bar is not None:
            self.bar.write(f"[cmasktrack.train] {message}", file=sys.stderr)
        else:
            print(f"[cmasktrack.train] {message}", file=sys.stderr, flush=True)

    def start(self, total: int, initial: int) -> None:
        if self.progress and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True, file=sys.stderr)
            except ImportError:  # pragma: no cover
                self.bar = None

    def tick(self, it: int, values: Dict[str, float], lr: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"loss {values['total_loss']:.3f} lr {lr:.2e}", refresh=False)

    def log(self, it: int, total: int, epoch: int, values: Dict[str, float], lr: float, sec: float,
            eta: float) -> None:
        if not self.main:
            return
        record = {"iteration": it, "epoch": epoch, "lr": lr, "s_per_iter": sec, **values}
        with open(os.path.join(self.out_dir, LOG_NAME), "a") as f:
            f.write(json.dumps(record) + "\n")
        if not self.progress:
            return
        parts = " ".join(f"{k[5:] if k.startswith('loss_') else k} {v:.4f}" for k, v in values.items()
                         if k.startswith("loss_"))
        line = (f"iter {it}/{total} epoch {epoch + 1} | loss {values.get('total_loss', math.nan):.4f} ({parts}) | "
                f"acc {values.get('acc', 0):.1f} match_acc {values.get('match_acc', 0):.1f} | lr {lr:.3g} | "
                f"{sec:.2f} s/iter | ETA {_fmt_time(eta)}")
        self.info(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
