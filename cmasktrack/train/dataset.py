"""Training samples from an OVIS / YouTube-VIS annotation file, as the official loader makes them.

Each sample is a frame plus one reference frame of the same video, both resized (keeping the
aspect ratio, OpenCV's uint8 bilinear), normalised, flipped together with probability 0.5 and
zero-padded to a multiple of 32 (:func:`cmasktrack.transforms.preprocess_frame`), with

* the frame's ground truths that count (the official ``_parse_ann_info``): objects present in
  the frame whose box has ``w >= 1``, ``h >= 1`` and whose area is positive; crowd objects
  become "ignore" boxes instead;
* boxes ``[x, y, x + w - 1, y + h - 1]`` multiplied by the scale factor, mirrored with
  ``W - x - 1`` when flipped, clipped to ``[0, W] x [0, H]`` (the resized image);
* masks resized with OpenCV's nearest-neighbour rule, flipped and zero-padded
  (:func:`resize_nearest_uint8`);
* labels 1..K = the position of the category in the file's ``categories`` list;
* for every ground truth the index + 1 of the same object among the reference frame's ground
  truths, 0 when it is not there;
* the reference boxes.

As officially, frames without any ground truth are not used, and the reference is drawn
uniformly among the other usable frames within +-5 (else among all other usable frames of the
video). Where the official code would crash — a video with a single usable frame — the frame is
its own reference. The official loader also keeps crowd objects' masks in the mask list (out
of step with the boxes); here only non-crowd objects have masks.

Randomness (reference choice, flip) comes from a per-sample seed that
:class:`GroupedBatchSampler` derives from the run's seed, the epoch and the sample's position,
so a run can be resumed exactly, with or without worker processes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..data.ytvis import VISAnnotation, VISDataset, is_absent
from ..transforms import DEFAULT_MEAN, DEFAULT_SCALE, DEFAULT_SIZE_DIVISOR, DEFAULT_STD, FrameMeta, preprocess_frame

__all__ = [
    "resize_nearest_uint8",
    "TrainSample",
    "TrainBatch",
    "VISTrainDataset",
    "collate_train",
    "GroupedBatchSampler",
]

PathLike = Union[str, "os.PathLike[str]"]


def resize_nearest_uint8(mask: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    """``cv2.resize(mask, (new_w, new_h), interpolation=cv2.INTER_NEAREST)`` for a 2-D array:
    output pixel (y, x) reads source ``(min(floor(y * h / new_h), h - 1), min(floor(x * w /
    new_w), w - 1))`` with OpenCV's double-precision factors ``1 / (new / old)``."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    h, w = mask.shape
    if new_w < 1 or new_h < 1:
        raise ValueError(f"output size must be at least 1x1, got {new_w}x{new_h}")
    ifx = 1.0 / (new_w / w)
    ify = 1.0 / (new_h / h)
    xs = np.minimum(np.floor(np.arange(new_w, dtype=np.float64) * ifx).astype(np.int64), w - 1)
    ys = np.minimum(np.floor(np.arange(new_h, dtype=np.float64) * ify).astype(np.int64), h - 1)
    return mask[ys[:, None], xs[None, :]]


@dataclass
class TrainSample:
    """One training pair. Boxes are (x1, y1, x2, y2) inclusive in the resized frame."""

    image: torch.Tensor  # (3, Hp, Wp) float32
    ref_image: torch.Tensor  # (3, Hp', Wp') float32
    meta: FrameMeta
    ref_meta: FrameMeta
    gt_boxes: torch.Tensor  # (K, 4) float32
    gt_labels: torch.Tensor  # (K,) long, 1..num_categories
    gt_masks: torch.Tensor  # (K, Hp, Wp) uint8
    gt_ref_index: torch.Tensor  # (K,) long, 0 = not in the reference frame
    gt_boxes_ignore: torch.Tensor  # (M, 4) float32, crowd boxes
    ref_boxes: torch.Tensor  # (R, 4) float32
    video_id: int = 0
    frame_index: int = 0
    ref_frame_index: int = 0


