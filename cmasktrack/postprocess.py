"""Output post-processing, bit-compatible with the official code: pasting the 28x28 mask
probabilities of the detections into full-resolution frame masks (``get_seg_masks``).

The official test path holds detections in original pixels (divided by the frame's scale factor
in float32); the paste box is ``int32(float32(float32(box * s) / s))`` (:func:`mask_paste_boxes`)
and the probability map is resized to the box with OpenCV's float32 bilinear kernel
(:func:`cmasktrack.resize.resize_prob_map`), thresholded and written into the frame
(:func:`paste_masks`).
"""

from __future__ import annotations

import warnings
from typing import Sequence, Union

import numpy as np
import torch

from .resize import resize_prob_map

__all__ = ["mask_paste_boxes", "paste_masks", "paste_mask"]

ArrayLike = Union[np.ndarray, torch.Tensor]


def mask_paste_boxes(det_boxes: ArrayLike, scale_factor: float) -> np.ndarray:
    """Integer paste boxes of the official ``get_seg_masks(rescale=True)``.

    The official test path holds detections in original pixels (float32, divided by the
    scale factor), multiplies them back by ``scale_factor`` to extract mask RoIs, and the
    paste divides that again and truncates: ``int32(float32(float32(box * s) / s))``
    (float32 arithmetic throughout: the Python float ``s`` is rounded to float32, as torch
    and numpy do for a float32 array and a Python scalar). The round trip can move a
    coordinate by one pixel compared with ``int32(box)``.

    Args:
        det_boxes: (N, 4) or (N, 5) boxes x1, y1, x2, y2[, score] in original pixels.
        scale_factor: the frame's :attr:`FrameMeta.scale_factor`.

    Returns:
        (N, 4) int32 array.
    """
    b = det_boxes.detach().cpu().numpy() if isinstance(det_boxes, torch.Tensor) else np.asarray(det_boxes)
    b = np.asarray(b, dtype=np.float32).reshape(-1, b.shape[-1] if b.ndim else 4)[:, :4]
    s = np.float32(scale_factor)
    return ((b * s) / s).astype(np.int32)


def _paste_geometry(box: np.ndarray, img_h: int, img_w: int):
    """Truncated box, mask size and the clipped destination/source windows of one paste."""
    x1, y1, x2, y2 = (int(v) for v in np.asarray(box, dtype=np.float32)[:4].astype(np.int32))
    w = max(x2 - x1 + 1, 1)
    h = max(y2 - y1 + 1, 1)
    dx0, dy0 = max(x1, 0), max(y1, 0)
    dx1, dy1 = min(x1 + w, img_w), min(y1 + h, img_h)
    return w, h, x1, y1, dx0, dy0, dx1, dy1


def paste_masks(
    probs: ArrayLike,
    boxes: ArrayLike,
    img_h: int,
    img_w: int,
    threshold: float = 0.5,
) -> torch.Tensor:
    """Paste N mask probability maps into full frames, as the official ``get_seg_masks``.

    Each box is truncated to int32; ``w = max(x2 - x1 + 1, 1)``, ``h = max(y2 - y1 + 1, 1)``;
    the (28, 28) probability map is resized to (w, h) with
    :func:`~cmasktrack.resize.resize_prob_map` (OpenCV bilinear, half-pixel centres),
    thresholded ``> threshold`` and written at ``[y1:y1+h, x1:x1+w]``. Parts outside the frame
    are cut off (the official code crashes there instead; its boxes never leave the frame).
    Work per mask is proportional to its box, not to the frame (beyond the one zero-filled
    output tensor); resize weights are cached per size.

    Args:
        probs: (N, h0, w0) probabilities, numpy or torch (any device; moved to the CPU).
        boxes: (N, 4+) boxes x1, y1, x2, y2 in original pixels (see :func:`mask_paste_boxes`).
        img_h: frame height.
        img_w: frame width.
        threshold: binarisation threshold (strictly greater is foreground).

    Returns:
        (N, img_h, img_w) bool CPU tensor.
    """
    p = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    b = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else np.asarray(boxes)
    if p.ndim != 3:
        raise ValueError(f"probs must be (N, h, w), got shape {p.shape}")
    if b.ndim != 2 or b.shape[1] < 4 or b.shape[0] != p.shape[0]:
        raise ValueError(f"boxes must be (N, 4) with N = {p.shape[0]}, got shape {b.shape}")
    p = p.astype(np.float32, copy=False)
    out = torch.zeros((p.shape[0], int(img_h), int(img_w)), dtype=torch.bool)
    out_np = out.numpy()
    for i in range(p.shape[0]):
        w, h, x1, y1, dx0, dy0, dx1, dy1 = _paste_geometry(b[i], img_h, img_w)
        if dx1 <= dx0 or dy1 <= dy0:
            continue
        m = resize_prob_map(p[i], w, h) > threshold
        out_np[i, dy0:dy1, dx0:dx1] = m[dy0 - y1 : dy1 - y1, dx0 - x1 : dx1 - x1]
    return out


def paste_mask(
    mask_prob: ArrayLike,
    box_xyxy: Union[Sequence[float], np.ndarray, torch.Tensor],
    img_h: int,
    img_w: int,
    threshold: float = 0.5,
) -> np.ndarray:
    """Deprecated: :func:`paste_masks` with one mask; returns an (img_h, img_w) bool array."""
    warnings.warn("paste_mask is deprecated: use paste_masks(probs[None], boxes[None], h, w)[0]",
                  DeprecationWarning, stacklevel=2)
    p = mask_prob.detach().cpu().numpy() if isinstance(mask_prob, torch.Tensor) else np.asarray(mask_prob)
    box = box_xyxy.detach().cpu().numpy() if isinstance(box_xyxy, torch.Tensor) else np.asarray(box_xyxy)
    if box.shape[-1] < 4:
        raise ValueError(f"box must have 4 coordinates x1, y1, x2, y2, got shape {box.shape}")
    return paste_masks(p[None], box.reshape(-1)[None, :4], img_h, img_w, threshold)[0].numpy()
