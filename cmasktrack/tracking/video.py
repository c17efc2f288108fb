"""The per-frame pipeline: :class:`VideoTracker` runs a
:class:`~cmasktrack.modeling.cmasktrack_rcnn.CMaskTrackRCNN` over a stream of frames, computing
each frame's backbone features once and keeping only the window the references need; the
association of its detections is :class:`~cmasktrack.tracking.association.TrackMemory`.
Nothing of a video is stored on the model, so one model can serve several videos at once.
"""

from __future__ import annotations

import queue
import threading
import time
import warnings
from collections import defaultdict, deque
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..modeling.cmasktrack_rcnn import CMaskTrackRCNN
from ..modeling.roi_heads import MASK_SIZE
from ..postprocess import mask_paste_boxes, paste_masks
from ..video_result import FrameResult, VideoResult, encode_mask
from ..transforms import FrameMeta, preprocess_frame
from .association import TrackMemory
from .options import TrackOptions

__all__ = ["VideoTracker", "PreparedFrame", "reference_indices", "run_tracker", "track_frames"]

#: Autocast dtype of each mixed precision.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class _Entry:
    index: int
    name: str
    feats: List[torch.Tensor]
    meta: FrameMeta


@dataclass
class PreparedFrame:
    """A frame preprocessed by :meth:`VideoTracker.prepare` (thread-safe, so it can run ahead
    of the network in another thread) for :meth:`VideoTracker.push`: ``image`` is the
    (1, 3, Hp, Wp) network input on the CPU (pinned when the model is on CUDA)."""

    name: Optional[str]
    size: Tuple[int, int]
    image: torch.Tensor
    meta: FrameMeta


def _check_autocast(device: torch.device, precision: str) -> None:
    """A clear error when this device / torch build cannot autocast to ``precision``'s type."""
    dtype = AUTOCAST_DTYPES[precision]
    if device.type == "cuda":
        if dtype == torch.bfloat16:
            try:
                ok = torch.cuda.is_bf16_supported(including_emulation=False)
            except TypeError:  # older torch: no emulation argument
                ok = torch.cuda.is_bf16_supported()
            if not ok:
                raise ValueError(f"precision='bf16' needs a GPU with bfloat16 support (compute capability >= 8.0); "
                                 f"{torch.cuda.get_device_name(device)} has none: use precision='fp16'")
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ctx = torch.autocast(device_type=device.type, dtype=dtype)
    if caught or not getattr(ctx, "_enabled", True):
        why = "; ".join(str(w.message) for w in caught) or "autocast is disabled"
        raise ValueError(f"precision={precision!r}: this torch ({torch.__version__}) cannot autocast to {dtype} on "
                         f"{device.type}: {why}")


