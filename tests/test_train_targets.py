"""Target assignment, sampling and losses of cmasktrack.train against hand-computed cases and
OpenCV (the official code resizes masks with cv2)."""

import math

import numpy as np
import pytest
import torch

from cmasktrack.train.dataset import resize_nearest_uint8
from cmasktrack.train.losses import mask_loss, match_loss, rcnn_losses, rpn_losses, total_loss
from cmasktrack.train.targets import (
    anchor_inside_flags,
    anchor_valid_flags,
    assign_max_iou,
    mask_targets,
    rpn_targets,
    sample_balanced,
    sample_rois,
)

T = lambda *rows: torch.tensor(rows, dtype=torch.float32)  # noqa: E731


# ------------------------------------------------------------------------------ assigner
def test_assign_thresholds_with_legacy_iou():
    gt = T([0, 0, 9, 9])
    boxes = T([0, 0, 9, 9],      # IoU 1            -> positive
              [0, 0, 9, 4],      # 50 / 100 = 0.5   -> between the thresholds: ignored
              [20, 20, 29, 29],  # 0                -> negative
              [0, 0, 9, 19],     # 100 / 200 = 0.5  -> ignored
              [0, 0, 9, 1])      # 20 / 100 = 0.2   -> negative
    r = assign_max_iou(boxes, gt, 0.7, 0.3, 0.3)
    assert r.gt_inds.tolist() == [1, -1, 0, -1, 0]
    assert torch.allclose(r.max_overlaps, torch.tensor([1.0, 0.5, 0.0, 0.5, 0.2]))


def test_assign_gives_each_gt_its_best_box_above_min_pos_iou():
    gt = T([0, 0, 9, 9], [100, 100, 109, 109])
    boxes = T([0, 0, 9, 5],          # 60/100 = 0.6: below 0.7 but gt 0's best -> positive
              [0, 0, 9, 2],          # 0.3: not < 0.3 (no negative), not gt 0's best -> ignored
              [100, 100, 109, 101])  # 0.2: gt 1's best, but below min_pos_iou 0.3 -> negative
    r = assign_max_iou(boxes, gt, 0.7, 0.3, 0.3)
    assert r.gt_inds.tolist() == [1, -1, 0]


def test_assign_ties_and_gt_max_assign_all():
    gt = T([0, 0, 9, 9])
    boxes = T([0, 0, 9, 4], [0, 5, 9, 9], [30, 30, 40, 40])  # both halves have IoU 0.5
    assert assign_max_iou(boxes, gt, 0.7, 0.3, 0.3).gt_inds.tolist() == [1, 1, 0]
    assert assign_max_iou(boxes, gt, 0.7, 0.3, 0.3, gt_max_assign_all=False).gt_inds.tolist() == [1, -1, 0]


def test_assign_best_box_goes_to_the_gt_it_is_best_for():
    # p overlaps B more (0.857) than A (0.833), but p is A's best box and q is B's:
    # mmdetection assigns p to A (torchvision's Matcher would keep p -> B).
    gt = T([0, 0, 9, 9], [0, 0, 9, 13])
    boxes = T([0, 0, 9, 11], [0, 0, 9, 13])
    r = assign_max_iou(boxes, gt, 0.5, 0.5, 0.5)
    assert r.gt_inds.tolist() == [1, 2]
    assert r.max_overlaps[0].item() == pytest.approx(120 / 140)


def test_assign_empty_and_ignore():
    boxes = T([0, 0, 9, 9], [100, 100, 109, 109])
    assert assign_max_iou(boxes, torch.zeros((0, 4)), 0.7, 0.3).gt_inds.tolist() == [0, 0]
    assert assign_max_iou(torch.zeros((0, 4)), T([0, 0, 9, 9]), 0.7, 0.3).gt_inds.numel() == 0
    crowd = T([95, 95, 120, 120])
    gt = T([0, 0, 9, 9])
    assert assign_max_iou(boxes, gt, 0.5, 0.5, 0.5, gt_boxes_ignore=crowd).gt_inds.tolist() == [1, 0]
    r = assign_max_iou(boxes, gt, 0.5, 0.5, 0.5, gt_boxes_ignore=crowd, ignore_iof_thr=0.5)
    assert r.gt_inds.tolist() == [1, -1]


