"""Video instance segmentation AP / AR, exactly as the official YouTube-VIS / OVIS evaluation.

The official evaluator (``ytvoseval.py`` / ``oviseval.py`` of the customised COCO API) is
COCOeval with each video in the role of an image and a track-level mask IoU. So is this one:
:class:`VideoCOCOeval` subclasses ``pycocotools.cocoeval.COCOeval`` and replaces only the data
preparation and the IoU; matching (``evaluateImg``), ``accumulate`` and ``summarize`` are
pycocotools' own. Semantics kept from the official code:

* IoU thresholds ``np.linspace(.5, .95, 10)`` matched at IoU >= threshold; 101 recall points;
  max detections 1 / 10 / 100 per video and category; stable (mergesort) score ordering.
* Area ranges all [0, 1e10], small [0, 128^2], medium [128^2, 256^2], large [256^2, 1e10],
  both ends inclusive. A ground truth's area is the mean of its non-null, non-zero ``areas`` as
  written in the file; a prediction's, the mean of its non-zero per-frame mask areas (0 when
  none).
* Crowd ground truths are ignored and can absorb any number of predictions. Categories without
  ground truth give -1 and are left out of every mean; -1 where a summary has no ground truth.
* Predictions get ids 1..N in file order (as the official ``loadRes``); ground truths keep
  their file ids. (So, as in the official code, a match to a ground truth with id 0 is
  counted as a false positive: COCOeval stores matches by id with 0 meaning "unmatched".
  :func:`evaluate_vis` warns when the ground truth has an id 0.)
* OVIS occlusion: AP / AR (100 detections, all areas) on the ground truths whose occlusion
  score is in each range; the others are ignored like crowds, predictions are not filtered.

Deviations, where the official code fails: an empty results list scores 0 (the official code
crashes); a prediction for an unknown video is rejected when the results are read.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from ..data.results import VISPrediction, load_results
from ..data.ytvis import VISDataset
from .occlusion import occlusion_score_sets, occlusion_subsets
from .video_iou import video_iou_matrix

__all__ = [
    "AREA_RANGES",
    "SUMMARY_KEYS",
    "VISEvalResult",
    "VideoCOCOeval",
    "evaluate_vis",
    "prediction_average_area",
]

#: The 12 official summary numbers, in the order of ``COCOeval.summarize``.
SUMMARY_KEYS: Tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)

#: (label, [low, high]) of the official ``areaRng`` (both ends inclusive).
AREA_RANGES: Tuple[Tuple[str, Tuple[float, float]], ...] = (
    ("all", (0.0, 1e5 ** 2)),
    ("small", (0.0, 128.0 ** 2)),
    ("medium", (128.0 ** 2, 256.0 ** 2)),
    ("large", (256.0 ** 2, 1e5 ** 2)),
)

MAX_DETS: Tuple[int, ...] = (1, 10, 100)

#: What an evaluation accepts as ground truth: a dataset, a path, or the parsed json dict.
GroundTruth = Union[VISDataset, str, "os.PathLike[str]", Mapping[str, Any]]
#: ... and as results: prediction objects, a path, the parsed json list, or ``{video id:
#: VideoResult}`` straight from the tracker.
Results = Union[Sequence[VISPrediction], str, "os.PathLike[str]", Sequence[Mapping[str, Any]], Mapping[int, Any]]


class VideoCOCOeval(COCOeval):
    """COCOeval over videos: each video is an "image", IoU is the video mask IoU.

    Args:
        ground_truths: records ``{"id", "image_id" (video id), "category_id", "iscrowd",
            "area", "segmentations"}``; an optional truthy ``"exclude"`` marks a ground truth
            ignored for this evaluation (e.g. outside an occlusion range).
        detections: records ``{"id", "image_id", "category_id", "score", "area",
            "segmentations"}``.
        video_ids, category_ids: the videos and categories evaluated.
        iou_cache: optional dict shared between evaluators of the same data; the IoU of a
            (video, category) is computed once.
        area_ranges: (label, [low, high]) pairs; the official four by default.
    """

    def __init__(
        self,
        ground_truths: Sequence[Mapping[str, Any]],
        detections: Sequence[Mapping[str, Any]],
        video_ids: Sequence[int],
        category_ids: Sequence[int],
        iou_cache: Optional[Dict[Tuple[int, int], Any]] = None,
        area_ranges: Sequence[Tuple[str, Tuple[float, float]]] = AREA_RANGES,
    ) -> None:
        super().__init__(None, None, iouType="segm")
        self.params.imgIds = sorted(int(v) for v in video_ids)
        self.params.catIds = sorted(int(c) for c in category_ids)
        self.params.maxDets = list(MAX_DETS)
        self.params.areaRng = [list(r) for _, r in area_ranges]
        self.params.areaRngLbl = [label for label, _ in area_ranges]
        self._gt_records = ground_truths
        self._dt_records = detections
        self._iou_cache = iou_cache if iou_cache is not None else {}

    def _prepare(self) -> None:
        p = self.params
        videos, cats = set(p.imgIds), set(p.catIds)
        self._gts = defaultdict(list)
        self._dts = defaultdict(list)
        for g in self._gt_records:
            if g["image_id"] in videos and g["category_id"] in cats:
                rec = dict(g)
                rec["ignore"] = bool(rec["iscrowd"]) or bool(rec.get("exclude", False))
                self._gts[rec["image_id"], rec["category_id"]].append(rec)
        for d in self._dt_records:
            if d["image_id"] in videos and d["category_id"] in cats:
                self._dts[d["image_id"], d["category_id"]].append(dict(d))
        self.evalImgs = defaultdict(list)
        self.eval = {}

    def computeIoU(self, imgId: int, catId: int):  # noqa: N802, N803 (COCOeval's names)
        """Video IoU of the (score-sorted, top-100) predictions with the ground truths."""
        key = (int(imgId), int(catId))
        if key in self._iou_cache:
            return self._iou_cache[key]
        gt = self._gts[imgId, catId]
        dt = self._dts[imgId, catId]
        if len(gt) == 0 and len(dt) == 0:
            ious: Any = []
        else:
            order = np.argsort([-d["score"] for d in dt], kind="mergesort")
            dt = [dt[i] for i in order][: self.params.maxDets[-1]]
            ious = video_iou_matrix([d["segmentations"] for d in dt], [g["segmentations"] for g in gt])
        self._iou_cache[key] = ious
        return ious

    def run(self) -> "VideoCOCOeval":
        """``evaluate()`` + ``accumulate()`` with pycocotools' progress prints silenced."""
        with contextlib.redirect_stdout(io.StringIO()):
            self.evaluate()
            self.accumulate()
        return self

    def summary_stats(self) -> np.ndarray:
        """The official 12 summary numbers (``COCOeval.summarize``), prints silenced."""
        with contextlib.redirect_stdout(io.StringIO()):
            self.summarize()
        return np.asarray(self.stats, dtype=np.float64)


