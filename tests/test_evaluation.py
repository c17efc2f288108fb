"""VIS evaluation: hand-derived cases and a brute-force second implementation of the definition."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from cmasktrack.data.results import ResultsFormatError, VISPrediction, load_results
from cmasktrack.data.ytvis import VISDataset
from cmasktrack.evaluation import (
    SUMMARY_KEYS,
    box_coverage,
    derived_occlusion_scores,
    evaluate_vis,
    format_results_table,
    occlusion_group,
    official_occlusion_score,
    video_iou_matrix,
)

H, W = 40, 50


def rect(y0, y1, x0, x1, h=H, w=W):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def enc(m):
    if m is None:
        return None
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def gt_json(videos, anns, num_categories=3, occlusion=False):
    """videos: {id: num_frames}; anns: list of (id, video, category, [mask|None], iscrowd[, areas][, occ])."""
    out_anns = []
    for a in anns:
        aid, vid, cat, masks, crowd = a[:5]
        areas = a[5] if len(a) > 5 and a[5] is not None else [None if m is None else int(m.sum()) for m in masks]
        entry = {
            "id": aid, "video_id": vid, "category_id": cat, "iscrowd": crowd,
            "segmentations": [enc(m) for m in masks], "areas": areas,
        }
        if occlusion:
            entry["occlusion"] = a[6]
        out_anns.append(entry)
    return {
        "videos": [
            {"id": v, "width": W, "height": H, "length": n, "file_names": [f"{v}/{t}.jpg" for t in range(n)]}
            for v, n in videos.items()
        ],
        "annotations": out_anns,
        "categories": [{"id": c, "name": f"cat{c}"} for c in range(1, num_categories + 1)],
    }


def pred(vid, cat, score, masks):
    return {"video_id": vid, "category_id": cat, "score": score, "segmentations": [enc(m) for m in masks]}


def run(gt, preds, **kwargs):
    ds = VISDataset.from_json(gt)
    return evaluate_vis(ds, load_results(preds, ds), **kwargs)


# ------------------------------------------------------------------------ video IoU by hand


def test_video_iou_hand_values():
    a = [rect(0, 10, 0, 10), rect(0, 10, 0, 10), None]  # 100 + 100 px
    b = [rect(0, 10, 0, 5), None, rect(0, 4, 0, 5)]  # 50 + 0 + 20 px
    c = [None, None, None]
    ious = video_iou_matrix([[enc(m) for m in b], [enc(m) for m in c]], [[enc(m) for m in a], [enc(m) for m in c]])
    # b vs a: inter 50, union 100 + 100 + 20 = 220; anything vs an empty track with an empty union is 0
    assert ious.shape == (2, 2)
    assert ious[0, 0] == 50 / 220
    assert ious[0, 1] == 0.0 and ious[1, 0] == 0.0 and ious[1, 1] == 0.0


def test_video_iou_pairs_frames_up_to_the_shorter_track():
    long = [enc(rect(0, 10, 0, 10)), enc(rect(0, 10, 0, 10)), enc(rect(0, 10, 0, 10))]
    short = [enc(rect(0, 10, 0, 10))]
    # only frame 0 is paired: 100 / 100
    assert video_iou_matrix([short], [long])[0, 0] == 1.0


def test_video_iou_empty_mask_counts_as_present_but_empty():
    g = [enc(rect(0, 10, 0, 10)), enc(np.zeros((H, W), np.uint8))]
    d = [enc(rect(0, 10, 0, 10)), None]
    assert video_iou_matrix([d], [g])[0, 0] == 1.0


# ------------------------------------------------------------------------ hand-derived AP / AR


def test_perfect_predictions_score_one_and_minus_one_without_ground_truth():
    a, b, c = rect(0, 10, 0, 10), rect(20, 30, 20, 40), rect(5, 15, 30, 45)
    gt = gt_json(
        {1: 3, 2: 2},
        [(1, 1, 1, [a, a, None], 0), (2, 1, 2, [b, None, b], 0), (3, 2, 1, [c, c], 0)],
    )
    preds = [pred(1, 1, 0.9, [a, a, None]), pred(1, 2, 0.8, [b, None, b]), pred(2, 1, 0.7, [c, c])]
    res = run(gt, preds)
    # every object is small (area < 128^2): medium / large have no ground truth -> -1
    expected = dict(AP=1, AP50=1, AP75=1, APs=1, APm=-1, APl=-1, AR1=1, AR10=1, AR100=1, ARs=1, ARm=-1, ARl=-1)
    assert res.stats == pytest.approx(expected, abs=1e-12)
    assert list(res.stats) == list(SUMMARY_KEYS)
    assert res.per_category_ap == pytest.approx({1: 1.0, 2: 1.0, 3: -1.0})
    assert res.occlusion is None


def test_swapped_identity():
    # two same-category objects over 5 frames; the tracker swaps them at the last frame:
    # IoU(P1, A) = 4 / (5 + 1) = 0.667 -> matched at thresholds 0.50 .. 0.65 (4 of 10)
    A = [rect(0, 10, 0, 10)] * 5
    B = [rect(20, 30, 20, 30)] * 5
    gt = gt_json({1: 5}, [(1, 1, 1, A, 0), (2, 1, 1, B, 0)])
    p1 = A[:4] + B[4:]
    p2 = B[:4] + A[4:]
    res = run(gt, [pred(1, 1, 0.9, p1), pred(1, 1, 0.8, p2)])
    assert res.stats["AP"] == pytest.approx(0.4)
    assert res.stats["AP50"] == pytest.approx(1.0)
    assert res.stats["AP75"] == pytest.approx(0.0)
    assert res.stats["AR100"] == pytest.approx(0.4)
    assert res.stats["AR10"] == pytest.approx(0.4)
    # one detection per video: only P1 counts, recall 1/2 at 4 thresholds
    assert res.stats["AR1"] == pytest.approx(0.2)


def test_every_form_of_predictions_gives_the_same_hand_values(tmp_path):
    # the swapped-identity case above, given as a results path, as results entries and as
    # {video id: VideoResult} straight from the tracker (no json in between)
    import json

    from cmasktrack.video_result import FrameResult, VideoResult

    A = [rect(0, 10, 0, 10)] * 5
    B = [rect(20, 30, 20, 30)] * 5
    gt = gt_json({1: 5}, [(1, 1, 1, A, 0), (2, 1, 1, B, 0)])
    p1, p2 = A[:4] + B[4:], B[:4] + A[4:]
    frames = [FrameResult(t, str(t), np.zeros((2, 4), np.float32), np.array([0.9, 0.8], np.float32),
                          np.array([1, 1]), np.array([0, 1]), [enc(p1[t]), enc(p2[t])]) for t in range(5)]
    result = VideoResult(frames, H, W)
    entries = [pred(1, 1, 0.9, p1), pred(1, 1, 0.8, p2)]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(entries))
    ds = VISDataset.from_json(gt)
    for predictions in (str(tmp_path / "results.json"), entries, {1: result}, load_results(entries, ds)):
        res = evaluate_vis(str(tmp_path / "gt.json"), predictions)
        assert (res.stats["AP"], res.stats["AP50"], res.stats["AR1"]) == pytest.approx((0.4, 1.0, 0.2))


def test_one_missing_frame():
    # ground truth frame areas 12*10, 100, 100, 100; the prediction misses frame 0:
    # IoU = 300 / 420 = 0.714 -> matched at 0.50 .. 0.70 (5 of 10 thresholds)
    g = [rect(0, 12, 0, 10), rect(0, 10, 0, 10), rect(0, 10, 0, 10), rect(0, 10, 0, 10)]
    gt = gt_json({1: 4}, [(1, 1, 1, g, 0)])
    res = run(gt, [pred(1, 1, 0.5, [None] + g[1:])])
    assert res.stats["AP"] == pytest.approx(0.5)
    assert res.stats["AP50"] == pytest.approx(1.0) and res.stats["AP75"] == 0.0
    assert res.stats["AR1"] == pytest.approx(0.5)


def test_fragmented_track_iou_exactly_at_threshold_matches():
    # two fragments of one object, each IoU exactly 0.5: the first matches at 0.50 only
    # (IoU >= threshold), the second is a false positive there: precision 1 at recall 1
    g = [rect(0, 10, 0, 10)] * 4
    gt = gt_json({1: 4}, [(1, 1, 1, g, 0)])
    res = run(gt, [pred(1, 1, 0.9, g[:2] + [None] * 2), pred(1, 1, 0.8, [None] * 2 + g[2:])])
    assert res.stats["AP"] == pytest.approx(0.1)
    assert res.stats["AP50"] == pytest.approx(1.0)
    assert res.stats["AR100"] == pytest.approx(0.1)


def test_crowd_region_absorbs_predictions():
    a = [rect(0, 10, 0, 10)] * 2
    crowd = [rect(20, 40, 20, 50)] * 2
    preds = [pred(1, 1, 0.95, crowd), pred(1, 1, 0.9, a), pred(1, 1, 0.85, crowd)]
    with_crowd = run(gt_json({1: 2}, [(1, 1, 1, a, 0), (2, 1, 1, crowd, 1)]), preds)
    # both predictions on the crowd region are ignored: one TP, nothing else
    assert with_crowd.stats["AP"] == pytest.approx(1.0)
    assert with_crowd.stats["AR1"] == pytest.approx(0.0)  # the top-1 detection is the ignored one
    # the same predictions without the crowd region: the top one is a false positive
    # (precision 1/2 at recall 1 -> AP 0.5) and the third one too
    without = run(gt_json({1: 2}, [(1, 1, 1, a, 0)]), preds)
    assert without.stats["AP"] == pytest.approx(0.5)
    # a category whose only ground truth is a crowd has no scorable ground truth
    only_crowd = run(gt_json({1: 2}, [(2, 1, 1, crowd, 1)]), preds)
    assert only_crowd.stats["AP"] == -1 and only_crowd.per_category_ap[1] == -1


def test_empty_results_give_zeros():
    a = [rect(0, 10, 0, 10)] * 2
    res = run(gt_json({1: 2}, [(1, 1, 1, a, 0)]), [])
    assert res.stats["AP"] == 0 and res.stats["AR100"] == 0 and res.stats["APs"] == 0
    assert res.stats["APm"] == -1 and res.stats["ARl"] == -1
    assert res.per_category_ap == {1: 0.0, 2: -1.0, 3: -1.0}


def test_unknown_video_is_a_clear_error():
    gt = gt_json({1: 1}, [(1, 1, 1, [rect(0, 5, 0, 5)], 0)])
    ds = VISDataset.from_json(gt)
    with pytest.raises(ResultsFormatError, match="unknown video_id 7"):
        load_results([pred(7, 1, 0.5, [rect(0, 5, 0, 5)])], ds)
    with pytest.raises(ValueError, match="unknown video_id 7"):
        evaluate_vis(ds, [VISPrediction(7, 1, 0.5, [None])])


def test_false_positives_in_video_without_ground_truth_and_category_without_ground_truth():
    a, b, c = rect(0, 10, 0, 10), rect(20, 30, 20, 40), rect(5, 15, 30, 45)
    gt = gt_json({1: 1, 2: 1, 3: 1}, [(1, 1, 1, [a], 0), (2, 1, 2, [b], 0), (3, 2, 1, [c], 0)])
    perfect = [pred(1, 1, 0.9, [a]), pred(1, 2, 0.8, [b]), pred(2, 1, 0.7, [c])]
    # a category-3 prediction (no category-3 ground truth anywhere) changes nothing
    res = run(gt, perfect + [pred(1, 3, 1.0, [a])])
    assert res.stats["AP"] == pytest.approx(1.0) and res.per_category_ap[3] == -1
    # a category-1 prediction in video 3 (no ground truth there) is a false positive ranked
    # first: category 1 has precision 2/3 at every recall, category 2 stays 1
    res = run(gt, perfect + [pred(3, 1, 0.99, [a])])
    assert res.per_category_ap[1] == pytest.approx(2 / 3)
    assert res.stats["AP"] == pytest.approx((2 / 3 + 1) / 2)


def test_wrong_category_is_a_miss_and_a_false_positive():
    a = [rect(0, 10, 0, 10)]
    gt = gt_json({1: 1}, [(1, 1, 1, a, 0), (2, 1, 2, [rect(20, 30, 20, 30)], 0)])
    res = run(gt, [pred(1, 2, 0.9, a), pred(1, 2, 0.8, [rect(20, 30, 20, 30)])])
    assert res.per_category_ap[1] == 0.0
    # category 2: FP first, then TP -> precision 1/2 at recall 1
    assert res.per_category_ap[2] == pytest.approx(0.5)


def test_equal_scores_keep_file_order():
    a = [rect(0, 10, 0, 10)]
    fp = [rect(20, 30, 20, 30)]
    gt = gt_json({1: 1}, [(1, 1, 1, a, 0)])
    assert run(gt, [pred(1, 1, 0.5, fp), pred(1, 1, 0.5, a)]).stats["AP"] == pytest.approx(0.5)
    assert run(gt, [pred(1, 1, 0.5, a), pred(1, 1, 0.5, fp)]).stats["AP"] == pytest.approx(1.0)


def test_many_equal_scores_keep_file_order():
    # scores 0.5 / 0.4 interleaved; the true positive is the 10th of the 0.5s in file order,
    # so it ranks 10th: precision 1/10 at recall 1
    a = [rect(0, 10, 0, 10)]
    gt = gt_json({1: 1}, [(1, 1, 1, a, 0)])
    preds = []
    for k in range(9):
        preds += [pred(1, 1, 0.5, [rect(20, 30, 2 * k, 2 * k + 3)]), pred(1, 1, 0.4, [rect(30, 35, 2 * k, 2 * k + 3)])]
    preds += [pred(1, 1, 0.5, a), pred(1, 1, 0.4, [rect(30, 35, 40, 45)])]
    assert run(gt, preds).stats["AP"] == pytest.approx(1 / 10)


def test_at_most_100_detections_per_video_and_category():
    a = [rect(0, 10, 0, 10)]
    gt = gt_json({1: 1}, [(1, 1, 1, a, 0)])
    fps = [pred(1, 1, 0.9, [rect(20, 30, 20, 30)]) for _ in range(100)]
    # the true positive is the 100th detection: recall 1 at precision 1/100
    res = run(gt, fps[:99] + [pred(1, 1, 0.1, a)])
    assert res.stats["AP"] == pytest.approx(0.01) and res.stats["AR100"] == pytest.approx(1.0)
    assert res.stats["AR10"] == 0.0
    # the 101st is dropped
    res = run(gt, fps + [pred(1, 1, 0.1, a)])
    assert res.stats["AP"] == 0.0 and res.stats["AR100"] == 0.0


def test_prediction_area_is_mean_of_non_empty_frames():
    h = w = 150
    small = [rect(0, 10, 0, 10, h, w)] * 2
    gt = {
        "videos": [{"id": 1, "height": h, "width": w, "length": 2}],
        "categories": [{"id": 1, "name": "a"}],
        # the written areas make the object medium-sized
        "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
                         "segmentations": [enc(m) for m in small], "areas": [20000, 20000]}],
    }
    # false positive: a full frame (22500 px, medium) and an empty frame; its area is
    # 22500 (empty frames do not count), so it is a false positive in the medium range too
    fp = [np.ones((h, w), np.uint8), np.zeros((h, w), np.uint8)]
    res = run(gt, [pred(1, 1, 0.9, fp), pred(1, 1, 0.5, small)])
    assert res.stats["APm"] == pytest.approx(0.5)
    # a small false positive is ignored in the medium range
    res = run(gt, [pred(1, 1, 0.9, [rect(100, 110, 100, 110, h, w), None]), pred(1, 1, 0.5, small)])
    assert res.stats["APm"] == pytest.approx(1.0) and res.stats["APs"] == -1

def test_area_ranges_use_file_areas_and_are_inclusive():
    a = [rect(0, 10, 0, 10)] * 2
    # the written areas (mean of non-null, non-zero values) decide the range: exactly 128^2
    # is both small and medium
    gt = gt_json({1: 2}, [(1, 1, 1, a, 0, [128 ** 2, 0])])
    res = run(gt, [pred(1, 1, 0.5, a)])
    assert res.stats["APs"] == pytest.approx(1.0) and res.stats["APm"] == pytest.approx(1.0)
    assert res.stats["APl"] == -1
    gt = gt_json({1: 2}, [(1, 1, 1, a, 0, [None, 256 ** 2 + 1])])
    res = run(gt, [pred(1, 1, 0.5, a)])
    assert res.stats["APs"] == -1 and res.stats["APm"] == -1 and res.stats["APl"] == pytest.approx(1.0)


def test_ground_truth_id_zero_never_matches_as_in_the_official_code():
    # the official matcher stores the matched ground-truth id and reads 0 as "unmatched"
    a = [rect(0, 10, 0, 10)]
    with pytest.warns(UserWarning, match="id 0"):
        res = run(gt_json({1: 1}, [(0, 1, 1, a, 0)]), [pred(1, 1, 0.9, a)])
    assert res.stats["AP"] == 0.0 and res.stats["AR100"] == 0.0


# ------------------------------------------------------------------------ occlusion


def test_official_occlusion_score_by_hand():
    assert official_occlusion_score(["no_occlusion", "slight_occlusion", "severe_occlusion", None]) == 0.5
    assert official_occlusion_score(["slight_occlusion"]) == 0.25
    assert official_occlusion_score(["no_occlusion"] * 2 + ["severe_occlusion"] * 2) == 0.75
    assert official_occlusion_score(["no_occlusion"] * 3 + ["slight_occlusion"]) == 0.125
    with pytest.raises(ValueError):
        official_occlusion_score([None, None])


def test_occlusion_group_by_hand():
    # light [0, 0.25], medium (0.25, 0.5], heavy (0.5, 1]: each score in exactly one group
    expected = {0.0: "light", 0.125: "light", 0.25: "light", 0.375: "medium", 0.5: "medium",
                0.625: "heavy", 0.75: "heavy", 1.0: "heavy"}
    assert {s: occlusion_group(s) for s in expected} == expected
    with pytest.raises(ValueError, match="1.5"):
        occlusion_group(1.5)


def test_official_occlusion_breakdown():
    a, b, c = rect(0, 10, 0, 10), rect(20, 30, 0, 10), rect(0, 10, 30, 40)
    gt = gt_json(
        {1: 2},
        [
            (1, 1, 1, [a, a], 0, None, ["no_occlusion", "no_occlusion"]),  # 0 -> light
            (2, 1, 1, [b, b], 0, None, ["no_occlusion", "severe_occlusion"]),  # 0.75 -> heavy
            (3, 1, 1, [c, c], 0, None, ["slight_occlusion", "severe_occlusion"]),  # 0.75 -> heavy
            (4, 1, 2, [c, c], 0, None, ["slight_occlusion", None]),  # 0.25 -> light and medium
        ],
        occlusion=True,
    )
    preds = [pred(1, 1, 0.9, [a, a]), pred(1, 1, 0.8, [c, c]), pred(1, 2, 0.7, [c, c])]
    res = run(gt, preds)
    occ = res.to_dict()
    # light: objects 1 (cat 1) and 4 (cat 2), both found -> 1
    assert occ["AP_light"] == pytest.approx(1.0) and occ["AR_light"] == pytest.approx(1.0)
    # medium: only object 4 -> 1; category 1 has no medium object and is left out
    assert occ["AP_medium"] == pytest.approx(1.0) and occ["AR_medium"] == pytest.approx(1.0)
    # heavy: objects 2 (missed) and 3 (found); category 1 only: recall 1/2, precision 1
    # -> 51 of 101 recall points; the prediction on light object 1 is ignored, not a FP
    assert occ["AP_heavy"] == pytest.approx(51 / 101)
    assert occ["AR_heavy"] == pytest.approx(0.5)
    assert res.derived_occlusion is None
    assert "AP_light_derived" not in occ


def test_box_coverage_by_hand():
    assert box_coverage([0, 0, 10, 10], []) == 0.0
    assert box_coverage([0, 0, 10, 10], [[5, 0, 10, 10]]) == 0.5
    # two overlapping occluders: union inside the box = 50 + 50 - 25 = 75
    assert box_coverage([0, 0, 10, 10], [[5, 0, 10, 10], [0, 5, 10, 10]]) == 0.75
    assert box_coverage([0, 0, 10, 10], [[-5, -5, 30, 30]]) == 1.0
    assert box_coverage([0, 0, 4, 2], [[1, 0, 1, 1]]) == pytest.approx(1 / 8)


def test_box_coverage_matches_pixel_grid():
    rng = np.random.default_rng(0)
    for _ in range(40):
        box = [int(v) for v in rng.integers(0, 20, 2)] + [int(v) for v in rng.integers(1, 15, 2)]
        others = [[int(v) for v in rng.integers(0, 25, 2)] + [int(v) for v in rng.integers(1, 12, 2)] for _ in range(rng.integers(0, 5))]
        grid = np.zeros((60, 60), bool)
        for x, y, w, h in others:
            grid[y:y + h, x:x + w] = True
        x, y, w, h = box
        expected = grid[y:y + h, x:x + w].sum() / (w * h)
        assert box_coverage(box, others) == pytest.approx(expected, abs=1e-12)


def test_derived_occlusion_scores_and_breakdown():
    a, b = rect(0, 10, 0, 10), rect(0, 10, 5, 15)
    gt = gt_json({1: 2, 2: 1}, [(1, 1, 1, [a, a], 0), (2, 1, 1, [b, None], 0), (3, 2, 2, [a], 0)])
    ds = VISDataset.from_json(gt)
    scores = derived_occlusion_scores(ds)
    # object 1: half covered in frame 0, alone in frame 1 -> 0.25; object 2: half covered
    # in its only frame -> 0.5; object 3 alone -> 0
    assert scores == pytest.approx({1: 0.25, 2: 0.5, 3: 0.0})
    res = evaluate_vis(ds, load_results([pred(1, 1, 0.9, [a, a])], ds))
    d = res.to_dict()
    assert res.occlusion is None and "AP_light" not in d
    # light: objects 1 (found) and 3 (cat 2, missed); medium: 1 and 2 -> 51/101; heavy: 2 only
    assert d["AP_light_derived"] == pytest.approx(0.5)
    assert d["AP_medium_derived"] == pytest.approx(51 / 101)
    assert d["AP_heavy_derived"] == 0.0 and d["AR_heavy_derived"] == 0.0
    assert "derived" in format_results_table(res).lower()
    assert evaluate_vis(ds, [], derived_occlusion=False).derived_occlusion is None


# ------------------------------------------------------------------------ brute force


def brute_force(gt_tracks, pred_tracks, categories):
    """The VIS AP/AR definition written out directly on dense masks.

    gt_tracks: list of dicts {id, video, cat, crowd, area, masks}; pred_tracks: list of
    {video, cat, score, masks}; masks are lists of HxW arrays or None. Returns the 12
    summary numbers and the per-category AP.
    """
    thresholds = np.linspace(0.5, 0.95, 10)
    rec_thrs = np.linspace(0, 1, 101)
    ranges = {"all": (0, 1e10), "small": (0, 128 ** 2), "medium": (128 ** 2, 256 ** 2), "large": (256 ** 2, 1e10)}

    def iou(d, g):
        inter = union = 0
        for dm, gm in zip(d, g):
            dm = np.zeros((1, 1), bool) if dm is None else dm.astype(bool)
            gm = np.zeros((1, 1), bool) if gm is None else gm.astype(bool)
            if dm.shape != gm.shape:
                dm, gm = np.broadcast_arrays(dm, gm)
            inter += int((dm & gm).sum())
            union += int((dm | gm).sum())
        return inter / union if union else 0.0

    def pred_area(masks):
        areas = [int(m.sum()) for m in masks if m is not None and m.sum() > 0]
        return float(np.mean(areas)) if areas else 0.0

    videos = sorted({g["video"] for g in gt_tracks} | {p["video"] for p in pred_tracks})
    order = sorted(range(len(pred_tracks)), key=lambda i: -pred_tracks[i]["score"])  # stable
    precision = {}  # (t, cat, range, maxdet) -> 101 values
    recall = {}
    for cat in categories:
        for rname, (lo, hi) in ranges.items():
            per_video = []
            for v in videos:
                gts = [g for g in gt_tracks if g["video"] == v and g["cat"] == cat]
                dts = [pred_tracks[i] for i in order if pred_tracks[i]["video"] == v and pred_tracks[i]["cat"] == cat][:100]
                g_ign = [bool(g["crowd"]) or not (lo <= g["area"] <= hi) for g in gts]
                ious = [[iou(d["masks"], g["masks"]) for g in gts] for d in dts]
                per_video.append((gts, dts, g_ign, ious))
            npig = sum(1 for _, _, ign, _ in per_video for x in ign if not x)
            for ti, t in enumerate(thresholds):
                matched_per_video = []
                for gts, dts, g_ign, ious in per_video:
                    taken = [False] * len(gts)
                    outcome = []  # (score, "tp" | "fp" | "ignore")
                    for di, d in enumerate(dts):
                        best = None
                        for want_ignored in (False, True):
                            cands = [
                                gi for gi in range(len(gts))
                                if g_ign[gi] == want_ignored and (not taken[gi] or gts[gi]["crowd"])
                                and ious[di][gi] >= min(t, 1 - 1e-10)
                            ]
                            if cands:
                                top = max(ious[di][gi] for gi in cands)
                                best = [gi for gi in cands if ious[di][gi] == top][-1]
                                break
                        if best is not None:
                            taken[best] = True
                            outcome.append((d["score"], "ignore" if g_ign[best] else "tp"))
                        elif not (lo <= pred_area(d["masks"]) <= hi):
                            outcome.append((d["score"], "ignore"))
                        else:
                            outcome.append((d["score"], "fp"))
                    matched_per_video.append(outcome)
                for maxdet in (1, 10, 100):
                    if npig == 0:
                        continue
                    pooled = [o for outcome in matched_per_video for o in outcome[:maxdet]]
                    pooled = sorted(pooled, key=lambda o: -o[0])  # stable
                    pooled = [kind for _, kind in pooled if kind != "ignore"]
                    tp = np.cumsum([k == "tp" for k in pooled])
                    fp = np.cumsum([k == "fp" for k in pooled])
                    rc = tp / npig
                    pr = tp / np.maximum(tp + fp, 1)
                    recall[ti, cat, rname, maxdet] = rc[-1] if len(rc) else 0.0
                    values = []
                    for r in rec_thrs:
                        idx = np.nonzero(rc >= r)[0]
                        values.append(pr[idx[0]:].max() if len(idx) else 0.0)
                    precision[ti, cat, rname, maxdet] = values

    def ap(tis=range(10), rname="all", cats=categories):
        vals = [v for ti in tis for c in cats for v in precision.get((ti, c, rname, 100), [])]
        return float(np.mean(vals)) if vals else -1.0

    def ar(maxdet=100, rname="all"):
        vals = [recall[ti, c, rname, maxdet] for ti in range(10) for c in categories if (ti, c, rname, maxdet) in recall]
        return float(np.mean(vals)) if vals else -1.0

    stats = dict(
        AP=ap(), AP50=ap([0]), AP75=ap([5]), APs=ap(rname="small"), APm=ap(rname="medium"), APl=ap(rname="large"),
        AR1=ar(1), AR10=ar(10), AR100=ar(100), ARs=ar(rname="small"), ARm=ar(rname="medium"), ARl=ar(rname="large"),
    )
    per_cat = {c: ap(cats=[c]) for c in categories}
    return stats, per_cat


def random_case(seed):
    rng = np.random.default_rng(seed)
    categories = [1, 2, 3]
    gts, preds, videos = [], [], {}
    next_id = 1
    for vid in range(1, int(rng.integers(2, 4)) + 1):
        h, w = (int(rng.integers(20, 40)), int(rng.integers(20, 40))) if rng.random() < 0.7 else (140, 150)
        T = int(rng.integers(1, 5))
        videos[vid] = (h, w, T)
        objs = []
        for _ in range(int(rng.integers(0, 4))):
            y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
            size = int(rng.integers(4, h)) if h > 100 else int(rng.integers(3, 9))
            masks = []
            for t in range(T):
                if rng.random() < 0.2:
                    masks.append(None)
                    continue
                m = np.zeros((h, w), np.uint8)
                m[y + t % 2: y + size, x: x + size] = 1
                masks.append(m)
            cat = int(rng.integers(1, 3))
            crowd = int(rng.random() < 0.15)
            area_vals = [None if m is None else int(m.sum()) for m in masks]
            if rng.random() < 0.2:  # written areas decide the range, not the masks
                area_vals = [None if m is None else float(rng.choice([100, 128 ** 2, 200 ** 2, 300 ** 2])) for m in masks]
            nz = [a for a in area_vals if a]
            gts.append({"id": next_id, "video": vid, "cat": cat, "crowd": crowd, "masks": masks,
                        "areas": area_vals, "area": float(np.mean(nz)) if nz else 0.0})
            objs.append(gts[-1])
            next_id += 1
        for g in objs:
            for _ in range(int(rng.integers(0, 3))):
                masks = [None if (m is None or rng.random() < 0.2) else np.roll(m, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2))) for m in g["masks"]]
                cat = g["cat"] if rng.random() < 0.8 else int(rng.integers(1, 4))
                preds.append({"video": vid, "cat": cat, "score": round(float(rng.random()), 1), "masks": masks})
        for _ in range(int(rng.integers(0, 3))):
            m = np.zeros((h, w), np.uint8)
            m[: int(rng.integers(1, h)), : int(rng.integers(1, w))] = 1
            masks = [None if rng.random() < 0.3 else (m if rng.random() < 0.8 else 0 * m) for _ in range(T)]
            preds.append({"video": vid, "cat": int(rng.integers(1, 4)), "score": round(float(rng.random()), 1),
                          "masks": masks})
    perm = rng.permutation(len(preds))
    preds = [preds[i] for i in perm]
    gt = {
        "videos": [{"id": v, "height": h, "width": w, "length": T} for v, (h, w, T) in videos.items()],
        "categories": [{"id": c, "name": str(c)} for c in categories],
        "annotations": [
            {"id": g["id"], "video_id": g["video"], "category_id": g["cat"], "iscrowd": g["crowd"],
             "segmentations": [enc(m) for m in g["masks"]], "areas": g["areas"]}
            for g in gts
        ],
    }
    results = [{"video_id": p["video"], "category_id": p["cat"], "score": p["score"],
                "segmentations": [enc(m) for m in p["masks"]]} for p in preds]
    return gt, results, gts, preds, categories


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force_on_random_cases(seed):
    gt, results, gts, preds, categories = random_case(seed)
    res = run(gt, results, derived_occlusion=False)
    stats, per_cat = brute_force(gts, preds, categories)
    for key in SUMMARY_KEYS:
        assert res.stats[key] == pytest.approx(stats[key], abs=1e-9), key
    assert res.per_category_ap == pytest.approx(per_cat, abs=1e-9)


def test_video_iou_matches_dense_masks_on_random_tracks():
    rng = np.random.default_rng(1)
    for _ in range(10):
        tracks = []
        for _ in range(5):
            T = int(rng.integers(1, 4))
            tracks.append([None if rng.random() < 0.3 else (rng.random((12, 9)) < 0.4).astype(np.uint8) for _ in range(T)])
        ious = video_iou_matrix([[enc(m) for m in t] for t in tracks[:2]], [[enc(m) for m in t] for t in tracks[2:]])
        for i, d in enumerate(tracks[:2]):
            for j, g in enumerate(tracks[2:]):
                inter = union = 0
                for dm, gm in zip(d, g):
                    dm = np.zeros((12, 9), bool) if dm is None else dm.astype(bool)
                    gm = np.zeros((12, 9), bool) if gm is None else gm.astype(bool)
                    inter += (dm & gm).sum()
                    union += (dm | gm).sum()
                assert ious[i, j] == (inter / union if union else 0.0)
