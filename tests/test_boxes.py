import json
from pathlib import Path

"""Legacy (+1) box arithmetic against torchvision's exclusive-corner ops and hand values."""

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_iou as tv_box_iou

from cmasktrack.modeling.boxes import (
    BBOX_XFORM_CLIP, _heapsort_indices, box_iou, decode_boxes, encode_boxes, nms_legacy, numpy1_argsort,
    official_nms_order,
)


def _random_boxes(n, size=200.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size / 2
    return torch.cat([xy, xy + wh], dim=1)


def test_decode_matches_torchvision_on_shifted_boxes():
    rois = _random_boxes(50)
    deltas = torch.randn(50, 8, generator=torch.Generator().manual_seed(1)) * 0.5
    deltas[0, 2] = 10.0  # clamped
    stds = (0.1, 0.1, 0.2, 0.2)
    ours = decode_boxes(rois, deltas, stds)
    coder = BoxCoder(weights=tuple(1.0 / s for s in stds), bbox_xform_clip=BBOX_XFORM_CLIP)
    shifted = rois.clone()
    shifted[:, 2:] += 1
    for k in range(2):
        ref = coder.decode_single(deltas[:, 4 * k: 4 * k + 4], shifted)
        ref[:, 2:] -= 1
        torch.testing.assert_close(ours[:, 4 * k: 4 * k + 4], ref, rtol=1e-5, atol=1e-3)


def test_decode_hand_values_and_clip():
    # roi 0..9 (width 10), dx=0.1 -> centre +1, dw=log 2 -> width 20
    rois = torch.tensor([[0.0, 0.0, 9.0, 9.0]])
    deltas = torch.tensor([[0.1, 0.0, float(torch.log(torch.tensor(2.0))), 0.0]])
    out = decode_boxes(rois, deltas)
    torch.testing.assert_close(out, torch.tensor([[-4.0, 0.0, 15.0, 9.0]]), rtol=0, atol=1e-5)
    out = decode_boxes(rois, deltas, max_shape=(8, 12))
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0, 11.0, 7.0]]), rtol=0, atol=1e-5)


def test_encode_inverts_decode():
    rois = _random_boxes(30, seed=3)
    gt = _random_boxes(30, seed=4)
    stds = (0.1, 0.1, 0.2, 0.2)
    back = decode_boxes(rois, encode_boxes(rois, gt, stds), stds)
    torch.testing.assert_close(back, gt, rtol=1e-5, atol=1e-3)


def test_box_iou_matches_torchvision_plus_one():
    a, b = _random_boxes(20, seed=5), _random_boxes(30, seed=6)
    sa, sb = a.clone(), b.clone()
    sa[:, 2:] += 1
    sb[:, 2:] += 1
    torch.testing.assert_close(box_iou(a, b), tv_box_iou(sa, sb), rtol=1e-5, atol=1e-6)
    # hand value: 10x10 and 10x5 sharing 50 px -> 0.5
    assert box_iou(torch.tensor([[0.0, 0, 9, 9]]), torch.tensor([[0.0, 0, 9, 4]])).item() == 0.5


def _naive_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep, removed = [], set()
    for i in order:
        if i in removed:
            continue
        keep.append(i)
        for j in order:
            if j in removed or j == i or j in keep:
                continue
            x1 = max(boxes[i][0], boxes[j][0]); y1 = max(boxes[i][1], boxes[j][1])
            x2 = min(boxes[i][2], boxes[j][2]); y2 = min(boxes[i][3], boxes[j][3])
            inter = max(x2 - x1 + 1, 0) * max(y2 - y1 + 1, 0)
            ai = (boxes[i][2] - boxes[i][0] + 1) * (boxes[i][3] - boxes[i][1] + 1)
            aj = (boxes[j][2] - boxes[j][0] + 1) * (boxes[j][3] - boxes[j][1] + 1)
            if inter / (ai + aj - inter) > thr:
                removed.add(j)
    return keep


def test_nms_legacy_matches_naive_greedy():
    for seed in range(5):
        boxes = _random_boxes(60, size=100, seed=seed)
        scores = torch.rand(60, generator=torch.Generator().manual_seed(seed + 10))
        for thr in (0.3, 0.5, 0.7):
            ours = nms_legacy(boxes, scores, thr).tolist()
            assert ours == _naive_nms(boxes.tolist(), scores.tolist(), thr)


def test_nms_keeps_iou_equal_to_threshold():
    boxes = torch.tensor([[0.0, 0, 9, 9], [0.0, 0, 9, 4]])  # IoU exactly 0.5 with +1 areas
    assert nms_legacy(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms_legacy(boxes, torch.tensor([0.9, 0.8]), 0.49).tolist() == [0]
    # without +1 the IoU would be (9*4)/(81) < 0.5: a 0.45 threshold separates the conventions
    assert nms_legacy(boxes, torch.tensor([0.9, 0.8]), 0.45).tolist() == [0]


_NUMPY1 = json.loads((Path(__file__).parent / "data" / "numpy1_argsort_cases.json").read_text())


def test_numpy1_argsort_reproduces_numpy_1x_tie_order():
    # reference: numpy 1.23.5's argsort run on these arrays (tests/data/make_numpy1_argsort_cases.py)
    assert _NUMPY1["numpy"].startswith("1.")
    for case in _NUMPY1["argsort"]:
        assert numpy1_argsort(case["values"]) == case["quicksort"], len(case["values"])
    # up to 16 elements numpy insertion-sorts (stable); from 17 on the partitioning reorders ties
    assert numpy1_argsort([0.0] * 16) == list(range(16))
    assert numpy1_argsort([0.0] * 17) != list(range(17))


def test_numpy1_heapsort_fallback_matches_numpy_1x():
    for case in _NUMPY1["heapsort"]:
        idx = list(range(len(case["values"])))
        _heapsort_indices([float(x) for x in case["values"]], idx, 0, len(idx))
        assert idx == case["heapsort"]


def test_official_nms_order_without_ties_is_descending():
    s = torch.rand(300, generator=torch.Generator().manual_seed(3))
    with pytest.deprecated_call():
        assert official_nms_order(s).tolist() == sorted(range(300), key=lambda i: -float(s[i]))


def test_nms_tied_scores_keep_the_box_the_official_order_visits_first():
    # two overlapping boxes with the same (saturated) score: numpy's argsort()[::-1] visits the
    # later one first, so the official NMS keeps it; torchvision alone would keep the first
    boxes = torch.tensor([[0.0, 0, 9, 9], [1.0, 0, 10, 9], [50.0, 50, 60, 60]])
    scores = torch.tensor([1.0, 1.0, 0.5])
    assert nms_legacy(boxes, scores, 0.5).tolist() == [1, 2]
    # many tied boxes: the kept set follows the numpy-1.x order, checked with the naive greedy
    # NMS run in that order
    for case in _NUMPY1["argsort"][12:20]:
        n = len(case["values"])
        bx = _random_boxes(n, size=60, seed=n)
        sc = torch.tensor(case["values"])
        order = case["quicksort"][::-1]
        keep = []
        for i in order:
            if all(box_iou(bx[i:i + 1], bx[j:j + 1]).item() <= 0.5 for j in keep):
                keep.append(i)
        assert nms_legacy(bx, sc, 0.5).tolist() == keep
