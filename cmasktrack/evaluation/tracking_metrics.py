"""Tracking metrics for video instance segmentation: HOTA, CLEAR and Identity as TrackEval
computes them on YouTube-VIS data, and identity metrics per occlusion level.

TrackEval (github.com/JonathonLuiten/TrackEval, ``datasets/youtube_vis.py``,
``metrics/{hota,clear,identity}.py``, ``eval.py``) is the reference; the numbers are equal to its
numbers. The rules that decide them:

* **Data.** Every ground-truth category is a class, also one without objects or predictions;
  predictions of other categories are ignored. Every prediction is its own track; scores play no
  part (no threshold, no top-k). A frame entry ``null`` means absent; a present mask, even an
  empty one, is a detection (an empty one never matches). Crowd flags are ignored (a crowd
  object is an ordinary object). Similarity = per-frame mask IoU (pycocotools). Ground truth in
  any form the AP evaluator reads (compressed / uncompressed RLE, polygons).
* **HOTA** for each alpha in ``np.arange(0.05, 0.99, 0.05)`` (19 values): per frame, the
  assignment maximising ``A(g, d) * IoU_t(g, d)``, where ``A`` is the video-level alignment of
  the two tracks (sum over frames of ``IoU / (row sum + column sum - IoU)``, over
  ``n_g + n_d - that``); a pair is a match iff ``IoU >= alpha - eps``. DetA, AssA (match-weighted
  track-pair Jaccard), DetRe, DetPr, AssRe, AssPr, LocA, HOTA = sqrt(DetA * AssA). The reported
  numbers are the means over the 19 alphas.
* **CLEAR**: per frame, an assignment on ``1000 * [d was g's match in the previous frame that
  had predictions] + IoU``, pairs with ``IoU < 0.5 - eps`` not allowed; IDSW when a ground
  truth's match differs from its last match (any number of frames ago); Frag counts how often a
  ground truth's tracking restarts (frames without any prediction do not interrupt it);
  MT / PT / ML at tracked ratios > 0.8 / >= 0.2; MOTA = (TP - FP - IDSW) / max(1, TP + FN),
  MOTP = mean IoU of the matches.
* **Identity**: pairs with ``IoU >= 0.5`` are potential matches; one global assignment per
  video and class minimising IDFN + IDFP; IDF1 = IDTP / max(1, IDTP + (IDFP + IDFN) / 2),
  IDP, IDR.
* **Combination.** Videos are combined per class as TrackEval's ``combine_sequences`` does
  (counts summed, AssA / AssRe / AssPr / LocA weighted by the true positives). The top-level
  numbers are TrackEval's ``cls_comb_cls_av``: the mean over all classes of the per-class
  values (an empty class counts, with HOTA 0 and LocA 1; a class with only predictions has
  MOTA = -FP), counts (IDSW, Frag, MT, PT, ML) summed. ``det_av`` is ``cls_comb_det_av``: all
  classes pooled as one.

Ties in the assignments go where TrackEval's go: the per-frame matrices (HOTA, CLEAR) have the
ground truths in annotation-file order and the predictions in results-file order, the Identity
matrix has the ground truths in annotation-id order, and scipy's ``linear_sum_assignment``
prefers the earlier row / column among equal choices (so of two predictions with the same IoU
the one listed first in the results wins the frame, and CLEAR then keeps it). Ties change no
TrackEval number except through that choice (the Identity totals never depend on it).

**Per occlusion level** (beyond TrackEval; ground truth with OVIS occlusion labels, or derived
scores, binned as the AP breakdown bins them, :func:`~.occlusion.occlusion_subsets`): the
matches, assignments and ID switches are those of the whole evaluation above; each level only
sums them over its ground-truth objects, pooled over all videos and classes (so with every
object in one level, that level's numbers equal ``det_av``'s):

* ``IDSW_<level>``: the CLEAR ID switches of the level's objects.
* ``AssA_<level>``: per alpha, the sum over the HOTA matches of the level's objects of their
  track pair's association score, over the number of those matches; mean over the alphas.
* ``IDF1_<level>`` = IDTP / max(1, IDTP + (IDFP + IDFN) / 2) with IDTP, IDFN summed over the
  level's objects (from the Identity assignment) and IDFP summed over the predicted tracks
  *owned* by the level's objects plus the tracks owned by no object. A predicted track is owned
  by the object it is assigned to (if they share a potential match); an unassigned track by the
  object with which it has the most potential matches (ties: the first in annotation-file
  order); a track without any potential match is a pure false positive and counts in every
  level (as unmatched predictions do in the occlusion AP).
* ``IDF1`` and ``AssA`` of a level without objects are -1 (as the AP of a level without ground
  truth); its ``IDSW`` is 0.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
from pycocotools import mask as mask_utils

from ..data.ytvis import VISDataset, is_absent
from .occlusion import occlusion_score_sets, occlusion_subsets
from .vis_eval import GroundTruth, Results, as_dataset, as_predictions, check_predictions

__all__ = [
    "ALPHAS",
    "CLEAR_KEYS",
    "COUNT_KEYS",
    "HOTA_KEYS",
    "IDENTITY_KEYS",
    "OCCLUSION_IDENTITY_KEYS",
    "TRACKING_KEYS",
    "TRACKING_METRICS",
    "evaluate_tracking",
]

#: The HOTA localisation thresholds, as TrackEval: ``np.arange(0.05, 0.99, 0.05)``.
ALPHAS: np.ndarray = np.arange(0.05, 0.99, 0.05)
_EPS = np.finfo("float").eps
_THRESHOLD = 0.5  # CLEAR and Identity

HOTA_KEYS: Tuple[str, ...] = ("HOTA", "DetA", "AssA", "LocA", "DetRe", "DetPr", "AssRe", "AssPr")
CLEAR_KEYS: Tuple[str, ...] = ("MOTA", "MOTP", "IDSW", "Frag", "MT", "PT", "ML")
IDENTITY_KEYS: Tuple[str, ...] = ("IDF1", "IDP", "IDR")
#: Every key of the top level, of ``per_class`` entries and of ``det_av``.
TRACKING_KEYS: Tuple[str, ...] = HOTA_KEYS + CLEAR_KEYS + IDENTITY_KEYS
#: The metric families ``metrics=`` chooses from, and the keys each one gives.
TRACKING_METRICS: Dict[str, Tuple[str, ...]] = {"hota": HOTA_KEYS, "clear": CLEAR_KEYS, "identity": IDENTITY_KEYS}
#: Per-occlusion-level metric -> the family it comes from (keys ``<metric>_<level>[_derived]``).
OCCLUSION_IDENTITY_KEYS: Dict[str, str] = {"IDF1": "identity", "AssA": "hota", "IDSW": "clear"}
#: The keys that are counts (ints, summed over classes); the others are fractions.
COUNT_KEYS = frozenset({"IDSW", "Frag", "MT", "PT", "ML"})


# ------------------------------------------------------------------------------------------
# one video, one class


def _linear_sum_assignment(cost: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """scipy's ``linear_sum_assignment`` (minimum cost), imported on first use: importing
    ``scipy.optimize`` takes about a second, which ``cmasktrack eval --metrics ap`` need not pay.

    A single row or column (most frames) is answered directly: the first minimum, which is what
    scipy returns there too."""
    rows, cols = cost.shape
    if rows == 1 or cols == 1:
        k = int(np.argmin(cost.ravel()))
        return (np.zeros(1, np.int64), np.array([k])) if rows == 1 else (np.array([k]), np.zeros(1, np.int64))
    from scipy.optimize import linear_sum_assignment as solve

    return solve(cost)


@dataclass
class _Sequence:
    """The tracks of one video and one class that are present in at least one frame.

    ``sim[t, g, d]`` is the mask IoU of ground truth ``g`` and prediction ``d`` in frame ``t``
    (0 unless both are present); ground truths in annotation-file order, predictions in
    results-file order.
    """

    gt_ids: np.ndarray  # (G,) annotation ids
    sim: np.ndarray  # (T, G, D)
    gt_present: np.ndarray  # (T, G) bool
    pred_present: np.ndarray  # (T, D) bool
    frames: List[Tuple[np.ndarray, np.ndarray]]  # per frame: indices of the present g and d

    @property
    def num_gt_dets(self) -> int:
        return int(self.gt_present.sum())

    @property
    def num_pred_dets(self) -> int:
        return int(self.pred_present.sum())



def _presence(tracks: Sequence[Sequence[Optional[dict]]], num_frames: int) -> np.ndarray:
    present = np.zeros((num_frames, len(tracks)), dtype=bool)
    for k, track in enumerate(tracks):
        present[:, k] = [not is_absent(r) for r in track]
    return present


def _sequence(
    gt_ids: Sequence[int],
    gt_tracks: Sequence[Sequence[Optional[dict]]],
    pred_tracks: Sequence[Sequence[Optional[dict]]],
    num_frames: int,
    where: str,
) -> _Sequence:
    gt_present = _presence(gt_tracks, num_frames)
    pred_present = _presence(pred_tracks, num_frames)
    keep_g = np.flatnonzero(gt_present.any(0))
    keep_d = np.flatnonzero(pred_present.any(0))
    gt_tracks = [gt_tracks[k] for k in keep_g]
    pred_tracks = [pred_tracks[k] for k in keep_d]
    gt_present, pred_present = gt_present[:, keep_g], pred_present[:, keep_d]
    sim = np.zeros((num_frames, len(gt_tracks), len(pred_tracks)), dtype=np.float64)
    frames = [(np.flatnonzero(g), np.flatnonzero(d)) for g, d in zip(gt_present, pred_present)]
    for t, (gi, di) in enumerate(frames):
        if len(gi) == 0 or len(di) == 0:
            continue
        ious = np.asarray(
            mask_utils.iou([gt_tracks[g][t] for g in gi], [pred_tracks[d][t] for d in di], [0] * len(di)),
            dtype=np.float64,
        ).reshape(len(gi), len(di))
        if (ious < 0).any():
            raise ValueError(f"{where}, frame {t}: a predicted mask and a ground-truth mask differ in size")
        sim[t, gi[:, None], di[None, :]] = ious
    return _Sequence(np.asarray(gt_ids, dtype=np.int64)[keep_g], sim, gt_present, pred_present, frames)


def _hota_sequence(seq: _Sequence) -> Dict[str, np.ndarray]:
    """TrackEval's ``HOTA.eval_sequence``, with per-ground-truth sums for the occlusion levels."""
    num_a = len(ALPHAS)
    num_g, num_d = seq.sim.shape[1:]
    res = {k: np.zeros(num_a) for k in ("TP", "FN", "FP", "AssA", "AssRe", "AssPr")}
    res["LocA"] = np.ones(num_a)
    res["gt_ass"] = np.zeros((num_a, num_g))  # sum over the object's matches of their pair's AssA
    res["gt_tp"] = np.zeros((num_a, num_g))  # number of the object's matches
    num_gt, num_pred = seq.num_gt_dets, seq.num_pred_dets
    if num_pred == 0 or num_gt == 0:
        res["FN"][:] = num_gt
        res["FP"][:] = num_pred
        return res

    sim = seq.sim
    denom = sim.sum(1, keepdims=True) + sim.sum(2, keepdims=True) - sim
    sim_iou = np.zeros_like(sim)
    positive = denom > 0 + _EPS
    sim_iou[positive] = sim[positive] / denom[positive]
    potential = sim_iou.sum(0)
    gt_count = seq.gt_present.sum(0).astype(np.float64)[:, None]
    pred_count = seq.pred_present.sum(0).astype(np.float64)[None, :]
    alignment = potential / (gt_count + pred_count - potential)

    rows: List[np.ndarray] = [np.zeros(0, np.int64)]
    cols: List[np.ndarray] = [np.zeros(0, np.int64)]
    ious: List[np.ndarray] = [np.zeros(0)]
    for t, (gi, di) in enumerate(seq.frames):
        if len(gi) == 0 or len(di) == 0:
            continue
        frame_sim = sim[t, gi[:, None], di]
        r, c = _linear_sum_assignment(-(alignment[gi[:, None], di] * frame_sim))
        rows.append(gi[r])
        cols.append(di[c])
        ious.append(frame_sim[r, c])
    rows_a, cols_a, ious_a = np.concatenate(rows), np.concatenate(cols), np.concatenate(ious)
    matched = ious_a[None, :] >= ALPHAS[:, None] - _EPS  # (A, M)
    tp = matched.sum(1).astype(np.float64)
    res["TP"], res["FN"], res["FP"] = tp, num_gt - tp, num_pred - tp
    loc_sum = np.where(matched, ious_a[None, :], 0.0).sum(1)

    matches = np.zeros((num_a, num_g, num_d))
    a_idx, m_idx = np.nonzero(matched)
    np.add.at(matches, (a_idx, rows_a[m_idx], cols_a[m_idx]), 1)
    ass_a = matches / np.maximum(1, gt_count + pred_count - matches)
    weighted = matches * ass_a
    res["AssA"] = weighted.sum((1, 2)) / np.maximum(1, tp)
    res["AssRe"] = (matches * (matches / np.maximum(1, gt_count))).sum((1, 2)) / np.maximum(1, tp)
    res["AssPr"] = (matches * (matches / np.maximum(1, pred_count))).sum((1, 2)) / np.maximum(1, tp)
    res["LocA"] = np.maximum(1e-10, loc_sum) / np.maximum(1e-10, tp)
    res["gt_ass"] = weighted.sum(2)
    res["gt_tp"] = matches.sum(2)
    return res


