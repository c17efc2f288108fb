"""The per-frame pipeline: :class:`VideoTracker` runs a
:class:`~cmasktrack.modeling.cmasktrack_rcnn.CMaskTrackRCNN` over a stream of frames, computing
each frame's backbone features once and keeping only the window the references need; the
association of its detections is :class:`~cmasktrack.tracking.association.TrackMemory`.
Nothing of a video is stored on the model, so one model can serve several videos at once.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Deque, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

from ..modeling.cmasktrack_rcnn import CMaskTrackRCNN
from ..postprocess import mask_paste_boxes, paste_masks
from ..video_result import FrameResult, VideoResult, encode_mask
from ..transforms import FrameMeta, preprocess_frame
from .association import TrackMemory
from .options import TrackOptions

__all__ = ["VideoTracker", "reference_indices", "track_frames"]


@dataclass
class _Entry:
    index: int
    name: str
    feats: List[torch.Tensor]
    meta: FrameMeta


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
    (``VideoTracker(model, num_refs=2)``). ``num_refs`` = 0 runs the heads on plain features
    (MaskTrack R-CNN); with calibration and ``num_refs`` > 0, a frame with no other frame in
    reach (a one-frame video, or the first frame when ``causal``) is its own reference.
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
        self.memory = TrackMemory(self.config.match_coeff)
        self.window: Deque[_Entry] = deque()
        self.next_to_process = 0
        self.num_pushed = 0
        self.frame_size: Optional[Tuple[int, int]] = None
        self.results: List[FrameResult] = []
        #: Seconds spent per stage (backbone, calibration, rpn, box_head, tracking, mask_head,
        #: mask_paste) over the frames so far.
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
    @torch.no_grad()
    def push(self, image: np.ndarray, name: Optional[str] = None) -> List[FrameResult]:
        """Add the next frame (H, W, 3 uint8 RGB); returns the results that became ready."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"frames must be (H, W, 3) uint8 RGB arrays, got {image.dtype} {image.shape}")
        size = (int(image.shape[0]), int(image.shape[1]))
        idx = self.num_pushed
        label = name if name is not None else f"frame {idx}"
        if self.frame_size is None:
            self.frame_size = size
        elif size != self.frame_size:
            raise ValueError(
                f"{label} is {size[1]}x{size[0]} but the video's first frame is "
                f"{self.frame_size[1]}x{self.frame_size[0]}: all frames of a video must have the same size"
            )
        tensor, meta = preprocess_frame(
            image, self.config.image_scale, self.config.pixel_mean, self.config.pixel_std, self.config.size_divisor
        )
        x = tensor.to(device=self.model.device, dtype=self.model.dtype)[None]
        with self._timed("backbone"):
            feats = self.model.extract_features(x)
        self.window.append(_Entry(idx, label, feats, meta))
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
        model, cfg = self.model, self.config
        cur = self._entry(t)
        refs: List[int] = []
        if model.calibration is not None and self.num_refs > 0:
            refs = reference_indices(t, num_frames, self.num_refs, self.causal) or [t]
        with self._timed("calibration"):
            head_feats = self._head_features(cur, refs)
        meta = cur.meta
        img_shape = tuple(meta.img_shape)
        with self._timed("rpn"):
            proposals = model.proposals(cur.feats, img_shape)
        with self._timed("box_head"):
            det = model.detect(head_feats, proposals, img_shape, meta.scale_factor, self.score_threshold)
        with self._timed("tracking"):
            if t == 0:
                self.memory.reset()
            embeds = model.embed(cur.feats, det.boxes_resized)
            ids = self.memory.assign(det, embeds, model.match_logits)
            keep = np.nonzero(ids >= 0)[0]
            det = det.select(torch.as_tensor(keep, dtype=torch.long, device=det.boxes.device))
        with self._timed("mask_head"):
            probs = model.mask_probs(head_feats, det.boxes_resized, det.labels).float().cpu()
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
        if not refs:
            return self.model.head_features(cur.feats, [])
        chunk = self.batch_refs or len(refs)
        parts = [
            self.model.head_features(cur.feats, [self._entry(j).feats for j in refs[i: i + chunk]])
            for i in range(0, len(refs), chunk)
        ]
        if len(parts) == 1:
            return parts[0]
        return [torch.cat([p[lvl] for p in parts], dim=0) for lvl in range(len(parts[0]))]


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
    result."""
    tracker = VideoTracker(model, options, **option_kwargs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="frame")
    try:
        for name, image in frames:
            done = tracker.push(image, name)
            if bar is not None:
                bar.update(len(done))
        done = tracker.finish()
        if bar is not None:
            bar.update(len(done))
    finally:
        if bar is not None:
            bar.close()
    if tracker.num_pushed == 0:
        raise ValueError("the video has no frames")
    return tracker.result()
