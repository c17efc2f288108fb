"""Multi-level RoIAlign in the legacy (mmdetection v1, "not aligned") convention.

Legacy RoIAlign: start = x1 * scale, end = (x2 + 1) * scale, size = max(end - start, 0),
2 x 2 samples per bin at (i + 0.5) / 2 of the bin, bilinear interpolation with zero outside
[-1, H] x [-1, W] and clamping at the border. ``torchvision.ops.roi_align(aligned=False)`` does
exactly this once x2, y2 get +1 — except that it forces sizes below one feature cell up to 1.
RoIs smaller than a cell (they do occur: boxes squeezed against the image border, tiny objects)
are recomputed here by :func:`legacy_roi_align_small`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torchvision.ops import roi_align


def map_roi_levels(rois: torch.Tensor, num_levels: int, finest_scale: int = 56) -> torch.Tensor:
    """FPN level (0-based) of each RoI (K, 5): floor(log2(sqrt(w h) / 56 + 1e-6)), clamped."""
    scale = torch.sqrt((rois[:, 3] - rois[:, 1] + 1) * (rois[:, 4] - rois[:, 2] + 1))
    lvl = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return lvl.clamp(min=0, max=num_levels - 1).long()


def _axis_weights(start: torch.Tensor, size: torch.Tensor, length: int, out: int, samples: int):
    """Separable legacy-bilinear weights along one axis for one RoI.

    Returns (first index, (out, n) matrix A) such that the bin averages along this axis are
    ``A @ f[first:first + n]``: A[p, i] = mean over the bin's samples of their bilinear weight on
    cell first + i (zero for samples outside [-1, length]).
    """
    offs = (torch.arange(out, dtype=start.dtype, device=start.device)[:, None]
            + (torch.arange(samples, dtype=start.dtype, device=start.device)[None, :] + 0.5) / samples)
    pos = start + offs * (size / out)  # (out, samples)
    valid = ((pos >= -1.0) & (pos <= length)).to(pos.dtype)
    pos = pos.clamp(min=0)
    low = pos.floor().long()
    at_end = low >= length - 1
    low = torch.where(at_end, torch.full_like(low, length - 1), low)
    pos = torch.where(at_end, low.to(pos.dtype), pos)
    high = torch.where(at_end, low, low + 1)
    frac = pos - low
    first = int(low.min())
    n = int(high.max()) - first + 1
    a = pos.new_zeros((out, n))
    a.scatter_add_(1, low - first, (1.0 - frac) * valid)
    a.scatter_add_(1, high - first, frac * valid)
    return first, a / samples


def _separable_roi_align(
    feat: torch.Tensor, box: torch.Tensor, output_size: int, spatial_scale: float, sampling_ratio: int
) -> torch.Tensor:
    """Legacy RoIAlign of one box (x1, y1, x2, y2) on every batch row of ``feat`` (B, C, H, W)
    -> (B, C, P, P). Bilinear sampling is separable, so the result is ``Ay @ f[window] @ Ax^T``
    with the per-axis weight matrices of :func:`_axis_weights` over the cells the box touches."""
    H, W = feat.shape[-2:]
    x1 = box[0] * spatial_scale
    y1 = box[1] * spatial_scale
    rw = ((box[2] + 1) * spatial_scale - x1).clamp(min=0)
    rh = ((box[3] + 1) * spatial_scale - y1).clamp(min=0)
    y0, ay = _axis_weights(y1, rh, H, output_size, sampling_ratio)
    x0, ax = _axis_weights(x1, rw, W, output_size, sampling_ratio)
    window = feat[:, :, y0: y0 + ay.size(1), x0: x0 + ax.size(1)]
    return torch.einsum("pi,bcij,qj->bcpq", ay, window, ax)


def legacy_roi_align_small(
    feat: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float, sampling_ratio: int = 2
) -> torch.Tensor:
    """Legacy RoIAlign of ``rois`` (K, 5) on ``feat`` (N, C, H, W) in plain PyTorch, one RoI at a
    time (:func:`_separable_roi_align`). Meant for the RoIs torchvision cannot do (smaller than
    one feature cell); any RoI works."""
    out = feat.new_zeros((rois.size(0), feat.size(1), output_size, output_size))
    for k in range(rois.size(0)):
        b = int(rois[k, 0])
        out[k] = _separable_roi_align(feat[b: b + 1], rois[k, 1:5], output_size, spatial_scale, sampling_ratio)[0]
    return out


def _is_small(boxes: torch.Tensor, spatial_scale: float) -> torch.Tensor:
    """Boxes (K, 4) whose legacy RoI is narrower or lower than one feature cell."""
    w = (boxes[:, 2] + 1) * spatial_scale - boxes[:, 0] * spatial_scale
    h = (boxes[:, 3] + 1) * spatial_scale - boxes[:, 1] * spatial_scale
    return (w < 1) | (h < 1)


def legacy_roi_align(
    feat: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float, sampling_ratio: int = 2
) -> torch.Tensor:
    """Legacy RoIAlign: torchvision's kernel with +1 ends, small RoIs recomputed exactly."""
    shifted = rois.clone()
    shifted[:, 3:5] += 1
    out = roi_align(feat, shifted, output_size, spatial_scale, sampling_ratio, aligned=False)
    small = _is_small(rois[:, 1:5], spatial_scale)
    if bool(small.any()):
        idx = small.nonzero().squeeze(1)
        out[idx] = legacy_roi_align_small(feat, rois[idx], output_size, spatial_scale, sampling_ratio)
    return out