def _clear_sequence(seq: _Sequence) -> Dict[str, Any]:
    """TrackEval's ``CLEAR.eval_sequence``, with the ID switches per ground truth."""
    num_g = seq.sim.shape[1]
    res: Dict[str, Any] = dict(TP=0, FN=0, FP=0, IDSW=0, MT=0, PT=0, ML=0, Frag=0, MOTP_sum=0.0)
    res["gt_idsw"] = np.zeros(num_g, dtype=np.int64)
    num_gt, num_pred = seq.num_gt_dets, seq.num_pred_dets
    if num_pred == 0:
        res["FN"], res["ML"] = num_gt, num_g
        return res
    if num_gt == 0:
        res["FP"] = num_pred
        return res

    gt_count = np.zeros(num_g)
    matched_count = np.zeros(num_g)
    frag_count = np.zeros(num_g)
    last_match = np.full(num_g, np.nan)  # for IDSW: the last match, any number of frames ago
    prev_match = np.full(num_g, np.nan)  # for the continuity bonus: the match at the last scored frame
    for t, (gi, di) in enumerate(seq.frames):
        if len(gi) == 0:
            res["FP"] += len(di)
            continue
        if len(di) == 0:
            res["FN"] += len(gi)
            gt_count[gi] += 1
            continue
        frame_sim = seq.sim[t, gi[:, None], di]
        score = 1000 * (di[None, :] == prev_match[gi][:, None]) + frame_sim
        score[frame_sim < _THRESHOLD - _EPS] = 0
        r, c = _linear_sum_assignment(-score)
        keep = score[r, c] > 0 + _EPS
        r, c = r[keep], c[keep]
        matched_g, matched_d = gi[r], di[c]

        previous = last_match[matched_g]
        switched = ~np.isnan(previous) & (matched_d != previous)
        res["IDSW"] += int(switched.sum())
        res["gt_idsw"][matched_g[switched]] += 1

        gt_count[gi] += 1
        matched_count[matched_g] += 1
        not_tracked_before = np.isnan(prev_match)
        last_match[matched_g] = matched_d
        prev_match[:] = np.nan
        prev_match[matched_g] = matched_d
        frag_count += not_tracked_before & ~np.isnan(prev_match)

        res["TP"] += len(matched_g)
        res["FN"] += len(gi) - len(matched_g)
        res["FP"] += len(di) - len(matched_g)
        res["MOTP_sum"] += float(frame_sim[r, c].sum())

    seen = gt_count > 0
    ratio = matched_count[seen] / gt_count[seen]
    res["MT"] = int(np.sum(ratio > 0.8))
    res["PT"] = int(np.sum(ratio >= 0.2)) - res["MT"]
    res["ML"] = num_g - res["MT"] - res["PT"]
    res["Frag"] = int(np.sum(frag_count[frag_count > 0] - 1))
    return res


