"""The CMaskTrack R-CNN network: backbone + FPN, RPN, calibration, box / mask / track heads.

This module holds weights and per-frame computations only. The per-video state (the window of
frame features, the tracker's memory) lives in :class:`cmasktrack.tracking.VideoTracker`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..model_config import CMaskTrackConfig
from .backbone import ResNetFPN
from .calibration import TemporalCalibration
from .poolers import MultiLevelRoIAlign
from .roi_heads import BOX_ROI_SIZE, MASK_ROI_SIZE, MASK_SIZE, BoxHead, MaskHead, postprocess_detections
from .rpn import RPN
from .rpn import select_proposals as _select_proposals
from .track_head import TrackHead

#: Number of FPN levels the RoI heads (box, mask, track) read: P2-P5; P6 feeds only the RPN.
HEAD_LEVELS = 4


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
        self.box_roi_pool = MultiLevelRoIAlign(BOX_ROI_SIZE, config.anchor_strides[:HEAD_LEVELS])
        self.mask_roi_pool = MultiLevelRoIAlign(MASK_ROI_SIZE, config.anchor_strides[:HEAD_LEVELS])
        self.box_head = BoxHead(c, BOX_ROI_SIZE, config.box_head_fc, config.num_classes)
        self.mask_head = MaskHead(c, config.mask_head_convs, c, config.num_classes)
        self.track_head = TrackHead(c, BOX_ROI_SIZE, config.track_head_fc)
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

    # ------------------------------------------------------------------ network pieces
    # Training (:func:`cmasktrack.train.forward_train`) and inference
    # (:class:`cmasktrack.tracking.VideoTracker`) compose the network from these methods only.

    def extract_features(self, images: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, H, W) normalised, padded images -> FPN levels [P2, ..., P6]."""
        return self.backbone(images)

    @staticmethod
    def head_levels(feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """The FPN levels the RoI heads read (the first :data:`HEAD_LEVELS`: P2-P5)."""
        return list(feats[:HEAD_LEVELS])

    def calibrate(self, feats: Sequence[torch.Tensor], ref_feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """The head levels of targets calibrated with references, row by row:
        ``F_t + DeformConv(F_r, offsets(corr(F_t, F_r)))`` for row b of ``feats`` and row b of
        ``ref_feats`` (a one-row ``feats`` is shared by every reference row). Without
        calibration (MaskTrack R-CNN) the plain head levels.

        The correlation and the deformable conv run in the calibration's parameter dtype with
        autocast off (float32 in mixed-precision training and inference).
        """
        levels = self.head_levels(feats)
        if self.calibration is None:
            return levels
        refs = self.head_levels(ref_feats)
        dtype = self.calibration.deform_weight.dtype
        out = []
        with torch.autocast(device_type=levels[0].device.type, enabled=False):
            for x, r in zip(levels, refs):
                x, r = x.to(dtype), r.to(dtype)
                if x.size(0) == 1 and r.size(0) > 1:
                    x = x.expand(r.size(0), -1, -1, -1)
                out.append(self.calibration(x, r))
        return out

    def head_features(
        self, feats: Sequence[torch.Tensor], ref_feats: Sequence[Sequence[torch.Tensor]]
    ) -> List[torch.Tensor]:
        """Features the box and mask heads read for one frame, one batch row per reference.

        ``feats``: the frame's FPN levels (batch 1); ``ref_feats``: R references' levels. With
        calibration and at least one reference, row r is the frame calibrated with reference r
        (:meth:`calibrate`); otherwise the plain head levels (one row).
        """
        if self.calibration is None or len(ref_feats) == 0:
            return self.head_levels(feats)
        stacked = [torch.cat([r[lvl] for r in ref_feats], dim=0) for lvl in range(HEAD_LEVELS)]
        return self.calibrate(feats, stacked)

    def rpn_outputs(
        self, feats: Sequence[torch.Tensor]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        """RPN objectness logits and box deltas of every level (from the plain features), and
        the anchors of every level in the same order."""
        logits, deltas = self.rpn(feats)
        return logits, deltas, self.rpn.anchors(feats)

    def select_proposals(
        self,
        logits: Sequence[torch.Tensor],
        deltas: Sequence[torch.Tensor],
        anchors: Sequence[torch.Tensor],
        image_index: int,
        img_shape: Tuple[int, int],
        pre_nms_top_n: Optional[int] = None,
        post_nms_top_n: Optional[int] = None,
        max_num: Optional[int] = None,
    ) -> torch.Tensor:
        """Proposals (K, 5) of batch row ``image_index`` from RPN outputs (no gradient), with
        the config's test-time settings unless overridden."""
        cfg = self.config
        return _select_proposals(
            logits, deltas, anchors, image_index, img_shape,
            cfg.rpn_pre_nms_top_n if pre_nms_top_n is None else pre_nms_top_n,
            cfg.rpn_post_nms_top_n if post_nms_top_n is None else post_nms_top_n,
            cfg.rpn_max_num if max_num is None else max_num,
            cfg.rpn_nms_thresh, cfg.rpn_min_size,
        )

    def proposals(self, feats: Sequence[torch.Tensor], img_shape: Tuple[int, int]) -> torch.Tensor:
        """RPN proposals (K, 5) of a single frame from its plain features."""
        logits, deltas, anchors = self.rpn_outputs(feats)
        return self.select_proposals(logits, deltas, anchors, 0, img_shape)

    @staticmethod
    def _pool(pooler: MultiLevelRoIAlign, levels: Sequence[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """RoI features: ``rois`` (K, 5) with the batch row first, or boxes (K, 4) pooled from
        every batch row (-> (B * K, ...), row-major in (batch row, box))."""
        if rois.size(1) == 4:
            return pooler.pool_shared(levels, rois)
        return pooler(levels, rois)

    def box_roi_features(self, head_feats: Sequence[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """RoI features the box and track heads read (see :meth:`_pool` for the two RoI forms)."""
        return self._pool(self.box_roi_pool, head_feats, rois)

    def mask_roi_features(self, head_feats: Sequence[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """RoI features the mask head reads (see :meth:`_pool` for the two RoI forms)."""
        return self._pool(self.mask_roi_pool, head_feats, rois)

    def box_outputs(self, head_feats: Sequence[torch.Tensor], rois: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Class logits and class-specific box deltas of RoIs (see :meth:`_pool` for the two
        RoI forms) on the head features."""
        return self.box_head(self.box_roi_features(head_feats, rois))

    def mask_logits(self, head_feats: Sequence[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """Class-specific :data:`MASK_SIZE` squared mask logits of RoIs on the head features."""
        return self.mask_head(self.mask_roi_features(head_feats, rois))

    def track_embeddings(self, feats: Sequence[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """Track embeddings (K, D) of RoIs from the *plain* head levels of ``feats``."""
        return self.track_head.embed(self.box_roi_features(self.head_levels(feats), rois))

    def match_logits(self, embeds: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """(N, 1 + M) match logits of embeddings against known objects' ("new" = column 0)."""
        return self.track_head.match_logits(embeds, memory)

    # ------------------------------------------------------------------ test-time steps
    def detect(
        self,
        head_feats: Sequence[torch.Tensor],
        proposals: torch.Tensor,
        img_shape: Tuple[int, int],
        scale_factor: float,
        score_threshold: Optional[float] = None,
    ) -> FrameDetections:
        """Box head on every reference row, then :meth:`detections_from_outputs`."""
        cls_logits, deltas = self.box_outputs(head_feats, proposals[:, :4])
        return self.detections_from_outputs(proposals, cls_logits, deltas, img_shape, scale_factor, score_threshold)

    def detections_from_outputs(
        self,
        proposals: torch.Tensor,
        cls_logits: torch.Tensor,
        deltas: torch.Tensor,
        img_shape: Tuple[int, int],
        scale_factor: float,
        score_threshold: Optional[float] = None,
    ) -> FrameDetections:
        """Detections from the box head's outputs on ``proposals`` (K, 4+) repeated for each
        reference row ((R * K, ...) rows, row-major in (reference row, proposal)): class logits
        and deltas averaged over the rows in float32, then :func:`postprocess_detections`."""
        cfg = self.config
        n = proposals.size(0)
        copies = cls_logits.size(0) // n if n else 1
        cls_logits = cls_logits.float().view(copies, n, -1).mean(dim=0)
        deltas = deltas.float().view(copies, n, -1).mean(dim=0)
        boxes, scores, labels = postprocess_detections(
            proposals[:, :4], cls_logits, deltas, img_shape, scale_factor,
            cfg.score_threshold if score_threshold is None else score_threshold,
            cfg.nms_thresh, cfg.detections_per_img,
        )
        resized = boxes * torch.tensor(scale_factor, dtype=boxes.dtype)
        return FrameDetections(boxes, scores, labels, resized)

    def embed(self, feats: Sequence[torch.Tensor], boxes_resized: torch.Tensor) -> torch.Tensor:
        """Track embeddings (N, D) of a frame's boxes (K, 4) from its *plain* features."""
        return self.track_embeddings(feats, boxes_resized)

    def mask_probs(
        self, head_feats: Sequence[torch.Tensor], boxes_resized: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """(N, 28, 28) mask probabilities of each box's own category; logits are averaged over
        the reference rows before the sigmoid (:meth:`mask_probs_from_logits`)."""
        n = boxes_resized.size(0)
        if n == 0:
            return boxes_resized.new_zeros((0, MASK_SIZE, MASK_SIZE))
        return self.mask_probs_from_logits(self.mask_logits(head_feats, boxes_resized), labels)

    @staticmethod
    def mask_probs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, 28, 28) probabilities of each box's category ``labels`` (N,) from the mask head's
        logits of the N boxes repeated for each reference row ((R * N, classes, 28, 28)):
        averaged over the rows in float32, then the sigmoid."""
        n = labels.size(0)
        if n == 0:
            return logits.new_zeros((0, MASK_SIZE, MASK_SIZE), dtype=torch.float32)
        logits = logits.float()
        logits = logits.view(logits.size(0) // n, n, *logits.shape[1:]).mean(dim=0)
        return logits[torch.arange(n, device=logits.device), labels].sigmoid()
