"""MaskTrack R-CNN's association of a frame's detections with the objects seen so far.

For detection i and known object j the comprehensive score is ``log_softmax(match logits)[i, j]
+ c0 log(score_i) + c1 IoU(box_i, box_j) + c2 [label_i == label_j]``, with a "new object" column
0 whose IoU term is 0 and label term 1; each detection takes the column of its highest score.
"""

from __future__ import annotations

import warnings
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..modeling.boxes import box_iou
from ..modeling.cmasktrack_rcnn import FrameDetections

__all__ = ["TrackMemory"]


class TrackMemory:
    """Known objects of one video: embedding, last box and first label of each track id.

    Objects never expire. :meth:`assign` follows the official ``simple_test_bboxes``: every score
    is computed against the memory as it was before the frame; detections are then taken in
    output order; "new" ones are appended (id = memory size); when several detections pick the
    same object, the one with the highest comprehensive score (ties: the earlier; and only
    above -100, the official initial best) keeps the id and updates the stored box and
    embedding — the label is not updated; the others get no id.
    """

    def __init__(self, match_coeff: Sequence[float] = (1.0, 2.0, 10.0)):
        self.match_coeff = tuple(float(c) for c in match_coeff)
        self.reset()

    def reset(self) -> None:
        """Forget every object (the first frame of a video)."""
        self.embeds: Optional[torch.Tensor] = None
        self.boxes: Optional[torch.Tensor] = None
        self.labels: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return 0 if self.embeds is None else int(self.embeds.size(0))

    def comprehensive_scores(self, det: FrameDetections, match_logits: torch.Tensor, *legacy: torch.Tensor) -> torch.Tensor:
        """(N, 1 + M): log_softmax(match) + c0 log(score) + c1 IoU + c2 [same label]; the "new"
        column has IoU 0 and label term 1. (The old form ``(det, embeds, match_logits)``, whose
        ``embeds`` was unused, still works and is deprecated.)"""
        if legacy:
            warnings.warn("comprehensive_scores(det, embeds, match_logits) is deprecated: embeds was unused; "
                          "call comprehensive_scores(det, match_logits)", DeprecationWarning, stacklevel=2)
            match_logits = legacy[0]
        assert self.boxes is not None and self.labels is not None
        ll = F.log_softmax(match_logits, dim=1)
        n = ll.size(0)
        ious = torch.cat([ll.new_zeros((n, 1)), box_iou(det.boxes, self.boxes)], dim=1)
        same = (self.labels[None, :] == det.labels[:, None]).to(ll.dtype)
        same = torch.cat([ll.new_ones((n, 1)), same], dim=1)
        c0, c1, c2 = self.match_coeff
        return ll + c0 * torch.log(det.scores[:, None]) + c1 * ious + c2 * same

    def assign(self, det: FrameDetections, embeds: torch.Tensor, match_logits_fn) -> np.ndarray:
        """Track ids (N,) for the detections of a frame, -1 for those dropped."""
        n = len(det)
        if n == 0:
            return np.zeros((0,), dtype=np.int64)
        if self.embeds is None:
            self.embeds, self.boxes, self.labels = embeds.clone(), det.boxes.clone(), det.labels.clone()
            return np.arange(n, dtype=np.int64)
        comp = self.comprehensive_scores(det, match_logits_fn(embeds, self.embeds))
        best_scores, match_ids = comp.max(dim=1)
        num_old = len(self)
        ids = np.full(n, -1, dtype=np.int64)
        best = np.full(num_old, -100.0)
        winner = np.full(num_old, -1, dtype=np.int64)
        new_rows: List[int] = []
        for i, (m, score) in enumerate(zip(match_ids.tolist(), best_scores.tolist())):
            if m == 0:
                ids[i] = num_old + len(new_rows)
                new_rows.append(i)
            else:
                if score > best[m - 1]:
                    best[m - 1] = score
                    if winner[m - 1] >= 0:
                        ids[winner[m - 1]] = -1
                    winner[m - 1] = i
                    ids[i] = m - 1
        upd = np.nonzero(winner >= 0)[0]
        if upd.size:
            src = torch.as_tensor(winner[upd], device=embeds.device)
            dst = torch.as_tensor(upd, device=embeds.device)
            self.embeds[dst] = embeds[src]
            self.boxes[dst] = det.boxes[src]
        if new_rows:
            rows = torch.as_tensor(new_rows, device=embeds.device)
            self.embeds = torch.cat([self.embeds, embeds[rows]])
            self.boxes = torch.cat([self.boxes, det.boxes[rows]])
            self.labels = torch.cat([self.labels, det.labels[rows]])
        return ids