def _identity_sequence(seq: _Sequence) -> Dict[str, Any]:
    """TrackEval's ``Identity.eval_sequence``, with per-track IDTP / IDFN / IDFP and owners."""
    num_g, num_d = seq.sim.shape[1:]
    gt_count = seq.gt_present.sum(0).astype(np.float64)
    pred_count = seq.pred_present.sum(0).astype(np.float64)
    res: Dict[str, Any] = {
        "IDTP": 0, "IDFN": seq.num_gt_dets, "IDFP": seq.num_pred_dets,
        "gt_idtp": np.zeros(num_g), "gt_idfn": gt_count.copy(),
        "pred_idfp": pred_count.copy(), "pred_owner": np.full(num_d, -1, dtype=np.int64),
    }
    if num_g == 0 or num_d == 0:
        return res

    potential = (seq.sim >= _THRESHOLD).sum(0).astype(np.float64)
    # TrackEval's matrix has the ground truths in the order of their annotation ids
    by_id = np.argsort(seq.gt_ids, kind="stable")
    size = num_g + num_d
    fp = np.zeros((size, size))
    fn = np.zeros((size, size))
    fp[num_g:, :num_d] = 1e10
    fn[:num_g, num_d:] = 1e10
    fn[:num_g, :num_d] = gt_count[by_id, None] - potential[by_id]
    fn[np.arange(num_g), num_d + np.arange(num_g)] = gt_count[by_id]
    fp[:num_g, :num_d] = pred_count[None, :] - potential[by_id]
    fp[num_g + np.arange(num_d), np.arange(num_d)] = pred_count
    r, c = _linear_sum_assignment(fn + fp)
    res["IDFN"] = int(fn[r, c].sum())
    res["IDFP"] = int(fp[r, c].sum())
    res["IDTP"] = int(gt_count.sum()) - res["IDFN"]

    r = np.where(r < num_g, by_id[np.minimum(r, num_g - 1)], num_g)  # back to file order
    pair = (r < num_g) & (c < num_d)
    g, d = r[pair], c[pair]
    shared = potential[g, d] > 0
    g, d = g[shared], d[shared]
    res["gt_idtp"][g] = potential[g, d]
    res["gt_idfn"] = gt_count - res["gt_idtp"]
    res["pred_idfp"][d] = pred_count[d] - potential[g, d]
    res["pred_owner"][d] = g
    free = np.setdiff1d(np.arange(num_d), d)
    overlapping = free[potential[:, free].max(0) > 0]
    res["pred_owner"][overlapping] = potential[:, overlapping].argmax(0)
    return res


