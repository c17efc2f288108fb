"""HOTA / CLEAR / Identity (TrackEval's definitions) and the identity metrics per occlusion level.

Two kinds of checks:

* hand-computed cases, the arithmetic written next to the numbers;
* random small cases against a plain-loop transcription of TrackEval (``datasets/youtube_vis.py``
  for the data layout, ``metrics/{hota,clear,identity}.py`` and ``eval.py`` for the numbers and
  their combination) written below on dense per-frame masks, and a loop version of the
  documented per-occlusion-level definitions.
"""

import copy
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from cmasktrack.data.results import load_results
from cmasktrack.data.ytvis import VISDataset
from cmasktrack.evaluation import TRACKING_KEYS, evaluate_tracking

H, W = 8, 10
ALPHAS = np.arange(0.05, 0.99, 0.05)
EPS = np.finfo("float").eps
LOW = int(np.sum(ALPHAS <= 1 / 3 + EPS))  # alphas 0.05 .. 0.30: the ones an IoU of 1/3 passes
assert LOW == 6


# ------------------------------------------------------------------------------------------
# building cases


def box(y0, y1, x0, x1):
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def rle(m):
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def uncompressed(m):
    flat = m.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            run, current = 0, v
        run += 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def make_gt(videos, objects, categories=(1,), occlusion=None, encode=rle):
    """videos: {video id: length}; objects: [(ann id, video, category, [mask | None])]."""
    anns = []
    for k, (aid, vid, cat, masks) in enumerate(objects):
        ann = {"id": aid, "video_id": vid, "category_id": cat, "iscrowd": 0,
               "segmentations": [None if m is None else encode(m) for m in masks]}
        if occlusion is not None:
            ann["occlusion"] = [None if m is None else occlusion[k] for m in masks]
        anns.append(ann)
    return {
        "videos": [{"id": v, "width": W, "height": H, "length": n} for v, n in videos.items()],
        "categories": [{"id": c, "name": f"c{c}"} for c in categories],
        "annotations": anns,
    }


def make_preds(tracks):
    """tracks: [(video, category, [mask | None])]; scores are arbitrary (they play no part)."""
    return [{"video_id": v, "category_id": c, "score": 0.1 + 0.8 * ((7 * k) % 5) / 4,
             "segmentations": [None if m is None else rle(m) for m in masks]}
            for k, (v, c, masks) in enumerate(tracks)]


A = box(0, 4, 0, 4)  # 16 pixels
A_SHIFT = box(0, 4, 2, 6)  # IoU with A: 8 / 24 = 1/3
B = box(4, 8, 5, 9)
EMPTY = np.zeros((H, W), dtype=bool)


def close(result, expected):
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key


# ------------------------------------------------------------------------------------------
# hand-computed cases


def test_one_object_one_switch():
    # g in 4 frames; prediction p1 covers it exactly in frames 0-1, p2 in frames 2-3.
    gt = make_gt({1: 4}, [(1, 1, 1, [A] * 4)])
    preds = make_preds([(1, 1, [A, A, None, None]), (1, 1, [None, None, A, A])])
    r = evaluate_tracking(gt, preds)
    # CLEAR: 4 TP, 0 FN, 0 FP, one switch p1 -> p2 at frame 2; tracked without a gap -> Frag 0.
    #   MOTA = (4 - 0 - 1) / 4 = 0.75, MOTP = mean IoU = 1, tracked 4/4 > 0.8 -> MT.
    close(r, {"MOTA": 0.75, "MOTP": 1.0, "IDSW": 1, "Frag": 0, "MT": 1, "PT": 0, "ML": 0})
    # Identity: potential matches (g,p1) = 2, (g,p2) = 2. Best: g <-> p1 (or p2, same cost):
    #   IDTP = 2, IDFN = 4 - 2 = 2, IDFP = (2 - 2) + 2 (p2 unassigned) = 2.
    #   IDF1 = 2 / (2 + 1 + 1) = 0.5, IDP = 2 / 4, IDR = 2 / 4.
    close(r, {"IDF1": 0.5, "IDP": 0.5, "IDR": 0.5})
    # HOTA, every alpha: 4 matches of IoU 1 -> DetA = DetRe = DetPr = 1, LocA = 1.
    #   Association of (g,p1): 2 / (4 + 2 - 2) = 0.5, same for (g,p2):
    #   AssA = (2 * 0.5 + 2 * 0.5) / 4 = 0.5; AssRe = (2 * 2/4 + 2 * 2/4) / 4 = 0.5;
    #   AssPr = (2 * 2/2 + 2 * 2/2) / 4 = 1; HOTA = sqrt(1 * 0.5).
    close(r, {"HOTA": math.sqrt(0.5), "DetA": 1.0, "AssA": 0.5, "AssRe": 0.5, "AssPr": 1.0, "LocA": 1.0,
              "DetRe": 1.0, "DetPr": 1.0})
    # one class: class average, detection average and the class entry agree
    close(r["det_av"], {k: r[k] for k in TRACKING_KEYS})
    close(r["per_class"]["c1"], {k: r[k] for k in TRACKING_KEYS})


