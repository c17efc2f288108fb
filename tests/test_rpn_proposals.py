"""select_proposals against a loop-based transcription of the official RPN ``get_bboxes_single``.

Per level: sigmoid scores read in (y, x, anchor) order, the best ``nms_pre`` only when the level
has more anchors, decode (legacy +1, dw/dh clamped) and clip to ``img_shape`` (h, w), optional
min-size filter, greedy NMS (+1 areas, suppress IoU > thr), the first ``nms_post``; then the
best ``max_num`` over all levels by score. Logits are well-separated distinct values, so no
tie order matters.
"""

import math

import numpy as np
import pytest
import torch

from cmasktrack.modeling.rpn import select_proposals

# (H, W, stride) of each level; 3 anchors per position.
LEVELS = [(6, 8, 4), (3, 4, 8), (2, 2, 16)]
RATIOS = (0.5, 1.0, 2.0)
IMG_SHAPE = (21, 29)  # (h, w) of the resized image, smaller than the padded 24 x 32
CLIP = abs(math.log(16.0 / 1000.0))


def _anchors(h, w, stride):
    """Anchors in (y, x, anchor) order: base size 8 * stride, ratios (0.5, 1, 2)."""
    out = []
    for y in range(h):
        for x in range(w):
            for r in RATIOS:
                aw = 8 * stride / math.sqrt(r)
                ah = 8 * stride * math.sqrt(r)
                cx, cy = x * stride + (stride - 1) / 2, y * stride + (stride - 1) / 2
                out.append([cx - (aw - 1) / 2, cy - (ah - 1) / 2, cx + (aw - 1) / 2, cy + (ah - 1) / 2])
    return torch.tensor(out, dtype=torch.float32)


def _inputs(seed):
    rng = np.random.default_rng(seed)
    a = len(RATIOS)
    total = sum(h * w * a for h, w, _ in LEVELS)
    # distinct logits at least 8 / total apart: sigmoid scores distinct in float32 by far
    values = rng.permutation(np.linspace(-4.0, 4.0, total)).astype(np.float32)
    logits, deltas, anchors = [], [], []
    start = 0
    for h, w, s in LEVELS:
        n = h * w * a
        logits.append(torch.from_numpy(values[start:start + n].reshape(1, a, h, w).copy()))
        start += n
        d = rng.normal(0.0, 0.15, (1, 4 * a, h, w)).astype(np.float32)
        d[0, 2::4][rng.random((a, h, w)) < 0.1] = -5.5  # some dw below the clamp (-4.135)
        d[0, 3::4][rng.random((a, h, w)) < 0.1] = -5.0  # some dh below it
        deltas.append(torch.from_numpy(d))
        anchors.append(_anchors(h, w, s))
    return logits, deltas, anchors


def _decode(anchor, d, img_shape):
    """One anchor + (dx, dy, dw, dh) -> clipped box, legacy +1 convention, float64."""
    x1, y1, x2, y2 = anchor
    dx, dy, dw, dh = d
    dw = min(max(dw, -CLIP), CLIP)
    dh = min(max(dh, -CLIP), CLIP)
    px, py = (x1 + x2) * 0.5, (y1 + y2) * 0.5
    pw, ph = x2 - x1 + 1.0, y2 - y1 + 1.0
    gw, gh = pw * math.exp(dw), ph * math.exp(dh)
    gx, gy = px + pw * dx, py + ph * dy
    h, w = img_shape
    box = [gx - gw * 0.5 + 0.5, gy - gh * 0.5 + 0.5, gx + gw * 0.5 - 0.5, gy + gh * 0.5 - 0.5]
    lim = [w - 1, h - 1, w - 1, h - 1]
    return [min(max(v, 0.0), m) for v, m in zip(box, lim)]


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = w * h
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area_a + area_b - inter)


