"""Box arithmetic in the legacy (mmdetection v1 / Detectron) convention the official weights use.

Boxes are ``(x1, y1, x2, y2)`` with *inclusive* corners: a box's width is ``x2 - x1 + 1``.
torchvision's ops use exclusive corners (width ``x2 - x1``); where we call them, boxes are
shifted by +1 on ``x2, y2`` first so that the legacy quantities come out.
"""

from __future__ import annotations

import math
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
from torchvision.ops import nms

#: dw, dh are clamped to this magnitude before ``exp`` (|log(16 / 1000)|).
BBOX_XFORM_CLIP = abs(math.log(16.0 / 1000.0))


def _to_exclusive(boxes: torch.Tensor) -> torch.Tensor:
    """(x1, y1, x2, y2) inclusive -> exclusive corners, for torchvision's ops."""
    return torch.cat([boxes[:, :2], boxes[:, 2:4] + 1], dim=1)


def decode_boxes(
    rois: torch.Tensor,
    deltas: torch.Tensor,
    stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    max_shape: Optional[Tuple[int, int]] = None,
) -> torch.Tensor:
    """Apply regression ``deltas`` (N, 4k) to ``rois`` (N, 4), legacy "+1" convention.

    Means are zero (as in every official config). ``max_shape`` = (height, width): boxes are
    clipped to ``[0, width - 1] x [0, height - 1]``.
    """
    stds_t = deltas.new_tensor(stds).repeat(deltas.size(1) // 4)
    d = deltas * stds_t
    dx, dy, dw, dh = d[:, 0::4], d[:, 1::4], d[:, 2::4], d[:, 3::4]
    dw = dw.clamp(min=-BBOX_XFORM_CLIP, max=BBOX_XFORM_CLIP)
    dh = dh.clamp(min=-BBOX_XFORM_CLIP, max=BBOX_XFORM_CLIP)
    px = ((rois[:, 0] + rois[:, 2]) * 0.5).unsqueeze(1)
    py = ((rois[:, 1] + rois[:, 3]) * 0.5).unsqueeze(1)
    pw = (rois[:, 2] - rois[:, 0] + 1.0).unsqueeze(1)
    ph = (rois[:, 3] - rois[:, 1] + 1.0).unsqueeze(1)
    gw = pw * dw.exp()
    gh = ph * dh.exp()
    gx = px + pw * dx
    gy = py + ph * dy
    x1 = gx - gw * 0.5 + 0.5
    y1 = gy - gh * 0.5 + 0.5
    x2 = gx + gw * 0.5 - 0.5
    y2 = gy + gh * 0.5 - 0.5
    if max_shape is not None:
        h, w = max_shape
        x1 = x1.clamp(min=0, max=w - 1)
        y1 = y1.clamp(min=0, max=h - 1)
        x2 = x2.clamp(min=0, max=w - 1)
        y2 = y2.clamp(min=0, max=h - 1)
    return torch.stack([x1, y1, x2, y2], dim=-1).view_as(deltas)


def encode_boxes(
    proposals: torch.Tensor, gt: torch.Tensor, stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
) -> torch.Tensor:
    """Regression targets taking ``proposals`` (N, 4) to ``gt`` (N, 4); inverse of :func:`decode_boxes`."""
    proposals = proposals.float()
    gt = gt.float()
    px = (proposals[:, 0] + proposals[:, 2]) * 0.5
    py = (proposals[:, 1] + proposals[:, 3]) * 0.5
    pw = proposals[:, 2] - proposals[:, 0] + 1.0
    ph = proposals[:, 3] - proposals[:, 1] + 1.0
    gx = (gt[:, 0] + gt[:, 2]) * 0.5
    gy = (gt[:, 1] + gt[:, 3]) * 0.5
    gw = gt[:, 2] - gt[:, 0] + 1.0
    gh = gt[:, 3] - gt[:, 1] + 1.0
    deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
    return deltas / deltas.new_tensor(stds)


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU (M, N) with legacy "+1" areas, computed in the official arithmetic order
    (it feeds the tracker's comprehensive score, so the float rounding is kept the same)."""
    if boxes1.numel() == 0 or boxes2.numel() == 0:
        return boxes1.new_zeros((boxes1.size(0), boxes2.size(0)))
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, None, 2:4], boxes2[:, 2:4])
    wh = (rb - lt + 1).clamp(min=0)
    overlap = wh[:, :, 0] * wh[:, :, 1]
    area1 = (boxes1[:, 2] - boxes1[:, 0] + 1) * (boxes1[:, 3] - boxes1[:, 1] + 1)
    area2 = (boxes2[:, 2] - boxes2[:, 0] + 1) * (boxes2[:, 3] - boxes2[:, 1] + 1)
    return overlap / (area1[:, None] + area2 - overlap)


