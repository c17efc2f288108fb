"""Box and mask heads on RoI features, and the test-time detection post-processing."""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .boxes import decode_boxes, nms_legacy

#: Standard deviations of the box head's regression targets (means are zero).
BBOX_STDS = (0.1, 0.1, 0.2, 0.2)
#: Side of the box head's RoI features and of the mask head's (which upsamples them x2).
BOX_ROI_SIZE = 7
MASK_ROI_SIZE = 14
#: Side of the mask head's logits and of its training targets.
MASK_SIZE = 2 * MASK_ROI_SIZE


class BoxHead(nn.Module):
    """Two shared FCs (C*7*7 -> 1024 -> 1024, ReLU), class logits (incl. background) and
    class-specific box deltas."""

    def __init__(self, in_channels: int = 256, roi_size: int = 7, fc_dim: int = 1024, num_classes: int = 26):
        super().__init__()
        self.num_classes = num_classes
        self.shared_fcs = nn.ModuleList(
            [nn.Linear(in_channels * roi_size * roi_size, fc_dim), nn.Linear(fc_dim, fc_dim)]
        )
        self.fc_cls = nn.Linear(fc_dim, num_classes)
        self.fc_reg = nn.Linear(fc_dim, num_classes * 4)
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.normal_(self.fc_reg.weight, std=0.001)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.zeros_(self.fc_reg.bias)
        for fc in self.shared_fcs:
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)


class MaskHead(nn.Module):
    """4 x (3x3 conv 256 + ReLU), 2x transposed conv + ReLU, 1x1 conv to class-specific logits."""

    def __init__(self, in_channels: int = 256, num_convs: int = 4, conv_dim: int = 256, num_classes: int = 26):
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Conv2d(in_channels if i == 0 else conv_dim, conv_dim, 3, padding=1) for i in range(num_convs)]
        )
        self.upsample = nn.ConvTranspose2d(conv_dim, conv_dim, 2, stride=2)
        self.conv_logits = nn.Conv2d(conv_dim, num_classes, 1)
        for m in list(self.convs) + [self.upsample, self.conv_logits]:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.relu(conv(x))
        x = F.relu(self.upsample(x))
        return self.conv_logits(x)


def postprocess_detections(
    rois: torch.Tensor,
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    img_shape: Tuple[int, int],
    scale_factor: float,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Final detections of one frame, as the official ``get_det_bboxes`` + ``multiclass_nms``.

    ``rois`` (N, 4) and the decoded boxes are in the resized image; boxes are clipped there,
    divided by ``scale_factor`` (float32) and only then thresholded and suppressed — NMS runs
    on original-pixel boxes. For each category 1..C-1 in order: scores > ``score_thresh``,
    NMS; results concatenated in category order and, only when more than
    ``detections_per_img`` remain, sorted by score (stable) and cut.

    Returns boxes (K, 4) in original pixels, scores (K,), labels (K,) as 1-based category ids.
    """
    scores = F.softmax(cls_logits, dim=1)
    boxes = decode_boxes(rois, box_deltas, BBOX_STDS, max_shape=img_shape)
    boxes = boxes / torch.tensor(scale_factor, dtype=boxes.dtype)
    out_boxes: List[torch.Tensor] = []
    out_scores: List[torch.Tensor] = []
    out_labels: List[torch.Tensor] = []
    for c in range(1, scores.size(1)):
        inds = scores[:, c] > score_thresh
        if not bool(inds.any()):
            continue
        b = boxes[inds, 4 * c: 4 * c + 4]
        s = scores[inds, c]
        keep = nms_legacy(b, s, nms_thresh)
        out_boxes.append(b[keep])
        out_scores.append(s[keep])
        out_labels.append(torch.full((keep.numel(),), c, dtype=torch.long, device=b.device))
    if not out_boxes:
        return boxes.new_zeros((0, 4)), boxes.new_zeros((0,)), torch.zeros((0,), dtype=torch.long, device=boxes.device)
    b, s, lab = torch.cat(out_boxes), torch.cat(out_scores), torch.cat(out_labels)
    if b.size(0) > detections_per_img:
        order = torch.sort(s, descending=True, stable=True).indices[:detections_per_img]
        b, s, lab = b[order], s[order], lab[order]
    return b, s, lab