def test_fragmented_track():
    # g in 5 frames; p covers it in frames 0, 1, 3, 4 and is off target in frame 2 (IoU 1/3).
    gt = make_gt({1: 5}, [(1, 1, 1, [A] * 5)])
    r = evaluate_tracking(gt, make_preds([(1, 1, [A, A, A_SHIFT, A, A])]))
    # CLEAR (IoU >= 0.5): matched in 4 frames, frame 2 is one FN and one FP; tracking restarts at
    #   frame 3 -> 2 starts -> Frag = 2 - 1 = 1; same prediction throughout -> IDSW 0.
    #   MOTA = (4 - 1 - 0) / 5 = 0.6, MOTP = 4 * 1 / 4 = 1, tracked 4/5 = 0.8 (not > 0.8) -> PT.
    close(r, {"MOTA": 0.6, "MOTP": 1.0, "IDSW": 0, "Frag": 1, "MT": 0, "PT": 1, "ML": 0})
    # Identity: 4 potential matches; IDTP 4, IDFN 1, IDFP 1 -> IDF1 = 4 / 5.
    close(r, {"IDF1": 0.8, "IDP": 0.8, "IDR": 0.8})
    # HOTA: one pair per frame, so the alignment is 1 and each frame's match is (g,p).
    #   alphas <= 1/3 (6 of 19): 5 matches -> DetA 1, AssA = 5/(5+5-5) = 1, HOTA 1,
    #     LocA = (4 + 1/3) / 5 = 13/15;
    #   other 13 alphas: 4 matches, 1 FN, 1 FP -> DetA = 4/6, AssA = 4/(5+5-4) = 4/6, HOTA = 2/3,
    #     LocA = 1, AssRe = 4/5, AssPr = 4/5.
    close(r, {
        "HOTA": (6 * 1 + 13 * 2 / 3) / 19,
        "DetA": (6 * 1 + 13 * 4 / 6) / 19,
        "AssA": (6 * 1 + 13 * 4 / 6) / 19,
        "LocA": (6 * 13 / 15 + 13 * 1) / 19,
        "AssRe": (6 * 1 + 13 * 4 / 5) / 19,
        "DetRe": (6 * 1 + 13 * 4 / 5) / 19,
    })


def test_fragment_rule_frames_without_predictions_do_not_interrupt():
    # TrackEval's Frag rule: a frame without any prediction of the class is skipped, so the
    # track continuing after it is not a new fragment; an off-target prediction does interrupt.
    gt = make_gt({1: 5}, [(1, 1, 1, [A] * 5)])
    r = evaluate_tracking(gt, make_preds([(1, 1, [A, A, None, A, A])]))
    # 4 TP, 1 FN, 0 FP -> MOTA = (4 - 0) / 5 = 0.8; Frag 0
    close(r, {"Frag": 0, "IDSW": 0, "MOTA": 0.8, "PT": 1})


def test_merged_track():
    # g1 in frames 0-1 and g2 in frames 2-3 (same class), both covered by one prediction p.
    g1, g2 = [A, A, None, None], [None, None, B, B]
    gt = make_gt({1: 4}, [(1, 1, 1, g1), (2, 1, 1, g2)])
    r = evaluate_tracking(gt, make_preds([(1, 1, [A, A, B, B])]))
    # CLEAR: 4 TP; no ground truth ever changes its match -> IDSW 0; MOTA 1.
    close(r, {"MOTA": 1.0, "IDSW": 0, "MT": 2, "Frag": 0})
    # Identity: p can take one of them: IDTP 2, IDFN 2 (the other), IDFP 4 - 2 = 2 -> IDF1 0.5.
    close(r, {"IDF1": 0.5, "IDR": 0.5, "IDP": 0.5})
    # HOTA: association (g1,p) = 2 / (2 + 4 - 2) = 0.5 = (g2,p): AssA = 0.5, AssRe = 2/2 = 1,
    #   AssPr = 2/4 = 0.5, DetA 1 -> HOTA = sqrt(0.5).
    close(r, {"HOTA": math.sqrt(0.5), "AssA": 0.5, "AssRe": 1.0, "AssPr": 0.5, "DetA": 1.0})


def test_empty_class_counts_in_the_class_average():
    # class 1 tracked perfectly over 2 frames; class 2 has neither objects nor predictions
    gt = make_gt({1: 2}, [(1, 1, 1, [A, A])], categories=(1, 2))
    r = evaluate_tracking(gt, make_preds([(1, 1, [A, A])]))
    empty = r["per_class"]["c2"]
    # an empty class: TP = FN = FP = 0 -> DetA = 0 / max(1, 0) = 0, AssA 0, HOTA 0,
    #   LocA = max(1e-10, 0) / max(1e-10, 0) = 1; MOTA = 0 / max(1, 0) = 0; IDF1 0
    close(empty, {"HOTA": 0.0, "DetA": 0.0, "AssA": 0.0, "LocA": 1.0, "MOTA": 0.0, "IDF1": 0.0, "ML": 0})
    close(r["per_class"]["c1"], {"HOTA": 1.0, "MOTA": 1.0, "IDF1": 1.0, "LocA": 1.0})
    # class average = mean of the two classes; detection average = class 1 alone
    close(r, {"HOTA": 0.5, "DetA": 0.5, "LocA": 1.0, "MOTA": 0.5, "IDF1": 0.5, "MT": 1})
    close(r["det_av"], {"HOTA": 1.0, "MOTA": 1.0, "IDF1": 1.0})


