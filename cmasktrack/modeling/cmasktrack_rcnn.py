"""The CMaskTrack R-CNN network: backbone + FPN, RPN, calibration, box / mask / track heads.

This module holds weights and per-frame computations only. The per-video state (the window of
frame features, the tracker's memory) lives in :class:`cmasktrack.tracking.VideoTracker`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..config import CMaskTrackConfig
from .backbone import ResNetFPN
from .calibration import TemporalCalibration
from .poolers import MultiLevelRoIAlign
from .roi_heads import BoxHead, MaskHead, postprocess_detections
from .rpn import RPN, select_proposals
from .track_head import TrackHead


@dataclass
class FrameDetections:
    """Detections of one frame before tracking.

    ``boxes`` are in original-frame pixels (legacy inclusive corners), ``boxes_resized`` =
    ``boxes * scale_factor`` in the network's input frame; ``labels`` are 1-based category ids.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    boxes_resized: torch.Tensor

    def __len__(self) -> int:
        return int(self.boxes.size(0))

    def select(self, idx: torch.Tensor) -> "FrameDetections":
        """The detections at ``idx``."""
        return FrameDetections(self.boxes[idx], self.scores[idx], self.labels[idx], self.boxes_resized[idx])


class CMaskTrackRCNN(nn.Module):
    """CMaskTrack R-CNN (or MaskTrack R-CNN when ``config.calibration`` is False)."""

    def __init__(self, config: CMaskTrackConfig):
        super().__init__()
        self.config = config
        c = config.fpn_channels
        self.backbone = ResNetFPN(config.depth, c)
        self.rpn = RPN(c, config.anchor_strides, (config.anchor_scale,), config.anchor_ratios)
        self.box_roi_pool = MultiLevelRoIAlign(7, config.anchor_strides[:4])
        self.mask_roi_pool = MultiLevelRoIAlign(14, config.anchor_strides[:4])
        self.box_head = BoxHead(c, 7, config.box_head_fc, config.num_classes)
        self.mask_head = MaskHead(c, config.mask_head_convs, c, config.num_classes)
        self.track_head = TrackHead(c, 7, config.track_head_fc)
        self.calibration: Optional[TemporalCalibration] = (
            TemporalCalibration(c, config.corr_patch_size, config.corr_dilation, config.calibration_convs)
            if config.calibration
            else None
        )

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the parameters."""
        return next(self.parameters()).dtype

    # ------------------------------------------------------------------ per-frame pieces
    def extract_features(self, images: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, H, W) normalised, padded images -> FPN levels [P2, ..., P6]."""
        return self.backbone(images)

    def head_features(
        self, feats: Sequence[torch.Tensor], ref_feats: Sequence[Sequence[torch.Tensor]]
    ) -> List[torch.Tensor]:
        """Features the box and mask heads read (P2-P5), one batch row per reference.

        With calibration and at least one reference: row r is the target calibrated with
        reference r (P6 is not calibrated: no head reads it). Otherwise the plain features
        (one row).
        """
        levels = list(feats[:4])
        if self.calibration is None or len(ref_feats) == 0:
            return levels
        return self.calibration.calibrate_levels(levels, [list(r[:4]) for r in ref_feats])

    def proposals(self, feats: Sequence[torch.Tensor], img_shape: Tuple[int, int]) -> torch.Tensor:
        """RPN proposals (K, 5) of a single frame from its plain features."""
        cfg = self.config
        logits, deltas = self.rpn(feats)
        anchors = self.rpn.anchors(feats)
        return select_proposals(
            logits, deltas, anchors, 0, img_shape, cfg.rpn_pre_nms_top_n, cfg.rpn_post_nms_top_n,
            cfg.rpn_max_num, cfg.rpn_nms_thresh, cfg.rpn_min_size,
        )

    def detect(
        self,
        head_feats: Sequence[torch.Tensor],
        proposals: torch.Tensor,
        img_shape: Tuple[int, int],
        scale_factor: float,
        score_threshold: Optional[float] = None,
    ) -> FrameDetections:
        """Box head on every reference row, class logits and deltas averaged over the rows,
        then :func:`postprocess_detections`."""
        cfg = self.config
        copies = head_feats[0].size(0)
        n = proposals.size(0)
        roi_feats = self.box_roi_pool.pool_shared(head_feats, proposals[:, :4])
        cls_logits, deltas = self.box_head(roi_feats)
        cls_logits = cls_logits.view(copies, n, -1).mean(dim=0)
        deltas = deltas.view(copies, n, -1).mean(dim=0)
        boxes, scores, labels = postprocess_detections(
            proposals[:, :4], cls_logits, deltas, img_shape, scale_factor,
            cfg.score_threshold if score_threshold is None else score_threshold,
            cfg.nms_thresh, cfg.detections_per_img,
        )
        resized = boxes * torch.tensor(scale_factor, dtype=boxes.dtype)
        return FrameDetections(boxes, scores, labels, resized)

    def embed(self, feats: Sequence[torch.Tensor], boxes_resized: torch.Tensor) -> torch.Tensor:
        """Track embeddings (N, D) of boxes from the *plain* features of the frame."""
        roi_feats = self.box_roi_pool.pool_shared(list(feats[:4]), boxes_resized)
        return self.track_head.embed(roi_feats)

    def mask_probs(
        self, head_feats: Sequence[torch.Tensor], boxes_resized: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """(N, 28, 28) mask probabilities of each box's own category; logits are averaged over
        the reference rows before the sigmoid."""
        copies = head_feats[0].size(0)
        n = boxes_resized.size(0)
        if n == 0:
            return boxes_resized.new_zeros((0, 28, 28))
        logits = self.mask_head(self.mask_roi_pool.pool_shared(head_feats, boxes_resized))
        logits = logits.view(copies, n, *logits.shape[1:]).mean(dim=0)
        return logits[torch.arange(n, device=logits.device), labels].sigmoid()
