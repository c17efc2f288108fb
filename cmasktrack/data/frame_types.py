"""The records frame sources yield, and their error: what :mod:`cmasktrack.data.frames` (the
user-facing :class:`~cmasktrack.data.frames.FrameSource`) and :mod:`cmasktrack.data.streams`
(PyAV, pipes, realtime reading) share. Import them from :mod:`cmasktrack.data.frames`."""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np

__all__ = ["FrameError", "Frame", "TimedFrame", "SourceItem"]


class FrameError(ValueError):
    """A frame that cannot be used: unreadable, corrupt, of the wrong type or size."""


class Frame(NamedTuple):
    """One video frame: ``name`` (file name, or a zero-padded index) and ``image``, an
    (H, W, 3) uint8 RGB array."""

    name: str
    image: np.ndarray


class TimedFrame(NamedTuple):
    """A frame with where it was in its source: ``index``, its position in the source (before
    sampling), and ``timestamp``, seconds from the source's start (a video's presentation time,
    a GIF's accumulated durations, a raw pipe's arrival time; ``None`` for frames without time:
    folders, lists, arrays)."""

    name: str
    image: np.ndarray
    index: int
    timestamp: Optional[float]


class SourceItem(NamedTuple):
    """A frame of a source before decoding (internal): ``load()`` decodes it, so that frames
    a sampling step skips are never decoded."""

    index: int
    name: str
    timestamp: Optional[float]
    load: Callable[[], np.ndarray]
