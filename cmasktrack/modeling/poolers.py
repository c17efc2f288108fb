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


def _bilinear(feat: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Legacy bilinear sampling of ``feat`` (C, H, W) at points y, x (same shape S) -> (C, *S)."""
    H, W = feat.shape[-2:]
    valid = (y >= -1.0) & (y <= H) & (x >= -1.0) & (x <= W)
    y = y.clamp(min=0)
    x = x.clamp(min=0)
    y_low = y.floor().long()
    x_low = x.floor().long()
    y_at_end = y_low >= H - 1
    x_at_end = x_low >= W - 1
    y_low = torch.where(y_at_end, torch.full_like(y_low, H - 1), y_low)
    x_low = torch.where(x_at_end, torch.full_like(x_low, W - 1), x_low)
    y = torch.where(y_at_end, y_low.to(y.dtype), y)
    x = torch.where(x_at_end, x_low.to(x.dtype), x)
    y_high = torch.where(y_at_end, y_low, y_low + 1)
    x_high = torch.where(x_at_end, x_low, x_low + 1)
    ly = y - y_low
    lx = x - x_low
    hy = 1.0 - ly
    hx = 1.0 - lx
    flat = feat.reshape(feat.size(0), -1)

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        return flat[:, (yy * W + xx).reshape(-1)].reshape(feat.size(0), *yy.shape)

    val = (hy * hx) * at(y_low, x_low) + (hy * lx) * at(y_low, x_high)
    val = val + (ly * hx) * at(y_high, x_low) + (ly * lx) * at(y_high, x_high)
    return val * valid.to(val.dtype)


def legacy_roi_align_small(
    feat: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float, sampling_ratio: int = 2
) -> torch.Tensor:
    """Legacy RoIAlign of ``rois`` (K, 5) on ``feat`` (N, C, H, W), in plain PyTorch.

    Meant for the few RoIs torchvision cannot do (smaller than one feature cell); any RoI works.
    """
    out = feat.new_zeros((rois.size(0), feat.size(1), output_size, output_size))
    grid = (torch.arange(output_size, dtype=feat.dtype, device=feat.device)[:, None]
            + (torch.arange(sampling_ratio, dtype=feat.dtype, device=feat.device)[None, :] + 0.5) / sampling_ratio)
    for k in range(rois.size(0)):
        b = int(rois[k, 0])
        x1 = rois[k, 1] * spatial_scale
        y1 = rois[k, 2] * spatial_scale
        rw = ((rois[k, 3] + 1) * spatial_scale - x1).clamp(min=0)
        rh = ((rois[k, 4] + 1) * spatial_scale - y1).clamp(min=0)
        ys = y1 + grid * (rh / output_size)  # (P, S)
        xs = x1 + grid * (rw / output_size)
        yy = ys.reshape(output_size, 1, sampling_ratio, 1).expand(output_size, output_size, sampling_ratio, sampling_ratio)
        xx = xs.reshape(1, output_size, 1, sampling_ratio).expand(output_size, output_size, sampling_ratio, sampling_ratio)
        vals = _bilinear(feat[b], yy, xx)  # (C, P, P, S, S)
        out[k] = vals.sum(dim=(-1, -2)) / (sampling_ratio * sampling_ratio)
    return out


def legacy_roi_align(
    feat: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float, sampling_ratio: int = 2
) -> torch.Tensor:
    """Legacy RoIAlign: torchvision's kernel with +1 ends, small RoIs recomputed exactly."""
    shifted = rois.clone()
    shifted[:, 3:5] += 1
    out = roi_align(feat, shifted, output_size, spatial_scale, sampling_ratio, aligned=False)
    w = shifted[:, 3] * spatial_scale - rois[:, 1] * spatial_scale
    h = shifted[:, 4] * spatial_scale - rois[:, 2] * spatial_scale
    small = (w < 1) | (h < 1)
    if bool(small.any()):
        idx = small.nonzero().squeeze(1)
        out[idx] = legacy_roi_align_small(feat, rois[idx], output_size, spatial_scale, sampling_ratio)
    return out


class MultiLevelRoIAlign(nn.Module):
    """RoI features from P2-P5: each RoI is pooled from the level :func:`map_roi_levels` picks.

    ``feats`` may hold several images (or several reference-calibrated copies of one image):
    the RoIs' first column is the batch index.
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