class _Network:
    """The network pieces a :class:`VideoTracker` runs, in its precision, layout and compile
    settings. Network outputs are float32 (cast after each autocast region); RoI pooling, the
    calibration (float32 with autocast off, :meth:`CMaskTrackRCNN.calibrate`), decoding, NMS
    and the association are outside autocast."""

    def __init__(self, model: CMaskTrackRCNN, options: TrackOptions):
        self.model = model
        self.device = model.device
        precision = options.precision
        self.amp_dtype = AUTOCAST_DTYPES.get(precision)
        if self.amp_dtype is not None:
            _check_autocast(self.device, precision)
        self.tf32 = precision == "tf32"
        self.channels_last = options.channels_last if options.channels_last is not None else self.amp_dtype is not None
        self.backbone: Callable = model.backbone
        self.rpn_head: Callable = model.rpn
        self.head_features: Callable = model.head_features
        self.box_head: Callable = model.box_head
        self.mask_head: Callable = model.mask_head
        self.track_embed: Callable = model.track_head.embed
        if options.compile:
            self._compile(options.compile)

    def _compile(self, backend: Any) -> None:
        import torch._dynamo

        backend = "inductor" if backend is True else backend
        if backend not in torch._dynamo.list_backends(exclude_tags=()):
            raise ValueError(f"compile: unknown torch.compile backend {backend!r} (this torch has "
                             f"{', '.join(torch._dynamo.list_backends(exclude_tags=()))})")
        # Modules are compiled, not the model's methods, so that the data-dependent parts (RoI
        # pooling, proposal selection, post-processing) stay eager; the calibration compiles
        # without a graph break (the correlation is a dispatcher op with a fake kernel).
        for name in ("backbone", "rpn_head", "head_features", "box_head", "mask_head", "track_embed"):
            setattr(self, name, torch.compile(getattr(self, name), backend=backend))

    def autocast(self) -> ContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @contextmanager
    def flags(self):
        """TF32 for CUDA matmuls and cuDNN on for ``"tf32"`` and off otherwise during a call,
        restored after (no effect on the CPU)."""
        if self.device.type != "cuda":
            yield
            return
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """FPN levels (float32, contiguous) of a (1, 3, H, W) input (``extract_features``)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            feats = self.backbone(x)
        if self.amp_dtype is None and not self.channels_last:
            return feats
        return [f.float().contiguous() for f in feats]

    def rpn_outputs(self, feats: List[torch.Tensor]):
        """(logits, deltas, anchors) as :meth:`CMaskTrackRCNN.rpn_outputs`, float32."""
        with self.autocast():
            logits, deltas = self.rpn_head(feats)
        return [t.float() for t in logits], [t.float() for t in deltas], self.model.rpn.anchors(feats)

    def box_outputs(self, head_feats: List[torch.Tensor], rois: torch.Tensor):
        """As :meth:`CMaskTrackRCNN.box_outputs` (RoI pooling in float32), float32 outputs."""
        roi_feats = self.model.box_roi_features(head_feats, rois)
        with self.autocast():
            cls_logits, deltas = self.box_head(roi_feats)
        return cls_logits.float(), deltas.float()

    def mask_logits(self, head_feats: List[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        roi_feats = self.model.mask_roi_features(head_feats, rois)
        with self.autocast():
            return self.mask_head(roi_feats).float()

    def track_embeddings(self, feats: List[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        roi_feats = self.model.box_roi_features(self.model.head_levels(feats), rois)
        with self.autocast():
            return self.track_embed(roi_feats).float()


def reference_indices(t: int, num_frames: Optional[int], num_refs: int, causal: bool) -> List[int]:
    """References of frame ``t``: frames within ``num_refs`` before (and, unless causal, after)
    ``t`` that exist, ascending, ``t`` excluded. ``num_frames`` None = length not known yet."""
    lo = max(0, t - num_refs)
    hi = t if causal else t + num_refs
    if num_frames is not None:
        hi = min(hi, num_frames - 1)
    return [j for j in range(lo, hi + 1) if j != t]


class VideoTracker:
    """Runs a model over one video, frame by frame, as a stream.

    ``push(frame)`` takes the next frame and returns the frames whose results are ready (a
    frame waits for its ``num_refs`` future references unless ``causal``); ``finish()`` flushes
    the rest. Each frame's backbone features are computed once and kept only while a frame in
    the window still needs them, so memory does not grow with the video's length.

    ``options`` is a :class:`TrackOptions`; its fields may also be given as keyword arguments
    (``VideoTracker(model, num_refs=2, precision="bf16")``). ``num_refs`` = 0 runs the heads on
    plain features (MaskTrack R-CNN); with calibration and ``num_refs`` > 0, a frame with no
    other frame in reach (a one-frame video, or the first frame when ``causal``) is its own
    reference. ``precision``, ``compile``, ``channels_last`` and ``share_heads`` choose how the
    network runs (see :class:`TrackOptions`); ``prefetch`` is used by :func:`track_frames`.
    ``keep_results=False`` keeps no results after returning them (an endless stream: memory
    stays flat; :meth:`result` is then empty).
    """

    def __init__(self, model: CMaskTrackRCNN, options: Optional[TrackOptions] = None, *, keep_results: bool = True,
                 **option_kwargs: Any):
        self.model = model
        #: Keep every frame's result for :meth:`result` (off for endless streams: memory).
        self.keep_results = keep_results
        self.config = model.config
        options = TrackOptions.build(options, **option_kwargs)
        if options.num_refs is None:
            options = TrackOptions.build(options, num_refs=self.config.num_refs)
        #: The :class:`TrackOptions` in force (``num_refs`` resolved from the model config).
        self.options = options
        self._net = _Network(model, options)
        self._pin = self._net.device.type == "cuda"
        self.memory = TrackMemory(self.config.match_coeff)
        self.window: Deque[_Entry] = deque()
        self.next_to_process = 0
        self.num_pushed = 0
        self.frame_size: Optional[Tuple[int, int]] = None
        self.results: List[FrameResult] = []
        #: Seconds spent per stage (decode, preprocess, backbone, calibration, rpn, box_head,
        #: tracking, mask_head, mask_paste; with prefetching, prefetch_wait: the time the
        #: network waited for the next frame) over the frames so far. decode and preprocess
        #: run in the prefetch thread when prefetching, overlapped with the others.
        self.timings: Dict[str, float] = defaultdict(float)

    @property
    def num_refs(self) -> int:
        return self.options.num_refs

    @property
    def causal(self) -> bool:
        return self.options.causal

    @property
    def score_threshold(self) -> Optional[float]:
        return self.options.score_threshold

    @property
    def batch_refs(self) -> Optional[int]:
        return self.options.batch_refs

    @contextmanager
    def _timed(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] += time.perf_counter() - t0

    # ------------------------------------------------------------------ streaming API
    @property
    def prefetch_depth(self) -> int:
        """How many frames :func:`run_tracker` decodes ahead: ``options.prefetch``, or when it
        is None, 2 on CUDA and 0 on the CPU."""
        return self.options.prefetch_for(self._net.device)

    def prepare(self, image: np.ndarray, name: Optional[str] = None) -> PreparedFrame:
        """Check and preprocess a frame (H, W, 3 uint8 RGB) for :meth:`push`. It touches no
        tracker state, so it may run in another thread, ahead of the network."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"frames must be (H, W, 3) uint8 RGB arrays, got {got}")
        cfg = self.config
        tensor, meta = preprocess_frame(image, cfg.image_scale, cfg.pixel_mean, cfg.pixel_std, cfg.size_divisor)
        x = tensor[None]
        if self._pin:
            x = x.pin_memory()
        return PreparedFrame(name, (int(image.shape[0]), int(image.shape[1])), x, meta)

    @torch.no_grad()
    def push(self, image: Any, name: Optional[str] = None) -> List[FrameResult]:
        """Add the next frame (H, W, 3 uint8 RGB, or a :class:`PreparedFrame` from
        :meth:`prepare`); returns the results that became ready."""
        if isinstance(image, PreparedFrame):
            frame = image
            name = frame.name if name is None else name
        else:
            with self._timed("preprocess"):
                frame = self.prepare(image, name)
        size = frame.size
        idx = self.num_pushed
        label = name if name is not None else f"frame {idx}"
        if self.frame_size is None:
            self.frame_size = size
        elif size != self.frame_size:
            raise ValueError(
                f"{label} is {size[1]}x{size[0]} but the video's first frame is "
                f"{self.frame_size[1]}x{self.frame_size[0]}: all frames of a video must have the same size"
            )
        x = frame.image.to(device=self.model.device, dtype=self.model.dtype, non_blocking=self._pin)
        with self._net.flags():
            with self._timed("backbone"):
                feats = self._net.features(x)
            self.window.append(_Entry(idx, label, feats, frame.meta))
            self.num_pushed += 1
            ready = []
            while self.next_to_process < self.num_pushed and (
                self.causal or self.next_to_process + self.num_refs < self.num_pushed
            ):
                ready.append(self._process(self.next_to_process, None))
        return ready

    @torch.no_grad()
    def finish(self) -> List[FrameResult]:
        """The video has ended: process the frames still waiting for future references."""
        ready = []
        with self._net.flags():
            while self.next_to_process < self.num_pushed:
                ready.append(self._process(self.next_to_process, self.num_pushed))
        self.window.clear()
        return ready

    def result(self) -> VideoResult:
        """All results so far as a :class:`VideoResult`."""
        h, w = self.frame_size if self.frame_size is not None else (0, 0)
        return VideoResult(self.results, h, w, self.config.category_names)

    # ------------------------------------------------------------------ internals
    def _entry(self, i: int) -> _Entry:
        return self.window[i - self.window[0].index]

    def _process(self, t: int, num_frames: Optional[int]) -> FrameResult:
        model, net, cfg = self.model, self._net, self.config
        cur = self._entry(t)
        refs: List[int] = []
        if model.calibration is not None and self.num_refs > 0:
            refs = reference_indices(t, num_frames, self.num_refs, self.causal) or [t]
        with self._timed("calibration"):
            head_feats = self._head_features(cur, refs)
        meta = cur.meta
        img_shape = tuple(meta.img_shape)
        with self._timed("rpn"):
            logits, deltas, anchors = net.rpn_outputs(cur.feats)
            proposals = model.select_proposals(logits, deltas, anchors, 0, img_shape)
        with self._timed("box_head"):
            cls_logits, box_deltas = net.box_outputs(head_feats, proposals[:, :4])
            det = model.detections_from_outputs(proposals, cls_logits, box_deltas, img_shape, meta.scale_factor,
                                                self.score_threshold)
        with self._timed("tracking"):
            if t == 0:
                self.memory.reset()
            embeds = net.track_embeddings(cur.feats, det.boxes_resized)
            ids = self.memory.assign(det, embeds, model.match_logits)
            keep = np.nonzero(ids >= 0)[0]
            det = det.select(torch.as_tensor(keep, dtype=torch.long, device=det.boxes.device))
        with self._timed("mask_head"):
            if len(det):
                probs = model.mask_probs_from_logits(net.mask_logits(head_feats, det.boxes_resized), det.labels)
            else:
                probs = det.boxes_resized.new_zeros((0, MASK_SIZE, MASK_SIZE))
            probs = probs.float().cpu()
        with self._timed("mask_paste"):
            h, w = meta.ori_shape
            masks = paste_masks(probs, mask_paste_boxes(det.boxes.float(), meta.scale_factor), h, w,
                                cfg.mask_threshold).numpy()
            rles = [encode_mask(m) for m in masks]
        res = FrameResult(
            index=t, name=cur.name, boxes=det.boxes.float().cpu().numpy(), scores=det.scores.float().cpu().numpy(),
            labels=det.labels.cpu().numpy(), track_ids=ids[keep], masks=rles,
        )
        if self.keep_results:
            self.results.append(res)
        self.next_to_process = t + 1
        # Drop features no later frame needs.
        while self.window and self.window[0].index < self.next_to_process - self.num_refs:
            self.window.popleft()
        return res

    def _head_features(self, cur: _Entry, refs: List[int]) -> List[torch.Tensor]:
        """The rows the box and mask heads read: the frame calibrated with each reference (one
        row per reference), or with ``share_heads`` their mean (one row)."""
        head_features = self._net.head_features
        if not refs:
            return head_features(cur.feats, [])
        chunk = self.batch_refs or len(refs)
        parts = [
            head_features(cur.feats, [self._entry(j).feats for j in refs[i: i + chunk]])
            for i in range(0, len(refs), chunk)
        ]
        rows = parts[0] if len(parts) == 1 else [torch.cat([p[lvl] for p in parts], dim=0)
                                                 for lvl in range(len(parts[0]))]
        if self.options.share_heads and rows[0].size(0) > 1:
            rows = [r.mean(dim=0, keepdim=True) for r in rows]
        return rows


