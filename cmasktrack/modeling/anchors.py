"""Anchor generation, legacy convention (mmdetection v1 ``AnchorGenerator``)."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch


def base_anchors(base_size: int, scales: Sequence[float], ratios: Sequence[float]) -> torch.Tensor:
    """The (A, 4) anchors of one cell, centred on ``(base_size - 1) / 2`` and rounded half-to-even.

    Ratios vary slowest when several scales are given ("scale major" order); for each ratio r the
    anchor is ``w = base * scale / sqrt(r)``, ``h = base * scale * sqrt(r)``.
    """
    ratios_t = torch.tensor(list(ratios), dtype=torch.float32)
    scales_t = torch.tensor(list(scales), dtype=torch.float32)
    h_ratios = torch.sqrt(ratios_t)
    w_ratios = 1 / h_ratios
    ws = (base_size * w_ratios[:, None] * scales_t[None, :]).reshape(-1)
    hs = (base_size * h_ratios[:, None] * scales_t[None, :]).reshape(-1)
    ctr = 0.5 * (base_size - 1)
    return torch.stack(
        [ctr - 0.5 * (ws - 1), ctr - 0.5 * (hs - 1), ctr + 0.5 * (ws - 1), ctr + 0.5 * (hs - 1)], dim=-1
    ).round()


class AnchorGenerator:
    """All anchors of a feature pyramid, flattened per level in (y, x, anchor) order."""

    def __init__(self, strides: Sequence[int], scales: Sequence[float], ratios: Sequence[float]):
        self.strides = tuple(int(s) for s in strides)
        self.cell_anchors = [base_anchors(s, scales, ratios) for s in self.strides]
        self._cache: Dict[Tuple[int, int, int, str], torch.Tensor] = {}

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map cell."""
        return self.cell_anchors[0].size(0)

    def grid_anchors(self, level: int, feat_h: int, feat_w: int, device: torch.device) -> torch.Tensor:
        """(feat_h * feat_w * A, 4) anchors of one level (cached per size and device)."""
        key = (level, feat_h, feat_w, str(device))
        out = self._cache.get(key)
        if out is None:
            stride = self.strides[level]
            sx = torch.arange(feat_w, dtype=torch.float32) * stride
            sy = torch.arange(feat_h, dtype=torch.float32) * stride
            yy, xx = torch.meshgrid(sy, sx, indexing="ij")
            xx, yy = xx.reshape(-1), yy.reshape(-1)
            shifts = torch.stack([xx, yy, xx, yy], dim=-1)
            out = (self.cell_anchors[level][None] + shifts[:, None]).reshape(-1, 4).to(device)
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[key] = out
        return out

    def __call__(self, feature_sizes: Sequence[Tuple[int, int]], device: torch.device) -> List[torch.Tensor]:
        return [self.grid_anchors(i, h, w, device) for i, (h, w) in enumerate(feature_sizes)]
