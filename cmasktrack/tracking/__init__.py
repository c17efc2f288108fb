"""Tracking videos with a CMaskTrack R-CNN.

* :mod:`.options` — :class:`TrackOptions`, the test-time options every entry point takes;
* :mod:`.association` — :class:`TrackMemory`, MaskTrack R-CNN's association maths;
* :mod:`.video` — :class:`VideoTracker`, the per-frame pipeline over a stream of frames
  (sliding window of features, references, heads, association, mask paste), and
  :func:`track_frames`;
* :mod:`.dataset` — :func:`track_dataset`, every video of a benchmark json, resumable.
"""

from .association import TrackMemory
from .dataset import track_dataset
from .options import PRECISIONS, TrackOptions
from .video import PreparedFrame, VideoTracker, reference_indices, run_tracker, track_frames

__all__ = [
    "PRECISIONS", "TrackOptions", "TrackMemory", "VideoTracker", "PreparedFrame", "reference_indices", "run_tracker",
    "track_frames", "track_dataset",
]