def test_class_with_only_predictions():
    # class 1: perfect over 2 frames; class 2: no object, one prediction present in 3 frames
    gt = make_gt({1: 3}, [(1, 1, 1, [A, A, None])], categories=(1, 2))
    r = evaluate_tracking(gt, make_preds([(1, 1, [A, A, None]), (1, 2, [B, B, B])]))
    # class 2: TP 0, FN 0, FP 3 -> MOTA = (0 - 3 - 0) / max(1, 0) = -3; DetA = 0 / 3; IDF1 0
    close(r["per_class"]["c2"], {"MOTA": -3.0, "DetA": 0.0, "HOTA": 0.0, "IDF1": 0.0, "IDP": 0.0, "LocA": 1.0})
    # class average MOTA = (1 + -3) / 2 = -1; pooled: (2 - 3) / 2 = -0.5
    close(r, {"MOTA": -1.0, "HOTA": 0.5})
    # pooled IDF1: IDTP 2, IDFP 3, IDFN 0 -> 2 / (2 + 1.5) = 4/7; HOTA: DetA = 2 / 5, AssA 1
    close(r["det_av"], {"MOTA": -0.5, "IDF1": 4 / 7, "DetA": 0.4, "HOTA": math.sqrt(0.4)})


def test_empty_mask_prediction_is_a_detection_that_never_matches():
    gt = make_gt({1: 2}, [(1, 1, 1, [A, A])])
    r = evaluate_tracking(gt, make_preds([(1, 1, [EMPTY, EMPTY])]))
    # 2 FN and 2 FP: MOTA = (0 - 2) / 2 = -1; DetA = 0 / 4; IDF1 = 0 (IDFN 2, IDFP 2)
    close(r, {"MOTA": -1.0, "DetA": 0.0, "HOTA": 0.0, "IDF1": 0.0, "ML": 1})
    # the same prediction with null frames is absent: no FP, MOTA = (0 - 0) / 2 = 0
    close(evaluate_tracking(gt, make_preds([(1, 1, [None, None])])), {"MOTA": 0.0, "ML": 1})
    # an empty ground-truth mask is an object present that no prediction can match, not even
    # an empty one: frame 1 is 1 FN + 1 FP -> MOTA = (1 - 1 - 0) / 2 = 0;
    # IDTP 1, IDFN 1, IDFP 1 -> IDF1 = 1 / (1 + 0.5 + 0.5) = 0.5
    gt2 = make_gt({1: 2}, [(1, 1, 1, [A, EMPTY])])
    close(evaluate_tracking(gt2, make_preds([(1, 1, [A, EMPTY])])), {"MOTA": 0.0, "IDF1": 0.5})


@pytest.mark.parametrize("first", ["p1", "p2"])
def test_tie_in_the_clear_assignment(first):
    # Frame 0: p1 and p2 are the same mask, both IoU 1 with g: a tie. Frame 1: only p2.
    # The tie goes to the prediction listed first in the results (scipy's linear_sum_assignment
    # prefers the earlier column, TrackEval's columns are in results order).
    gt = make_gt({1: 2}, [(1, 1, 1, [A, A])])
    p1, p2 = (1, 1, [A, None]), (1, 1, [A, A])
    r = evaluate_tracking(gt, make_preds([p1, p2] if first == "p1" else [p2, p1]))
    if first == "p1":
        # frame 0 -> p1, frame 1 -> p2: one switch. TP 2, FP 1 -> MOTA = (2 - 1 - 1) / 2 = 0
        close(r, {"IDSW": 1, "MOTA": 0.0})
    else:
        # frame 0 -> p2 and p2 again: no switch. MOTA = (2 - 1 - 0) / 2 = 0.5
        close(r, {"IDSW": 0, "MOTA": 0.5})


def test_clear_keeps_the_previous_match():
    # Frame 0: only p1 (IoU 0.6 with g). Frame 1: p1 (IoU 0.6) and p2 (IoU 1). The bonus of 1000
    # for keeping the previous frame's match makes p1 win frame 1 although p2 fits better.
    g = box(0, 4, 0, 5)  # 20 pixels
    p1 = box(0, 4, 0, 3)  # 12 pixels inside g: IoU 12 / 20 = 0.6
    gt = make_gt({1: 2}, [(1, 1, 1, [g, g])])
    r = evaluate_tracking(gt, make_preds([(1, 1, [p1, p1]), (1, 1, [None, g])]))
    # 2 TP (p1 twice), p2 is 1 FP, no switch: MOTA = (2 - 1 - 0) / 2 = 0.5, MOTP = 0.6
    close(r, {"IDSW": 0, "MOTA": 0.5, "MOTP": 0.6})
    # HOTA has no such bonus: frame 1 goes to the larger alignment * IoU. Alignments:
    #   (g,p1): frame 0 IoU 0.6 / (0.6 + 0.6 - 0.6) = 1, frame 1 0.6 / (1.6 + 0.6 - 0.6) = 0.375
    #     -> 1.375 / (2 + 2 - 1.375); (g,p2): 1 / (1.6 + 1 - 1) = 0.625 -> 0.625 / (2 + 1 - 0.625)
    a1, a2 = 1.375 / 2.625, 0.625 / 2.375
    assert a1 * 0.6 > a2 * 1.0  # so p1 wins frame 1 in HOTA too: both matches are (g,p1)
    # alphas <= 0.6 (12 of 19): 2 matches of IoU 0.6, 1 FP -> DetA 2/3; AssA = 2/(2+2-2) = 1
    n = int(np.sum(ALPHAS <= 0.6 + EPS))
    assert n == 12
    close(r, {"DetA": n / 19 * 2 / 3, "LocA": (n * 0.6 + (19 - n)) / 19})


