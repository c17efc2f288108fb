"""Test-time tracking options: one small frozen object, validated in one place.

Every entry point takes it as ``options`` (:meth:`CMaskTrack.track_video
<cmasktrack.model.CMaskTrack.track_video>`, :meth:`~cmasktrack.model.CMaskTrack.new_tracker`,
:class:`~cmasktrack.tracking.VideoTracker`, :func:`~cmasktrack.tracking.track_frames`,
:func:`~cmasktrack.tracking.track_dataset`, ``cmasktrack track``); the individual keyword
arguments (``num_refs=2``, ...) remain accepted there and are combined with it by
:meth:`TrackOptions.build`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Optional

__all__ = ["TrackOptions"]


@dataclass(frozen=True)
class TrackOptions:
    """How a video is tracked (the network and its weights are the model's).

    Attributes:
        num_refs: reference frames before and, unless ``causal``, after each frame that
            calibrate its features; ``None``: the model config's (5 for the official model);
            0 runs without calibration (MaskTrack R-CNN).
        causal: past frames only as references (live streams): each frame's result is ready
            as soon as it is pushed.
        score_threshold: detection score threshold in [0, 1]; ``None``: the model config's
            (0.05).
        batch_refs: calibrate at most this many references at once (memory); ``None``: all.

    Raises:
        ValueError: a value out of range; TypeError: a value of the wrong type.
    """

    num_refs: Optional[int] = None
    causal: bool = False
    score_threshold: Optional[float] = None
    batch_refs: Optional[int] = None

    def __post_init__(self) -> None:
        for name, low in (("num_refs", 0), ("batch_refs", 1)):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be a whole number, got {value!r}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
            object.__setattr__(self, name, int(value))
        if not isinstance(self.causal, bool):
            raise TypeError(f"causal must be True or False, got {self.causal!r}")
        t = self.score_threshold
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, numbers.Real):
                raise TypeError(f"score_threshold must be a number, got {t!r}")
            if not (math.isfinite(t) and 0.0 <= t <= 1.0):
                raise ValueError(f"score_threshold must be in [0, 1], got {t}")
            object.__setattr__(self, "score_threshold", float(t))

    @classmethod
    def build(cls, options: Optional["TrackOptions"] = None, **changes: Any) -> "TrackOptions":
        """``options`` (default: every default) with the ``changes`` that are not None applied:
        how an entry point combines its ``options`` with individual keyword arguments.

        Raises:
            TypeError: ``options`` is not a :class:`TrackOptions`, or a change names no option.
        """
        if options is None:
            options = cls()
        elif not isinstance(options, cls):
            raise TypeError(f"options must be a TrackOptions, got {type(options).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown tracking option(s) {unknown}; the options are {sorted(names)}")
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(options, **changes) if changes else options
