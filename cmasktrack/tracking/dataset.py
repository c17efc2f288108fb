"""Tracking a whole benchmark: run a model over every video of an OVIS / YouTube-VIS json and
write the results file (and the zip) the evaluation server takes — in one process, in several
processes under ``torchrun`` (one GPU per rank, or gloo CPU processes), or one share at a time
for a cluster job array; resumable after an interruption, with results identical whichever way
ran them.

:func:`track_dataset` is the Python entry point, :func:`run_dataset` the same returning a
:class:`DatasetReport`, :func:`track_dataset_processes` what ``cmasktrack track --dataset``
runs in each process (device, process group, threads, then :func:`run_dataset`). The shares,
part files and the merge are :mod:`.shards`'.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data.ytvis import VISDataset
from .options import TrackOptions
from .shards import (
    DatasetTrackingError,
    PartError,
    VideoFailure,
    assign_shards,
    merge_parts,
    part_path,
    partial_dir,
    read_failure,
    read_part,
    video_name,
    write_failure,
    write_part,
)

__all__ = ["track_dataset", "run_dataset", "track_dataset_processes", "DatasetReport", "ShareStats",
           "DatasetTrackingError", "run_key"]

#: Test hook (not an option): ``"I:K"`` makes share I raise after tracking K videos, as if its
#: process were killed there.
_CRASH_ENV = "CMASKTRACK_TEST_CRASH_AFTER"


@dataclass
class ShareStats:
    """What one process (one share) did: its videos and frames, how many it tracked now and how
    many it took from an earlier run's part files, its tracking time, failures and the frames
    it replaced by empty frames (``--skip-bad-frames``)."""

    shard: str
    videos: int = 0
    frames: int = 0
    tracked_videos: int = 0
    tracked_frames: int = 0
    resumed_videos: int = 0
    redone_parts: int = 0
    seconds: float = 0.0
    threads: int = 0
    device: str = ""
    failures: List[VideoFailure] = field(default_factory=list)
    skipped_frames: List[Tuple[int, str, int, str]] = field(default_factory=list)

    @property
    def frames_per_second(self) -> float:
        return self.tracked_frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class DatasetReport:
    """The outcome of :func:`run_dataset` on this process.

    ``main``: this process reports (the main process of a torchrun / single run, every
    job-array share); ``merged``: this process wrote ``out_path`` (the main process of a
    torchrun / single run, or the job-array share that found every part there); ``shares``: every process's
    :class:`ShareStats` on the main process, this process's own elsewhere; ``failures``: the
    videos that could not be tracked (all of them where ``merged``); ``seconds``: wall time from
    the first video to the merged file.
    """

    out_path: str
    main: bool
    shard: Tuple[int, int]
    total_videos: int
    total_frames: int
    merged: bool
    zip_path: Optional[str]
    tracks: int
    seconds: float
    shares: List[ShareStats]
    failures: List[VideoFailure]
    waiting_for: int = 0
    #: ``(video id, name, frame, reason)`` of the frames replaced by empty frames
    #: (``skip_bad_frames``): in every merged video, also those of earlier runs, where
    #: ``merged``; else this process's.
    skipped_frames: List[Tuple[int, str, int, str]] = field(default_factory=list)
    _own_entries: List[Dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def entries(self) -> List[Dict[str, Any]]:
        """The results entries: of every video when this process merged (read back from
        ``out_path``), else of this process's share."""
        if self.merged:
            with open(self.out_path) as f:
                return json.load(f)
        return list(self._own_entries)

    def summary(self) -> str:
        """The lines ``cmasktrack track --dataset`` prints: totals, frames/s overall and per
        process, and the frames replaced by empty frames."""
        tracked = sum(s.tracked_frames for s in self.shares)
        lines = []
        if self.merged:
            done = self.total_videos - len(self.failures)
            outs = self.out_path + (f" and {self.zip_path}" if self.zip_path else "")
            lines.append(f"{done} of {self.total_videos} videos ({self.total_frames} frames), {self.tracks} tracks, "
                         f"{tracked} frames tracked in {self.seconds:.1f} s "
                         f"({tracked / self.seconds if self.seconds > 0 else 0.0:.2f} frames/s) -> {outs}")
        else:
            i, n = self.shard
            lines.append(f"share {i}/{n} done; {self.waiting_for} videos of other shares are not finished yet: "
                         f"the last share to finish merges them, or run `cmasktrack merge "
                         f"{partial_dir(self.out_path)} --out {self.out_path}`")
        for s in self.shares:
            extra = [f"{s.resumed_videos} resumed"] if s.resumed_videos else []
            if s.redone_parts:
                extra.append(f"{s.redone_parts} truncated/corrupt part files redone")
            if s.failures:
                extra.append(f"{len(s.failures)} failed")
            lines.append(f"  {'rank' if len(self.shares) > 1 else 'share'} {s.shard}: {s.videos} videos, "
                         f"{s.frames} frames" + (f" ({', '.join(extra)})" if extra else "")
                         + f"; tracked {s.tracked_frames} frames in {s.seconds:.1f} s, "
                         f"{s.frames_per_second:.2f} frames/s ({s.device}, {s.threads} thread"
                         + ("s)" if s.threads != 1 else ")"))
        skipped = self.skipped_frames
        if skipped:
            lines.append(f"warning: {len(skipped)} unreadable frames replaced by empty frames (--skip-bad-frames):")
            lines.extend(f"  video {vid} ({name}) frame {t}: {reason}" for vid, name, t, reason in skipped)
        return "\n".join(lines)


