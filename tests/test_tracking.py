"""Track association against a transcription of the official MaskTrack R-CNN loop."""

import numpy as np
import pytest
import torch

from cmasktrack.modeling.cmasktrack_rcnn import FrameDetections
from cmasktrack.modeling.track_head import TrackHead
from cmasktrack.tracking import TrackMemory, reference_indices


def _iou_np(a, b):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(min(p[2], q[2]) - max(p[0], q[0]) + 1, 0)
            ih = max(min(p[3], q[3]) - max(p[1], q[1]) + 1, 0)
            inter = iw * ih
            ua = (p[2] - p[0] + 1) * (p[3] - p[1] + 1) + (q[2] - q[0] + 1) * (q[3] - q[1] + 1) - inter
            out[i, j] = inter / ua
    return out


class OfficialLoop:
    """The official simple_test_bboxes tracking state, written out in numpy (float64)."""

    def __init__(self, coeff=(1.0, 2.0, 10.0)):
        self.coeff = coeff
        self.feats = self.boxes = self.labels = None

    def step(self, is_first, boxes, scores, labels, feats):
        if len(boxes) == 0:
            if is_first:
                self.feats = self.boxes = self.labels = None
            return {}
        if is_first or self.boxes is None:
            self.feats, self.boxes, self.labels = feats.copy(), boxes.copy(), labels.copy()
            return {i: i for i in range(len(boxes))}
        prod = feats @ self.feats.T
        logits = np.concatenate([np.zeros((len(boxes), 1)), prod], axis=1)
        m = logits.max(axis=1, keepdims=True)
        ll = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
        ious = np.concatenate([np.zeros((len(boxes), 1)), _iou_np(boxes, self.boxes)], axis=1)
        same = np.concatenate([np.ones((len(boxes), 1)), (self.labels[None] == labels[:, None]).astype(float)], axis=1)
        comp = ll + self.coeff[0] * np.log(scores)[:, None] + self.coeff[1] * ious + self.coeff[2] * same
        match = comp.argmax(axis=1)
        ids = -np.ones(len(boxes), dtype=int)
        best = np.ones(len(self.boxes)) * -100
        for idx, mid in enumerate(match):
            if mid == 0:
                ids[idx] = len(self.feats)
                self.feats = np.concatenate([self.feats, feats[idx][None]])
                self.boxes = np.concatenate([self.boxes, boxes[idx][None]])
                self.labels = np.concatenate([self.labels, labels[idx][None]])
            else:
                obj = mid - 1
                if comp[idx, mid] > best[obj]:
                    ids[idx] = obj
                    best[obj] = comp[idx, mid]
                    self.feats[obj] = feats[idx]
                    self.boxes[obj] = boxes[idx]
        # the official results are a dict keyed by id: a later detection with the same id wins
        out = {}
        for idx, i in enumerate(ids):
            if i >= 0:
                out[int(i)] = idx
        return {v: k for k, v in out.items()}


def _random_frame(rng, n, n_labels=3, dim=8, base=None):
    if base is not None and rng.random() < 0.8:
        # re-detect known objects with jitter plus a few duplicates
        k = min(n, len(base[0]))
        pick = rng.choice(len(base[0]), size=k, replace=False)
        boxes = base[0][pick] + rng.normal(0, 3, size=(k, 4))
        feats = base[1][pick] + rng.normal(0, 0.3, size=(k, dim))
        labels = base[2][pick].copy()
        flip = rng.random(k) < 0.2
        labels[flip] = rng.integers(1, n_labels + 1, size=flip.sum())
        extra = n - k
    else:
        boxes, feats, labels = np.zeros((0, 4)), np.zeros((0, dim)), np.zeros((0,), dtype=int)
        extra = n
    xy = rng.uniform(0, 100, size=(extra, 2))
    wh = rng.uniform(5, 60, size=(extra, 2))
    boxes = np.concatenate([boxes, np.concatenate([xy, xy + wh], axis=1)])
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
    feats = np.concatenate([feats, rng.normal(0, 1, size=(extra, dim))])
    labels = np.concatenate([labels, rng.integers(1, n_labels + 1, size=extra)])
    scores = rng.uniform(0.06, 1.0, size=n)
    return boxes, scores, labels, feats


@pytest.mark.parametrize("seed", range(8))
def test_memory_matches_official_loop(seed):
    rng = np.random.default_rng(seed)
    ours, ref = TrackMemory(), OfficialLoop()
    base = None
    for t in range(12):
        n = int(rng.integers(0, 7)) if t != 3 else 0  # frame 3 has no detections
        boxes, scores, labels, feats = _random_frame(rng, n, base=base)
        if n:
            base = (boxes, feats, labels)
        det = FrameDetections(torch.tensor(boxes), torch.tensor(scores), torch.tensor(labels), torch.tensor(boxes))
        if t == 0:
            ours.reset()
        ids = ours.assign(det, torch.tensor(feats), TrackHead.match_logits)
        expected = ref.step(t == 0, boxes, scores, labels, feats)
        got = {i: int(v) for i, v in enumerate(ids) if v >= 0}
        assert got == expected, f"frame {t}"