def _mean_valid(values: np.ndarray) -> float:
    """``COCOeval.summarize``'s mean: over entries > -1, or -1 when there are none."""
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def prediction_average_area(segmentations: Sequence[Optional[dict]]) -> float:
    """The official ``avg_area`` of a prediction: mean of its non-zero per-frame mask areas."""
    rles = [r for r in segmentations if r is not None]
    areas = [a for a in (mask_utils.area(rles) if rles else []) if a]
    return float(np.array(areas).mean()) if areas else 0.0


@dataclass
class VISEvalResult:
    """Everything one evaluation produced.

    Attributes:
        stats: the official 12 numbers under :data:`SUMMARY_KEYS` (fractions; -1 as official).
        per_category_ap: ``{category id: AP}`` (IoU .50:.95, all areas, 100 detections; -1
            for a category without ground truth).
        occlusion: ``AP_light, AP_medium, AP_heavy, AR_light, AR_medium, AR_heavy`` from the
            official OVIS labels, or ``None`` when the ground truth has none.
        derived_occlusion: the same six under ``..._derived`` keys from box overlaps, or ``None``.
        category_names: ``{category id: name}``.
        num_videos, num_predictions: what was evaluated; ``num_ignored_predictions`` counts
            predictions whose category is not in the ground truth (ignored, as official).
        precision, recall: COCOeval's ``[T, R, K, A, M]`` / ``[T, K, A, M]`` arrays.
    """

    stats: Dict[str, float]
    per_category_ap: Dict[int, float]
    occlusion: Optional[Dict[str, float]] = None
    derived_occlusion: Optional[Dict[str, float]] = None
    category_names: Dict[int, str] = field(default_factory=dict)
    num_videos: int = 0
    num_predictions: int = 0
    num_ignored_predictions: int = 0
    precision: Optional[np.ndarray] = field(default=None, repr=False)
    recall: Optional[np.ndarray] = field(default=None, repr=False)

    def to_dict(self) -> Dict[str, Any]:
        """The ``cmasktrack eval --json`` object: the 12 numbers, occlusion keys when
        available, and ``per_category_AP`` keyed by the category id as a string."""
        out: Dict[str, Any] = {k: float(v) for k, v in self.stats.items()}
        if self.occlusion is not None:
            out.update({k: float(v) for k, v in self.occlusion.items()})
        if self.derived_occlusion is not None:
            out.update({k: float(v) for k, v in self.derived_occlusion.items()})
        out["per_category_AP"] = {str(k): float(v) for k, v in self.per_category_ap.items()}
        return out