def run_key(model: Any, options: TrackOptions) -> str:
    """A digest of what decides a video's results: the model's config and weights and the
    tracking options. Part files carry it; a resumed run takes only parts with its own key."""
    import torch

    h = hashlib.sha256()
    config = model.config.to_dict() if hasattr(model.config, "to_dict") else dataclasses.asdict(model.config)
    h.update(json.dumps({"config": config, "options": dataclasses.asdict(options)}, sort_keys=True,
                        default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name} {t.dtype} {tuple(tensor.shape)}".encode())
        h.update(t.view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _context(shard: Optional[Tuple[int, int]]):
    """This process's share ``(I, N)`` and its :class:`~cmasktrack.distributed.DistContext`:
    the torch.distributed group's rank and size when one is initialised, else ``shard`` (a job
    array's task: no collectives), else ``(0, 1)``."""
    import torch.distributed as dist

    from ..distributed import DistContext

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        if shard is not None:
            raise ValueError("shard is for separate processes (job arrays); under torchrun every rank takes its share")
        ctx = DistContext(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")))
        return (ctx.rank, ctx.world_size), ctx
    if shard is None:
        return (0, 1), DistContext()
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard must be (I, N) with 0 <= I < N, got {shard}")
    return (int(index), int(count)), DistContext()


class _VideoFailed(Exception):
    """A video could not be tracked (the message says why)."""


def _empty_frame(index: int, name: str):
    from ..video_result import FrameResult

    return FrameResult(index=index, name=name, boxes=np.zeros((0, 4), np.float32), scores=np.zeros(0, np.float32),
                       labels=np.zeros(0, np.int64), track_ids=np.zeros(0, np.int64), masks=[])


def _track_video(model: Any, dataset: VISDataset, vid: int, options: TrackOptions, skip_bad_frames: bool,
                 on_frames: Callable[[int], None]) -> Tuple[List[Dict[str, Any]], List[Tuple[int, str]]]:
    """One video's results entries and the frames replaced by empty frames ``(frame, reason)``.

    Frames are decoded as :meth:`CMaskTrack.track_video` decodes a list of paths and run
    through :func:`~cmasktrack.tracking.video.run_tracker` (prefetching as ``options`` say), so
    the entries equal ``model.track_video(paths, options).to_ytvis(vid)``. An unreadable frame
    fails the video, or with ``skip_bad_frames`` becomes an empty frame (no detections; the
    tracker goes on with the next readable frame).
    """
    from ..data.frames import FrameError, read_image
    from ..video_result import VideoResult
    from .video import run_tracker

    video = dataset.videos[vid]
    paths = dataset.frame_paths(vid)
    tracker = model.new_tracker(options)
    kept: List[int] = []
    skipped: List[Tuple[int, str]] = []

    def readable_frames():
        for t, path in enumerate(paths):
            try:
                image = read_image(path)
            except (FileNotFoundError, FrameError) as exc:
                reason = " ".join(str(exc).split())
                if not skip_bad_frames:
                    raise _VideoFailed(f"frame {t}: {reason}") from exc
                skipped.append((t, reason))
                continue
            if image.shape[:2] != (video.height, video.width):
                raise _VideoFailed(f"frame {t} ({path}) is {image.shape[1]}x{image.shape[0]} but the annotation "
                                   f"file says {video.width}x{video.height}")
            kept.append(t)
            yield path.name, image
        if not kept:
            raise _VideoFailed(f"no readable frame (frame 0: {skipped[0][1]})")

    # the frame source may run in the prefetch thread: progress is reported from this one
    result = run_tracker(tracker, readable_frames(), progress=False, on_frames=on_frames)
    if skipped:
        on_frames(len(skipped))
        frames = [dataclasses.replace(fr, index=kept[fr.index]) for fr in tracker.results]
        frames += [_empty_frame(t, paths[t].name) for t, _ in skipped]
        frames.sort(key=lambda fr: fr.index)
        result = VideoResult(frames, video.height, video.width, model.config.category_names)
    return result.to_ytvis(video_id=vid), skipped


def _crash_after(share_index: int) -> Optional[int]:
    spec = os.environ.get(_CRASH_ENV)
    if not spec:
        return None
    index, count = (int(x) for x in spec.split(":"))
    return count if index == share_index else None


def _earlier_parts(directory: str, videos: Sequence[int], lengths: Dict[int, int], key: str,
                   skip_bad_frames: bool) -> Tuple[Dict[int, Any], List[int], List[str]]:
    """What an earlier run left for ``videos``: the sound parts of this run (``{video id:
    Part}``; a part with empty frames only with ``skip_bad_frames``), the videos whose part is
    of another run (model, options or frame count), and a message per truncated / corrupt part."""
    done: Dict[int, Any] = {}
    stale: List[int] = []
    broken: List[str] = []
    for vid in videos:
        path = part_path(directory, vid)
        if not os.path.exists(path):
            continue
        try:
            part = read_part(path)
        except PartError as exc:
            broken.append(f"{exc}: video {vid} is tracked again")
            continue
        if part.run != key or part.frames != lengths[vid]:
            stale.append(vid)
        elif skip_bad_frames or not part.header.get("skipped_frames"):
            done[vid] = part
    return done, stale, broken


def _finished_videos(directory: str, ids: Sequence[int], lengths: Dict[int, int],
                     key: str) -> Tuple[List[Any], List[VideoFailure], int]:
    """For a job-array share: the sound parts of this run among ``ids``, the failure records of
    this run for the videos without one, and how many videos have neither (not finished)."""
    parts, failures, waiting = [], [], 0
    for vid in ids:
        try:
            part = read_part(part_path(directory, vid))
            if part.run == key and part.frames == lengths[vid]:
                parts.append(part)
                continue
        except (OSError, PartError):
            pass
        failure = read_failure(directory, vid, run=key)
        if failure is None:
            waiting += 1
        else:
            failures.append(failure)
    return parts, failures, waiting


def run_dataset(
    model: Any,
    dataset: VISDataset,
    out_path: str,
    *,
    video_ids: Optional[Sequence[int]] = None,
    resume: bool = True,
    write_zip: bool = True,
    progress: bool = True,
    verbose: bool = False,
    shard: Optional[Tuple[int, int]] = None,
    skip_bad_frames: bool = False,
    options: Optional[TrackOptions] = None,
    **option_kwargs: Any,
) -> DatasetReport:
    """Track this process's share of the videos of ``dataset`` and, on the process that merges,
    write ``out_path`` (+ the zip). Failures do not raise: they are in the report.

    Under ``torch.distributed`` (``torchrun``; the group initialised by the caller, see
    :func:`track_dataset_processes`) rank R of W tracks share R of W and rank 0 merges after
    every rank has finished; with ``shard=(I, N)`` (a job-array task, no process group) this
    process tracks share I of N and merges when every video of the dataset has its part (the
    last share to finish); otherwise one process tracks everything. Shares are balanced by frame
    count (:func:`~cmasktrack.tracking.shards.assign_shards`).

    Each finished video is a part file ``<out_path>.partial/<video_id>.part`` (atomic, with a
    checksum); with ``resume`` the videos that have a sound part of the same model and options
    are not tracked again, a truncated or corrupt part is redone, and parts of another model
    or other options are an error (``resume=False`` replaces them). A video that cannot be
    tracked is recorded with the reason and the others go on; ``skip_bad_frames`` turns an
    unreadable frame into an empty frame instead. ``progress``: one bar of frames done over
    all processes on the main process; ``verbose``: a line per video on every process.
    """
    import torch

    from ..distributed import GlobalProgress, any_process, gather_objects

    if getattr(model, "training", False):
        raise RuntimeError("the model is in training mode: call model.eval() first")
    options = TrackOptions.build(options, **option_kwargs)
    ids = sorted(dict.fromkeys(dataset.video_ids if video_ids is None else video_ids))
    unknown = [v for v in ids if v not in dataset.videos]
    if unknown:
        raise ValueError(f"video ids not in the annotation file: {unknown[:10]}")
    (index, count), ctx = _context(shard)
    label = f"{index}/{count}"
    crash_after = _crash_after(index)
    lengths = {v: dataset.videos[v].length for v in ids}
    mine = assign_shards(lengths, count)[index]
    key = run_key(model, options)
    directory = partial_dir(os.fspath(out_path))
    os.makedirs(directory, exist_ok=True)
    stats = ShareStats(label, len(mine), sum(lengths[v] for v in mine), threads=torch.get_num_threads(),
                       device=str(getattr(model, "device", "cpu")))
    # without resume the earlier parts are not even read (they are all redone)
    done, stale, broken = _earlier_parts(directory, mine, lengths, key, skip_bad_frames) if resume else ({}, [], [])
    stats.redone_parts = len(broken)
    for message in broken if verbose or ctx.main else ():
        warnings.warn(message, stacklevel=2)
    if any_process(bool(stale) and resume, ctx):
        raise ValueError(f"{directory} holds results of another model, other tracking options or other videos "
                         f"(e.g. video {stale[0] if stale else '?'}): resume with the same model and options, pass "
                         "--no-resume (resume=False) to replace them, or choose another --out")
    is_main = ctx.main
    bar = GlobalProgress(ctx, sum(lengths.values()), desc="tracking", unit="frame", enabled=progress and is_main)
    own: List[Dict[str, Any]] = []
    t_start = time.perf_counter()
    try:
        for vid in mine:
            name = video_name(dataset.videos[vid])
            if vid in done:
                bar.update(lengths[vid])
                stats.resumed_videos += 1
                own.extend(done[vid].entries)
                continue
            seen = [0]

            def on_frames(n: int) -> None:
                seen[0] += n
                bar.update(n)

            t0 = time.perf_counter()
            try:
                entries, skipped = _track_video(model, dataset, vid, options, skip_bad_frames, on_frames)
            except Exception as exc:  # noqa: BLE001 - one video's failure must not stop the others
                reason = str(exc) if isinstance(exc, _VideoFailed) else f"{type(exc).__name__}: {exc}"
                failure = VideoFailure(vid, name, " ".join(reason.split()))
                write_failure(directory, failure, key)
                stats.failures.append(failure)
                bar.update(lengths[vid] - seen[0])
                if verbose:
                    print(f"[{label}] {failure}", file=sys.stderr, flush=True)
                continue
            seconds = time.perf_counter() - t0
            write_part(directory, vid, entries, run=key, name=name, frames=lengths[vid], shard=label,
                       seconds=round(seconds, 3), skipped_frames=[list(s) for s in skipped])
            stats.tracked_videos += 1
            stats.tracked_frames += lengths[vid] - len(skipped)
            stats.seconds += seconds
            stats.skipped_frames.extend((vid, name, t, reason) for t, reason in skipped)
            own.extend(entries)
            for t, reason in skipped:
                if verbose or is_main:
                    warnings.warn(f"video {vid} ({name}) frame {t} is replaced by an empty frame: {reason}",
                                  stacklevel=2)
            if verbose:
                print(f"[{label}] video {vid} ({name}): {lengths[vid]} frames, {len(entries)} tracks, "
                      f"{seconds:.1f} s", file=sys.stderr, flush=True)
            if crash_after is not None and stats.tracked_videos >= crash_after:
                raise RuntimeError(f"{_CRASH_ENV}: share {label} stops after tracking {crash_after} video(s) "
                                   "(test hook)")
    except BaseException:
        bar.close(wait=False)  # a process that stops does not wait for the others
        raise
    bar.close()  # with several processes: waits until every process has finished its share
    shares = gather_objects(stats, ctx)
    report = DatasetReport(out_path=os.fspath(out_path), main=is_main, shard=(index, count), total_videos=len(ids),
                           total_frames=sum(lengths.values()), merged=False, zip_path=None, tracks=0, seconds=0.0,
                           shares=shares if is_main else [stats], failures=list(stats.failures),
                           skipped_frames=list(stats.skipped_frames), _own_entries=own)
    if ctx.enabled and not is_main:
        report.seconds = time.perf_counter() - t_start
        return report
    if ctx.enabled or count == 1:
        failures = [f for s in shares for f in s.failures]
        failed = {f.video_id for f in failures}
        parts = []
        for vid in ids:
            if vid in failed:
                continue
            try:
                parts.append(read_part(part_path(directory, vid)))
            except (OSError, PartError) as exc:
                raise RuntimeError(f"the part file of video {vid} cannot be read on the main process ({exc}); "
                                   "with several machines --out must be on a file system every process sees") from exc
    else:  # a job-array share: merge when every video is finished (tracked or failed) by some share
        parts, failures, waiting = _finished_videos(directory, ids, lengths, key)
        if waiting:
            report.waiting_for = waiting
            report.seconds = time.perf_counter() - t_start
            return report
    merged = merge_parts(parts, out_path, write_zip=write_zip)
    report.merged, report.zip_path, report.tracks = True, merged.zip_path, merged.tracks
    report.skipped_frames = [(p.video_id, p.header.get("name", "?"), int(t), str(reason))
                             for p in parts for t, reason in p.header.get("skipped_frames", [])]
    report.failures = sorted(failures, key=lambda f: f.video_id)
    report.seconds = time.perf_counter() - t_start
    return report


def track_dataset(
    model: Any,
    dataset: VISDataset,
    out_path: str,
    *,
    video_ids: Optional[Sequence[int]] = None,
    resume: bool = True,
    write_zip: bool = True,
    progress: bool = True,
    options: Optional[TrackOptions] = None,
    shard: Optional[Tuple[int, int]] = None,
    skip_bad_frames: bool = False,
    verbose: bool = False,
    **option_kwargs: Any,
) -> List[Dict[str, Any]]:
    """Track every video of ``dataset`` (frames under its image root) and write ``out_path``.

    The entries of all videos, by video id and each video's in track order, are written to
    ``out_path`` and, with ``write_zip``, to a zip next to it holding ``results.json`` (what the
    servers expect). Each finished video is stored at once in
    ``<out_path>.partial/<video_id>.part``; with ``resume`` a rerun skips those videos, so an
    interrupted run picks up where it stopped. ``options`` (a :class:`TrackOptions`, or its
    fields as keyword arguments: ``num_refs``, ``causal``, ...) say how each video is tracked.
    Under ``torchrun`` (process group initialised) or with ``shard=(I, N)`` this process tracks
    its share only (see :func:`run_dataset`, which also says what ``skip_bad_frames`` and
    ``verbose`` do). Returns the results entries (of this process's share where it did not
    merge).

    Raises:
        DatasetTrackingError: some videos could not be tracked (unreadable frame, ...); the
            others are tracked and written, and the error lists the failed ones with the reason.
    """
    report = run_dataset(model, dataset, out_path, video_ids=video_ids, resume=resume, write_zip=write_zip,
                         progress=progress, verbose=verbose, shard=shard, skip_bad_frames=skip_bad_frames,
                         options=options, **option_kwargs)
    if report.failures:
        raise DatasetTrackingError(report.failures, report.total_videos,
                                   out_path if report.merged else None, report.entries)
    return report.entries


def track_dataset_processes(
    load_model: Callable[[Any], Any],
    dataset: VISDataset,
    out_path: str,
    *,
    device: Optional[str] = None,
    threads: Optional[int] = None,
    shard: Optional[Tuple[int, int]] = None,
    **run_kwargs: Any,
) -> DatasetReport:
    """One process of a dataset run, as ``cmasktrack track --dataset`` starts it (also under
    ``torchrun``): the device (the local rank's GPU for a bare ``cuda``), the process group
    (gloo on the CPU, NCCL on GPUs), the CPU threads, the model (``load_model(device)``), then
    :func:`run_dataset`; the group is closed at the end.

    ``threads``: ``torch.set_num_threads``; default: under torchrun on the CPU this process's
    share of the cores (:func:`~cmasktrack.distributed.cpu_threads_per_process`), else torch's
    default.
    """
    import torch
    import torch.distributed as dist

    from ..distributed import DistContext, cpu_threads_per_process, resolve_device, setup_distributed

    if shard is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("--shard is for job arrays (separate processes); under torchrun every rank takes its share")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    dev = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    ctx = setup_distributed(dev) if shard is None else DistContext()
    try:
        if threads is None and ctx.enabled and dev.type == "cpu":
            threads = cpu_threads_per_process()
        if threads is not None:
            torch.set_num_threads(threads)
        model = load_model(dev)
        return run_dataset(model, dataset, out_path, shard=shard, **run_kwargs)
    finally:
        if ctx.initialised_here and dist.is_initialized():
            dist.destroy_process_group()
