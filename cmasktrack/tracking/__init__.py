"""Tracking videos with a CMaskTrack R-CNN.

* :mod:`.options` — :class:`TrackOptions`, the test-time options every entry point takes;
* :mod:`.association` — :class:`TrackMemory`, MaskTrack R-CNN's association maths;
* :mod:`.video` — :class:`VideoTracker`, the per-frame pipeline over a stream of frames
  (sliding window of features, references, heads, association, mask paste), and
  :func:`track_frames`;
* :mod:`.stream` — :class:`TrackStream`, per-frame results of a live or long source as they
  become ready (``model.track_stream``);
* :mod:`.dataset` — :func:`track_dataset` / :func:`run_dataset`, every video of a benchmark
  json, resumable, in one process, under ``torchrun`` or as job-array shares;
* :mod:`.shards` — shares, per-video part files and their merge (no torch: ``cmasktrack
  merge`` starts quickly).

Names are imported on first use (so :mod:`.shards` and :mod:`.options` load without torch).
"""

from typing import Any

_LAZY = {
    **{n: "cmasktrack.tracking.options" for n in ("TrackOptions", "PRECISIONS")},
    "TrackMemory": "cmasktrack.tracking.association",
    **{n: "cmasktrack.tracking.video"
       for n in ("VideoTracker", "PreparedFrame", "reference_indices", "run_tracker", "track_frames")},
    "TrackStream": "cmasktrack.tracking.stream",
    **{n: "cmasktrack.tracking.dataset" for n in ("track_dataset", "run_dataset", "DatasetReport")},
    **{n: "cmasktrack.tracking.shards" for n in ("DatasetTrackingError", "VideoFailure", "merge_parts")},
}

__all__ = ["PRECISIONS", "TrackOptions", "TrackMemory", "VideoTracker", "PreparedFrame", "reference_indices",
           "run_tracker", "track_frames", "track_dataset", "run_dataset", "DatasetReport", "DatasetTrackingError", "VideoFailure", "merge_parts", "TrackStream"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cmasktrack.tracking' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