# ------------------------------------------------------------------------------------------
# combination (TrackEval's combine_sequences / combine_classes_*)


def _hota_final(res: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    tp, fn, fp = res["TP"], res["FN"], res["FP"]
    res["DetRe"] = tp / np.maximum(1, tp + fn)
    res["DetPr"] = tp / np.maximum(1, tp + fp)
    res["DetA"] = tp / np.maximum(1, tp + fn + fp)
    res["HOTA"] = np.sqrt(res["DetA"] * res["AssA"])
    return res


def _hota_pool(parts: Sequence[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """``combine_sequences`` = ``combine_classes_det_averaged`` of TrackEval's HOTA."""
    zero = np.zeros(len(ALPHAS))
    res = {k: sum((p[k] for p in parts), zero) for k in ("TP", "FN", "FP")}
    for key in ("AssRe", "AssPr", "AssA"):
        res[key] = sum((p[key] * p["TP"] for p in parts), zero) / np.maximum(1.0, res["TP"])
    loc = sum((p["LocA"] * p["TP"] for p in parts), zero)
    res["LocA"] = np.maximum(1e-10, loc) / np.maximum(1e-10, res["TP"])
    return _hota_final(res)


def _clear_final(res: Dict[str, Any]) -> Dict[str, Any]:
    res["MOTA"] = (res["TP"] - res["FP"] - res["IDSW"]) / np.maximum(1.0, res["TP"] + res["FN"])
    res["MOTP"] = res["MOTP_sum"] / np.maximum(1.0, res["TP"])
    return res


def _clear_pool(parts: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    keys = ("TP", "FN", "FP", "IDSW", "MT", "PT", "ML", "Frag", "MOTP_sum")
    return _clear_final({k: sum(p[k] for p in parts) for k in keys})


def _identity_final(res: Dict[str, Any]) -> Dict[str, Any]:
    tp, fn, fp = res["IDTP"], res["IDFN"], res["IDFP"]
    res["IDR"] = tp / np.maximum(1.0, tp + fn)
    res["IDP"] = tp / np.maximum(1.0, tp + fp)
    res["IDF1"] = tp / np.maximum(1.0, tp + 0.5 * fp + 0.5 * fn)
    return res


def _identity_pool(parts: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    return _identity_final({k: sum(p[k] for p in parts) for k in ("IDTP", "IDFN", "IDFP")})


_EVAL = {"hota": _hota_sequence, "clear": _clear_sequence, "identity": _identity_sequence}
_POOL = {"hota": _hota_pool, "clear": _clear_pool, "identity": _identity_pool}


def _class_average(per_class: Sequence[Dict[str, Any]], metric: str) -> Dict[str, Any]:
    """TrackEval's ``combine_classes_class_averaged`` (empty classes included): values averaged
    over the classes, counts summed."""
    out = {}
    for key in TRACKING_METRICS[metric]:
        values = [c[key] for c in per_class]
        out[key] = sum(values) if key in COUNT_KEYS else np.mean(values, axis=0)
    return out


def _summary(res: Dict[str, Any], metric: str) -> Dict[str, Union[float, int]]:
    """The reported numbers: HOTA arrays as their mean over the alphas, counts as ints."""
    out: Dict[str, Union[float, int]] = {}
    for key in TRACKING_METRICS[metric]:
        value = res[key]
        out[key] = int(value) if key in COUNT_KEYS else float(np.mean(value))
    return out


# ------------------------------------------------------------------------------------------
# occlusion levels


def _occlusion_levels(
    records: Sequence[Tuple[_Sequence, Dict[str, Dict[str, Any]]]],
    scores: Dict[int, float],
    chosen: Sequence[str],
    suffix: str,
) -> Dict[str, Union[float, int]]:
    """IDF1 / AssA / IDSW of each occlusion level (see the module docstring)."""
    out: Dict[str, Union[float, int]] = {}
    for level, members in occlusion_subsets(scores).items():
        objects = 0
        idtp = idfn = idfp = 0.0
        idsw = 0
        ass = np.zeros(len(ALPHAS))
        tp = np.zeros(len(ALPHAS))
        for seq, res in records:
            inside = np.array([int(i) in members for i in seq.gt_ids], dtype=bool)
            objects += int(inside.sum())
            if "identity" in res:
                r = res["identity"]
                idtp += float(r["gt_idtp"][inside].sum())
                idfn += float(r["gt_idfn"][inside].sum())
                owner = r["pred_owner"]
                counted = owner < 0
                counted[owner >= 0] = inside[owner[owner >= 0]]
                idfp += float(r["pred_idfp"][counted].sum())
            if "clear" in res:
                idsw += int(res["clear"]["gt_idsw"][inside].sum())
            if "hota" in res:
                ass += res["hota"]["gt_ass"][:, inside].sum(1)
                tp += res["hota"]["gt_tp"][:, inside].sum(1)
        if "identity" in chosen:
            idf1 = idtp / max(1.0, idtp + 0.5 * idfp + 0.5 * idfn)
            out[f"IDF1_{level}{suffix}"] = float(idf1) if objects else -1.0
        if "hota" in chosen:
            out[f"AssA_{level}{suffix}"] = float(np.mean(ass / np.maximum(1.0, tp))) if objects else -1.0
        if "clear" in chosen:
            out[f"IDSW_{level}{suffix}"] = idsw
    return out


# ------------------------------------------------------------------------------------------


def _parse_metrics(metrics: Union[None, str, Iterable[str]]) -> List[str]:
    if metrics is None:
        return list(TRACKING_METRICS)
    names = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)]
    names = [m for m in names if m]
    unknown = [m for m in names if m not in TRACKING_METRICS]
    if unknown:
        raise ValueError(f"unknown tracking metric {unknown[0]!r} (choose from {', '.join(TRACKING_METRICS)})")
    if not names:
        raise ValueError(f"no tracking metric chosen (choose from {', '.join(TRACKING_METRICS)})")
    return [m for m in TRACKING_METRICS if m in names]


def _class_names(dataset: VISDataset) -> Dict[int, str]:
    """``{category id: key in per_class}``: the name, or ``name (id N)`` for a repeated name."""
    names: Dict[int, str] = {}
    used = set()
    for cid, category in dataset.categories.items():
        name = category.name if category.name not in used else f"{category.name} (id {cid})"
        used.add(name)
        names[cid] = name
    return names


def evaluate_tracking(
    gt: GroundTruth,
    results: Results,
    metrics: Union[None, str, Iterable[str]] = None,
    derived_occlusion: Optional[bool] = None,
    progress: bool = False,
) -> Dict[str, Any]:
    """HOTA, CLEAR and Identity metrics of predicted tracks, equal to TrackEval's, and the
    identity metrics per occlusion level (rules: this module's docstring).

    Args:
        gt: the ground truth: a :class:`~cmasktrack.data.ytvis.VISDataset`, the path of an
            annotation json or its parsed dict.
        results: :class:`~cmasktrack.data.results.VISPrediction` objects, or the path of a
            results json or its parsed list.
        metrics: the families to compute, any of ``"hota"``, ``"clear"``, ``"identity"`` (a
            list or a comma-separated string); all by default.
        derived_occlusion: as in :func:`~cmasktrack.evaluation.evaluate_vis`: the per-level
            block uses the official OVIS labels when present and, when ``True`` or when
            ``None`` and there are no labels, the derived box-overlap scores (keys ending in
            ``_derived``).
        progress: show a progress bar over the videos.

    Returns:
        A dict with, for the chosen families, the class-averaged values (TrackEval's
        ``cls_comb_cls_av``) under ``HOTA, DetA, AssA, LocA, DetRe, DetPr, AssRe, AssPr`` (means
        over the 19 alphas), ``MOTA, MOTP, IDSW, Frag, MT, PT, ML``, ``IDF1, IDP, IDR`` (fractions
        0-1; IDSW, Frag, MT, PT, ML are counts summed over classes); ``per_class``: ``{category
        name: {same keys}}``; ``det_av``: the same keys for all classes pooled
        (``cls_comb_det_av``); with HOTA, ``per_alpha``: ``{"alpha": [...], "HOTA": [...],
        "DetA": [...], "AssA": [...]}`` (class-averaged, per alpha); and the per-level keys
        ``IDF1_<level>``, ``AssA_<level>``, ``IDSW_<level>`` (``<level>`` light / medium / heavy,
        suffix ``_derived`` for derived scores).

    Raises:
        ValueError: a prediction's video is not in the ground truth, the ground truth has no
            categories, an unknown metric is asked for, or the occlusion labels are incomplete.
    """
    chosen = _parse_metrics(metrics)
    dataset = as_dataset(gt)
    predictions = as_predictions(results, dataset)
    if not dataset.categories:
        raise ValueError("the ground truth has no categories: nothing to evaluate")
    check_predictions(predictions, dataset)  # as TrackEval, other categories are ignored
    score_sets = occlusion_score_sets(dataset, derived_occlusion)

    preds_by: Dict[Tuple[int, int], List[Any]] = defaultdict(list)
    for p in predictions:
        preds_by[p.video_id, p.category_id].append(p.segmentations)
    per_class_parts: Dict[int, Dict[str, List[Dict[str, Any]]]] = {
        cid: {m: [] for m in chosen} for cid in dataset.categories
    }
    records: List[Tuple[_Sequence, Dict[str, Dict[str, Any]]]] = []

    videos: Iterable[int] = dataset.video_ids
    if progress:
        from tqdm import tqdm

        videos = tqdm(videos, desc="tracking metrics", unit="video")
    for video_id in videos:
        length = dataset.videos[video_id].length
        anns_by: Dict[int, List[Any]] = defaultdict(list)
        for ann in dataset.video_annotations(video_id):
            anns_by[ann.category_id].append(ann)
        for cid in dataset.categories:
            anns, preds = anns_by.get(cid, []), preds_by.get((video_id, cid), [])
            if not anns and not preds:
                continue
            seq = _sequence(
                [a.id for a in anns], [dataset.rles(a) for a in anns], preds, length, f"video {video_id}"
            )
            res = {m: _EVAL[m](seq) for m in chosen}
            for m in chosen:
                per_class_parts[cid][m].append(res[m])
            records.append((seq, res))

    names = _class_names(dataset)
    out: Dict[str, Any] = {}
    per_class: Dict[str, Dict[str, Any]] = {names[cid]: {} for cid in dataset.categories}
    det_av: Dict[str, Any] = {}
    for m in chosen:
        class_results = [_POOL[m](per_class_parts[cid][m]) for cid in dataset.categories]
        averaged = _class_average(class_results, m)
        out.update(_summary(averaged, m))
        for cid, res in zip(dataset.categories, class_results):
            per_class[names[cid]].update(_summary(res, m))
        det_av.update(_summary(_POOL[m](class_results), m))
        if m == "hota":
            out["per_alpha"] = {"alpha": [float(a) for a in ALPHAS]}
            out["per_alpha"].update({k: [float(v) for v in averaged[k]] for k in ("HOTA", "DetA", "AssA")})
    out["per_class"] = per_class
    out["det_av"] = det_av
    for suffix, scores in score_sets:
        out.update(_occlusion_levels(records, scores, chosen, suffix))
    return out