def test_identity_assignment_ties_are_broken_as_in_trackeval():
    # g_a (id 2, listed first, light) and g_b (id 1, listed second, heavy) are each matched by
    # p in one frame: assigning p to either costs the same. TrackEval's matrix has the ground
    # truths in id order; the per-level numbers follow the assignment it makes (compared with
    # the loop transcription, which builds TrackEval's matrix).
    gt = make_gt({1: 2}, [(2, 1, 1, [A, None]), (1, 1, 1, [None, B])],
                 occlusion=["no_occlusion", "severe_occlusion"])
    preds = make_preds([(1, 1, [A, B])])
    ours, ref = evaluate_tracking(gt, preds), reference(gt, preds)
    for key in ("IDF1_light", "IDF1_heavy"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    # the object p is assigned to: IDTP 1, IDFN 0, IDFP 2 - 1 = 1 -> 1 / (1 + 0.5) = 2/3;
    # the other: IDTP 0, IDFN 1, and p is not its own -> 0
    assert sorted([ours["IDF1_light"], ours["IDF1_heavy"]]) == pytest.approx([0.0, 2 / 3])


def test_scores_crowd_flags_and_input_forms_do_not_change_the_numbers(tmp_path):
    objects = [(1, 1, 1, [A, A, None]), (2, 1, 1, [B, None, B])]
    preds = make_preds([(1, 1, [A, A_SHIFT, None]), (1, 1, [B, B, B])])
    reference = evaluate_tracking(make_gt({1: 3}, objects), preds)
    # uncompressed-RLE ground truth
    assert evaluate_tracking(make_gt({1: 3}, objects, encode=uncompressed), preds) == reference
    # crowd flags ignored; other scores; files and parsed objects
    gt = make_gt({1: 3}, objects)
    gt["annotations"][1]["iscrowd"] = 1
    rescored = copy.deepcopy(preds)
    rescored[0]["score"], rescored[1]["score"] = 0.001, 0.999
    assert evaluate_tracking(gt, rescored) == reference
    import json

    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    assert evaluate_tracking(str(tmp_path / "gt.json"), tmp_path / "pred.json") == reference
    dataset = VISDataset.from_json(gt)
    assert evaluate_tracking(dataset, load_results(preds, dataset)) == reference


def test_polygon_ground_truth():
    # the polygon of a rectangle rasterised by pycocotools, as the AP evaluator reads it
    poly = [[0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0]]
    mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, H, W))).astype(bool)
    gt_poly = make_gt({1: 2}, [(1, 1, 1, [A, A])])
    gt_poly["annotations"][0]["segmentations"] = [poly, poly]
    preds = make_preds([(1, 1, [mask, A])])
    expected = evaluate_tracking(make_gt({1: 2}, [(1, 1, 1, [mask, mask])]), preds)
    assert evaluate_tracking(gt_poly, preds) == expected
    iou = (mask & A).sum() / (mask | A).sum()
    assert expected["MOTP"] == pytest.approx((1 + iou) / 2)  # frame 0 IoU 1, frame 1 IoU(A, mask)


def test_metric_choice_and_errors():
    gt = make_gt({1: 2}, [(1, 1, 1, [A, A])])
    preds = make_preds([(1, 1, [A, A])])
    r = evaluate_tracking(gt, preds, metrics="identity")
    assert {"IDF1", "IDP", "IDR"} <= set(r) and "HOTA" not in r and "MOTA" not in r
    assert set(r["det_av"]) == {"IDF1", "IDP", "IDR"}
    with pytest.raises(ValueError, match="unknown tracking metric 'mota'"):
        evaluate_tracking(gt, preds, metrics=["hota", "mota"])
    bad = copy.deepcopy(preds)
    bad[0]["video_id"] = 7
    with pytest.raises(ValueError, match="unknown video_id 7"):
        evaluate_tracking(gt, bad)
    other = copy.deepcopy(preds)
    other[0]["category_id"] = 9
    with pytest.warns(UserWarning, match="category ids not in the ground truth"):
        r = evaluate_tracking(gt, other)
    close(r, {"MOTA": 0.0, "ML": 1})  # the prediction is ignored: 2 FN, no FP


# ------------------------------------------------------------------------------------------
# occlusion levels


def test_identity_switch_of_a_heavily_occluded_object_shows_under_heavy_only():
    # g1: no occlusion (light), followed by p3 throughout. g2: severe occlusion (heavy),
    # switches from p1 to p2 at frame 2. p4: a false positive far from both.
    FP = box(0, 2, 7, 10)
    gt = make_gt({1: 4}, [(1, 1, 1, [A] * 4), (2, 1, 1, [B] * 4)],
                 occlusion=["no_occlusion", "severe_occlusion"])
    preds = make_preds([(1, 1, [B, B, None, None]), (1, 1, [None, None, B, B]), (1, 1, [A] * 4)])
    r = evaluate_tracking(gt, preds)
    assert r["IDSW"] == 1
    assert (r["IDSW_light"], r["IDSW_medium"], r["IDSW_heavy"]) == (0, 0, 1)
    # light: g1 <-> p3, IDTP 4, IDFN 0, IDFP 0 (p1, p2 are owned by g2) -> 1
    # heavy: g2 <-> p1 (2 frames): IDTP 2, IDFN 2, IDFP 0 + 2 (p2, unassigned, owned by g2) -> 0.5
    # medium: no object -> -1
    close(r, {"IDF1_light": 1.0, "IDF1_heavy": 0.5, "IDF1_medium": -1.0})
    # AssA: light: (g1,p3) 4 matches, 4/(4+4-4) = 1; heavy: (g2,p1) and (g2,p2) 2/(4+2-2) = 0.5
    close(r, {"AssA_light": 1.0, "AssA_heavy": 0.5, "AssA_medium": -1.0})
    # a pure false positive (no potential match with anything) counts in every level: +3 IDFP
    r = evaluate_tracking(gt, preds + make_preds([(1, 1, [FP, FP, FP, None])]))
    close(r, {"IDF1_light": 4 / (4 + 1.5), "IDF1_heavy": 2 / (2 + 0.5 * 5 + 1)})
    # without labels the keys are the derived ones
    plain = make_gt({1: 4}, [(1, 1, 1, [A] * 4), (2, 1, 1, [B] * 4)])
    r = evaluate_tracking(plain, preds)
    assert "IDF1_light_derived" in r and "IDF1_light" not in r
    assert "IDF1_light" not in evaluate_tracking(plain, preds, derived_occlusion=False)


