"""Training losses, normalised as the official mmdetection v1 heads normalise them.

=============  ==========================================================================
loss           definition (sums over the whole batch of one process)
=============  ==========================================================================
rpn_cls        sigmoid BCE over sampled anchors / N, N = sum over images of
               max(#pos, 1) + max(#neg, 1)
rpn_box        smooth L1 (beta 1/9) over the 4 deltas of positive anchors / N
cls            softmax cross-entropy, mean over sampled RoIs
box            smooth L1 (beta 1) over the 4 class-specific deltas of positive RoIs /
               number of sampled RoIs
mask           BCE of the positive RoIs' own-class 28x28 logits, mean over all pixels
match          per image: cross-entropy of the positive RoIs' match logits over [new,
               reference objects], mean over positives; then mean over the images
=============  ==========================================================================

The official ``TrackHead.loss`` skips an image with exactly one positive RoI (a ``squeeze``
quirk); here such an image counts like any other.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F

from .targets import RPNTargets

__all__ = [
    "rpn_losses",
    "rcnn_losses",
    "mask_loss",
    "match_loss",
    "flatten_rpn_outputs",
    "total_loss",
]


def flatten_rpn_outputs(logits: Sequence[torch.Tensor], deltas: Sequence[torch.Tensor]):
    """Per-level RPN outputs (B, A, H, W) / (B, 4A, H, W) -> (B, sum HWA) logits and
    (B, sum HWA, 4) deltas in the anchors' (y, x, anchor) order."""
    b = logits[0].size(0)
    flat_logits = torch.cat([lg.permute(0, 2, 3, 1).reshape(b, -1) for lg in logits], dim=1)
    flat_deltas = torch.cat([d.permute(0, 2, 3, 1).reshape(b, -1, 4) for d in deltas], dim=1)
    return flat_logits, flat_deltas


def rpn_losses(
    logits: Sequence[torch.Tensor],
    deltas: Sequence[torch.Tensor],
    targets: Sequence[RPNTargets],
    beta: float = 1.0 / 9.0,
) -> Dict[str, torch.Tensor]:
    """``loss_rpn_cls`` and ``loss_rpn_box`` of a batch (see the module table)."""
    flat_logits, flat_deltas = flatten_rpn_outputs(logits, deltas)
    labels = torch.stack([t.labels for t in targets]).to(flat_logits.dtype)
    label_w = torch.stack([t.label_weights for t in targets]).to(flat_logits.dtype)
    box_t = torch.stack([t.box_targets for t in targets]).to(flat_deltas.dtype)
    box_w = torch.stack([t.box_weights for t in targets]).to(flat_deltas.dtype)
    norm = float(sum(max(t.num_pos, 1) + max(t.num_neg, 1) for t in targets))
    cls = F.binary_cross_entropy_with_logits(flat_logits.float(), labels.float(), label_w.float(), reduction="sum")
    reg = F.smooth_l1_loss(flat_deltas.float(), box_t.float(), reduction="none", beta=beta)
    return {"loss_rpn_cls": cls / norm, "loss_rpn_box": (reg * box_w.float()).sum() / norm}


def rcnn_losses(
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    labels: torch.Tensor,
    box_targets: torch.Tensor,
    pos_mask: torch.Tensor,
    beta: float = 1.0,
) -> Dict[str, torch.Tensor]:
    """``loss_cls``, ``loss_box`` and the classification accuracy ``acc`` (percent) of the
    sampled RoIs of a batch.

    ``cls_logits`` (S, C), ``box_deltas`` (S, 4C), ``labels`` (S,), ``box_targets`` (P, 4) for
    the RoIs flagged by ``pos_mask`` (S,) in order.
    """
    s = cls_logits.size(0)
    cls_logits = cls_logits.float()
    if s == 0:
        zero = cls_logits.sum() * 0 + box_deltas.float().sum() * 0
        return {"loss_cls": zero, "loss_box": zero, "acc": zero.detach()}
    loss_cls = F.cross_entropy(cls_logits, labels, reduction="mean")
    pos = torch.nonzero(pos_mask).squeeze(1)
    deltas = box_deltas.float().view(s, -1, 4)[pos, labels[pos]]
    reg = F.smooth_l1_loss(deltas, box_targets.float(), reduction="sum", beta=beta)
    loss_box = reg / s + box_deltas.float().sum() * 0  # keep every delta in the graph
    acc = (cls_logits.argmax(dim=1) == labels).float().mean() * 100.0
    return {"loss_cls": loss_cls, "loss_box": loss_box, "acc": acc.detach()}


def mask_loss(mask_logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE of each positive RoI's own-class mask logits (P, C, M, M) against (P, M, M)
    targets, averaged over every pixel (zero, still connected to the graph, when P = 0)."""
    p = mask_logits.size(0)
    if p == 0:
        return mask_logits.float().sum() * 0
    own = mask_logits[torch.arange(p, device=mask_logits.device), labels].float()
    return F.binary_cross_entropy_with_logits(own, targets.float(), reduction="mean")


def match_loss(logits: List[torch.Tensor], targets: List[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``loss_match`` (mean over images of the mean cross-entropy over each image's positive
    RoIs) and ``match_acc`` (percent, over all positives) from per-image (P_i, 1 + R_i) logits
    and (P_i,) targets in [0, R_i]."""
    n = len(logits)
    total = None
    correct = 0.0
    count = 0
    for lg, tg in zip(logits, targets):
        lg = lg.float()
        if lg.size(0) == 0:
            term = lg.sum() * 0
        else:
            term = F.cross_entropy(lg, tg, reduction="mean")
            correct += float((lg.argmax(dim=1) == tg).sum())
            count += int(tg.numel())
        total = term if total is None else total + term
    if total is None:
        raise ValueError("match_loss needs at least one image")
    acc = torch.tensor(100.0 * correct / count if count else 0.0)
    return {"loss_match": total / max(n, 1), "match_acc": acc}


def total_loss(losses: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The sum of every entry whose name starts with ``loss`` (accuracies are not losses)."""
    terms = [v for k, v in losses.items() if k.startswith("loss")]
    if not terms:
        raise ValueError("no loss terms in the dict")
    return torch.stack([t.float().reshape(()) for t in terms]).sum()
