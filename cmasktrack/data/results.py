"""The OVIS / YouTube-VIS results json (what the evaluation server takes): validation and writing.

The file is a list with one entry per predicted track::

    [{"video_id": int, "category_id": int, "score": float,
      "segmentations": [per-frame RLE {"size": [h, w], "counts": str} | null, ...]}, ...]

with one ``segmentations`` entry per frame of the video. :func:`load_results` checks every
entry against the ground-truth :class:`~cmasktrack.data.ytvis.VISDataset` and fails with a
:class:`ResultsFormatError` naming the entry (and frame) at fault: unknown video id, wrong
number of frames, an RLE whose size disagrees with the video, a score that is not a number.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ..model_config import read_json
from .ytvis import (
    VISDataset,
    VISFormatError,
    _is_int,
    _is_number,
    check_segmentation,
    rle_to_json,
    segmentation_to_rle,
)

__all__ = ["ResultsFormatError", "VISPrediction", "load_results"]

PathLike = Union[str, "os.PathLike[str]"]


class ResultsFormatError(VISFormatError):
    """A results json is malformed or does not fit the ground truth; the message says where."""


@dataclass
class VISPrediction:
    """One predicted track: video, category, score and per-frame compressed RLE (``None`` = absent)."""

    video_id: int
    category_id: int
    score: float
    segmentations: List[Optional[dict]]


def _integral(value: Any) -> bool:
    """An integer, or a float with an integral value (``1.0``) as some writers produce; not a bool."""
    if _is_int(value):
        return True
    return _is_number(value) and math.isfinite(float(value)) and float(value).is_integer()


def _parse_prediction(entry: Any, index: int, dataset: VISDataset) -> VISPrediction:
    where = f"results[{index}]"
    if not isinstance(entry, Mapping):
        raise ResultsFormatError(f"{where}: must be an object, got {type(entry).__name__}")
    for key in ("video_id", "category_id", "score", "segmentations"):
        if key not in entry:
            raise ResultsFormatError(f"{where}: missing key '{key}'")
    video_id = entry["video_id"]
    if not _integral(video_id):
        raise ResultsFormatError(f"{where}: 'video_id' must be an integer, got {video_id!r}")
    video_id = int(video_id)
    if video_id not in dataset.videos:
        raise ResultsFormatError(f"{where}: unknown video_id {video_id} (not in the ground truth)")
    where = f"results[{index}] (video {video_id})"
    category_id = entry["category_id"]
    if not _integral(category_id):
        raise ResultsFormatError(f"{where}: 'category_id' must be an integer, got {category_id!r}")
    score = entry["score"]
    if not _is_number(score) or not math.isfinite(float(score)):
        raise ResultsFormatError(f"{where}: 'score' must be a finite number, got {score!r}")
    video = dataset.videos[video_id]
    segmentations = entry["segmentations"]
    if not isinstance(segmentations, list):
        raise ResultsFormatError(f"{where}: 'segmentations' must be a list with one entry per frame")
    if len(segmentations) != video.length:
        raise ResultsFormatError(
            f"{where}: 'segmentations' has {len(segmentations)} frames, but the video has {video.length}"
        )
    rles: List[Optional[dict]] = []
    for t, seg in enumerate(segmentations):
        try:
            check_segmentation(seg, video.height, video.width, f"{where}, frame {t}", polygons=False)
        except VISFormatError as exc:
            raise ResultsFormatError(str(exc)) from None
        rles.append(segmentation_to_rle(seg, video.height, video.width))
    return VISPrediction(int(video_id), int(category_id), float(score), rles)


def load_results(source: Union[PathLike, Sequence[Mapping[str, Any]]], dataset: VISDataset) -> List[VISPrediction]:
    """Read and validate a results json (a path, or the already parsed list) against ``dataset``.

    Uncompressed RLE is accepted and compressed. An empty list is valid (it scores zero).
    Predictions whose category is not in the ground truth are kept here; the evaluation
    ignores them, as the official one does.

    Raises:
        ResultsFormatError: not a list, or an entry is malformed (the message names the entry).
        FileNotFoundError: the path does not exist.
    """
    if isinstance(source, (str, bytes, os.PathLike)):
        data = read_json(os.fspath(source), ResultsFormatError)
    else:
        data = source
    if not isinstance(data, list):
        raise ResultsFormatError(
            f"results must be a json list of {{video_id, category_id, score, segmentations}}, "
            f"got {type(data).__name__}"
        )
    return [_parse_prediction(entry, i, dataset) for i, entry in enumerate(data)]


def results_to_json(predictions: Sequence[VISPrediction]) -> List[Dict[str, Any]]:
    """Deprecated (unused by cmasktrack): the server's results list for ``predictions``. Results
    entries come from :meth:`cmasktrack.VideoResult.to_ytvis` or
    :func:`cmasktrack.track_dataset`."""
    warnings.warn("results_to_json is deprecated: results entries come from VideoResult.to_ytvis() or "
                  "track_dataset()", DeprecationWarning, stacklevel=2)
    return _to_json(predictions)


def _to_json(predictions: Sequence[VISPrediction]) -> List[Dict[str, Any]]:
    return [
        {
            "video_id": int(p.video_id),
            "score": float(p.score),
            "category_id": int(p.category_id),
            "segmentations": [rle_to_json(r) for r in p.segmentations],
        }
        for p in predictions
    ]


def save_results(predictions: Sequence[VISPrediction], path: PathLike) -> None:
    """Deprecated (unused by cmasktrack): write ``predictions`` as the server's results json.
    :func:`cmasktrack.track_dataset` writes the results file (and the server's zip)."""
    warnings.warn("save_results is deprecated: track_dataset() writes the results file", DeprecationWarning,
                  stacklevel=2)
    with open(os.fspath(path), "w", encoding="utf-8") as handle:
        json.dump(_to_json(predictions), handle)