def test_duplicate_matches_keep_best_and_label_is_not_updated():
    mem = TrackMemory()
    e = torch.eye(4, dtype=torch.float64) * 5
    first = FrameDetections(torch.tensor([[0.0, 0, 10, 10], [50.0, 50, 70, 70]], dtype=torch.float64),
                            torch.tensor([0.9, 0.9], dtype=torch.float64), torch.tensor([1, 2]),
                            torch.zeros(2, 4, dtype=torch.float64))
    assert mem.assign(first, e[:2], TrackHead.match_logits).tolist() == [0, 1]
    # two detections both closest to object 0; the second scores higher -> keeps id 0
    boxes = torch.tensor([[0.0, 0, 10, 10], [1.0, 0, 11, 10]], dtype=torch.float64)
    det = FrameDetections(boxes, torch.tensor([0.3, 0.95], dtype=torch.float64), torch.tensor([3, 3]),
                          torch.zeros(2, 4, dtype=torch.float64))
    ids = mem.assign(det, torch.stack([e[0], e[0]]), TrackHead.match_logits)
    assert ids.tolist() == [-1, 0]
    assert mem.labels.tolist() == [1, 2]  # label of object 0 not updated
    torch.testing.assert_close(mem.boxes[0], boxes[1])


def test_reference_indices():
    assert reference_indices(0, 20, 5, False) == [1, 2, 3, 4, 5]
    assert reference_indices(7, 20, 5, False) == [2, 3, 4, 5, 6, 8, 9, 10, 11, 12]
    assert reference_indices(18, 20, 5, False) == [13, 14, 15, 16, 17, 19]
    assert reference_indices(0, 1, 5, False) == []
    assert reference_indices(7, None, 5, True) == [2, 3, 4, 5, 6]
    assert reference_indices(3, 4, 2, False) == [1, 2]


def test_track_options_are_validated_in_one_place():
    from cmasktrack.tracking import TrackOptions

    assert TrackOptions() == TrackOptions(num_refs=None, causal=False, score_threshold=None, batch_refs=None)
    assert TrackOptions(num_refs=np.int64(3)).num_refs == 3 and type(TrackOptions(num_refs=np.int64(3)).num_refs) is int
    for kwargs, error, match in [
        (dict(num_refs=-1), ValueError, "num_refs must be >= 0, got -1"),
        (dict(num_refs=1.5), TypeError, "num_refs must be a whole number"),
        (dict(batch_refs=0), ValueError, "batch_refs must be >= 1, got 0"),
        (dict(causal="yes"), TypeError, "causal"),
        (dict(score_threshold=1.5), ValueError, r"score_threshold must be in \[0, 1\]"),
        (dict(score_threshold=float("nan")), ValueError, "score_threshold"),
    ]:
        with pytest.raises(error, match=match):
            TrackOptions(**kwargs)
    with pytest.raises(Exception):  # frozen
        TrackOptions().causal = True


def test_track_options_build_combines_an_object_with_keywords():
    from cmasktrack.tracking import TrackOptions

    base = TrackOptions(num_refs=3, score_threshold=0.3)
    # None keeps a field, a value replaces it, the object itself is never changed
    assert TrackOptions.build(base, num_refs=None, causal=True) == TrackOptions(3, True, 0.3, None)
    assert TrackOptions.build(base, num_refs=1).num_refs == 1 and base.num_refs == 3
    assert TrackOptions.build(num_refs=2) == TrackOptions(num_refs=2)
    assert TrackOptions.build(base) is base
    with pytest.raises(TypeError, match="unknown tracking option"):
        TrackOptions.build(num_ref=2)
    with pytest.raises(TypeError, match="TrackOptions"):
        TrackOptions.build({"num_refs": 2})
    with pytest.raises(ValueError, match="batch_refs"):
        TrackOptions.build(base, batch_refs=0)


def test_comprehensive_scores_by_hand():
    import math

    mem = TrackMemory((1.0, 2.0, 10.0))
    mem.boxes = torch.tensor([[0.0, 0, 9, 9]], dtype=torch.float64)  # 10 x 10 with "+1" widths
    mem.labels = torch.tensor([1])
    det = FrameDetections(torch.tensor([[0.0, 0, 9, 4]], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64),
                          torch.tensor([1]), torch.zeros(1, 4, dtype=torch.float64))
    logits = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    norm = math.log(1 + math.e)
    # "new" column: log-softmax + log(0.5) + 2 * 0 + 10 * 1; object: IoU = 50 / 100, same label
    expected = [[-norm + math.log(0.5) + 10.0, 1.0 - norm + math.log(0.5) + 2.0 * 0.5 + 10.0]]
    got = mem.comprehensive_scores(det, logits)
    assert got.tolist()[0] == pytest.approx(expected[0], abs=1e-12)
    with pytest.deprecated_call():  # the old form with an unused embeddings argument
        assert torch.equal(mem.comprehensive_scores(det, torch.zeros(1, 8), logits), got)