# ------------------------------------------------------------------------------------------
# a loop transcription of TrackEval on dense masks (independent of the implementation)


def ref_iou(a, b):
    union = int(np.logical_or(a, b).sum())
    return int(np.logical_and(a, b).sum()) / union if union > 0 else 0.0


def ref_sequence_data(gt_tracks, pred_tracks, num_frames):
    """youtube_vis.py + get_preprocessed_seq_data for one video and one class.

    gt_tracks: [(annotation id, masks)] in file order; pred_tracks: [(global id, masks)]."""
    gt_ids_present = sorted({i for i, ms in gt_tracks for m in ms if m is not None})
    pred_ids_present = sorted({i for i, ms in pred_tracks for m in ms if m is not None})
    gmap = {i: k for k, i in enumerate(gt_ids_present)}
    pmap = {i: k for k, i in enumerate(pred_ids_present)}
    data = {"gt_ids": [], "tracker_ids": [], "sim": [], "num_gt_ids": len(gmap), "num_tracker_ids": len(pmap),
            "num_gt_dets": 0, "num_tracker_dets": 0, "gt_ann_ids": gt_ids_present}
    for t in range(num_frames):
        g = [(i, ms[t]) for i, ms in gt_tracks if ms[t] is not None]
        d = [(i, ms[t]) for i, ms in pred_tracks if ms[t] is not None]
        data["gt_ids"].append([gmap[i] for i, _ in g])
        data["tracker_ids"].append([pmap[i] for i, _ in d])
        data["sim"].append([[ref_iou(gm, dm) for _, dm in d] for _, gm in g])
        data["num_gt_dets"] += len(g)
        data["num_tracker_dets"] += len(d)
    return data


def ref_hota(data):
    nA = len(ALPHAS)
    res = {k: [0.0] * nA for k in ("TP", "FN", "FP", "AssA", "AssRe", "AssPr", "LocA")}
    res["gt"] = {}  # per ground-truth id: ([sum of association per alpha], [matches per alpha])
    if data["num_tracker_dets"] == 0 or data["num_gt_dets"] == 0:
        res["FN"] = [float(data["num_gt_dets"])] * nA
        res["FP"] = [float(data["num_tracker_dets"])] * nA
        res["LocA"] = [1.0] * nA
        return res
    G, D = data["num_gt_ids"], data["num_tracker_ids"]
    potential = [[0.0] * D for _ in range(G)]
    gcount, dcount = [0] * G, [0] * D
    for gids, dids, sim in zip(data["gt_ids"], data["tracker_ids"], data["sim"]):
        for i, g in enumerate(gids):
            for j, d in enumerate(dids):
                denom = sum(sim[i]) + sum(sim[k][j] for k in range(len(gids))) - sim[i][j]
                if denom > 0 + EPS:
                    potential[g][d] += sim[i][j] / denom
        for g in gids:
            gcount[g] += 1
        for d in dids:
            dcount[d] += 1
    align = [[potential[g][d] / (gcount[g] + dcount[d] - potential[g][d]) for d in range(D)] for g in range(G)]
    matches = [[[0] * D for _ in range(G)] for _ in range(nA)]
    loc = [0.0] * nA
    for gids, dids, sim in zip(data["gt_ids"], data["tracker_ids"], data["sim"]):
        if not gids or not dids:
            for a in range(nA):
                res["FP"][a] += len(dids)
                res["FN"][a] += len(gids)
            continue
        score = np.array([[align[g][d] * sim[i][j] for j, d in enumerate(dids)] for i, g in enumerate(gids)])
        rows, cols = linear_sum_assignment(-score)
        for a, alpha in enumerate(ALPHAS):
            n = 0
            for i, j in zip(rows, cols):
                if sim[i][j] >= alpha - EPS:
                    n += 1
                    loc[a] += sim[i][j]
                    matches[a][gids[i]][dids[j]] += 1
            res["TP"][a] += n
            res["FN"][a] += len(gids) - n
            res["FP"][a] += len(dids) - n
    for a in range(nA):
        tp = max(1, res["TP"][a])
        for g in range(G):
            ga = res["gt"].setdefault(g, ([0.0] * nA, [0] * nA))
            for d in range(D):
                m = matches[a][g][d]
                if m:
                    ass = m / max(1, gcount[g] + dcount[d] - m)
                    res["AssA"][a] += m * ass / tp
                    res["AssRe"][a] += m * (m / max(1, gcount[g])) / tp
                    res["AssPr"][a] += m * (m / max(1, dcount[d])) / tp
                    ga[0][a] += m * ass
                    ga[1][a] += m
        res["LocA"][a] = max(1e-10, loc[a]) / max(1e-10, res["TP"][a])
    return res


