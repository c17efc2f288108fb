"""Per-object occlusion scores and the light / medium / heavy subsets.

Two sources of an object's occlusion score, both in [0, 1]:

* **official** (OVIS ``oviseval.py``): each frame's label no_occlusion / slight_occlusion /
  severe_occlusion scores 0 / 0.25 / 0.75 (null frames skipped); the object's score is the mean
  of its highest ``ceil(n / 2)`` frame scores.
* **derived** (cmasktrack, for datasets without labels): per frame, the fraction of the
  object's box covered by the union of the other objects' boxes in that frame (exact
  rectangle-union area), averaged over the frames where the object is present.

The subsets are the official ranges, both ends inclusive.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from ..data.ytvis import OCCLUSION_LABELS, VISAnnotation, VISDataset

__all__ = [
    "OCCLUSION_RANGES",
    "box_coverage",
    "derived_occlusion_scores",
    "occlusion_group",
    "occlusion_score_sets",
    "occlusion_subsets",
    "official_occlusion_score",
    "official_occlusion_scores",
]

#: name -> (low, high), both inclusive: the official OVIS ``occRng``.
OCCLUSION_RANGES: Dict[str, Tuple[float, float]] = {
    "light": (0.0, 0.25),
    "medium": (0.25, 0.5),
    "heavy": (0.5, 1.0),
}


def occlusion_group(score: float) -> str:
    """The one subset of :data:`OCCLUSION_RANGES` an occlusion score falls in: the first listed
    whose range contains it, so light is [0, 0.25], medium (0.25, 0.5] and heavy (0.5, 1].

    This is the exclusive grouping of dataset statistics; the evaluator's ranges are closed and
    overlap at their ends, so a score of exactly 0.25 or 0.5 counts in two evaluation subsets.

    Raises:
        ValueError: the score is outside [0, 1].
    """
    for name, (low, high) in OCCLUSION_RANGES.items():
        if low <= score <= high:
            return name
    raise ValueError(f"occlusion score must be in [0, 1], got {score!r}")


def official_occlusion_score(labels: Sequence[Optional[str]]) -> float:
    """The OVIS occlusion score of one object from its per-frame labels.

    Mean of the highest ``ceil(n/2)`` of the ``n`` non-null frame scores, computed in the same
    order as the official code (so the value is bit-identical).

    Raises:
        ValueError: no frame has a label, or a label is unknown.
    """
    scores = []
    for label in labels:
        if label is None:
            continue
        if label not in OCCLUSION_LABELS:
            raise ValueError(f"unknown occlusion label {label!r}")
        scores.append(OCCLUSION_LABELS[label])
    if not scores:
        raise ValueError("no frame has an occlusion label")
    scores.sort()
    top = scores[-math.ceil(len(scores) / 2):]
    return sum(top) / len(top)


def box_coverage(box: Sequence[float], others: Sequence[Sequence[float]]) -> float:
    """Fraction of ``box`` (``[x, y, w, h]``) covered by the union of the ``others`` boxes.

    Exact: the union is measured on the grid of all box edges. Returns 0 for an empty box.
    """
    x0, y0, w, h = (float(v) for v in box)
    if w <= 0 or h <= 0:
        return 0.0
    x1, y1 = x0 + w, y0 + h
    clipped = []
    for ox, oy, ow, oh in others:
        cx0, cy0 = max(float(ox), x0), max(float(oy), y0)
        cx1, cy1 = min(float(ox) + float(ow), x1), min(float(oy) + float(oh), y1)
        if cx1 > cx0 and cy1 > cy0:
            clipped.append((cx0, cy0, cx1, cy1))
    if not clipped:
        return 0.0
    xs = np.unique([x0, x1] + [c[0] for c in clipped] + [c[2] for c in clipped])
    ys = np.unique([y0, y1] + [c[1] for c in clipped] + [c[3] for c in clipped])
    covered = np.zeros((len(ys) - 1, len(xs) - 1), dtype=bool)
    for cx0, cy0, cx1, cy1 in clipped:
        xa, xb = np.searchsorted(xs, [cx0, cx1])
        ya, yb = np.searchsorted(ys, [cy0, cy1])
        covered[ya:yb, xa:xb] = True
    cell = np.outer(np.diff(ys), np.diff(xs))
    return float(min(1.0, cell[covered].sum() / (w * h)))


def derived_occlusion_scores(dataset: VISDataset) -> Dict[int, float]:
    """Derived occlusion score of every ground-truth object, ``{annotation id: score}``.

    In each frame where the object is present (non-null segmentation and a non-empty box),
    the fraction of its box covered by the boxes of all other objects present in that frame
    (any category, crowd regions included); averaged over those frames. Boxes are the file's
    ``bboxes`` where given, else the mask's bounding box. An object never present scores 0.
    """
    scores: Dict[int, float] = {}
    for video_id in dataset.video_ids:
        anns: List[VISAnnotation] = dataset.video_annotations(video_id)
        if not anns:
            continue
        length = dataset.videos[video_id].length
        boxes = [[dataset.box(a, t) for t in range(length)] for a in anns]
        for k, ann in enumerate(anns):
            fractions = []
            for t in range(length):
                box = boxes[k][t]
                if box is None or box[2] <= 0 or box[3] <= 0:
                    continue
                others = [boxes[o][t] for o in range(len(anns)) if o != k and boxes[o][t] is not None]
                fractions.append(box_coverage(box, others))
            scores[ann.id] = float(np.mean(fractions)) if fractions else 0.0
    return scores


def official_occlusion_scores(dataset: VISDataset) -> Optional[Dict[int, float]]:
    """Official OVIS occlusion score of every ground-truth object, ``{annotation id: score}``,
    or ``None`` when the ground truth has no ``occlusion`` labels.

    Raises:
        ValueError: some annotations have labels and others not, or an object has no label in
            any frame (the message names the annotation).
    """
    if not dataset.has_occlusion_labels:
        if not any(a.occlusion is not None for a in dataset.annotations):
            return None
        missing = next(a for a in dataset.annotations if a.occlusion is None)
        raise ValueError(
            f"annotation id {missing.id} (video {missing.video_id}) has no 'occlusion' labels "
            "while other annotations do"
        )
    scores = {}
    for ann in dataset.annotations:
        try:
            scores[ann.id] = official_occlusion_score(ann.occlusion)
        except ValueError as exc:
            raise ValueError(f"annotation id {ann.id} (video {ann.video_id}): {exc}") from None
    return scores


def occlusion_score_sets(
    dataset: VISDataset, derived_occlusion: Optional[bool] = None
) -> List[Tuple[str, Dict[int, float]]]:
    """The occlusion scores an evaluation reports, as ``[(key suffix, {annotation id: score})]``.

    ``("", official scores)`` when the ground truth has OVIS labels; ``("_derived", derived
    scores)`` when ``derived_occlusion`` is ``True``, or ``None`` (the default) and there are
    no labels. The AP/AR and the identity breakdowns both use this rule.
    """
    sets: List[Tuple[str, Dict[int, float]]] = []
    official = official_occlusion_scores(dataset)
    if official is not None:
        sets.append(("", official))
    if derived_occlusion or (derived_occlusion is None and official is None):
        sets.append(("_derived", derived_occlusion_scores(dataset)))
    return sets


def occlusion_subsets(scores: Mapping[int, float]) -> Dict[str, Set[int]]:
    """``{range name: ids of the objects whose score lies in it}`` for :data:`OCCLUSION_RANGES`
    (both ends inclusive, so a score of exactly 0.25 or 0.5 is in two ranges, as officially)."""
    return {
        name: {key for key, score in scores.items() if low <= score <= high}
        for name, (low, high) in OCCLUSION_RANGES.items()
    }
