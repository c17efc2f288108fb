"""Detection post-processing against a transcription of the official multiclass_nms path."""

import numpy as np
import torch

from cmasktrack.modeling.roi_heads import postprocess_detections


def _nms_ref(dets, thr):
    order = np.argsort(-dets[:, 4], kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(dets[i, 0], dets[order[1:], 0]); yy1 = np.maximum(dets[i, 1], dets[order[1:], 1])
        xx2 = np.minimum(dets[i, 2], dets[order[1:], 2]); yy2 = np.minimum(dets[i, 3], dets[order[1:], 3])
        w = np.maximum(0.0, xx2 - xx1 + 1); h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        area = lambda k: (dets[k, 2] - dets[k, 0] + 1) * (dets[k, 3] - dets[k, 1] + 1)
        ovr = inter / (area(i) + area(order[1:]) - inter)
        order = order[1:][ovr <= thr]
    return keep


def _reference(rois, logits, deltas, img_shape, s, thr=0.05, nms=0.5, max_det=100):
    rois, logits, deltas = (x.double().numpy() for x in (rois, logits, deltas))
    e = np.exp(logits - logits.max(1, keepdims=True)); scores = e / e.sum(1, keepdims=True)
    stds = np.tile([0.1, 0.1, 0.2, 0.2], logits.shape[1])
    d = deltas * stds
    px = (rois[:, 0] + rois[:, 2]) * 0.5; py = (rois[:, 1] + rois[:, 3]) * 0.5
    pw = rois[:, 2] - rois[:, 0] + 1; ph = rois[:, 3] - rois[:, 1] + 1
    clip = abs(np.log(16 / 1000))
    out = []
    for c in range(1, logits.shape[1]):
        dx, dy = d[:, 4 * c], d[:, 4 * c + 1]
        dw, dh = np.clip(d[:, 4 * c + 2], -clip, clip), np.clip(d[:, 4 * c + 3], -clip, clip)
        gx, gy, gw, gh = px + pw * dx, py + ph * dy, pw * np.exp(dw), ph * np.exp(dh)
        b = np.stack([gx - gw / 2 + 0.5, gy - gh / 2 + 0.5, gx + gw / 2 - 0.5, gy + gh / 2 - 0.5], 1)
        b[:, 0::2] = b[:, 0::2].clip(0, img_shape[1] - 1); b[:, 1::2] = b[:, 1::2].clip(0, img_shape[0] - 1)
        b = b / s
        sel = scores[:, c] > thr
        dets = np.concatenate([b[sel], scores[sel, c][:, None]], 1)
        for k in _nms_ref(dets, nms):
            out.append((dets[k], c))
    if len(out) > max_det:
        order = sorted(range(len(out)), key=lambda i: -out[i][0][4])[:max_det]
        out = [out[i] for i in order]
    return out


def test_postprocess_matches_reference():
    g = torch.Generator().manual_seed(0)
    n, c = 300, 6
    xy = torch.rand(n, 2, generator=g) * 300
    rois = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 150], 1)
    logits = torch.randn(n, c, generator=g) * 3
    deltas = torch.randn(n, 4 * c, generator=g)
    img_shape, s = (360, 420), 0.65625
    for max_det in (100, 1000):
        boxes, scores, labels = postprocess_detections(rois, logits, deltas, img_shape, s, detections_per_img=max_det)
        ref = _reference(rois, logits, deltas, img_shape, s, max_det=max_det)
        assert len(ref) == boxes.size(0)
        if max_det == 1000:  # concatenated in class order, scores descending within a class
            assert labels.tolist() == sorted(labels.tolist())
        np.testing.assert_allclose(boxes.numpy(), np.stack([r[0][:4] for r in ref]), rtol=1e-4, atol=1e-2)
        np.testing.assert_allclose(scores.numpy(), [r[0][4] for r in ref], rtol=1e-5)
        assert labels.tolist() == [r[1] for r in ref]


def test_threshold_is_strict_and_empty_output():
    rois = torch.tensor([[0.0, 0, 50, 50]])
    logits = torch.log(torch.tensor([[0.95, 0.05, 0.0 + 1e-9]]))
    boxes, scores, labels = postprocess_detections(rois, logits.float(), torch.zeros(1, 12), (100, 100), 1.0,
                                                   score_thresh=float(torch.softmax(logits.float(), 1)[0, 1]))
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)