def _greedy_nms(dets, thr, margins):
    """dets: list of (box, score); returns kept dets by descending score. Records |IoU - thr|."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i][1])
    suppressed = [False] * len(dets)
    keep = []
    for a, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(dets[i])
        for j in order[a + 1:]:
            if suppressed[j]:
                continue
            iou = _iou(dets[i][0], dets[j][0])
            margins.append(abs(iou - thr))
            if iou > thr:
                suppressed[j] = True
    return keep


def _reference(logits, deltas, anchors, img_shape, pre, post, max_num, thr, min_size, stats):
    a = len(RATIOS)
    all_dets = []
    for lg, dl, anc in zip(logits, deltas, anchors):
        _, _, h, w = lg.shape
        lg, dl, anc = lg.double().numpy()[0], dl.double().numpy()[0], anc.double().numpy()
        cands = []  # (score, anchor, delta), flat index k = (y * W + x) * A + a
        for y in range(h):
            for x in range(w):
                for k in range(a):
                    flat = (y * w + x) * a + k
                    score = 1.0 / (1.0 + math.exp(-lg[k, y, x]))
                    delta = [dl[4 * k + j, y, x] for j in range(4)]
                    cands.append((score, list(anc[flat]), delta))
        if pre > 0 and len(cands) > pre:
            cands = sorted(cands, key=lambda c: -c[0])[:pre]
            stats["topk_levels"] += 1
        else:
            stats["full_levels"] += 1
        dets = []
        for score, anchor, delta in cands:
            box = _decode(anchor, delta, img_shape)
            if min_size > 0 and (box[2] - box[0] + 1 < min_size or box[3] - box[1] + 1 < min_size):
                stats["too_small"] += 1
                continue
            if min_size > 0 and min(box[2] - box[0], box[3] - box[1]) < min_size:
                stats["plus_one"] += 1  # kept only thanks to the +1 in the width / height
            dets.append((box, score))
        kept = _greedy_nms(dets, thr, stats["margins"])
        stats["suppressed"] += len(dets) - len(kept)
        stats["post_cut"] += max(0, len(kept) - post)
        all_dets.extend(kept[:post])
    all_dets = sorted(all_dets, key=lambda d: -d[1])[:max_num]
    return np.array([d[0] + [d[1]] for d in all_dets])


@pytest.mark.parametrize(
    "seed,pre,post,max_num,min_size",
    [
        (5, 40, 6, 12, 0.0),  # level 0 (144) cut to 40, levels 1-2 (36, 12) not; post and max_num cut
        (6, 40, 6, 1000, 0.0),  # max_num above the total: everything, sorted by score
        (5, 20, 100, 1000, 0.0),  # levels 0-1 cut to 20, no post cut
        (7, 40, 6, 8, 12.0),  # min-size filter; some boxes pass only thanks to the +1 width
    ],
)
def test_select_proposals_matches_loop_reference(seed, pre, post, max_num, min_size):
    logits, deltas, anchors = _inputs(seed)
    stats = {"topk_levels": 0, "full_levels": 0, "too_small": 0, "suppressed": 0, "post_cut": 0, "margins": [], "plus_one": 0}
    ref = _reference(logits, deltas, anchors, IMG_SHAPE, pre, post, max_num, 0.7, min_size, stats)
    # the case exercises what it claims, and no IoU is close enough to 0.7 for float32 vs
    # float64 arithmetic to flip a suppression
    assert stats["topk_levels"] >= 1 and stats["full_levels"] >= 1
    assert stats["suppressed"] > 10
    assert min(stats["margins"]) > 1e-5
    if min_size > 0:
        assert stats["too_small"] > 0
    if post < 100:
        assert stats["post_cut"] > 0
    if max_num < 1000:
        assert len(ref) == max_num
    # the image passed is row 1 of a batch of 2, row 0 being garbage
    b_logits = [torch.cat([torch.randn_like(x), x]) for x in logits]
    b_deltas = [torch.cat([torch.randn_like(x), x]) for x in deltas]
    out = select_proposals(b_logits, b_deltas, anchors, 1, IMG_SHAPE, pre, post, max_num, 0.7, min_size)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out[:, 4].numpy(), ref[:, 4], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[:, :4].numpy(), ref[:, :4], rtol=0, atol=1e-3)
    assert (out[:, 0] <= IMG_SHAPE[1] - 1).all() and (out[:, 1] <= IMG_SHAPE[0] - 1).all()
    assert (out[:, 2] == IMG_SHAPE[1] - 1).any() and (out[:, 3] == IMG_SHAPE[0] - 1).any()  # clipping happened