def _prefetched(tracker: VideoTracker, frames: Iterable[Tuple[str, np.ndarray]], depth: int) -> Iterator[PreparedFrame]:
    """``frames`` decoded (iterated) and prepared (:meth:`~VideoTracker.prepare`) in a background
    thread, at most ``depth`` frames ahead of the consumer; an error in the thread is raised
    in the consumer, and the thread stops when the consumer does."""
    q: "queue.Queue[Tuple[str, Any]]" = queue.Queue(maxsize=depth)
    stop = threading.Event()
    timings = tracker.timings

    def put(item: Tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            it = iter(frames)
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    name, image = next(it)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                prepared = tracker.prepare(image, name)
                timings["decode"] += t1 - t0
                timings["preprocess"] += time.perf_counter() - t1
                if not put(("frame", prepared)):
                    return
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            put(("error", exc))

    thread = threading.Thread(target=produce, name="cmasktrack-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            t0 = time.perf_counter()
            kind, item = q.get()
            timings["prefetch_wait"] += time.perf_counter() - t0
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def run_tracker(
    tracker: VideoTracker,
    frames: Iterable[Tuple[str, np.ndarray]],
    *,
    progress: bool = True,
    total: Optional[int] = None,
    desc: str = "tracking",
    on_frames: Optional[Callable[[int], None]] = None,
) -> VideoResult:
    """Push ``(name, rgb_uint8)`` ``frames`` through ``tracker`` (decoded and preprocessed
    ``tracker.prefetch_depth`` frames ahead in a background thread), finish, and return the
    result; ``tracker.timings`` then has the time of every stage. ``on_frames(n)`` is called
    with the number of frames each step finished (progress)."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="frame")

    def finished(results: List[FrameResult]) -> None:
        if bar is not None:
            bar.update(len(results))
        if on_frames is not None:
            on_frames(len(results))

    depth = tracker.prefetch_depth
    try:
        if depth > 0:
            for frame in _prefetched(tracker, frames, depth):
                finished(tracker.push(frame))
        else:
            it = iter(frames)
            while True:
                t0 = time.perf_counter()
                try:
                    name, image = next(it)
                except StopIteration:
                    break
                tracker.timings["decode"] += time.perf_counter() - t0
                finished(tracker.push(image, name))
        finished(tracker.finish())
    finally:
        if bar is not None:
            bar.close()
    if tracker.num_pushed == 0:
        raise ValueError("the video has no frames")
    return tracker.result()


def track_frames(
    model: CMaskTrackRCNN,
    frames: Iterable[Tuple[str, np.ndarray]],
    *,
    options: Optional[TrackOptions] = None,
    progress: bool = True,
    total: Optional[int] = None,
    desc: str = "tracking",
    **option_kwargs: Any,
) -> VideoResult:
    """Run a :class:`VideoTracker` with ``options`` (and/or individual option keyword
    arguments, see :meth:`TrackOptions.build`) over ``(name, rgb_uint8)`` frames and return the
    result (:func:`run_tracker`)."""
    tracker = VideoTracker(model, options, **option_kwargs)
    return run_tracker(tracker, frames, progress=progress, total=total, desc=desc)