# ------------------------------------------------------------------------------ sampler
def test_sample_balanced_counts_and_sets():
    gt_inds = torch.cat([torch.arange(1, 11), torch.zeros(100, dtype=torch.long), torch.full((5,), -1)])
    gt_inds = gt_inds[torch.randperm(gt_inds.numel(), generator=torch.Generator().manual_seed(3))]
    g = torch.Generator().manual_seed(0)
    pos, neg = sample_balanced(gt_inds, 16, 0.5, g)
    assert pos.numel() == 8 and neg.numel() == 8
    assert bool((gt_inds[pos] > 0).all()) and bool((gt_inds[neg] == 0).all())
    assert pos.tolist() == sorted(pos.tolist()) and len(set(pos.tolist())) == 8
    assert neg.tolist() == sorted(neg.tolist()) and len(set(neg.tolist())) == 8
    # few positives: the rest of the budget goes to negatives
    few = torch.tensor([1, 2, 3] + [0] * 50 + [-1] * 4)
    pos, neg = sample_balanced(few, 16, 0.5, g)
    assert pos.tolist() == [0, 1, 2] and neg.numel() == 13
    # not enough of either
    pos, neg = sample_balanced(torch.tensor([0, 0, 1, -1, 0]), 16, 0.25, g)
    assert pos.tolist() == [2] and neg.tolist() == [0, 1, 4]
    # reproducible with the same generator seed
    a = sample_balanced(gt_inds, 16, 0.5, torch.Generator().manual_seed(5))
    b = sample_balanced(gt_inds, 16, 0.5, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ------------------------------------------------------------------------------ RPN
def test_anchor_valid_and_inside_flags():
    flags = anchor_valid_flags([(4, 5)], [8], 2, pad_shape=(24, 28))
    assert flags.shape == (40,) and int(flags.sum()) == 3 * 4 * 2  # ceil(24/8)=3 rows, ceil(28/8)=4 cols
    assert not flags[(3 * 5 + 0) * 2 + 0] and flags[(2 * 5 + 3) * 2 + 1] and not flags[(0 * 5 + 4) * 2]
    anchors = T([0, 0, 29, 19], [-1, 0, 10, 10], [0, 0, 30, 10], [5, 5, 6, 6])
    valid = torch.tensor([True, True, True, False])
    assert anchor_inside_flags(anchors, valid, (20, 30), 0).tolist() == [True, False, False, False]
    assert anchor_inside_flags(anchors, valid, (20, 30), 1).tolist() == [True, True, True, False]
    assert anchor_inside_flags(anchors, valid, (20, 30), -1).tolist() == [True, True, True, False]


def test_rpn_targets_hand_computed():
    anchors = T([0, 0, 15, 15],    # IoU 196/316 = 0.62 with the gt: its best anchor -> positive
                [16, 16, 31, 31],  # 4/508 -> negative
                [8, 8, 23, 23],    # 100/412 = 0.24 -> negative
                [20, 0, 40, 10])   # crosses the right border (x2 >= 32) -> no label
    gt = T([2, 2, 17, 17])
    t = rpn_targets(anchors, torch.ones(4, dtype=torch.bool), gt, (32, 32))
    assert t.labels.tolist() == [1, 0, 0, 0]
    assert t.label_weights.tolist() == [1, 1, 1, 0]
    assert (t.num_pos, t.num_neg) == (1, 2)
    # (cx, w) 7.5, 16 -> 9.5, 16: dx = 2 / 16
    assert torch.allclose(t.box_targets[0], torch.tensor([0.125, 0.125, 0.0, 0.0]))
    assert t.box_targets[1:].abs().sum() == 0
    assert t.box_weights.tolist() == [[1] * 4, [0] * 4, [0] * 4, [0] * 4]


# ------------------------------------------------------------------------------ RCNN
def test_sample_rois_hand_computed():
    gt = T([0, 0, 9, 9], [50, 50, 69, 69])
    labels = torch.tensor([3, 1])
    ref_index = torch.tensor([2, 0])
    proposals = T([1, 1, 10, 10, 0.9],       # IoU 81/119 with gt 0 -> positive
                  [100, 100, 120, 120, 0.8],  # negative
                  [0, 0, 9, 19, 0.7])         # IoU 0.5 with gt 0 -> positive
    s = sample_rois(proposals, gt, labels, ref_index, generator=torch.Generator().manual_seed(0))
    assert s.num_pos == 4
    assert torch.equal(s.boxes, T([0, 0, 9, 9], [50, 50, 69, 69], [1, 1, 10, 10], [0, 0, 9, 19],
                                  [100, 100, 120, 120]))
    assert s.labels.tolist() == [3, 1, 3, 3, 0]
    assert s.pos_gt_index.tolist() == [0, 1, 0, 0]
    assert s.ref_targets.tolist() == [2, 0, 2, 2]
    # stds (0.1, 0.1, 0.2, 0.2): p0 centre 5.5 -> 4.5 over width 10 = -0.1 -> -1;
    # p2 cy 9.5 -> 4.5 over height 20 = -0.25 -> -2.5, dh = log(10/20) / 0.2
    expected = T([0, 0, 0, 0], [0, 0, 0, 0], [-1, -1, 0, 0], [0, -2.5, 0, math.log(0.5) / 0.2])
    assert torch.allclose(s.box_targets, expected, atol=1e-6)
    # budget: 4 samples, half positive -> 2 random positives and the only negative
    s = sample_rois(proposals, gt, labels, ref_index, num_samples=4, pos_fraction=0.5,
                    generator=torch.Generator().manual_seed(1))
    assert s.num_pos == 2 and s.boxes.size(0) == 3 and s.labels[2] == 0
    # without adding the ground truths
    s = sample_rois(proposals, gt, labels, ref_index, add_gt_as_proposals=False)
    assert s.num_pos == 2 and s.pos_gt_index.tolist() == [0, 0]
    assert torch.equal(s.pos_boxes, T([1, 1, 10, 10], [0, 0, 9, 19]))  # proposals only


def test_mask_targets_against_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    masks = (rng.random((2, 40, 50)) > 0.5).astype(np.uint8)
    masks[1, 5:30, 10:45] = 1
    boxes = T([1.7, 2.2, 30.9, 35.9], [10.0, 5.0, 44.0, 29.0], [3.2, 4.8, 3.9, 4.1], [0, 0, 55.0, 27.0])
    gt_index = torch.tensor([0, 1, 0, 1])
    out = mask_targets(boxes, gt_index, masks, 28)
    assert out.shape == (4, 28, 28) and out.dtype == torch.float32
    for i, (x1, y1, x2, y2) in enumerate(boxes.numpy().astype(np.int32)):
        w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        crop = masks[int(gt_index[i]), y1:y1 + h, x1:x1 + w]
        ref = cv2.resize(crop, (28, 28), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(out[i].numpy().astype(np.uint8), ref), i
    assert out[1].min() == 1  # a box exactly on a filled rectangle
    assert mask_targets(torch.zeros((0, 4)), torch.zeros(0, dtype=torch.long), masks).shape == (0, 28, 28)


@pytest.mark.parametrize("src,dst", [((40, 50), (20, 25)), ((37, 53), (61, 29)), ((80, 128), (40, 64)),
                                     ((7, 9), (7, 9)), ((100, 30), (33, 71))])
def test_resize_nearest_matches_opencv(src, dst):
    cv2 = pytest.importorskip("cv2")
    m = (np.random.default_rng(1).random(src) > 0.5).astype(np.uint8)
    ref = cv2.resize(m, (dst[1], dst[0]), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(resize_nearest_uint8(m, dst[1], dst[0]), ref)


# ------------------------------------------------------------------------------ losses
def _smooth_l1(d, beta):
    d = abs(d)
    return 0.5 * d * d / beta if d < beta else d - 0.5 * beta


def test_rpn_losses_hand_computed():
    from cmasktrack.train.targets import RPNTargets

    logits = [torch.tensor([[[[0.3, -1.2]]]])]  # (B=1, A=1, H=1, W=2)
    deltas = [torch.tensor([[0.05, 0.5], [-0.2, 0.0], [0.01, 0.0], [1.0, 0.0]]).view(1, 4, 1, 2)]
    t = RPNTargets(labels=torch.tensor([1.0, 0.0]), label_weights=torch.tensor([1.0, 1.0]),
                   box_targets=torch.tensor([[0.0, 0.1, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]]),
                   box_weights=torch.tensor([[1.0] * 4, [0.0] * 4]), num_pos=1, num_neg=1)
    out = rpn_losses(logits, deltas, [t], beta=1 / 9)
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert out["loss_rpn_cls"].item() == pytest.approx((softplus(-0.3) + softplus(-1.2)) / 2, rel=1e-6)
    reg = sum(_smooth_l1(p - q, 1 / 9) for p, q in zip([0.05, -0.2, 0.01, 1.0], [0.0, 0.1, 0.0, 0.0]))
    assert out["loss_rpn_box"].item() == pytest.approx(reg / 2, rel=1e-6)


def test_rcnn_losses_hand_computed():
    cls = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [1.0, 1.0, 1.0]])
    deltas = torch.arange(36, dtype=torch.float32).view(3, 12) / 20
    labels = torch.tensor([2, 1, 0])
    targets = T([0.5, 0.5, 0.5, 0.5], [0.3, 0.3, 0.3, 0.3])
    pos = torch.tensor([True, True, False])
    out = rcnn_losses(cls, deltas, labels, targets, pos)

    def ce(row, k):
        return -(row[k] - math.log(sum(math.exp(v) for v in row)))

    rows = cls.tolist()
    assert out["loss_cls"].item() == pytest.approx(sum(ce(r, k) for r, k in zip(rows, [2, 1, 0])) / 3, rel=1e-6)
    d = deltas.tolist()
    reg = sum(_smooth_l1(d[0][8 + j] - 0.5, 1.0) for j in range(4)) + sum(_smooth_l1(d[1][4 + j] - 0.3, 1.0)
                                                                         for j in range(4))
    assert out["loss_box"].item() == pytest.approx(reg / 3, rel=1e-6)
    assert out["acc"].item() == pytest.approx(100 * 1 / 3)  # row 0 predicts class 0 (wrong), row 1 -> 2, row 2 -> 0


def test_mask_and_match_losses_hand_computed():
    logits = torch.tensor([[[[0.0, 1.0], [2.0, -1.0]], [[5.0, 5.0], [5.0, 5.0]]],
                           [[[9.0, 9.0], [9.0, 9.0]], [[-2.0, 0.5], [1.5, 0.0]]]])  # (P=2, C=2, 2, 2)
    targets = torch.tensor([[[1.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])
    labels = torch.tensor([0, 1])
    bce = lambda x, y: math.log1p(math.exp(-x)) if y else math.log1p(math.exp(x))  # noqa: E731
    own = [[0.0, 1.0, 2.0, -1.0], [-2.0, 0.5, 1.5, 0.0]]
    tg = [[1, 0, 1, 1], [0, 1, 1, 0]]
    expected = sum(bce(x, y) for r, t in zip(own, tg) for x, y in zip(r, t)) / 8
    assert mask_loss(logits, targets, labels).item() == pytest.approx(expected, rel=1e-6)

    lg1 = torch.tensor([[0.0, 2.0, -1.0], [0.0, 0.5, 0.5]])  # 2 positives, 2 reference objects
    lg2 = torch.zeros((0, 2))  # an image without positives still counts in the mean over images
    lg3 = torch.tensor([[0.0, 3.0]])
    out = match_loss([lg1, lg2, lg3], [torch.tensor([1, 0]), torch.zeros(0, dtype=torch.long), torch.tensor([0])])

    def ce(row, k):
        return -(row[k] - math.log(sum(math.exp(v) for v in row)))

    img1 = (ce([0.0, 2.0, -1.0], 1) + ce([0.0, 0.5, 0.5], 0)) / 2
    img3 = ce([0.0, 3.0], 0)
    assert out["loss_match"].item() == pytest.approx((img1 + 0.0 + img3) / 3, rel=1e-6)
    assert out["match_acc"].item() == pytest.approx(100 * 1 / 3)  # only the first positive is right
    total = total_loss({"loss_a": torch.tensor(1.5), "acc": torch.tensor(90.0), "loss_b": torch.tensor(2.0)})
    assert total.item() == 3.5
