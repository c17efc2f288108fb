"""The correlation (cost volume) op of the temporal feature calibration module.

``out[b, k, l, y, x] = sum_c input1[b, c, y, x] * input2[b, c, y + d_k, x + d_l]``, zero where
``(y + d_k, x + d_l)`` falls outside the map, with ``d_k = dilation_patch * k -
floor(dilation_patch * (patch_size - 1) / 2)`` for ``k = 0 .. patch_size - 1`` (for patch 16 and
dilation 2: -15, -13, ..., +15; for patch 3 and dilation 1: -1, 0, 1).  This is the convention of
the official op's CUDA forward, which the published weights were trained and tested with (the
official op's CPU forward and CUDA backward use ``2 * (k - 7)`` = -14 ... +16 instead, an upstream
inconsistency; cmasktrack uses the CUDA-forward displacements on every device); the
backward is the true gradient of this forward.  The result is the raw sum: the calibration module
divides it by the channel count and applies its activation itself.

Two implementations give the same numbers: the compiled op ``torch.ops.cmasktrack.correlation``
(``csrc/``; C++ on the CPU, CUDA on GPUs) and :func:`correlation_torch`, written with PyTorch
tensor ops only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from cmasktrack.ops._extension import extension_info, has_extension

__all__ = ["correlation", "correlation_torch", "displacements", "resolve_backend", "use_backend"]

_BACKENDS = (None, "ext", "torch")
# What ``backend=None`` means; changed only by use_backend().
_default_backend: str | None = None


@contextlib.contextmanager
def use_backend(backend: str | None) -> Iterator[None]:
    """Within the ``with`` block, calls of :func:`correlation` that leave ``backend`` at None
    (every call inside the model) use ``backend``: "torch" the PyTorch fallback, "ext" the
    compiled op (a RuntimeError where it is unavailable), None the automatic choice.

    The setting is process-wide, not per thread; blocks nest and the previous setting comes
    back on exit.  An explicit ``backend=`` argument still wins.

    >>> with use_backend("torch"):                      # doctest: +SKIP
    ...     result = model.track_video(frames)          # the model on the fallback op
    """
    global _default_backend
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be None, 'ext' or 'torch', got {backend!r}")
    previous = _default_backend
    _default_backend = backend
    try:
        yield
    finally:
        _default_backend = previous


def displacements(patch_size: int = 16, dilation_patch: int = 2) -> list[int]:
    """The displacements ``d_k`` (k = 0 .. patch_size - 1) of the correlation, in output order.

    >>> displacements(16, 2)[:3], displacements(3, 1)
    ([-15, -13, -11], [-1, 0, 1])
    """
    _check_geometry(patch_size, dilation_patch)
    offset = dilation_patch * (patch_size - 1) // 2
    return [dilation_patch * k - offset for k in range(patch_size)]


def _check_geometry(patch_size: int, dilation_patch: int) -> None:
    for name, value in (("patch_size", patch_size), ("dilation_patch", dilation_patch)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _check_inputs(input1: torch.Tensor, input2: torch.Tensor, patch_size: int,
                  dilation_patch: int) -> None:
    for name, value in (("input1", input1), ("input2", input2)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"correlation: {name} must be a torch.Tensor, got {type(value).__name__}")
        if value.dim() != 4:
            raise ValueError(f"correlation: {name} must be 4-D (B, C, H, W), got shape {tuple(value.shape)}")
        if not value.is_floating_point():
            raise TypeError(f"correlation: {name} must be a floating-point tensor, got {value.dtype}")
    if input1.shape != input2.shape:
        raise ValueError("correlation: input1 and input2 must have the same shape, got "
                         f"{tuple(input1.shape)} and {tuple(input2.shape)}")
    if input1.dtype != input2.dtype:
        raise TypeError(f"correlation: input1 and input2 must have the same dtype, got {input1.dtype} "
                        f"and {input2.dtype}")
    if input1.device != input2.device:
        raise ValueError(f"correlation: input1 and input2 must be on the same device, got {input1.device} "
                         f"and {input2.device}")
    _check_geometry(patch_size, dilation_patch)


def resolve_backend(device: str | torch.device, backend: str | None = None) -> str:
    """The implementation :func:`correlation` uses on ``device``: "ext" or "torch".

    Args:
        device: where the inputs live.
        backend: None picks the compiled op when it is available for this device type, else
            the PyTorch fallback (or follows an enclosing :func:`use_backend`); "ext" demands
            the compiled op (RuntimeError if unavailable); "torch" always uses the fallback.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be None, 'ext' or 'torch', got {backend!r}")
    if backend is None:
        backend = _default_backend
    if backend == "torch":
        return "torch"
    if has_extension(device):
        return "ext"
    if backend is None:
        return "torch"
    info = extension_info()
    if not info["available"]:
        raise RuntimeError(
            "correlation(backend='ext'): the compiled extension cmasktrack._C is not available "
            f"({info['error']}). Reinstall with `pip install -v --no-build-isolation .` to see why "
            "the build failed, or use backend=None/'torch'.")
    raise RuntimeError(
        f"correlation(backend='ext'): cmasktrack._C has no kernel for device type "
        f"{torch.device(device).type!r} (built with CUDA: {info['cuda']}); use backend=None/'torch'.")


