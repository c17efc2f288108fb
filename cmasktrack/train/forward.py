"""The training forward pass: losses of a batch, as the official ``TwoStageDetector.forward_train``.

For each frame pair: FPN features of the frame (x) and of its reference (ref_x); the RPN on
the plain x (targets and loss; proposals chosen with the test-time settings, no gradient);
RCNN sampling on the proposals plus the ground truths; the box head and the mask head read the
*calibrated* features (x + DeformConv(ref_x, offsets(corr(x, ref_x)))), so the calibration is
trained end to end through the correlation's backward; the track head embeds the positive RoIs
on the *plain* x and the reference frame's ground-truth boxes on the plain ref_x, and is trained
with the match cross-entropy over [new, reference objects]. Without calibration (MaskTrack
R-CNN) the heads read x.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn

from ..modeling.roi_heads import MASK_SIZE
from .config import TrainConfig
from .dataset import TrainBatch
from .losses import mask_loss, match_loss, rcnn_losses, rpn_losses, total_loss
from .targets import anchor_valid_flags, mask_targets, rpn_targets, sample_rois

__all__ = ["forward_train", "TrainingModule"]


def _rois(boxes: List[torch.Tensor]) -> torch.Tensor:
    """Per-image (N_i, 4) boxes -> (sum N_i, 5) RoIs with the image index first."""
    parts = [torch.cat([b.new_full((b.size(0), 1), float(i)), b[:, :4]], dim=1) for i, b in enumerate(boxes)]
    return torch.cat(parts, dim=0)


def forward_train(
    model: nn.Module,
    batch: TrainBatch,
    cfg: Optional[TrainConfig] = None,
    generator: Optional[torch.Generator] = None,
) -> Dict[str, torch.Tensor]:
    """Losses of one batch: ``loss_rpn_cls``, ``loss_rpn_box``, ``loss_cls``, ``loss_box``,
    ``loss_mask``, ``loss_match`` (their sum is what is minimised, see
    :func:`cmasktrack.train.losses.total_loss`) and the accuracies ``acc``, ``match_acc``.

    The network is composed from the model's own methods (``extract_features``,
    ``rpn_outputs``, ``select_proposals``, ``calibrate``, ``box_outputs``,
    ``track_embeddings``, ``match_logits``, ``mask_logits``), the same ones inference uses.

    Args:
        model: a :class:`cmasktrack.modeling.cmasktrack_rcnn.CMaskTrackRCNN` (or
            :class:`cmasktrack.model.CMaskTrack`), put into training state by
            :func:`cmasktrack.train.prepare_model`.
        batch: a :class:`TrainBatch` on the model's device.
        cfg: target-assignment settings (default: the official recipe).
        generator: the CPU generator the anchor and RoI sampling draw from (reproducibility).
            With ``rpn_num_samples`` / ``rcnn_num_samples`` at least the number of candidates,
            every candidate is taken and the losses do not depend on it.
    """
    cfg = cfg or TrainConfig()
    anchor_strides = model.config.anchor_strides
    b = len(batch)
    feats_all = model.extract_features(torch.cat([batch.images, batch.ref_images], dim=0))
    feats = [f[:b] for f in feats_all]
    ref_feats = [f[b:] for f in feats_all]

    # ---------------------------------------------------------------- RPN (plain features)
    logits, deltas, anchor_levels = model.rpn_outputs(feats)
    anchors = torch.cat(anchor_levels, dim=0)
    sizes = [tuple(f.shape[-2:]) for f in feats]
    num_anchors = model.rpn.anchor_generator.num_anchors
    targets = []
    for i in range(b):
        valid = anchor_valid_flags(sizes, anchor_strides, num_anchors, batch.pad_shapes[i], anchors.device)
        targets.append(rpn_targets(
            anchors, valid, batch.gt_boxes[i], batch.img_shapes[i], pos_iou=cfg.rpn_pos_iou,
            neg_iou=cfg.rpn_neg_iou, min_pos_iou=cfg.rpn_min_pos_iou, num_samples=cfg.rpn_num_samples,
            pos_fraction=cfg.rpn_pos_fraction, allowed_border=cfg.rpn_allowed_border, generator=generator,
        ))
    losses: Dict[str, torch.Tensor] = rpn_losses(logits, deltas, targets, cfg.rpn_smoothl1_beta)

    # ---------------------------------------------------------------- proposals + sampling
    detached_logits = [lg.detach().float() for lg in logits]
    detached_deltas = [d.detach().float() for d in deltas]
    samples = []
    for i in range(b):
        proposals = model.select_proposals(
            detached_logits, detached_deltas, anchor_levels, i, batch.img_shapes[i],
            cfg.train_rpn_pre_nms_top_n, cfg.train_rpn_post_nms_top_n, cfg.train_rpn_max_num,
        )
        samples.append(sample_rois(
            proposals, batch.gt_boxes[i], batch.gt_labels[i], batch.gt_ref_index[i],
            gt_boxes_ignore=batch.gt_boxes_ignore[i], pos_iou=cfg.rcnn_pos_iou, neg_iou=cfg.rcnn_neg_iou,
            min_pos_iou=cfg.rcnn_min_pos_iou, num_samples=cfg.rcnn_num_samples,
            pos_fraction=cfg.rcnn_pos_fraction, add_gt_as_proposals=cfg.rcnn_add_gt_as_proposals,
            ignore_iof_thr=cfg.ignore_iof_thr, generator=generator,
        ))

    # ---------------------------------------------------------------- box head (calibrated)
    head_feats = model.calibrate(feats, ref_feats)
    rois = _rois([s.boxes for s in samples])
    cls_logits, box_deltas = model.box_outputs(head_feats, rois)
    labels = torch.cat([s.labels for s in samples])
    pos_mask = torch.cat([torch.arange(s.boxes.size(0), device=rois.device) < s.num_pos for s in samples])
    box_targets = torch.cat([s.box_targets for s in samples])
    losses.update(rcnn_losses(cls_logits, box_deltas, labels, box_targets, pos_mask, cfg.rcnn_smoothl1_beta))

    # ---------------------------------------------------------------- track head (plain)
    pos_rois = _rois([s.pos_boxes for s in samples])
    pos_embeds = model.track_embeddings(feats, pos_rois)
    ref_embeds = model.track_embeddings(ref_feats, _rois(list(batch.ref_boxes)))
    pos_split = torch.split(pos_embeds, [s.num_pos for s in samples])
    ref_split = torch.split(ref_embeds, [r.size(0) for r in batch.ref_boxes])
    match_logits = [model.match_logits(p, r) for p, r in zip(pos_split, ref_split)]
    losses.update(match_loss(match_logits, [s.ref_targets for s in samples]))

    # ---------------------------------------------------------------- mask head (calibrated)
    mask_logits = model.mask_logits(head_feats, pos_rois)
    m_targets = torch.cat([
        mask_targets(s.pos_boxes, s.pos_gt_index, batch.gt_masks[i], MASK_SIZE) for i, s in enumerate(samples)
    ]).to(mask_logits.device)
    pos_labels = torch.cat([s.labels[: s.num_pos] for s in samples])
    losses["loss_mask"] = mask_loss(mask_logits, m_targets, pos_labels)
    return losses


class TrainingModule(nn.Module):
    """Wraps a model so that one ``forward(batch, generator)`` call returns the loss dict
    (what :class:`torch.nn.parallel.DistributedDataParallel` needs to wrap)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig):
        super().__init__()
        self.model = model
        self.cfg = cfg

    def forward(self, batch: TrainBatch, generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        losses = forward_train(self.model, batch, self.cfg, generator)
        if self.cfg.match_loss_weight != 1.0:
            losses["loss_match"] = losses["loss_match"] * self.cfg.match_loss_weight
        losses["total_loss"] = total_loss(losses)
        return losses