@dataclass
class TrainBatch:
    """A collated batch (see :func:`collate_train`); per-image targets stay lists."""

    images: torch.Tensor  # (B, 3, H, W)
    ref_images: torch.Tensor  # (B, 3, H, W)
    img_shapes: List[Tuple[int, int]]
    pad_shapes: List[Tuple[int, int]]
    ref_img_shapes: List[Tuple[int, int]]  # metadata of the reference frames (the loss does not read it)
    gt_boxes: List[torch.Tensor]
    gt_labels: List[torch.Tensor]
    gt_masks: List[torch.Tensor]
    gt_ref_index: List[torch.Tensor]
    gt_boxes_ignore: List[torch.Tensor]
    ref_boxes: List[torch.Tensor]
    video_ids: List[int] = field(default_factory=list)
    frame_indices: List[int] = field(default_factory=list)
    ref_frame_indices: List[int] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.size(0))

    def to(self, device: Union[str, torch.device]) -> "TrainBatch":
        """Images and boxes on ``device``; masks stay where they are (mask targets are cut
        on the CPU)."""
        mv = lambda ts: [t.to(device, non_blocking=True) for t in ts]  # noqa: E731
        return TrainBatch(
            self.images.to(device, non_blocking=True), self.ref_images.to(device, non_blocking=True),
            self.img_shapes, self.pad_shapes, self.ref_img_shapes, mv(self.gt_boxes), mv(self.gt_labels),
            self.gt_masks, mv(self.gt_ref_index), mv(self.gt_boxes_ignore), mv(self.ref_boxes),
            self.video_ids, self.frame_indices, self.ref_frame_indices,
        )


@dataclass
class _FrameTargets:
    boxes: List[List[float]]  # [x1, y1, x2, y2] inclusive, original pixels
    labels: List[int]
    ann_ids: List[int]
    anns: List[VISAnnotation]
    crowd_boxes: List[List[float]]


