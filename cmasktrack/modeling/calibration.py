"""Temporal feature calibration, the CMaskTrack R-CNN module (OVIS paper, Sec. 4).

For a target frame's feature map F_t and a reference frame's F_r (one FPN level):
correlation (16 x 16 displacements, dilation 2) / C -> LeakyReLU(0.1) -> three 3x3 convs with
ReLU -> a 3x3 conv to the 18 offsets of a 3x3 deformable conv, which samples F_r; the result is
added to F_t.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from ..ops import correlation

__all__ = ["TemporalCalibration", "deform_conv2d_3x3_grid_sample", "deform_conv2d_3x3_gather"]


def _check_deform_args(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor) -> None:
    """The shapes the 3x3 deformable convs of this module take (one offset group)."""
    if x.dim() != 4 or offset.dim() != 4 or weight.dim() != 4 or weight.shape[-2:] != (3, 3):
        raise ValueError(f"expected x (B, C, H, W), offset (B, 18, H, W), weight (O, C, 3, 3); got "
                         f"{tuple(x.shape)}, {tuple(offset.shape)}, {tuple(weight.shape)}")
    b, c, h, w = x.shape
    if offset.shape != (b, 18, h, w) or weight.size(1) != c:
        raise ValueError(f"offset must be (B, 18, H, W) = {(b, 18, h, w)} and weight (O, {c}, 3, 3); got "
                         f"{tuple(offset.shape)}, {tuple(weight.shape)}")


def _sample_positions(offset: torch.Tensor, h: int, w: int):
    """Rows and columns (B, 9, H, W) where the 3x3 deformable conv samples: pixel + tap
    position (row-major taps, -1..1) + offset ((dy, dx) per tap, torchvision's layout)."""
    b = offset.size(0)
    dt, dev = offset.dtype, offset.device
    off = offset.view(b, 9, 2, h, w)
    taps = torch.arange(9, device=dev)
    ky = (taps // 3 - 1).to(dt).view(1, 9, 1, 1)
    kx = (taps % 3 - 1).to(dt).view(1, 9, 1, 1)
    py = torch.arange(h, device=dev, dtype=dt).view(1, 1, h, 1) + ky + off[:, :, 0]
    px = torch.arange(w, device=dev, dtype=dt).view(1, 1, 1, w) + kx + off[:, :, 1]
    return py, px


def _bilinear_taps(offset: torch.Tensor, h: int, w: int):
    """Corner rows and weights of the 3x3 deformable conv's bilinear samples, with
    torchvision's rule (``deform_conv2d``'s ``bilinear_interpolate``): a sample at or beyond
    one pixel outside the map is 0, and corners outside the map contribute 0.

    ``offset`` (B, 18, H, W), (dy, dx) per tap. Returns ``rows`` (B, H, W, 9, 4) int64 — the
    flat pixel index y * W + x of each corner within its image, clamped into the map — and
    ``weights`` (B, H, W, 9, 4) in the corner order (low, low), (low, high), (high, low),
    (high, high) of (y, x)."""
    dt, dev = offset.dtype, offset.device
    py, px = _sample_positions(offset, h, w)
    inside = (py > -1) & (py < h) & (px > -1) & (px < w)
    y0, x0 = torch.floor(py), torch.floor(px)
    ly, lx = py - y0, px - x0
    hy, hx = 1 - ly, 1 - lx
    y0, x0 = y0.long(), x0.long()
    y1, x1 = y0 + 1, x0 + 1
    vy0, vy1 = (y0 >= 0), (y1 <= h - 1)
    vx0, vx1 = (x0 >= 0), (x1 <= w - 1)
    zero = torch.zeros((), dtype=dt, device=dev)
    weights = torch.stack([
        torch.where(inside & vy0 & vx0, hy * hx, zero),
        torch.where(inside & vy0 & vx1, hy * lx, zero),
        torch.where(inside & vy1 & vx0, ly * hx, zero),
        torch.where(inside & vy1 & vx1, ly * lx, zero),
    ], dim=-1)  # (B, 9, H, W, 4)
    y0c, y1c = y0.clamp(0, h - 1), y1.clamp(0, h - 1)
    x0c, x1c = x0.clamp(0, w - 1), x1.clamp(0, w - 1)
    rows = torch.stack([y0c * w + x0c, y0c * w + x1c, y1c * w + x0c, y1c * w + x1c], dim=-1)
    return rows.permute(0, 2, 3, 1, 4), weights.permute(0, 2, 3, 1, 4)


def deform_conv2d_3x3_gather(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 deformable convolution (stride 1, padding 1, no bias, one offset group) computed
    as "project, then sample": bilinear sampling is linear in the channels, so
    ``sum_k W_k . sample_k(x) == sum_k sample_k(W_k . x)``. One matrix product gives the nine
    projected maps ``W_k . x`` (channels last), and one ``embedding_bag`` with per-sample
    weights gathers and sums the 9 taps x 4 bilinear corners of every output pixel from
    contiguous rows. The same function as ``torchvision.ops.deform_conv2d(x, offset, weight,
    padding=(1, 1))`` (same sampling rule, offsets (dy, dx) per tap in row-major tap order),
    equal up to float rounding (summation order), and on the CPU several times faster than
    torchvision's im2col kernel, whose bilinear column buffer dominates its time. Meant for
    inference (training uses the ``grid_sample`` form, whose backward is faster); the images of
    the batch are done one at a time to bound memory.
    """
    _check_deform_args(x, offset, weight)
    b, c, h, w = x.shape
    o = weight.size(0)
    rows, weights = _bilinear_taps(offset, h, w)
    taps = torch.arange(9, device=x.device).view(1, 9, 1)
    proj = weight.permute(2, 3, 0, 1).reshape(9 * o, c)  # row k * O + o = W[o, :, k]
    out = x.new_empty(b, h * w, o)
    for i in range(b):
        z = torch.matmul(x[i].reshape(c, h * w).t(), proj.t())  # (HW, 9 * O): pixel-major, then tap
        idx = (rows[i].reshape(h * w, 9, 4) * 9 + taps).reshape(h * w, 36)
        out[i] = F.embedding_bag(idx, z.view(h * w * 9, o), per_sample_weights=weights[i].reshape(h * w, 36),
                                 mode="sum")
    return out.permute(0, 2, 1).reshape(b, o, h, w)


def deform_conv2d_3x3_grid_sample(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A 3x3 deformable convolution (stride 1, padding 1, dilation 1, no bias, one offset
    group) in plain PyTorch: bilinear sampling with ``grid_sample`` and one matrix product.

    The same values as ``torchvision.ops.deform_conv2d(x, offset, weight, padding=(1, 1))``
    (offsets ``(B, 18, H, W)`` laid out ``(dy, dx)`` per kernel tap in row-major tap order;
    samples outside the map read zeros), and the same gradients wherever the sampling
    positions are not integers. Its backward is several times faster on the CPU than
    torchvision's, which is why training can select it
    (:attr:`TemporalCalibration.deform_impl` ``"grid_sample"``).
    """
    _check_deform_args(x, offset, weight)
    b, c, h, w = x.shape
    if h < 2 or w < 2:  # grid_sample cannot address a one-pixel-wide map by coordinate
        return deform_conv2d(x, offset, weight, padding=(1, 1))
    py, px = _sample_positions(offset.to(x.dtype), h, w)  # (B, 9, H, W)
    # align_corners=True maps -1 / +1 to the centres of the first / last pixel; zero padding
    # outside, which is torchvision's bilinear rule (corners outside the map contribute 0).
    grid = torch.stack([px * (2.0 / (w - 1)) - 1.0, py * (2.0 / (h - 1)) - 1.0], dim=-1)
    cols = F.grid_sample(x, grid.view(b, 9 * h, w, 2), mode="bilinear", padding_mode="zeros",
                         align_corners=True)  # (B, C, 9 * H, W)
    out = torch.matmul(weight.reshape(weight.size(0), c * 9), cols.reshape(b, c * 9, h * w))
    return out.view(b, weight.size(0), h, w)


class TemporalCalibration(nn.Module):
    """Calibrates target features with reference features; the same weights serve every level.

    ``deform_impl`` (not saved with the weights) chooses how the deformable conv is computed;
    all give the same function: ``"torchvision"`` (``torchvision.ops.deform_conv2d``),
    ``"gather"`` (:func:`deform_conv2d_3x3_gather`, the fastest CPU forward),
    ``"grid_sample"`` (:func:`deform_conv2d_3x3_grid_sample`, the fastest CPU backward: what
    training uses), ``"auto"`` (default: ``"gather"`` for CPU tensors outside autograd,
    torchvision's otherwise).
    """

    DEFORM_IMPLS = ("auto", "torchvision", "gather", "grid_sample")

    def __init__(self, channels: int = 256, patch_size: int = 16, dilation_patch: int = 2, num_convs: int = 3):
        super().__init__()
        self.patch_size = patch_size
        self.deform_impl = "auto"
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
        return cur + self.deform_conv(ref, off)

    def deform_conv(self, x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        """The 3x3 deformable conv of ``x`` with ``offset``, by ``deform_impl``."""
        impl = self.deform_impl
        if impl not in self.DEFORM_IMPLS:
            raise ValueError(f"deform_impl must be one of {self.DEFORM_IMPLS}, got {impl!r}")
        if impl == "auto":
            grad = torch.is_grad_enabled() and (x.requires_grad or offset.requires_grad
                                                or self.deform_weight.requires_grad)
            impl = "gather" if x.device.type == "cpu" and not grad else "torchvision"
        if impl == "gather":
            return deform_conv2d_3x3_gather(x, offset, self.deform_weight)
        if impl == "grid_sample":
            return deform_conv2d_3x3_grid_sample(x, offset, self.deform_weight)
        return deform_conv2d(x, offset, self.deform_weight, padding=(1, 1))