def correlation(input1: torch.Tensor, input2: torch.Tensor, patch_size: int = 16,
                dilation_patch: int = 2, backend: str | None = None) -> torch.Tensor:
    """Correlation of two feature maps over a patch of displacements.

    Args:
        input1: (B, C, H, W) features of the target frame.
        input2: (B, C, H, W) features of the reference frame; same shape, dtype and device.
        patch_size: number of displacements per axis (16 in CMaskTrack R-CNN).
        dilation_patch: spacing of the displacements (2 in CMaskTrack R-CNN).
        backend: None = the compiled op if available for this device, else the PyTorch
            fallback (or what an enclosing :func:`use_backend` says); "ext" = the compiled op
            or a RuntimeError; "torch" = the fallback.

    Returns:
        (B, patch_size, patch_size, H, W) tensor ``out[b, k, l, y, x] = sum_c input1[b, c, y, x]
        * input2[b, c, y + d_k, x + d_l]`` (zero outside the map), ``d`` from
        :func:`displacements`.  Differentiable with respect to both inputs (twice).
    """
    _check_inputs(input1, input2, patch_size, dilation_patch)
    if resolve_backend(input1.device, backend) == "ext":
        return torch.ops.cmasktrack.correlation(input1, input2, patch_size, dilation_patch)
    return correlation_torch(input1, input2, patch_size, dilation_patch)


def _tile_width(span: int, width: int) -> int:
    # Each tile of T output columns multiplies against T + span - 1 input columns: wider tiles
    # waste more GEMM work per column, narrower ones make smaller, slower GEMMs.  T about the
    # window span (a multiple of 8, no wider than the map) measured best.
    return max(8, min(-(-span // 8) * 8, -(-width // 8) * 8))


def correlation_torch(input1: torch.Tensor, input2: torch.Tensor, patch_size: int = 16,
                      dilation_patch: int = 2) -> torch.Tensor:
    """The correlation written with PyTorch ops only (any device, autograd through torch ops).

    Same arguments, result and convention as :func:`correlation`.  For every vertical
    displacement, the map is cut into tiles of T columns; each tile of input1 (T x C) is
    multiplied with the T + span - 1 columns of input2 it can reach, and the band of the
    product that holds the wanted horizontal displacements is read out with a skew.
    """
    _check_inputs(input1, input2, patch_size, dilation_patch)
    batch, channels, height, width = input1.shape
    offset = dilation_patch * (patch_size - 1) // 2
    span = dilation_patch * (patch_size - 1) + 1  # columns x + d_0 .. x + d_{P-1}
    tile = _tile_width(span, width)
    n_tiles = -(-width // tile)
    padded_width = n_tiles * tile
    window = tile + span - 1

    # Channels-last, zero-padded: input1 to whole tiles; input2 so that row y + d_k and column
    # x + d_l live at index y + dil*k and x + dil*l + (tile start).
    a = F.pad(input1.permute(0, 2, 3, 1), (0, 0, 0, padded_width - width))
    a = a.reshape(batch, height, n_tiles, tile, channels)
    b = F.pad(input2.permute(0, 2, 3, 1),
              (0, 0, offset, padded_width + span - 1 - offset - width, offset, span - 1 - offset))

    rows = []
    for k in range(patch_size):
        # (B, H, n_tiles, window, C): the input2 columns tile t can reach, for every row y.
        b_k = b[:, dilation_patch * k: dilation_patch * k + height]
        b_k = b_k.unfold(2, window, tile).transpose(-1, -2).contiguous()
        s = torch.matmul(a, b_k.transpose(-1, -2))  # (B, H, n_tiles, tile, window)
        # Skew: band[..., i, j] = s[..., i, i + j] for j < span.
        s = F.pad(s.reshape(batch, height, n_tiles, tile * window), (0, tile))
        band = s.reshape(batch, height, n_tiles, tile, window + 1)[..., :span:dilation_patch]
        band = band.reshape(batch, height, padded_width, patch_size)[:, :, :width]
        rows.append(band.permute(0, 3, 1, 2))  # (B, P(l), H, W)
    return torch.stack(rows, dim=1)