class VISTrainDataset(Dataset):
    """Training pairs from a :class:`cmasktrack.data.ytvis.VISDataset` (or its json path).

    Args:
        annotations: the annotation file (path or parsed dataset).
        image_root: directory the ``file_names`` are relative to (default: the dataset's).
        scale: (long, short) size limits of the resize.
        mean, std, size_divisor: normalisation and padding (RGB, 0-255).
        flip_ratio: probability of mirroring a pair.
        ref_range: the reference is within +-``ref_range`` frames.

    Items are :class:`TrainSample`. ``dataset[i]`` draws its randomness from fresh entropy;
    ``dataset[(i, seed)]`` (what :class:`GroupedBatchSampler` yields) is deterministic.
    """

    def __init__(
        self,
        annotations: Union[PathLike, VISDataset],
        image_root: Optional[PathLike] = None,
        *,
        scale: Tuple[int, int] = DEFAULT_SCALE,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
        size_divisor: int = DEFAULT_SIZE_DIVISOR,
        flip_ratio: float = 0.5,
        ref_range: int = 5,
    ) -> None:
        if isinstance(annotations, VISDataset):
            self.vis = annotations
            if image_root is not None:
                from pathlib import Path

                self.vis.image_root = Path(image_root)
        else:
            self.vis = VISDataset.from_json(annotations, image_root=image_root)
        if self.vis.image_root is None:
            raise ValueError("VISTrainDataset needs image_root (the directory the file_names are relative to)")
        if not 0.0 <= flip_ratio <= 1.0:
            raise ValueError(f"flip_ratio must be in [0, 1], got {flip_ratio}")
        if ref_range < 1:
            raise ValueError(f"ref_range must be >= 1, got {ref_range}")
        self.scale = tuple(scale)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.size_divisor = size_divisor
        self.flip_ratio = float(flip_ratio)
        self.ref_range = int(ref_range)
        #: category id -> label (1-based position in the file's category list).
        self.cat2label: Dict[int, int] = {cid: i + 1 for i, cid in enumerate(self.vis.categories)}
        self.category_names: List[str] = [c.name for c in self.vis.categories.values()]
        self._targets: Dict[Tuple[int, int], _FrameTargets] = {}
        self.samples: List[Tuple[int, int]] = []
        self._usable: Dict[int, List[int]] = {}
        for vid, video in self.vis.videos.items():
            anns = self.vis.video_annotations(vid)
            usable = []
            for t in range(video.length):
                targets = self._frame_targets(anns, t)
                if targets.boxes:
                    self._targets[(vid, t)] = targets
                    usable.append(t)
                    self.samples.append((vid, t))
            self._usable[vid] = usable
        if not self.samples:
            raise ValueError("the annotation file has no frame with a usable (non-crowd, non-empty) ground truth")
        #: aspect-ratio group of each sample: 1 when the video is wider than tall (official flag).
        self.group_flags = np.array(
            [1 if self.vis.videos[v].width / self.vis.videos[v].height > 1 else 0 for v, _ in self.samples],
            dtype=np.int64,
        )

    @property
    def num_categories(self) -> int:
        return len(self.cat2label)

    def __len__(self) -> int:
        return len(self.samples)

    # ------------------------------------------------------------------ annotations
    def _frame_targets(self, anns: Sequence[VISAnnotation], t: int) -> _FrameTargets:
        targets = _FrameTargets([], [], [], [], [])
        for ann in anns:
            if is_absent(ann.segmentations[t]):
                continue
            box = self.vis.box(ann, t)
            if box is None:
                continue
            x, y, w, h = box
            if ann.areas is not None and ann.areas[t] is not None:
                area = float(ann.areas[t])
            else:
                from pycocotools import mask as mask_utils

                area = float(mask_utils.area(self.vis.rle(ann, t)))
            if area <= 0 or w < 1 or h < 1:
                continue
            corners = [x, y, x + w - 1, y + h - 1]
            if ann.iscrowd:
                targets.crowd_boxes.append(corners)
            else:
                targets.boxes.append(corners)
                targets.labels.append(self.cat2label[ann.category_id])
                targets.ann_ids.append(ann.id)
                targets.anns.append(ann)
        return targets

    def reference_candidates(self, video_id: int, frame_index: int) -> List[int]:
        """The frames the reference of ``frame_index`` is drawn from (see the module doc)."""
        usable = self._usable[video_id]
        near = [i for i in usable if i != frame_index and abs(i - frame_index) <= self.ref_range]
        if near:
            return near
        others = [i for i in usable if i != frame_index]
        return others or [frame_index]

    # ------------------------------------------------------------------ transforms
    @staticmethod
    def _transform_boxes(boxes: Sequence[Sequence[float]], meta: FrameMeta) -> torch.Tensor:
        if not boxes:
            return torch.zeros((0, 4), dtype=torch.float32)
        b = np.asarray(boxes, dtype=np.float32) * meta.scale_factor
        b = b.astype(np.float32)
        h, w = meta.img_shape
        if meta.flip:
            flipped = b.copy()
            flipped[:, 0] = w - b[:, 2] - 1
            flipped[:, 2] = w - b[:, 0] - 1
            b = flipped
        b[:, 0::2] = np.clip(b[:, 0::2], 0, w)
        b[:, 1::2] = np.clip(b[:, 1::2], 0, h)
        return torch.from_numpy(np.ascontiguousarray(b))

    def _masks(self, anns: Sequence[VISAnnotation], t: int, meta: FrameMeta) -> torch.Tensor:
        h, w = meta.img_shape
        hp, wp = meta.pad_shape
        out = np.zeros((len(anns), hp, wp), dtype=np.uint8)
        for i, ann in enumerate(anns):
            m = self.vis.mask(ann, t)
            r = resize_nearest_uint8(m, w, h)
            if meta.flip:
                r = r[:, ::-1]
            out[i, :h, :w] = r
        return torch.from_numpy(out)

    def _load(self, video_id: int, t: int, flip: bool) -> Tuple[torch.Tensor, FrameMeta]:
        img = self.vis.read_frame(video_id, t)
        return preprocess_frame(img, self.scale, self.mean, self.std, self.size_divisor, flip=flip)

    # ------------------------------------------------------------------ items
    def pair(self, video_id: int, frame: int, ref_frame: int, flip: bool = False) -> TrainSample:
        """The training pair of frame ``frame`` of video ``video_id`` (the json's id) with
        reference frame ``ref_frame`` — what one draw of the random sampler builds, without
        the randomness: the official ``OVISDataset.prepare_train_img`` for that draw.

        Images: read, resized keeping the aspect ratio (OpenCV's uint8 bilinear), normalised,
        mirrored when ``flip``, zero-padded to a multiple of ``size_divisor``. Ground truth of
        ``frame``: boxes ``[x, y, x + w - 1, y + h - 1]`` from the json's ``bboxes``, scaled,
        mirrored, clipped to the resized image; labels = 1-based position of the category in
        the file; ``gt_ref_index`` = 1 + the object's index among the reference frame's
        ground truths (0 when absent there); masks resized (nearest), mirrored and padded like
        the image; crowd boxes as ``gt_boxes_ignore`` (without masks: see the module doc).
        ``ref_boxes``: the reference frame's ground-truth boxes, transformed the same way.

        ``frame`` must have a usable ground truth (the frames in :attr:`samples`); ``ref_frame``
        may be any frame of the video (the sampler picks usable ones within ``ref_range``).
        """
        if video_id not in self.vis.videos:
            raise KeyError(f"no video with id {video_id} in the annotations")
        length = self.vis.videos[video_id].length
        for name, t in (("frame", frame), ("ref_frame", ref_frame)):
            if not 0 <= int(t) < length:
                raise IndexError(f"{name} {t} is out of range for video {video_id} ({length} frames)")
        frame, ref_frame = int(frame), int(ref_frame)
        targets = self._targets.get((video_id, frame))
        if targets is None:
            raise ValueError(f"frame {frame} of video {video_id} has no usable ground truth (non-crowd, w, h >= 1, "
                             "positive area): it is not a training frame")
        ref_targets = self._targets.get((video_id, ref_frame))
        if ref_targets is None:
            ref_targets = self._frame_targets(self.vis.video_annotations(video_id), ref_frame)
        image, meta = self._load(video_id, frame, flip)
        ref_image, ref_meta = self._load(video_id, ref_frame, flip)
        ref_position = {ann_id: j + 1 for j, ann_id in enumerate(ref_targets.ann_ids)}
        return TrainSample(
            image=image,
            ref_image=ref_image,
            meta=meta,
            ref_meta=ref_meta,
            gt_boxes=self._transform_boxes(targets.boxes, meta),
            gt_labels=torch.tensor(targets.labels, dtype=torch.long),
            gt_masks=self._masks(targets.anns, frame, meta),
            gt_ref_index=torch.tensor([ref_position.get(a, 0) for a in targets.ann_ids], dtype=torch.long),
            gt_boxes_ignore=self._transform_boxes(targets.crowd_boxes, meta),
            ref_boxes=self._transform_boxes(ref_targets.boxes, ref_meta),
            video_id=video_id,
            frame_index=frame,
            ref_frame_index=ref_frame,
        )

    def __getitem__(self, key: Union[int, Tuple[int, int]]) -> TrainSample:
        if isinstance(key, tuple):
            index, seed = key
            rng = np.random.default_rng(int(seed))
        else:
            index, rng = key, np.random.default_rng()
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample index {index} out of range ({len(self)} samples)")
        video_id, frame = self.samples[index]
        candidates = self.reference_candidates(video_id, frame)
        ref_frame = candidates[int(rng.integers(len(candidates)))]
        flip = bool(rng.random() < self.flip_ratio)
        return self.pair(video_id, frame, ref_frame, flip)