def ref_clear(data):
    res = dict(TP=0, FN=0, FP=0, IDSW=0, MT=0, PT=0, ML=0, Frag=0, MOTP_sum=0.0, gt_idsw={})
    if data["num_tracker_dets"] == 0:
        res["FN"], res["ML"] = data["num_gt_dets"], data["num_gt_ids"]
        return res
    if data["num_gt_dets"] == 0:
        res["FP"] = data["num_tracker_dets"]
        return res
    G = data["num_gt_ids"]
    count, matched, frags = [0] * G, [0] * G, [0] * G
    last, prev = [None] * G, [None] * G
    for gids, dids, sim in zip(data["gt_ids"], data["tracker_ids"], data["sim"]):
        if not gids:
            res["FP"] += len(dids)
            continue
        if not dids:
            res["FN"] += len(gids)
            for g in gids:
                count[g] += 1
            continue
        score = np.zeros((len(gids), len(dids)))
        for i, g in enumerate(gids):
            for j, d in enumerate(dids):
                if sim[i][j] >= 0.5 - EPS:
                    score[i, j] = 1000 * (prev[g] == d) + sim[i][j]
        rows, cols = linear_sum_assignment(-score)
        pairs = [(i, j) for i, j in zip(rows, cols) if score[i, j] > 0 + EPS]
        for i, j in pairs:
            g, d = gids[i], dids[j]
            if last[g] is not None and last[g] != d:
                res["IDSW"] += 1
                res["gt_idsw"][g] = res["gt_idsw"].get(g, 0) + 1
        for g in gids:
            count[g] += 1
        was_tracked = [p is not None for p in prev]
        prev = [None] * G
        for i, j in pairs:
            g, d = gids[i], dids[j]
            matched[g] += 1
            last[g] = d
            prev[g] = d
        for g in range(G):
            if not was_tracked[g] and prev[g] is not None:
                frags[g] += 1
        res["TP"] += len(pairs)
        res["FN"] += len(gids) - len(pairs)
        res["FP"] += len(dids) - len(pairs)
        res["MOTP_sum"] += sum(sim[i][j] for i, j in pairs)
    for g in range(G):
        ratio = matched[g] / count[g]
        if ratio > 0.8:
            res["MT"] += 1
        elif ratio >= 0.2:
            res["PT"] += 1
        else:
            res["ML"] += 1
        res["Frag"] += max(0, frags[g] - 1)
    return res


def ref_identity(data):
    res = dict(IDTP=0, IDFN=data["num_gt_dets"], IDFP=data["num_tracker_dets"], gt_idtp={}, owner={}, fp={})
    G, D = data["num_gt_ids"], data["num_tracker_ids"]
    gcount, dcount = [0] * G, [0] * D
    potential = [[0] * D for _ in range(G)]
    for gids, dids, sim in zip(data["gt_ids"], data["tracker_ids"], data["sim"]):
        for g in gids:
            gcount[g] += 1
        for d in dids:
            dcount[d] += 1
        for i, g in enumerate(gids):
            for j, d in enumerate(dids):
                if sim[i][j] >= 0.5:
                    potential[g][d] += 1
    res["fp"] = {d: dcount[d] for d in range(D)}
    if data["num_tracker_dets"] == 0 or data["num_gt_dets"] == 0:
        return res
    fn = np.zeros((G + D, G + D))
    fp = np.zeros((G + D, G + D))
    for g in range(G):
        for d in range(D):
            fn[g, d] = gcount[g] - potential[g][d]
            fp[g, d] = dcount[d] - potential[g][d]
        for k in range(D, G + D):
            fn[g, k] = gcount[g] if k == D + g else 1e10
    for k in range(G, G + D):
        for d in range(D):
            fp[k, d] = dcount[d] if k == G + d else 1e10
    rows, cols = linear_sum_assignment(fn + fp)
    res["IDFN"] = int(sum(fn[r, c] for r, c in zip(rows, cols)))
    res["IDFP"] = int(sum(fp[r, c] for r, c in zip(rows, cols)))
    res["IDTP"] = sum(gcount) - res["IDFN"]
    # per-level bookkeeping: the documented owner rule
    for r, c in zip(rows, cols):
        if r < G and c < D and potential[r][c] > 0:
            res["gt_idtp"][r] = potential[r][c]
            res["owner"][c] = r
            res["fp"][c] = dcount[c] - potential[r][c]
    res["gcount"] = gcount
    res["potential"] = potential
    return res


