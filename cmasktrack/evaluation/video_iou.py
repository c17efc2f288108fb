"""Video (spatio-temporal) mask IoU, as the official YouTube-VIS / OVIS evaluation defines it.

For a predicted track ``d`` and a ground-truth track ``g`` (per-frame compressed RLE, ``None``
where absent), frames are paired up to the shorter of the two lists and

    IoU(d, g) = sum_t |d_t & g_t| / sum_t |d_t | g_t|

with absent frames counting as empty masks, and IoU = 0 when the union is empty. Crowd ground
truths use the same IoU. The sums are exact integers, so the value is bit-identical to the
official ``iou_seq`` (which adds per-frame RLE-merge areas in floating point).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["video_iou_matrix"]

Track = Sequence[Optional[dict]]


def video_iou_matrix(predictions: Sequence[Track], ground_truths: Sequence[Track]) -> np.ndarray:
    """IoU of every predicted track with every ground-truth track.

    Args:
        predictions: ``D`` tracks, each a per-frame list of compressed RLE or ``None``.
        ground_truths: ``G`` tracks in the same form.

    Returns:
        ``(D, G)`` float64 array.

    Raises:
        ValueError: two masks present in the same frame have different sizes.
    """
    num_d, num_g = len(predictions), len(ground_truths)
    ious = np.zeros((num_d, num_g), dtype=np.float64)
    if num_d == 0 or num_g == 0:
        return ious
    d_len = np.array([len(s) for s in predictions], dtype=np.int64)
    g_len = np.array([len(s) for s in ground_truths], dtype=np.int64)
    num_frames = int(max(d_len.max(), g_len.max()))
    d_area = np.zeros((num_d, num_frames), dtype=np.int64)
    g_area = np.zeros((num_g, num_frames), dtype=np.int64)
    inter = np.zeros((num_d, num_g), dtype=np.int64)
    for t in range(num_frames):
        d_idx = [i for i in range(num_d) if t < d_len[i] and predictions[i][t] is not None]
        g_idx = [j for j in range(num_g) if t < g_len[j] and ground_truths[j][t] is not None]
        if d_idx:
            d_rles = [predictions[i][t] for i in d_idx]
            d_area[d_idx, t] = mask_utils.area(d_rles)
        if g_idx:
            g_rles = [ground_truths[j][t] for j in g_idx]
            g_area[g_idx, t] = mask_utils.area(g_rles)
        if d_idx and g_idx:
            # With every ground truth flagged "crowd", pycocotools returns |d & g| / |d|
            # (0 when disjoint); multiplying back by the integer |d| recovers |d & g| exactly
            # (relative rounding error ~1e-16 on integers < 2^32).
            ratio = np.asarray(mask_utils.iou(d_rles, g_rles, [1] * len(g_idx)), dtype=np.float64)
            if (ratio < 0).any():
                i, j = np.argwhere(ratio < 0)[0]
                raise ValueError(
                    f"frame {t}: mask sizes differ ({list(d_rles[i]['size'])} vs {list(g_rles[j]['size'])})"
                )
            counts = np.rint(ratio * d_area[d_idx, t][:, None]).astype(np.int64)
            inter[np.ix_(d_idx, g_idx)] += counts
    # union = sum of both tracks' areas over the paired frames minus the intersection
    d_cum = np.concatenate([np.zeros((num_d, 1), np.int64), np.cumsum(d_area, axis=1)], axis=1)
    g_cum = np.concatenate([np.zeros((num_g, 1), np.int64), np.cumsum(g_area, axis=1)], axis=1)
    paired = np.minimum(d_len[:, None], g_len[None, :])
    union = d_cum[np.arange(num_d)[:, None], paired] + g_cum[np.arange(num_g)[None, :], paired] - inter
    valid = union > 0
    ious[valid] = inter[valid].astype(np.float64) / union[valid].astype(np.float64)
    return ious
