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


def legacy_roi_align_small(
    feat: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float, sampling_ratio: int = 2,
    chunk: int = 32,
) -> torch.Tensor:
    """Legacy RoIAlign of ``rois`` (K, 5) on ``feat`` (N, C, H, W) in plain PyTorch, vectorised
    over RoIs (gathers from a channels-last copy of ``feat``; ``chunk`` RoIs at a time).

    Meant for the RoIs torchvision cannot do (smaller than one feature cell); any RoI works.
    """
    n, c, H, W = feat.shape
    P, S = output_size, sampling_ratio
    out = feat.new_zeros((rois.size(0), c, P, P))
    if rois.numel() == 0:
        return out
    flat = feat.permute(0, 2, 3, 1).reshape(n * H * W, c)
    offs = (torch.arange(P, dtype=feat.dtype, device=feat.device)[:, None]
            + (torch.arange(S, dtype=feat.dtype, device=feat.device)[None, :] + 0.5) / S).reshape(-1)  # (P*S,)
    for k0 in range(0, rois.size(0), chunk):
        r = rois[k0: k0 + chunk]
        k = r.size(0)
        b = r[:, 0].long()
        x1 = r[:, 1] * spatial_scale
        y1 = r[:, 2] * spatial_scale
        rw = ((r[:, 3] + 1) * spatial_scale - x1).clamp(min=0)
        rh = ((r[:, 4] + 1) * spatial_scale - y1).clamp(min=0)
        ys = (y1[:, None] + offs[None] * (rh / P)[:, None])[:, :, None]  # (K, P*S, 1)
        xs = (x1[:, None] + offs[None] * (rw / P)[:, None])[:, None, :]  # (K, 1, P*S)
        ys, xs = ys.expand(k, P * S, P * S), xs.expand(k, P * S, P * S)
        valid = (ys >= -1.0) & (ys <= H) & (xs >= -1.0) & (xs <= W)
        y = ys.clamp(min=0)
        x = xs.clamp(min=0)
        y_low = y.floor().long()
        x_low = x.floor().long()
        y_end = y_low >= H - 1
        x_end = x_low >= W - 1
        y_low = torch.where(y_end, torch.full_like(y_low, H - 1), y_low)
        x_low = torch.where(x_end, torch.full_like(x_low, W - 1), x_low)
        y = torch.where(y_end, y_low.to(y.dtype), y)
        x = torch.where(x_end, x_low.to(x.dtype), x)
        y_high = torch.where(y_end, y_low, y_low + 1)
        x_high = torch.where(x_end, x_low, x_low + 1)
        ly, lx = y - y_low, x - x_low
        hy, hx = 1.0 - ly, 1.0 - lx
        base = (b * H * W)[:, None, None]
        acc = None
        for yy, xx, wgt in ((y_low, x_low, hy * hx), (y_low, x_high, hy * lx),
                            (y_high, x_low, ly * hx), (y_high, x_high, ly * lx)):
            v = flat[(base + yy * W + xx).reshape(-1)].reshape(k, P * S, P * S, c) * (wgt * valid)[..., None]
            acc = v if acc is None else acc + v
        # (K, P*S, P*S, C) -> average the S x S samples of each bin -> (K, C, P, P)
        acc = acc.reshape(k, P, S, P, S, c).sum(dim=(2, 4)) / (S * S)
        out[k0: k0 + k] = acc.permute(0, 3, 1, 2)
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