def _gt_records(dataset: VISDataset) -> List[Dict[str, Any]]:
    records = []
    for ann in dataset.annotations:
        records.append(
            {
                "id": ann.id,
                "image_id": ann.video_id,
                "category_id": ann.category_id,
                "iscrowd": int(ann.iscrowd),
                "area": dataset.average_area(ann),
                "segmentations": dataset.rles(ann),
            }
        )
    return records


def _dt_records(predictions: Sequence[VISPrediction]) -> List[Dict[str, Any]]:
    return [
        {
            "id": index + 1,
            "image_id": p.video_id,
            "category_id": p.category_id,
            "score": p.score,
            "area": prediction_average_area(p.segmentations),
            "segmentations": p.segmentations,
        }
        for index, p in enumerate(predictions)
    ]


def _occlusion_subsets(
    gts: List[Dict[str, Any]],
    dts: List[Dict[str, Any]],
    scores: Mapping[int, float],
    dataset: VISDataset,
    iou_cache: Dict[Tuple[int, int], Any],
    suffix: str,
) -> Dict[str, float]:
    """AP / AR (all areas, 100 detections) on the ground truths in each occlusion range."""
    ap: Dict[str, float] = {}
    ar: Dict[str, float] = {}
    for name, members in occlusion_subsets(scores).items():
        subset = [dict(g, exclude=g["id"] not in members) for g in gts]
        ev = VideoCOCOeval(
            subset, dts, dataset.video_ids, dataset.category_ids, iou_cache, area_ranges=AREA_RANGES[:1]
        ).run()
        ap[f"AP_{name}{suffix}"] = _mean_valid(ev.eval["precision"][:, :, :, 0, -1])
        ar[f"AR_{name}{suffix}"] = _mean_valid(ev.eval["recall"][:, :, 0, -1])
    return {**ap, **ar}


def as_dataset(gt: GroundTruth) -> VISDataset:
    """The ground truth as a :class:`VISDataset`: returned as is, or read from a path or an
    already parsed annotation dict (:meth:`VISDataset.from_json`)."""
    return gt if isinstance(gt, VISDataset) else VISDataset.from_json(gt)


def as_predictions(results: Results, dataset: VISDataset) -> List[VISPrediction]:
    """The predictions as :class:`VISPrediction` objects: a list of them is returned as is; a
    path, a parsed results list or ``{video id: VideoResult}`` (in memory: no json in between)
    is read and validated against ``dataset`` (:func:`~cmasktrack.data.results.load_results`).

    Raises:
        ValueError: the list mixes :class:`VISPrediction` objects and other entries.
    """
    if isinstance(results, Mapping):  # {video id: VideoResult}
        results = [entry for video_id, result in results.items()
                   for entry in result.to_ytvis(video_id=video_id, official_extras=False)]
    if isinstance(results, (str, bytes, os.PathLike)):
        return load_results(results, dataset)
    results = list(results)
    kinds = {isinstance(p, VISPrediction) for p in results}
    if kinds == {True}:
        return results
    if kinds == {True, False}:
        raise ValueError("results mix VISPrediction objects and other entries; give one kind")
    return load_results(results, dataset)


