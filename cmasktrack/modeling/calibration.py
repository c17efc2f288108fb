"""Temporal feature calibration, the CMaskTrack R-CNN module (OVIS paper, Sec. 4).

For a target frame's feature map F_t and a reference frame's F_r (one FPN level):
correlation (16 x 16 displacements, dilation 2) / C -> LeakyReLU(0.1) -> three 3x3 convs with
ReLU -> a 3x3 conv to the 18 offsets of a 3x3 deformable conv, which samples F_r; the result is
added to F_t.
"""

from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from ..ops import correlation

__all__ = ["TemporalCalibration", "deform_conv2d_3x3_grid_sample"]


def deform_conv2d_3x3_grid_sample(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 deformable convolution (stride 1, padding 1, dilation 1, no bias, one offset
    group) in plain PyTorch: bilinear sampling with ``grid_sample`` and one matrix product.

    The same values as ``torchvision.ops.deform_conv2d(x, offset, weight, padding=(1, 1))``
    (offsets ``(B, 18, H, W)`` laid out ``(dy, dx)`` per kernel tap in row-major tap order;
    samples outside the map read zeros), and the same gradients wherever the sampling
    positions are not integers. Its backward is several times faster on the CPU than
    torchvision's, which is why training can select it
    (:attr:`TemporalCalibration.use_grid_sample`); inference keeps torchvision's op.
    """
    if x.dim() != 4 or offset.dim() != 4 or weight.shape[-2:] != (3, 3):
        raise ValueError(f"expected x (B, C, H, W), offset (B, 18, H, W), weight (O, C, 3, 3); got "
                         f"{tuple(x.shape)}, {tuple(offset.shape)}, {tuple(weight.shape)}")
    b, c, h, w = x.shape
    if offset.shape != (b, 18, h, w) or weight.size(1) != c:
        raise ValueError(f"offset must be (B, 18, H, W) = {(b, 18, h, w)} and weight (O, {c}, 3, 3); got "
                         f"{tuple(offset.shape)}, {tuple(weight.shape)}")
    if h < 2 or w < 2:  # grid_sample cannot address a one-pixel-wide map by coordinate
        return deform_conv2d(x, offset, weight, padding=(1, 1))
    off = offset.view(b, 9, 2, h, w)
    taps = torch.arange(9, device=x.device)
    ky = (taps // 3 - 1).to(x.dtype).view(1, 9, 1, 1)
    kx = (taps % 3 - 1).to(x.dtype).view(1, 9, 1, 1)
    ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
    py = ys + ky + off[:, :, 0]  # (B, 9, H, W) sampling rows
    px = xs + kx + off[:, :, 1]
    # align_corners=True maps -1 / +1 to the centres of the first / last pixel; zero padding
    # outside, which is torchvision's bilinear rule (corners outside the map contribute 0).
    grid = torch.stack([px * (2.0 / (w - 1)) - 1.0, py * (2.0 / (h - 1)) - 1.0], dim=-1)
    cols = F.grid_sample(x, grid.view(b, 9 * h, w, 2), mode="bilinear", padding_mode="zeros",
                         align_corners=True)  # (B, C, 9 * H, W)
    out = torch.matmul(weight.reshape(weight.size(0), c * 9), cols.reshape(b, c * 9, h * w))
    return out.view(b, weight.size(0), h, w)


class TemporalCalibration(nn.Module):
    """Calibrates target features with reference features; the same weights serve every level.

    ``use_grid_sample`` (default False, not saved with the weights) selects
    :func:`deform_conv2d_3x3_grid_sample` instead of ``torchvision.ops.deform_conv2d``: the same
    function with a faster CPU backward, for training.
    """

    def __init__(self, channels: int = 256, patch_size: int = 16, dilation_patch: int = 2, num_convs: int = 3):
        super().__init__()
        self.patch_size = patch_size
        self.use_grid_sample = False
        self.dilation_patch = dilation_patch
        cor_channels = patch_size * patch_size
        self.offset_convs = nn.ModuleList(
            [nn.Conv2d(cor_channels if i == 0 else channels, channels, 3, padding=1) for i in range(num_convs)]
        )
        self.conv_offset = nn.Conv2d(channels, 18, 3, padding=1)
        # Deformable 3x3 conv, no bias; offsets laid out (dy, dx) per kernel tap, as torchvision's.
        self.deform_weight = nn.Parameter(torch.empty(channels, channels, 3, 3))
        for conv in self.offset_convs:
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        # conv_offset keeps PyTorch's default init, as in the official code.
        stdv = 1.0 / math.sqrt(channels * 9)
        nn.init.uniform_(self.deform_weight, -stdv, stdv)

    def offsets(self, cur: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """Deformable-conv offsets (B, 18, H, W) from the correlation of ``cur`` and ``ref``."""
        b, c, h, w = cur.shape
        corr = correlation(cur, ref, self.patch_size, self.dilation_patch)
        x = F.leaky_relu(corr.reshape(b, -1, h, w) / c, 0.1)
        for conv in self.offset_convs:
            x = F.relu(conv(x))
        return self.conv_offset(x)

    def forward(self, cur: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``cur`` + DeformConv(``ref``); both (B, C, H, W) (``cur`` may be expanded over B)."""
        off = self.offsets(cur, ref)
        if self.use_grid_sample:
            return cur + deform_conv2d_3x3_grid_sample(ref, off, self.deform_weight)
        return cur + deform_conv2d(ref, off, self.deform_weight, padding=(1, 1))

    def calibrate_levels(self, cur: Sequence[torch.Tensor], refs: Sequence[Sequence[torch.Tensor]]) -> List[torch.Tensor]:
        """Calibrate every level of one target frame against R references in one batch.

        ``cur``: per level (1, C, H, W); ``refs``: R lists of per-level (1, C, H, W).
        Returns per level (R, C, H, W): row r is the target calibrated with reference r.
        """
        out = []
        for lvl, x in enumerate(cur):
            ref = torch.cat([r[lvl] for r in refs], dim=0)
            out.append(self.forward(x.expand(ref.size(0), -1, -1, -1), ref))
        return out
