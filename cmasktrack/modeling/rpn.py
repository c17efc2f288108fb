"""Region proposal network: the shared head and the test-time proposal selection."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .anchors import AnchorGenerator
from .boxes import decode_boxes, nms_legacy


class RPNHead(nn.Module):
    """3x3 conv + ReLU shared over levels, then 1x1 objectness (sigmoid) and 1x1 box deltas."""

    def __init__(self, in_channels: int = 256, feat_channels: int = 256, num_anchors: int = 3):
        super().__init__()
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, num_anchors, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, num_anchors * 4, 1)
        for m in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        logits, deltas = [], []
        for x in feats:
            t = F.relu(self.rpn_conv(x))
            logits.append(self.rpn_cls(t))
            deltas.append(self.rpn_reg(t))
        return logits, deltas


@torch.no_grad()
def select_proposals(
    logits: Sequence[torch.Tensor],
    deltas: Sequence[torch.Tensor],
    anchors: Sequence[torch.Tensor],
    image_index: int,
    img_shape: Tuple[int, int],
    pre_nms_top_n: int = 1000,
    post_nms_top_n: int = 1000,
    max_num: int = 1000,
    nms_thresh: float = 0.7,
    min_size: float = 0.0,
) -> torch.Tensor:
    """Proposals (K, 5) = (x1, y1, x2, y2, score) of one image, in the resized image's pixels.

    Per level: the best ``pre_nms_top_n`` anchors by sigmoid score, decoded and clipped to
    ``img_shape`` (the resized, unpadded image), optional min-size filter, NMS, the best
    ``post_nms_top_n``; then the best ``max_num`` over all levels, sorted by score.
    """
    per_level = []
    for lg, dl, anc in zip(logits, deltas, anchors):
        scores = lg[image_index].permute(1, 2, 0).reshape(-1).sigmoid()
        d = dl[image_index].permute(1, 2, 0).reshape(-1, 4)
        if pre_nms_top_n > 0 and scores.numel() > pre_nms_top_n:
            scores, idx = scores.topk(pre_nms_top_n)
            d = d[idx]
            anc = anc[idx]
        boxes = decode_boxes(anc, d, max_shape=img_shape)
        if min_size > 0:
            w = boxes[:, 2] - boxes[:, 0] + 1
            h = boxes[:, 3] - boxes[:, 1] + 1
            valid = (w >= min_size) & (h >= min_size)
            boxes, scores = boxes[valid], scores[valid]
        keep = nms_legacy(boxes, scores, nms_thresh)[:post_nms_top_n]
        per_level.append(torch.cat([boxes[keep], scores[keep, None]], dim=1))
    proposals = torch.cat(per_level, 0)
    num = min(max_num, proposals.size(0))
    _, idx = proposals[:, 4].topk(num)
    return proposals[idx]


class RPN(nn.Module):
    """Head + anchors; ``forward`` returns the raw outputs, :meth:`proposals` the boxes."""

    def __init__(
        self,
        in_channels: int,
        strides: Sequence[int],
        scales: Sequence[float],
        ratios: Sequence[float],
    ):
        super().__init__()
        self.anchor_generator = AnchorGenerator(strides, scales, ratios)
        self.head = RPNHead(in_channels, in_channels, self.anchor_generator.num_anchors)

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        return self.head(feats)

    def anchors(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Anchors of every level for these feature maps, in the RPN outputs' order."""
        return self.anchor_generator([tuple(f.shape[-2:]) for f in feats], feats[0].device)
