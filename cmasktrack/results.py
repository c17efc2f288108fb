"""Deprecated alias of :mod:`cmasktrack.video_result` (what ``track_video`` returns;
``cmasktrack.data.results`` is the benchmark's results json)."""

import warnings

from .video_result import (  # noqa: F401
    FrameResult,
    Track,
    VideoResult,
    decode_rle,
    encode_mask,
    majority_label,
    mean_score,
)

__all__ = ["FrameResult", "Track", "VideoResult", "encode_mask", "decode_rle", "majority_label", "mean_score"]

warnings.warn("cmasktrack.results is deprecated: use cmasktrack.video_result (or cmasktrack.VideoResult)",
              DeprecationWarning, stacklevel=2)