def _pad_stack(tensors: Sequence[torch.Tensor], h: int, w: int) -> torch.Tensor:
    out = tensors[0].new_zeros((len(tensors), tensors[0].size(0), h, w))
    for i, t in enumerate(tensors):
        out[i, :, : t.size(1), : t.size(2)] = t
    return out


def collate_train(samples: Sequence[TrainSample]) -> TrainBatch:
    """Stack a list of :class:`TrainSample`: images and reference images zero-padded to the
    largest height and width in the batch (both kinds together)."""
    if not samples:
        raise ValueError("collate_train got an empty batch")
    h = max(max(s.image.size(1), s.ref_image.size(1)) for s in samples)
    w = max(max(s.image.size(2), s.ref_image.size(2)) for s in samples)
    return TrainBatch(
        images=_pad_stack([s.image for s in samples], h, w),
        ref_images=_pad_stack([s.ref_image for s in samples], h, w),
        img_shapes=[tuple(s.meta.img_shape) for s in samples],
        pad_shapes=[tuple(s.meta.pad_shape) for s in samples],
        ref_img_shapes=[tuple(s.ref_meta.img_shape) for s in samples],
        gt_boxes=[s.gt_boxes for s in samples],
        gt_labels=[s.gt_labels for s in samples],
        gt_masks=[s.gt_masks for s in samples],
        gt_ref_index=[s.gt_ref_index for s in samples],
        gt_boxes_ignore=[s.gt_boxes_ignore for s in samples],
        ref_boxes=[s.ref_boxes for s in samples],
        video_ids=[s.video_id for s in samples],
        frame_indices=[s.frame_index for s in samples],
        ref_frame_indices=[s.ref_frame_index for s in samples],
    )


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The per-sample seed of the sample at ``position`` of ``epoch``'s order."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(position)]).generate_state(1)[0])