class MultiLevelRoIAlign(nn.Module):
    """RoI features from P2-P5: each RoI is pooled from the level :func:`map_roi_levels` picks.

    ``forward(feats, rois)``: RoIs (K, 5) whose first column is the batch index (several
    images). ``pool_shared(feats, boxes)``: the same boxes on every batch row (the
    reference-calibrated copies of one frame), computing each box's geometry once.
    """

    def __init__(self, output_size: int, strides: Sequence[int] = (4, 8, 16, 32), sampling_ratio: int = 2):
        super().__init__()
        self.output_size = output_size
        self.strides = tuple(strides)
        self.sampling_ratio = sampling_ratio

    def forward(self, feats: Sequence[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        n = len(self.strides)
        out = feats[0].new_zeros((rois.size(0), feats[0].size(1), self.output_size, self.output_size))
        if rois.numel() == 0:
            return out
        levels = map_roi_levels(rois, n)
        for i in range(n):
            idx = (levels == i).nonzero().squeeze(1)
            if idx.numel():
                out[idx] = legacy_roi_align(feats[i], rois[idx], self.output_size, 1.0 / self.strides[i],
                                            self.sampling_ratio)
        return out

    def pool_shared(self, feats: Sequence[torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
        """Pool every box (K, 4) from every batch row of ``feats`` -> (B * K, C, P, P), row-major
        in (batch row, box): the same as ``forward`` with the boxes repeated for each row."""
        b = feats[0].size(0)
        k = boxes.size(0)
        p = self.output_size
        out = feats[0].new_zeros((b, k, feats[0].size(1), p, p))
        if k == 0:
            return out.reshape(0, feats[0].size(1), p, p)
        levels = map_roi_levels(torch.cat([boxes.new_zeros((k, 1)), boxes[:, :4]], dim=1), len(self.strides))
        for i, stride in enumerate(self.strides):
            scale = 1.0 / stride
            sel = levels == i
            if not bool(sel.any()):
                continue
            small = sel & _is_small(boxes, scale)
            big = (sel & ~small).nonzero().squeeze(1)
            if big.numel():
                shifted = boxes[big, :4].clone()
                shifted[:, 2:] += 1
                idx = torch.arange(b, dtype=boxes.dtype, device=boxes.device).repeat_interleave(big.numel())
                rois = torch.cat([idx[:, None], shifted.repeat(b, 1)], dim=1)
                pooled = roi_align(feats[i], rois, p, scale, self.sampling_ratio, aligned=False)
                out[:, big] = pooled.view(b, big.numel(), *pooled.shape[1:])
            for j in small.nonzero().squeeze(1).tolist():
                out[:, j] = _separable_roi_align(feats[i], boxes[j, :4], p, scale, self.sampling_ratio)
        return out.reshape(b * k, *out.shape[2:])
