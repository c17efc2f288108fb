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


class TemporalCalibration(nn.Module):
    """Calibrates target features with reference features; the same weights serve every level."""

    def __init__(self, channels: int = 256, patch_size: int = 16, dilation_patch: int = 2, num_convs: int = 3):
        super().__init__()
        self.patch_size = patch_size
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