def ref_combine(parts, metric):
    """TrackEval's combine_sequences (= combine_classes_det_averaged)."""
    if metric == "hota":
        out = {}
        for k in ("TP", "FN", "FP"):
            out[k] = [sum(p[k][a] for p in parts) for a in range(len(ALPHAS))]
        for k in ("AssA", "AssRe", "AssPr"):
            out[k] = [sum(p[k][a] * p["TP"][a] for p in parts) / max(1.0, out["TP"][a]) for a in range(len(ALPHAS))]
        out["LocA"] = [max(1e-10, sum(p["LocA"][a] * p["TP"][a] for p in parts)) / max(1e-10, out["TP"][a])
                       for a in range(len(ALPHAS))]
        out["DetRe"] = [tp / max(1, tp + fn) for tp, fn in zip(out["TP"], out["FN"])]
        out["DetPr"] = [tp / max(1, tp + fp) for tp, fp in zip(out["TP"], out["FP"])]
        out["DetA"] = [tp / max(1, tp + fn + fp) for tp, fn, fp in zip(out["TP"], out["FN"], out["FP"])]
        out["HOTA"] = [math.sqrt(d * a) for d, a in zip(out["DetA"], out["AssA"])]
        return out
    if metric == "clear":
        out = {k: sum(p[k] for p in parts) for k in ("TP", "FN", "FP", "IDSW", "MT", "PT", "ML", "Frag", "MOTP_sum")}
        out["MOTA"] = (out["TP"] - out["FP"] - out["IDSW"]) / max(1.0, out["TP"] + out["FN"])
        out["MOTP"] = out["MOTP_sum"] / max(1.0, out["TP"])
        return out
    out = {k: sum(p[k] for p in parts) for k in ("IDTP", "IDFN", "IDFP")}
    out["IDR"] = out["IDTP"] / max(1.0, out["IDTP"] + out["IDFN"])
    out["IDP"] = out["IDTP"] / max(1.0, out["IDTP"] + out["IDFP"])
    out["IDF1"] = out["IDTP"] / max(1.0, out["IDTP"] + 0.5 * out["IDFP"] + 0.5 * out["IDFN"])
    return out


KEYS = {"hota": ("HOTA", "DetA", "AssA", "LocA", "DetRe", "DetPr", "AssRe", "AssPr"),
        "clear": ("MOTA", "MOTP", "IDSW", "Frag", "MT", "PT", "ML"), "identity": ("IDF1", "IDP", "IDR")}
COUNTS = {"IDSW", "Frag", "MT", "PT", "ML"}


def summary(res, metric):
    return {k: (float(np.mean(res[k])) if metric == "hota" else float(res[k])) for k in KEYS[metric]}


def reference(gt, preds):
    """Every number evaluate_tracking reports, by the loop transcription."""
    cats = [c["id"] for c in gt["categories"]]
    size = {v["id"]: v["length"] for v in gt["videos"]}
    decode = lambda s: None if s is None else mask_utils.decode(s).astype(bool)  # noqa: E731
    gt_masks = {a["id"]: [decode(s) for s in a["segmentations"]] for a in gt["annotations"]}
    pred_masks = [[decode(s) for s in p["segmentations"]] for p in preds]
    scores = {a["id"]: _official_score(a["occlusion"]) for a in gt["annotations"]}
    per_class = {c: {m: [] for m in KEYS} for c in cats}
    level_parts = []
    for v in size:
        for c in cats:
            gts = [(a["id"], gt_masks[a["id"]]) for a in gt["annotations"] if a["video_id"] == v and a["category_id"] == c]
            prs = [(k, pred_masks[k]) for k, p in enumerate(preds) if p["video_id"] == v and p["category_id"] == c]
            data = ref_sequence_data(gts, prs, size[v])
            res = {"hota": ref_hota(data), "clear": ref_clear(data), "identity": ref_identity(data)}
            for m in KEYS:
                per_class[c][m].append(res[m])
            level_parts.append((data, res, gts))
    out, det = {}, {}
    names = {c["id"]: c["name"] for c in gt["categories"]}
    out["per_class"] = {names[c]: {} for c in cats}
    for m in KEYS:
        class_res = [ref_combine(per_class[c][m], m) for c in cats]
        for c, r in zip(cats, class_res):
            out["per_class"][names[c]].update(summary(r, m))
        det.update(summary(ref_combine(class_res, m), m))
        for k in KEYS[m]:
            if k in COUNTS:
                out[k] = float(sum(r[k] for r in class_res))
            elif m == "hota":
                out[k] = float(np.mean([np.mean(r[k]) for r in class_res]))
            else:
                out[k] = float(np.mean([r[k] for r in class_res]))
    out["det_av"] = det
    out.update(ref_levels(level_parts, scores))
    return out


