"""Training targets, as the official mmdetection v1 code computes them.

* :func:`assign_max_iou` is mmdetection's ``MaxIoUAssigner`` (legacy "+1" IoU): negatives below
  ``neg_iou``, positives at or above ``pos_iou``, then every ground truth takes the boxes that
  overlap it best (all of them when tied) if that IoU reaches ``min_pos_iou`` — later ground
  truths overriding earlier ones. torchvision's ``Matcher`` differs in that last rule (it keeps
  each box's own best ground truth and has no minimum IoU), so it is not used.
* :func:`sample_balanced` is ``RandomSampler``: a uniformly random subset of at most
  ``num * pos_fraction`` positives, then negatives up to ``num`` in total. It draws from an
  explicit ``torch.Generator`` so training is reproducible and resumable; torchvision's
  ``BalancedPositiveNegativeSampler`` draws from the global generator.
* :func:`rpn_targets` is ``anchor_target`` (anchors must lie inside the image, ``allowed_border``
  0; no label for anchors outside), :func:`sample_rois` the RCNN assignment and sampling with the
  ground truths prepended to the proposals, :func:`mask_targets` ``mask_target`` (the ground-truth
  mask cropped to the integer proposal and resized to 28x28 with OpenCV's uint8 bilinear
  kernel, ported exactly in :func:`cmasktrack.transforms.resize_bilinear_uint8`).

Boxes are ``(x1, y1, x2, y2)`` with inclusive corners (width ``x2 - x1 + 1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..modeling.boxes import box_iof, box_iou, encode_boxes
from ..modeling.roi_heads import BBOX_STDS
from ..transforms import resize_bilinear_uint8

__all__ = [
    "AssignResult",
    "assign_max_iou",
    "random_subset",
    "sample_balanced",
    "anchor_valid_flags",
    "anchor_inside_flags",
    "RPNTargets",
    "rpn_targets",
    "RoISample",
    "sample_rois",
    "mask_targets",
]


@dataclass
class AssignResult:
    """Result of :func:`assign_max_iou` for N boxes.

    ``gt_inds`` (N,) long: -1 = ignored ("don't care"), 0 = negative, k > 0 = positive for
    ground truth k - 1. ``max_overlaps`` (N,) the best IoU of each box (-1 where ignored as crowd).
    """

    gt_inds: torch.Tensor
    max_overlaps: torch.Tensor


def assign_max_iou(
    boxes: torch.Tensor,
    gt_boxes: torch.Tensor,
    pos_iou: float,
    neg_iou: float,
    min_pos_iou: float = 0.0,
    gt_max_assign_all: bool = True,
    gt_boxes_ignore: Optional[torch.Tensor] = None,
    ignore_iof_thr: float = -1.0,
) -> AssignResult:
    """Assign each box (N, 4+) to a ground truth (K, 4) or to the background, mmdetection's way.

    Steps, in this order: every box starts "ignored" (-1); boxes whose best IoU is in
    ``[0, neg_iou)`` become negative (0); boxes whose best IoU is ``>= pos_iou`` take that
    ground truth; then for each ground truth in order, if its best IoU over all boxes is
    ``>= min_pos_iou``, every box with exactly that IoU (``gt_max_assign_all``; else the first)
    is assigned to it. With ``ignore_iof_thr > 0``, boxes whose intersection-over-own-area
    with a crowd box in ``gt_boxes_ignore`` exceeds it are never negative or positive.

    With no ground truth every box is negative; with no box the result is empty.
    """
    boxes = boxes[:, :4]
    n = boxes.size(0)
    k = gt_boxes.size(0)
    gt_inds = torch.full((n,), -1, dtype=torch.long, device=boxes.device)
    if n == 0:
        return AssignResult(gt_inds, boxes.new_zeros((0,)))
    if k == 0:
        return AssignResult(torch.zeros_like(gt_inds), boxes.new_zeros((n,)))
    overlaps = box_iou(gt_boxes.to(boxes.dtype), boxes)  # (K, N)
    if ignore_iof_thr > 0 and gt_boxes_ignore is not None and gt_boxes_ignore.numel() > 0:
        iof = box_iof(boxes, gt_boxes_ignore.to(boxes.dtype))  # (N, M)
        ignored = iof.max(dim=1).values > ignore_iof_thr
        overlaps[:, ignored] = -1
    max_overlaps, argmax_overlaps = overlaps.max(dim=0)
    gt_max_overlaps, gt_argmax_overlaps = overlaps.max(dim=1)
    gt_inds[(max_overlaps >= 0) & (max_overlaps < neg_iou)] = 0
    pos = max_overlaps >= pos_iou
    gt_inds[pos] = argmax_overlaps[pos] + 1
    for i in range(k):
        if gt_max_overlaps[i] >= min_pos_iou:
            if gt_max_assign_all:
                gt_inds[overlaps[i] == gt_max_overlaps[i]] = i + 1
            else:
                gt_inds[gt_argmax_overlaps[i]] = i + 1
    return AssignResult(gt_inds, max_overlaps)


def random_subset(indices: torch.Tensor, num: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``indices`` itself if it has at most ``num`` entries, else ``num`` of them drawn
    uniformly without replacement (in random order)."""
    if indices.numel() <= num:
        return indices
    perm = torch.randperm(indices.numel(), generator=generator)[:num].to(indices.device)
    return indices[perm]


