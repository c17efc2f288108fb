"""Video-level results against hand-computed values (official ``results2json_videoseg``).

One entry per track id in order of first appearance (ids are not sorted), score = mean of the
per-frame float32 scores computed in float32, category = most frequent per-frame label with ties
to the smaller label (``np.bincount(...).argmax()``), segmentations = the frame's RLE or None
where the track is absent, for every frame of the video.
"""

import json

import numpy as np
from pycocotools import mask as mask_utils

from cmasktrack.video_result import FrameResult, VideoResult, majority_label, mean_score

H, W = 6, 8


def _rle(y0, x0, y1, x1):
    m = np.zeros((H, W), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle, m.astype(bool)


def _frame(index, ids, labels, scores, rects):
    rles = [_rle(*r) for r in rects]
    boxes = np.array([[r[1], r[0], r[3] - 1, r[2] - 1] for r in rects], dtype=np.float32).reshape(-1, 4)
    fr = FrameResult(index, f"{index:05d}.jpg", boxes, np.array(scores, dtype=np.float32),
                     np.array(labels, dtype=np.int64), np.array(ids, dtype=np.int64), [r for r, _ in rles])
    return fr, [m for _, m in rles]


def test_majority_label_ties_go_to_the_smaller_label():
    assert majority_label([3, 1, 3, 1]) == 1
    assert majority_label([1, 3, 3, 1]) == 1  # order of appearance does not matter
    assert majority_label([5, 2, 5, 2, 4, 4]) == 2  # three-way tie
    assert majority_label([2, 5, 5]) == 5
    assert majority_label([7]) == 7
    assert majority_label([4, 4, 1, 2, 3]) == 4
    assert isinstance(majority_label(np.array([2, 2], dtype=np.int64)), int)


def test_mean_score_is_float32_arithmetic():
    # dyadic scores: the float32 sum is exact, only the division rounds -> float32 nearest to 7/24
    s = mean_score([0.5, 0.25, 0.125])
    assert s == float(np.float32(7 / 24)) == 0.2916666567325592
    assert s != 7 / 24  # float64 arithmetic would give 0.29166666666666669
    # two float32 scores: one float32 rounding of the sum, then an exact halving
    a, b = np.float32(0.9), np.float32(0.3)
    s = mean_score([a, b])
    float32_sum = float(a) + float(b)  # exact in float64 ...
    assert float(np.float32(float32_sum)) != float32_sum  # ... but not representable in float32
    assert s == float(np.float32(float32_sum)) / 2
    assert s != float32_sum / 2
    assert type(s) is float
    # three float32 scores whose float32 sum rounds (either association: (a+b)+c == a+(b+c)),
    # so accumulating in float32 differs from a float64 mean rounded to float32
    a, b, c = np.float32(0.9), np.float32(0.3), np.float32(0.15)
    total = np.float32(np.float32(a + b) + c)
    assert total == np.float32(a + np.float32(b + c))
    expected = float(np.float32(total / np.float32(3)))
    assert expected == 0.45000001788139343
    assert float(np.float32((float(a) + float(b) + float(c)) / 3)) == 0.44999998807907104
    assert mean_score([a, b, c]) == expected
    assert mean_score([np.float32(0.3)]) == float(np.float32(0.3))


def _video():
    # frame 0: ids 7 then 3 (first appearance order 7, 3, not sorted); frame 1: 3 only;
    # frame 2: 5 (new) then 7 (back after a gap); frame 3: nobody
    f0, m0 = _frame(0, [7, 3], [2, 3], [0.5, 0.75], [(0, 0, 2, 3), (3, 4, 6, 8)])
    f1, m1 = _frame(1, [3], [3], [0.25], [(2, 4, 5, 8)])
    f2, m2 = _frame(2, [5, 7], [2, 1], [0.625, 0.25], [(1, 1, 3, 3), (0, 1, 2, 4)])
    f3, m3 = _frame(3, [], [], [], [])
    return [f0, f1, f2, f3], [m0, m1, m2, m3]


def test_tracks_in_order_of_first_appearance():
    frames, _ = _video()
    vr = VideoResult(frames, H, W, category_names=["cat", "dog", "cow"])
    assert [t.track_id for t in vr.tracks] == [7, 3, 5]
    assert [t.frame_indices for t in vr.tracks] == [[0, 2], [0, 1], [2]]
    assert [t.category_id for t in vr.tracks] == [1, 3, 2]  # track 7: labels 2, 1 -> tie -> 1
    assert [t.category_name for t in vr.tracks] == ["cat", "cow", "dog"]
    assert [t.score for t in vr.tracks] == [0.375, 0.5, 0.625]  # exact: dyadic scores


def test_to_ytvis_entries():
    frames, masks = _video()
    entries = VideoResult(frames, H, W).to_ytvis(video_id=12)
    assert len(entries) == 3
    expected = [  # (category_id, score, frame -> (frame, position in that frame) or None)
        (1, 0.375, [(0, 0), None, (2, 1), None]),
        (3, 0.5, [(0, 1), (1, 0), None, None]),
        (2, 0.625, [None, None, (2, 0), None]),
    ]
    for entry, (cat, score, where) in zip(entries, expected):
        assert entry["video_id"] == 12 and type(entry["video_id"]) is int
        assert entry["category_id"] == cat and type(entry["category_id"]) is int
        assert entry["score"] == score and type(entry["score"]) is float
        segs = entry["segmentations"]
        assert len(segs) == 4  # every frame of the video, the empty last one included
        for seg, w in zip(segs, where):
            if w is None:
                assert seg is None
            else:
                f, i = w
                assert seg == frames[f].masks[i]
                assert isinstance(seg["counts"], str) and seg["size"] == [H, W]
                r = dict(seg, counts=seg["counts"].encode("ascii"))
                np.testing.assert_array_equal(mask_utils.decode(r).astype(bool), masks[f][i])
        # the official writer's extras: the frame's box (original pixels) and 0-based label
        for f, w in enumerate(where):
            if w is None:
                assert entry["detections"][f] is None and entry["cats"][f] is None
            else:
                fr, i = frames[w[0]], w[1]
                assert entry["detections"][f] == [float(np.float32(v)) for v in fr.boxes[i][:4]]
                assert entry["cats"][f] == int(fr.labels[i]) - 1 and type(entry["cats"][f]) is int
    plain = VideoResult(frames, H, W).to_ytvis(video_id=12, official_extras=False)
    assert all(sorted(e) == ["category_id", "score", "segmentations", "video_id"] for e in plain)
    # the list is what the benchmark json holds: serialisable, null where absent
    text = json.dumps(entries)
    assert json.loads(text)[2]["segmentations"][:2] == [None, None]


def test_to_ytvis_float32_scores_are_averaged_in_float32():
    frames = [_frame(i, [1], [1], [s], [(0, 0, 2, 2)])[0] for i, s in enumerate([0.9, 0.3, 0.15])]
    (entry,) = VideoResult(frames, H, W).to_ytvis()
    assert entry["score"] == 0.45000001788139343  # see test_mean_score_is_float32_arithmetic


def test_category_names_by_id():
    from cmasktrack.categories import category_name
    from cmasktrack.model_config import CMaskTrackConfig

    assert [category_name(["cat", "dog"], i) for i in (1, 2, 3, 0)] == ["cat", "dog", "3", "0"]
    cfg = CMaskTrackConfig(num_classes=3, category_names=["cat", "dog"])
    assert [cfg.category_name(i) for i in (1, 2, 3)] == ["cat", "dog", "3"]
    assert CMaskTrackConfig(num_classes=3).category_name(2) == "2"
