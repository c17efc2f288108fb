"""Head outputs are averaged over the reference-calibrated feature copies *before* the nonlinearity.

The official ``simple_test_bboxes`` runs the box head on the target calibrated with each
reference, averages class logits and box deltas (``torch.stack(...).mean(0)``) and only then
applies softmax and decoding; ``simple_test_mask`` averages mask logits before the sigmoid.
Here the heads are run per reference through the model's submodules (RoI pooling by the
batch-index path, one copy at a time), averaged, and post-processed by a loop transcription
of ``get_det_bboxes`` / ``multiclass_nms``, then compared with ``detect`` / ``mask_probs``.
The calibration's deformable conv and the box head's output layers are rescaled so that the
logits differ strongly between references: averaging after softmax / sigmoid / decoding would
then give other numbers (checked in the tests).
"""

import math

import numpy as np
import pytest
import torch

from cmasktrack.modeling.cmasktrack_rcnn import CMaskTrackRCNN

from conftest import tiny_config

IMG_SHAPE = (90, 120)  # resized, unpadded (h, w); the padded input is 96 x 128
SCALE = 0.75
STDS = (0.1, 0.1, 0.2, 0.2)
CLIP = abs(math.log(16.0 / 1000.0))
SCORE_THR, NMS_THR = 0.05, 0.5
# proposals in resized pixels: sizes from 12 to 110 px (FPN levels 0-1), some overlapping
PROPOSALS = [
    [10, 8, 40, 50], [12, 10, 44, 47], [60, 20, 118, 88], [5, 60, 30, 85], [70, 5, 82, 17],
    [0, 0, 110, 89], [30, 30, 70, 70], [33, 28, 74, 66], [90, 40, 119, 60], [50, 50, 62, 80],
    [20, 15, 100, 80], [100, 70, 116, 86],
]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = CMaskTrackRCNN(cfg).eval()
    with torch.no_grad():
        model.calibration.deform_weight.mul_(10.0)  # the reference term dominates each copy
        model.box_head.fc_cls.weight.mul_(0.5)  # class logits ~ +-3
        model.box_head.fc_reg.weight.mul_(5.0)  # deltas ~ +-2.5: dw, dh ~ +-0.5 after the stds
        images = torch.randn(4, 3, 96, 128)
        feats = model.extract_features(images)
        cur = [f[:1] for f in feats]
        refs = [[f[r:r + 1] for f in feats] for r in (1, 2, 3)]
        head_feats = model.head_features(cur, refs)  # 3 rows: target calibrated with each reference
    assert [f.size(0) for f in head_feats] == [3, 3, 3, 3]
    return model, head_feats


def _per_reference(pool, head, head_feats, boxes):
    """Run one head on every reference copy separately; returns a list of outputs per copy."""
    rois = torch.cat([boxes.new_zeros((boxes.size(0), 1)), boxes], dim=1)
    outs = []
    for r in range(head_feats[0].size(0)):
        outs.append(head(pool([f[r:r + 1] for f in head_feats], rois)))
    return outs