def sample_balanced(
    gt_inds: torch.Tensor, num: int, pos_fraction: float, generator: Optional[torch.Generator] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """mmdetection's ``RandomSampler``: at most ``int(num * pos_fraction)`` random positives
    (``gt_inds > 0``), then random negatives (``gt_inds == 0``) up to ``num`` samples in total.

    Returns ``(pos_inds, neg_inds)``, each sorted ascending (the official ``unique()``).
    """
    pos = torch.nonzero(gt_inds > 0).squeeze(1)
    pos = random_subset(pos, int(num * pos_fraction), generator).unique()
    neg = torch.nonzero(gt_inds == 0).squeeze(1)
    neg = random_subset(neg, num - pos.numel(), generator).unique()
    return pos, neg


# ------------------------------------------------------------------------------------------
# RPN


def anchor_valid_flags(
    feature_sizes: Sequence[Tuple[int, int]], strides: Sequence[int], num_anchors: int,
    pad_shape: Tuple[int, int], device: Union[str, torch.device] = "cpu",
) -> torch.Tensor:
    """Which anchors (all levels, (y, x, anchor) order) sit on the feature cells that cover
    this image's own padded area ``pad_shape`` (a batch is padded to its largest image)."""
    flags = []
    for (fh, fw), s in zip(feature_sizes, strides):
        vh = min(int(np.ceil(pad_shape[0] / s)), fh)
        vw = min(int(np.ceil(pad_shape[1] / s)), fw)
        ys = torch.arange(fh, device=device) < vh
        xs = torch.arange(fw, device=device) < vw
        cell = ys[:, None] & xs[None, :]
        flags.append(cell[:, :, None].expand(fh, fw, num_anchors).reshape(-1))
    return torch.cat(flags)


def anchor_inside_flags(anchors: torch.Tensor, valid: torch.Tensor, img_shape: Tuple[int, int],
                        allowed_border: int = 0) -> torch.Tensor:
    """Valid anchors lying inside the (resized, unpadded) image give or take ``allowed_border``
    pixels: ``x1 >= -b, y1 >= -b, x2 < w + b, y2 < h + b``; ``b < 0`` keeps every valid anchor."""
    if allowed_border < 0:
        return valid.clone()
    h, w = img_shape
    b = allowed_border
    return (valid & (anchors[:, 0] >= -b) & (anchors[:, 1] >= -b)
            & (anchors[:, 2] < w + b) & (anchors[:, 3] < h + b))


@dataclass
class RPNTargets:
    """Targets of all anchors of one image (all levels concatenated in (y, x, anchor) order).

    ``labels`` (A,) float 1/0, ``label_weights`` (A,) 1 for sampled anchors, ``box_targets``
    (A, 4) encoded deltas (zero where not positive), ``box_weights`` (A, 4); ``num_pos`` and
    ``num_neg`` sampled anchors.
    """

    labels: torch.Tensor
    label_weights: torch.Tensor
    box_targets: torch.Tensor
    box_weights: torch.Tensor
    num_pos: int
    num_neg: int


def rpn_targets(
    anchors: torch.Tensor,
    valid: torch.Tensor,
    gt_boxes: torch.Tensor,
    img_shape: Tuple[int, int],
    *,
    pos_iou: float = 0.7,
    neg_iou: float = 0.3,
    min_pos_iou: float = 0.3,
    num_samples: int = 256,
    pos_fraction: float = 0.5,
    allowed_border: int = 0,
    generator: Optional[torch.Generator] = None,
) -> RPNTargets:
    """The official ``anchor_target`` for one image: assign the anchors inside the image with
    :func:`assign_max_iou`, sample with :func:`sample_balanced`, encode positives (stds 1)."""
    a = anchors.size(0)
    labels = anchors.new_zeros((a,))
    label_weights = anchors.new_zeros((a,))
    box_targets = anchors.new_zeros((a, 4))
    box_weights = anchors.new_zeros((a, 4))
    inside = anchor_inside_flags(anchors, valid, img_shape, allowed_border)
    inside_idx = torch.nonzero(inside).squeeze(1)
    if inside_idx.numel() == 0:
        return RPNTargets(labels, label_weights, box_targets, box_weights, 0, 0)
    inner = anchors[inside_idx]
    assigned = assign_max_iou(inner, gt_boxes, pos_iou, neg_iou, min_pos_iou)
    pos, neg = sample_balanced(assigned.gt_inds, num_samples, pos_fraction, generator)
    if pos.numel():
        pos_anchors = inside_idx[pos]
        gt = gt_boxes[assigned.gt_inds[pos] - 1].to(anchors.dtype)
        box_targets[pos_anchors] = encode_boxes(inner[pos], gt).to(anchors.dtype)
        box_weights[pos_anchors] = 1.0
        labels[pos_anchors] = 1.0
        label_weights[pos_anchors] = 1.0
    if neg.numel():
        label_weights[inside_idx[neg]] = 1.0
    return RPNTargets(labels, label_weights, box_targets, box_weights, int(pos.numel()), int(neg.numel()))


# ------------------------------------------------------------------------------------------
# RCNN


@dataclass
class RoISample:
    """The sampled RoIs of one image: ``boxes`` (S, 4) positives first, then negatives.

    ``labels`` (S,) class of each RoI (0 for negatives); for the ``num_pos`` positives:
    ``pos_gt_index`` (P,) 0-based ground truth, ``box_targets`` (P, 4) deltas with the RCNN
    stds, ``ref_targets`` (P,) the match target over [new, reference objects] (the ground
    truth's index in the reference frame + 1, 0 = not there).
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    num_pos: int
    pos_gt_index: torch.Tensor
    box_targets: torch.Tensor
    ref_targets: torch.Tensor

    @property
    def pos_boxes(self) -> torch.Tensor:
        return self.boxes[: self.num_pos]


def sample_rois(
    proposals: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_labels: torch.Tensor,
    gt_ref_index: torch.Tensor,
    *,
    gt_boxes_ignore: Optional[torch.Tensor] = None,
    pos_iou: float = 0.5,
    neg_iou: float = 0.5,
    min_pos_iou: float = 0.5,
    num_samples: int = 512,
    pos_fraction: float = 0.25,
    add_gt_as_proposals: bool = True,
    ignore_iof_thr: float = -1.0,
    stds: Sequence[float] = BBOX_STDS,
    generator: Optional[torch.Generator] = None,
) -> RoISample:
    """The official RCNN assignment + sampling of one image.

    The proposals (N, 4+) are assigned with :func:`assign_max_iou`; then (``add_gt_as_proposals``)
    the ground truths are prepended as proposals assigned to themselves; then
    :func:`sample_balanced` picks the RoIs.
    """
    boxes = proposals[:, :4].detach()
    assigned = assign_max_iou(boxes, gt_boxes, pos_iou, neg_iou, min_pos_iou,
                              gt_boxes_ignore=gt_boxes_ignore, ignore_iof_thr=ignore_iof_thr)
    gt_inds = assigned.gt_inds
    if add_gt_as_proposals and gt_boxes.numel():
        k = gt_boxes.size(0)
        boxes = torch.cat([gt_boxes.to(boxes.dtype), boxes], dim=0)
        gt_inds = torch.cat([torch.arange(1, k + 1, dtype=torch.long, device=boxes.device), gt_inds])
    pos, neg = sample_balanced(gt_inds, num_samples, pos_fraction, generator)
    pos_gt_index = gt_inds[pos] - 1
    sampled = torch.cat([boxes[pos], boxes[neg]], dim=0)
    labels = torch.zeros((sampled.size(0),), dtype=torch.long, device=boxes.device)
    labels[: pos.numel()] = gt_labels[pos_gt_index]
    if pos.numel():
        box_targets = encode_boxes(boxes[pos], gt_boxes[pos_gt_index], stds).to(boxes.dtype)
    else:
        box_targets = boxes.new_zeros((0, 4))
    return RoISample(sampled, labels, int(pos.numel()), pos_gt_index, box_targets, gt_ref_index[pos_gt_index])


def mask_targets(
    pos_boxes: torch.Tensor,
    pos_gt_index: torch.Tensor,
    gt_masks: Union[np.ndarray, torch.Tensor],
    mask_size: int = 28,
) -> torch.Tensor:
    """The official ``mask_target``: for each positive box, its ground truth's binary mask
    (K, H, W, network resolution) cropped to the box truncated to integers (``x1:x1 + w`` with
    ``w = max(x2 - x1 + 1, 1)``, the same vertically) and resized to ``mask_size`` squared with
    OpenCV's uint8 bilinear kernel. Returns (P, mask_size, mask_size) float32 of 0/1 values on
    ``pos_boxes``' device.
    """
    p = pos_boxes.size(0)
    if p == 0:
        return pos_boxes.new_zeros((0, mask_size, mask_size), dtype=torch.float32)
    masks = gt_masks.cpu().numpy() if isinstance(gt_masks, torch.Tensor) else np.asarray(gt_masks)
    if masks.dtype != np.uint8:
        masks = masks.astype(np.uint8)
    boxes = pos_boxes.detach().cpu().numpy().astype(np.int32)
    inds = pos_gt_index.cpu().numpy()
    out = np.zeros((p, mask_size, mask_size), dtype=np.uint8)
    for i in range(p):
        x1, y1, x2, y2 = (int(v) for v in boxes[i, :4])
        w = max(x2 - x1 + 1, 1)
        h = max(y2 - y1 + 1, 1)
        crop = masks[inds[i], max(y1, 0): y1 + h, max(x1, 0): x1 + w]
        if crop.size:
            out[i] = resize_bilinear_uint8(np.ascontiguousarray(crop), mask_size, mask_size)
    return torch.from_numpy(out).to(device=pos_boxes.device, dtype=torch.float32)
