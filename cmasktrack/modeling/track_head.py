"""MaskTrack R-CNN's tracking head: RoI embeddings and match logits against known objects."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TrackHead(nn.Module):
    """Two FCs (C*7*7 -> 1024, ReLU, -> 1024) embed each detection's 7x7 RoI features; the match
    logits of detections against stored objects are dot products, with a constant 0 logit
    prepended for "new object"."""

    def __init__(self, in_channels: int = 256, roi_size: int = 7, fc_dim: int = 1024):
        super().__init__()
        self.fcs = nn.ModuleList([nn.Linear(in_channels * roi_size * roi_size, fc_dim), nn.Linear(fc_dim, fc_dim)])
        for fc in self.fcs:
            nn.init.normal_(fc.weight, 0, 0.01)
            nn.init.zeros_(fc.bias)

    def embed(self, roi_feats: torch.Tensor) -> torch.Tensor:
        """(N, C, 7, 7) RoI features -> (N, fc_dim) embeddings."""
        x = roi_feats.flatten(1)
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if i < len(self.fcs) - 1:
                x = F.relu(x)
        return x

    @staticmethod
    def match_logits(embeds: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """(N, D) x (M, D) -> (N, 1 + M) logits; column 0 is the "new object" logit 0."""
        prod = embeds @ memory.t()
        return torch.cat([prod.new_zeros((prod.size(0), 1)), prod], dim=1)