def _decode(roi, d, img_shape, scale):
    x1, y1, x2, y2 = roi
    dx, dy, dw, dh = (v * s for v, s in zip(d, STDS))
    dw, dh = min(max(dw, -CLIP), CLIP), min(max(dh, -CLIP), CLIP)
    px, py, pw, ph = (x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1 + 1.0, y2 - y1 + 1.0
    gx, gy, gw, gh = px + pw * dx, py + ph * dy, pw * math.exp(dw), ph * math.exp(dh)
    h, w = img_shape
    box = [gx - gw * 0.5 + 0.5, gy - gh * 0.5 + 0.5, gx + gw * 0.5 - 0.5, gy + gh * 0.5 - 0.5]
    box = [min(max(v, 0.0), m) for v, m in zip(box, [w - 1, h - 1, w - 1, h - 1])]
    return [v / scale for v in box]


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih
    return inter / ((a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter)


def _postprocess(rois, logits, deltas, max_det, margins):
    """Loop transcription of get_det_bboxes + multiclass_nms on float64 inputs."""
    out = []
    probs = np.empty_like(logits)
    for i in range(len(rois)):  # softmax per row
        e = np.exp(logits[i] - logits[i].max())
        probs[i] = e / e.sum()
    for c in range(1, probs.shape[1]):
        dets = []
        for i in range(len(rois)):
            margins.append(abs(probs[i, c] - SCORE_THR))
            if probs[i, c] > SCORE_THR:
                dets.append((_decode(rois[i], deltas[i, 4 * c:4 * c + 4], IMG_SHAPE, SCALE), probs[i, c]))
        order = sorted(range(len(dets)), key=lambda k: -dets[k][1])
        suppressed = set()
        for a, i in enumerate(order):
            if i in suppressed:
                continue
            out.append((dets[i][0], dets[i][1], c))
            for j in order[a + 1:]:
                if j not in suppressed:
                    iou = _iou(dets[i][0], dets[j][0])
                    margins.append(abs(iou - NMS_THR))
                    if iou > NMS_THR:
                        suppressed.add(j)
    if len(out) > max_det:
        out = sorted(out, key=lambda d: -d[1])[:max_det]  # stable
    return out


def test_detect_averages_logits_and_deltas_before_softmax_and_decoding(setup):
    model, head_feats = setup
    props = torch.tensor(PROPOSALS, dtype=torch.float32)
    props = torch.cat([props, torch.linspace(0.9, 0.5, len(PROPOSALS))[:, None]], dim=1)
    with torch.no_grad():
        outs = _per_reference(model.box_roi_pool, model.box_head, head_feats, props[:, :4])
        det = model.detect(head_feats, props, IMG_SHAPE, SCALE)
    cls = np.stack([o[0].double().numpy() for o in outs])  # (R, N, C)
    reg = np.stack([o[1].double().numpy() for o in outs])  # (R, N, 4C)
    # the references really disagree: softmax-then-average is far from average-then-softmax
    sm = np.exp(cls - cls.max(-1, keepdims=True))
    sm /= sm.sum(-1, keepdims=True)
    mean_cls = cls.mean(0)
    sm_of_mean = np.exp(mean_cls - mean_cls.max(-1, keepdims=True))
    sm_of_mean /= sm_of_mean.sum(-1, keepdims=True)
    assert np.abs(sm.mean(0) - sm_of_mean).max() > 0.01
    assert np.abs(reg[0] - reg[1]).mean() > 0.3  # deltas too (decoding is nonlinear in dw, dh)

    margins = []
    ref = _postprocess(props[:, :4].double().numpy(), mean_cls, reg.mean(0), model.config.detections_per_img,
                       margins)
    assert min(margins) > 1e-5  # nothing within float32 noise of the score or NMS threshold
    assert len(ref) > 5
    assert len(det) == len(ref)
    np.testing.assert_array_equal(det.labels.numpy(), [d[2] for d in ref])
    np.testing.assert_allclose(det.scores.numpy(), [d[1] for d in ref], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(det.boxes.numpy(), [d[0] for d in ref], rtol=0, atol=2e-3)


def test_mask_probs_average_logits_before_sigmoid(setup):
    model, head_feats = setup
    boxes = torch.tensor(PROPOSALS[:7], dtype=torch.float32)
    labels = torch.tensor([1, 3, 2, 2, 1, 3, 1])
    with torch.no_grad():
        outs = _per_reference(model.mask_roi_pool, model.mask_head, head_feats, boxes)
        probs = model.mask_probs(head_feats, boxes, labels)
    logits = np.stack([o.double().numpy() for o in outs])  # (R, N, C, 28, 28)
    own = logits[:, np.arange(len(labels)), labels.numpy()]  # (R, N, 28, 28) of each box's label
    ref = 1.0 / (1.0 + np.exp(-own.mean(0)))
    after = (1.0 / (1.0 + np.exp(-own))).mean(0)
    assert np.abs(after - ref).max() > 0.05  # the order of averaging and sigmoid matters here
    assert probs.shape == (7, 28, 28)
    np.testing.assert_allclose(probs.numpy(), ref, rtol=0, atol=1e-5)