def box_iof(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over the area of ``boxes1`` (M, N), legacy "+1" areas."""
    if boxes1.numel() == 0 or boxes2.numel() == 0:
        return boxes1.new_zeros((boxes1.size(0), boxes2.size(0)))
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, None, 2:4], boxes2[:, 2:4])
    wh = (rb - lt + 1).clamp(min=0)
    area1 = (boxes1[:, 2] - boxes1[:, 0] + 1) * (boxes1[:, 3] - boxes1[:, 1] + 1)
    return wh[:, :, 0] * wh[:, :, 1] / area1[:, None]


_SMALL_QUICKSORT = 15  # numpy's partitions of at most 16 elements are insertion-sorted


def _lt(a: float, b: float) -> bool:
    """numpy's float ``<`` for sorting: NaNs sort last."""
    return a < b or (b != b and a == a)


def _heapsort_indices(v: List[float], idx: List[int], lo: int, n: int) -> None:
    """numpy's ``aheapsort`` on ``idx[lo:lo + n]`` (the introsort's depth-limit fallback)."""
    def get(k: int) -> int:  # heap positions are 1-based
        return idx[lo + k - 1]

    def put(k: int, x: int) -> None:
        idx[lo + k - 1] = x

    def sift(i: int, top: int, tmp: int) -> None:
        j = i << 1
        while j <= top:
            if j < top and _lt(v[get(j)], v[get(j + 1)]):
                j += 1
            if _lt(v[tmp], v[get(j)]):
                put(i, get(j))
                i, j = j, j + j
            else:
                break
        put(i, tmp)

    for start in range(n >> 1, 0, -1):
        sift(start, n, get(start))
    while n > 1:
        tmp = get(n)
        put(n, get(1))
        n -= 1
        sift(1, n, tmp)


def numpy1_argsort(values: Sequence[float]) -> List[int]:
    """The permutation numpy 1.x's default ``argsort`` (``kind="quicksort"``) returns.

    That sort is not stable: its order among equal values comes from the algorithm, an
    introsort (median-of-three quicksort, partitions of up to 16 elements insertion-sorted,
    heapsort past a depth of 2·floor(log2 n)), reproduced here step by step. The official NMS
    visits boxes in ``scores.argsort()[::-1]`` order (numpy, on the CPU, also for the GPU
    kernel), so this decides which of several boxes with *equal* scores survives. numpy 2 can
    dispatch ``argsort`` to SIMD sorts with another tie order, hence not ``np.argsort``.
    """
    v = [float(x) for x in values]
    n = len(v)
    idx = list(range(n))
    if n < 2:
        return idx
    stack: List[Tuple[int, int, int]] = []
    pl, pr = 0, n - 1
    cdepth = 2 * (n.bit_length() - 1)
    while True:
        if cdepth < 0:
            _heapsort_indices(v, idx, pl, pr - pl + 1)
        else:
            while pr - pl > _SMALL_QUICKSORT:
                pm = pl + ((pr - pl) >> 1)
                if _lt(v[idx[pm]], v[idx[pl]]):
                    idx[pm], idx[pl] = idx[pl], idx[pm]
                if _lt(v[idx[pr]], v[idx[pm]]):
                    idx[pr], idx[pm] = idx[pm], idx[pr]
                if _lt(v[idx[pm]], v[idx[pl]]):
                    idx[pm], idx[pl] = idx[pl], idx[pm]
                vp = v[idx[pm]]
                pi, pj = pl, pr - 1
                idx[pm], idx[pj] = idx[pj], idx[pm]
                while True:
                    pi += 1
                    while _lt(v[idx[pi]], vp):
                        pi += 1
                    pj -= 1
                    while _lt(vp, v[idx[pj]]):
                        pj -= 1
                    if pi >= pj:
                        break
                    idx[pi], idx[pj] = idx[pj], idx[pi]
                idx[pi], idx[pr - 1] = idx[pr - 1], idx[pi]
                cdepth -= 1
                if pi - pl < pr - pi:  # the larger part waits on the stack
                    stack.append((pi + 1, pr, cdepth))
                    pr = pi - 1
                else:
                    stack.append((pl, pi - 1, cdepth))
                    pl = pi + 1
            for pi in range(pl + 1, pr + 1):  # insertion sort
                vi = idx[pi]
                vp = v[vi]
                pj = pi
                while pj > pl and _lt(vp, v[idx[pj - 1]]):
                    idx[pj] = idx[pj - 1]
                    pj -= 1
                idx[pj] = vi
        if not stack:
            return idx
        pl, pr, cdepth = stack.pop()


def _has_ties(scores: torch.Tensor) -> bool:
    return torch.unique(scores).numel() != scores.numel()


def _numpy1_descending(scores: torch.Tensor) -> torch.Tensor:
    order = numpy1_argsort(scores.detach().float().cpu().tolist())[::-1]
    return torch.as_tensor(order, dtype=torch.long, device=scores.device)


def official_nms_order(scores: torch.Tensor) -> torch.Tensor:
    """Deprecated (unused: :func:`nms_legacy` orders its boxes itself). Indices by descending
    score in the order the official NMS visits them: ``numpy1_argsort(scores)[::-1]`` (float32
    values), so equal scores come in numpy 1.x's order — for up to 16 boxes, the later box
    first."""
    warnings.warn("official_nms_order is deprecated (unused): nms_legacy visits equal scores in this order itself",
                  DeprecationWarning, stacklevel=2)
    scores = scores.float()
    if _has_ties(scores):
        return _numpy1_descending(scores)
    return torch.argsort(scores, descending=True)  # no ties: any sort gives this order


def nms_legacy(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS with "+1" areas that suppresses IoU > threshold; indices by descending score.

    torchvision's nms on boxes shifted to exclusive corners: its IoU is then the legacy one.
    Boxes with equal scores are visited in the official order, ``numpy1_argsort(scores)[::-1]``
    (numpy 1.x's tie order: for up to 16 boxes the later box first), not torchvision's.
    """
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.long, device=boxes.device)
    scores = scores.float()
    if not _has_ties(scores):
        return nms(_to_exclusive(boxes).float(), scores, iou_threshold)
    order = _numpy1_descending(scores)
    ranks = torch.arange(order.numel(), 0, -1, dtype=torch.float32, device=boxes.device)
    keep = nms(_to_exclusive(boxes[order]).float(), ranks, iou_threshold)
    return order[keep]