class GroupedBatchSampler(Sampler):
    """Batches of ``(sample index, sample seed)`` for one process, as the official
    ``GroupSampler`` / ``DistributedGroupSampler``.

    Every epoch, each aspect-ratio group is shuffled and padded (by repeating its first samples)
    to a multiple of ``batch_size * num_replicas``, cut into batches, and the batches of all
    groups are shuffled together; process ``rank`` takes its contiguous share. The order
    depends only on ``(seed, epoch)``. :meth:`set_epoch` picks the epoch and
    :meth:`set_start` skips the first batches (to resume inside an epoch).
    """

    def __init__(self, group_flags: Sequence[int], batch_size: int, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0, shuffle: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.flags = np.asarray(group_flags, dtype=np.int64)
        if self.flags.ndim != 1 or self.flags.size == 0:
            raise ValueError("group_flags must be a non-empty 1-D sequence")
        self.batch_size = int(batch_size)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0
        chunk = self.batch_size * self.num_replicas
        total = sum(int(math.ceil(n / chunk)) * chunk for n in np.bincount(self.flags) if n > 0)
        self._batches_per_replica = total // chunk

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, batch_index: int) -> None:
        if not 0 <= batch_index <= len(self):
            raise ValueError(f"start batch must be in [0, {len(self)}], got {batch_index}")
        self.start = int(batch_index)

    def __len__(self) -> int:
        return self._batches_per_replica

    def epoch_batches(self, epoch: int) -> List[List[int]]:
        """All batches of this process in ``epoch`` (sample indices only)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        chunk = self.batch_size * self.num_replicas
        batches: List[np.ndarray] = []
        for g in np.unique(self.flags):
            idx = np.nonzero(self.flags == g)[0]
            if self.shuffle:
                idx = idx[rng.permutation(idx.size)]
            extra = int(math.ceil(idx.size / chunk)) * chunk - idx.size
            idx = np.concatenate([idx, np.resize(idx, extra)]) if extra else idx
            batches.extend(idx.reshape(-1, self.batch_size))
        order = rng.permutation(len(batches)) if self.shuffle else np.arange(len(batches))
        batches = [batches[i] for i in order]
        mine = batches[self.rank * len(self): (self.rank + 1) * len(self)]
        return [[int(i) for i in b] for b in mine]

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        batches = self.epoch_batches(self.epoch)
        for b in range(self.start, len(batches)):
            base = (self.rank * len(self) + b) * self.batch_size
            yield [(i, sample_seed(self.seed, self.epoch, base + j)) for j, i in enumerate(batches[b])]
        self.start = 0