def check_predictions(predictions: Sequence[VISPrediction], dataset: VISDataset) -> int:
    """Check that every prediction's video is in the ground truth; warn about (and count) the
    predictions whose category is not, which evaluations ignore, as the official one does.

    Raises:
        ValueError: a prediction's video is not in the ground truth.
    """
    for index, p in enumerate(predictions):
        if p.video_id not in dataset.videos:
            raise ValueError(f"prediction {index}: unknown video_id {p.video_id} (not in the ground truth)")
    categories = set(dataset.categories)
    ignored = sum(1 for p in predictions if p.category_id not in categories)
    if ignored:
        unknown = sorted({p.category_id for p in predictions if p.category_id not in categories})
        warnings.warn(
            f"{ignored} prediction(s) have category ids not in the ground truth {unknown[:10]}; "
            "they are ignored, as the official evaluation does",
            stacklevel=3,
        )
    return ignored


def evaluate_vis(
    dataset: GroundTruth,
    predictions: Results,
    derived_occlusion: Optional[bool] = None,
) -> VISEvalResult:
    """Evaluate predicted tracks against a ground truth, as the official VIS evaluation.

    Args:
        dataset: the ground truth: a :class:`VISDataset`, the path of an annotation json or
            its parsed dict.
        predictions: :class:`VISPrediction` objects
            (:func:`cmasktrack.data.results.load_results`), the path of a results json or its
            parsed list (what :meth:`cmasktrack.VideoResult.to_ytvis` and
            :func:`cmasktrack.track_dataset` return), or ``{video id: VideoResult}`` straight
            from :meth:`CMaskTrack.track_video` (validated here).
        derived_occlusion: compute the derived (box-overlap) occlusion breakdown: ``None``
            (default) when the ground truth has no official occlusion labels, ``True`` always,
            ``False`` never.

    Returns:
        A :class:`VISEvalResult`; ``result.to_dict()`` is the ``--json`` object.

    Raises:
        ValueError: a prediction's video is not in the ground truth, or the occlusion labels
            are incomplete (some annotations have them and others not, or an object has none).
    """
    dataset = as_dataset(dataset)
    predictions = as_predictions(predictions, dataset)
    ignored = check_predictions(predictions, dataset)

    if any(a.id == 0 for a in dataset.annotations):
        warnings.warn(
            "the ground truth has an annotation with id 0; the official evaluation (and this one, "
            "for parity) never counts a match to it as a true positive",
            stacklevel=2,
        )

    gts = _gt_records(dataset)
    dts = _dt_records(predictions)
    iou_cache: Dict[Tuple[int, int], Any] = {}
    main = VideoCOCOeval(gts, dts, dataset.video_ids, dataset.category_ids, iou_cache).run()
    stats = dict(zip(SUMMARY_KEYS, (float(v) for v in main.summary_stats())))

    precision = main.eval["precision"]
    per_category = {
        int(cat): _mean_valid(precision[:, :, k, 0, -1]) for k, cat in enumerate(main.params.catIds)
    }

    occlusion = derived = None
    for suffix, scores in occlusion_score_sets(dataset, derived_occlusion):
        breakdown = _occlusion_subsets(gts, dts, scores, dataset, iou_cache, suffix=suffix)
        if suffix:
            derived = breakdown
        else:
            occlusion = breakdown

    return VISEvalResult(
        stats=stats,
        per_category_ap=per_category,
        occlusion=occlusion,
        derived_occlusion=derived,
        category_names={c.id: c.name for c in dataset.categories.values()},
        num_videos=len(dataset.videos),
        num_predictions=len(predictions) - ignored,
        num_ignored_predictions=ignored,
        precision=precision,
        recall=main.eval["recall"],
    )
