"""Input preprocessing, bit-compatible with the official CMaskTrack R-CNN code.

The official code (mmdetection v1 / mmcv) prepares every frame as follows::

    s = min(640 / long side, 360 / short side)            # mmcv.imrescale, keep_ratio=True
    new size = int(w*s + 0.5) x int(h*s + 0.5)
    img = cv2.resize(img_uint8, new size, INTER_LINEAR)    # on the uint8 image
    img = (float32(img) - mean) / std                       # RGB order, float32
    zero-pad bottom/right to a multiple of 32

and the ``scale_factor`` it carries in the image meta is the Python float ``s`` itself, not the
realised ratio ``new_w / w``. Detections are divided by that float (in float32) to get back to the
original resolution (the output side is :mod:`cmasktrack.postprocess`). The resize is the exact
port of OpenCV's uint8 kernel in :mod:`cmasktrack.resize`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence, Tuple

import numpy as np
import torch

from .model_config import CMaskTrackConfig
from .resize import Backend, resize_bilinear_uint8

__all__ = [
    "DEFAULT_SCALE",
    "DEFAULT_MEAN",
    "DEFAULT_STD",
    "DEFAULT_SIZE_DIVISOR",
    "FrameMeta",
    "compute_scale",
    "resize_bilinear_uint8",
    "normalize_and_pad",
    "preprocess_frame",
]

# Output-side names that moved out of this module (still importable from here, deprecated).
_MOVED = {"resize_prob_map": "cmasktrack.resize", "mask_paste_boxes": "cmasktrack.postprocess",
          "paste_mask": "cmasktrack.postprocess", "paste_masks": "cmasktrack.postprocess"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        warnings.warn(f"cmasktrack.transforms.{name} moved to {_MOVED[name]}.{name}", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'cmasktrack.transforms' has no attribute {name!r}")


# The defaults are the model configuration's (one definition, in CMaskTrackConfig).
#: (long side, short side) limits of the official OVIS / YouTube-VIS test scale.
DEFAULT_SCALE: Tuple[int, int] = CMaskTrackConfig.image_scale
#: ImageNet mean in RGB order, on 0-255 values.
DEFAULT_MEAN: Tuple[float, float, float] = CMaskTrackConfig.pixel_mean
#: ImageNet std in RGB order, on 0-255 values.
DEFAULT_STD: Tuple[float, float, float] = CMaskTrackConfig.pixel_std
#: The padded input's height and width are multiples of this.
DEFAULT_SIZE_DIVISOR: int = CMaskTrackConfig.size_divisor


# ----------------------------------------------------------------------------------------------
# Scale
# ----------------------------------------------------------------------------------------------


def compute_scale(
    height: int, width: int, scale: Tuple[int, int] = DEFAULT_SCALE
) -> Tuple[float, int, int]:
    """Scale factor and resized size of a frame, as ``mmcv.imrescale(keep_ratio=True)`` computes them.

    Args:
        height: frame height in pixels.
        width: frame width in pixels.
        scale: the two size limits, in any order: the long side is fitted to ``max(scale)``
            and the short side to ``min(scale)``, whichever is tighter.

    Returns:
        ``(s, new_w, new_h)`` with ``s = min(max(scale) / max(h, w), min(scale) / min(h, w))``
        (a Python float: this exact value is the official ``scale_factor``), ``new_w =
        int(width * s + 0.5)`` and ``new_h = int(height * s + 0.5)``.

    Raises:
        ValueError: a non-positive size or scale, or a resized side that would be 0 pixels.
    """
    height, width = int(height), int(width)
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got height={height}, width={width}")
    if len(scale) != 2 or min(scale) <= 0:
        raise ValueError(f"scale must be two positive sizes (long, short), got {scale!r}")
    long_edge, short_edge = max(scale), min(scale)
    s = min(long_edge / max(height, width), short_edge / min(height, width))
    new_w = int(width * float(s) + 0.5)
    new_h = int(height * float(s) + 0.5)
    if new_w < 1 or new_h < 1:
        raise ValueError(
            f"a {width}x{height} frame rescaled by {s:.6g} to fit {scale} would be "
            f"{new_w}x{new_h} pixels; the aspect ratio is too extreme"
        )
    return s, new_w, new_h


# ----------------------------------------------------------------------------------------------
# Frame preprocessing
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameMeta:
    """Geometry of one preprocessed frame (the official ``img_meta``).

    Attributes:
        ori_shape: (height, width) of the original frame.
        img_shape: (height, width) after the resize, before padding. Boxes are clipped to it.
        pad_shape: (height, width) of the padded network input.
        scale_factor: the float ``s`` of :func:`compute_scale`, exactly as the official code
            uses it (boxes are multiplied by it into the resized image and divided by it,
            in float32, back to original pixels).
        flip: whether the frame was mirrored horizontally (training augmentation).
    """

    ori_shape: Tuple[int, int]
    img_shape: Tuple[int, int]
    pad_shape: Tuple[int, int]
    scale_factor: float
    flip: bool = False


def normalize_and_pad(
    img: np.ndarray,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    size_divisor: int = DEFAULT_SIZE_DIVISOR,
    flip: bool = False,
) -> torch.Tensor:
    """``(float32(img) - mean) / std`` per channel, optional horizontal flip, zero padding.

    The arithmetic is float32 subtraction then float32 division, as ``mmcv.imnormalize`` does
    (not a multiplication by 1/std), so the values are bit-identical to the official input.

    Args:
        img: (H, W, 3) uint8 RGB image (already resized).
        mean: per-channel mean, RGB order.
        std: per-channel std, RGB order.
        size_divisor: pad height and width up to a multiple of this (1 or less: no padding).
        flip: mirror horizontally after normalising (the official training flip).

    Returns:
        (3, Hp, Wp) float32 tensor, zeros in the padding.
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    h, w = img.shape[:2]
    if size_divisor and size_divisor > 1:
        hp = -(-h // size_divisor) * size_divisor
        wp = -(-w // size_divisor) * size_divisor
    else:
        hp, wp = h, w
    mean_t = torch.tensor(np.asarray(mean, dtype=np.float32)).view(3, 1, 1)
    std_t = torch.tensor(np.asarray(std, dtype=np.float32)).view(3, 1, 1)
    src = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
    if flip:
        src = src.flip(-1)
    out = torch.zeros((3, hp, wp), dtype=torch.float32)
    region = out[:, :h, :w]
    region.copy_(src)
    region.sub_(mean_t).div_(std_t)
    return out


def preprocess_frame(
    img_rgb_uint8: np.ndarray,
    scale: Tuple[int, int] = DEFAULT_SCALE,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    size_divisor: int = DEFAULT_SIZE_DIVISOR,
    *,
    flip: bool = False,
    backend: Backend = "auto",
) -> Tuple[torch.Tensor, FrameMeta]:
    """Turn one RGB frame into the network input, exactly as the official test pipeline does.

    Steps: :func:`compute_scale`; :func:`resize_bilinear_uint8` on the uint8 image;
    normalisation in float32; optional flip; zero padding to a multiple of ``size_divisor``.
    The official code reads BGR with OpenCV and swaps to RGB before normalising
    (``to_rgb=True`` in the OVIS config); the resize treats channels independently, so
    resizing the RGB frame gives the same values.

    Args:
        img_rgb_uint8: (H, W, 3) uint8 RGB frame.
        scale: (long, short) size limits.
        mean: per-channel mean, RGB order.
        std: per-channel std, RGB order.
        size_divisor: padding multiple.
        flip: mirror horizontally (training augmentation; after normalising, as officially).
        backend: resize backend, see :func:`resize_bilinear_uint8`.

    Returns:
        ``(tensor, meta)``: the (3, Hp, Wp) float32 input and its :class:`FrameMeta`.
    """
    if not isinstance(img_rgb_uint8, np.ndarray) or img_rgb_uint8.dtype != np.uint8:
        if isinstance(img_rgb_uint8, np.ndarray):
            got = f"array of {img_rgb_uint8.dtype}"
        else:
            got = type(img_rgb_uint8).__name__
        raise TypeError(f"preprocess_frame expects an (H, W, 3) uint8 RGB numpy array, got {got}")
    if img_rgb_uint8.ndim != 3 or img_rgb_uint8.shape[2] != 3:
        raise ValueError(f"preprocess_frame expects an (H, W, 3) RGB frame, got shape {img_rgb_uint8.shape}")
    h, w = img_rgb_uint8.shape[:2]
    s, new_w, new_h = compute_scale(h, w, scale)
    resized = resize_bilinear_uint8(img_rgb_uint8, new_w, new_h, backend=backend)
    tensor = normalize_and_pad(resized, mean, std, size_divisor, flip=flip)
    meta = FrameMeta(
        ori_shape=(h, w),
        img_shape=(new_h, new_w),
        pad_shape=(int(tensor.shape[1]), int(tensor.shape[2])),
        scale_factor=s,
        flip=flip,
    )
    return tensor, meta