def _official_score(labels):
    values = sorted([{"no_occlusion": 0.0, "slight_occlusion": 0.25, "severe_occlusion": 0.75}[x]
                     for x in labels if x is not None])
    top = values[len(values) // 2:]  # the highest ceil(n/2)
    return sum(top) / len(top)


def ref_levels(parts, scores):
    """The per-occlusion-level definitions of the README, with loops."""
    out = {}
    for level, (low, high) in {"light": (0, 0.25), "medium": (0.25, 0.5), "heavy": (0.5, 1)}.items():
        idtp = idfn = idfp = idsw = objects = 0
        ass, tp = [0.0] * len(ALPHAS), [0] * len(ALPHAS)
        for data, res, gts in parts:
            ann_ids = data["gt_ann_ids"]  # relabelled id k is ann_ids[k]
            inside = [low <= scores[i] <= high for i in ann_ids]
            objects += sum(inside)
            ident = res["identity"]
            for g, ok in enumerate(inside):
                if ok:
                    n = sum(1 for ms in [dict(gts)[ann_ids[g]]] for m in ms if m is not None)
                    idtp += ident["gt_idtp"].get(g, 0)
                    idfn += n - ident["gt_idtp"].get(g, 0)
                    idsw += res["clear"]["gt_idsw"].get(g, 0)
                    if g in res["hota"]["gt"]:
                        for a in range(len(ALPHAS)):
                            ass[a] += res["hota"]["gt"][g][0][a]
                            tp[a] += res["hota"]["gt"][g][1][a]
            for d, fp in ident["fp"].items():
                owner = ident["owner"].get(d)
                if owner is None and "potential" in ident:
                    column = [ident["potential"][g][d] for g in range(len(ann_ids))]
                    # first maximum in annotation-file order (ids are relabelled in id order)
                    file_order = [ann_ids.index(i) for i, _ in gts if i in ann_ids]
                    best = max(column) if column else 0
                    if best > 0:
                        owner = next(g for g in file_order if column[g] == best)
                if owner is None or inside[owner]:
                    idfp += fp
        if objects:
            out[f"IDF1_{level}"] = idtp / max(1.0, idtp + 0.5 * idfp + 0.5 * idfn)
            out[f"AssA_{level}"] = float(np.mean([a / max(1.0, t) for a, t in zip(ass, tp)]))
        else:
            out[f"IDF1_{level}"] = out[f"AssA_{level}"] = -1.0
        out[f"IDSW_{level}"] = idsw
    return out


def random_case(rng):
    labels = ["no_occlusion", "slight_occlusion", "severe_occlusion"]
    num_videos, categories = int(rng.integers(1, 3)), list(range(1, int(rng.integers(1, 4)) + 1))
    videos, objects, occl, tracks = {}, [], [], []
    ids = list(rng.permutation(40) + 1)  # annotation ids not in file order

    def blob(base=None):
        if base is not None and rng.random() < 0.8:
            m = np.roll(base, (int(rng.integers(-1, 2)), int(rng.integers(-2, 3))), (0, 1))
            return m & (rng.random(m.shape) < 0.85) if rng.random() < 0.3 else m
        y, x = int(rng.integers(0, H - 2)), int(rng.integers(0, W - 2))
        return box(y, y + int(rng.integers(2, 5)), x, x + int(rng.integers(2, 6)))

    for v in range(1, num_videos + 1):
        T = int(rng.integers(1, 6))
        videos[v] = T
        for _ in range(int(rng.integers(0, 4))):
            cat = int(rng.choice(categories))
            masks = [None if rng.random() < 0.25 else blob() for _ in range(T)]
            if rng.random() < 0.1:
                masks[0] = EMPTY.copy()
            if all(m is None for m in masks):
                masks[-1] = blob()
            objects.append((ids.pop(), v, cat, masks))
            occl.append(str(rng.choice(labels)))
            for _ in range(int(rng.integers(0, 3))):  # noisy, split, swapped copies
                pm = [None if rng.random() < 0.2 else (blob(m) if m is not None else (blob() if rng.random() < 0.2 else None))
                      for m in masks]
                if rng.random() < 0.1:
                    pm[-1] = EMPTY.copy()
                tracks.append((v, cat if rng.random() < 0.85 else int(rng.choice(categories)), pm))
        for _ in range(int(rng.integers(0, 3))):  # false positives
            tracks.append((v, int(rng.choice(categories)), [blob() if rng.random() < 0.6 else None for _ in range(T)]))
        if tracks and rng.random() < 0.3:  # an exact duplicate: ties
            k = int(rng.integers(0, len(tracks)))
            if tracks[k][0] == v:
                tracks.append(tracks[k])
    return make_gt(videos, objects, categories=categories, occlusion=occl), make_preds(tracks)


@pytest.mark.parametrize("seed", range(40))
def test_against_a_loop_transcription_of_trackeval(seed):
    gt, preds = random_case(np.random.default_rng(seed))
    ours = evaluate_tracking(copy.deepcopy(gt), copy.deepcopy(preds))
    ref = reference(gt, preds)
    for key in TRACKING_KEYS:
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key
        assert ours["det_av"][key] == pytest.approx(ref["det_av"][key], abs=1e-9), ("det_av", key)
        for name in ref["per_class"]:
            assert ours["per_class"][name][key] == pytest.approx(ref["per_class"][name][key], abs=1e-9), (name, key)
    if not gt["annotations"]:  # no occlusion labels at all: the derived block instead
        assert "IDF1_light_derived" in ours and "IDF1_light" not in ours
        return
    for level in ("light", "medium", "heavy"):
        for key in ("IDF1", "AssA", "IDSW"):
            assert ours[f"{key}_{level}"] == pytest.approx(ref[f"{key}_{level}"], abs=1e-9), (key, level)


def test_one_level_holding_every_object_equals_the_pooled_numbers():
    for seed in range(5):
        gt, preds = random_case(np.random.default_rng(100 + seed))
        for ann in gt["annotations"]:
            ann["occlusion"] = [None if s is None else "severe_occlusion" for s in ann["segmentations"]]
        r = evaluate_tracking(gt, preds)
        if not gt["annotations"]:
            continue
        assert r["IDF1_heavy"] == pytest.approx(r["det_av"]["IDF1"], abs=1e-12)
        assert r["AssA_heavy"] == pytest.approx(r["det_av"]["AssA"], abs=1e-12)
        assert r["IDSW_heavy"] == r["IDSW"]
        assert r["IDSW_light"] == 0 and r["IDF1_light"] == -1.0


def test_single_row_or_column_assignment_is_scipys():
    # the shortcut for 1 x n and n x 1 frames must pick what scipy picks, ties included
    from cmasktrack.evaluation.tracking_metrics import _linear_sum_assignment

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 6))
        cost = rng.integers(-2, 2, size=(1, n)).astype(float) * rng.choice([1.0, 0.5, 1000.0])
        for matrix in (cost, cost.T):
            ours = _linear_sum_assignment(matrix)
            expected = linear_sum_assignment(matrix)
            assert [list(x) for x in ours] == [list(x) for x in expected], matrix
