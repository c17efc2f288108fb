"""Tracking a stream: per-frame results as they become ready, for live and long sources.

:class:`TrackStream` (what :meth:`CMaskTrack.track_stream
<cmasktrack.model.CMaskTrack.track_stream>` returns) reads a
:class:`~cmasktrack.data.frames.FrameSource`, pushes each frame into a
:class:`~cmasktrack.tracking.video.VideoTracker` and yields each frame's
:class:`~cmasktrack.video_result.FrameResult` as soon as it is ready (at once with ``causal``,
``num_refs`` frames later otherwise), with its timestamp and its position in the source. No
result is kept, so memory stays flat on an endless stream.

Stopping cleanly: :meth:`TrackStream.stop` (from another thread or a signal handler), or
:meth:`TrackStream.stop_on_signals` — while it is active the first SIGINT / SIGTERM ends the
iteration normally after the frame being tracked (and the frames waiting for their future
references are finished); a second one raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import signal
import threading
import warnings
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..data.frames import FrameSource, TimedFrame, read_frames
from ..video_result import FrameResult
from .options import TrackOptions
from .video import VideoTracker

__all__ = ["TrackStream"]


class _StopReading(KeyboardInterrupt):
    """Raised by the signal handler to break out of a wait for the source's next frame."""


class TrackStream:
    """Per-frame tracking results of a frame source, yielded as they are ready.

    Iterating yields :class:`~cmasktrack.video_result.FrameResult` (``images=True``: ``(result,
    image)`` pairs, the frame's RGB image for drawing), in frame order, each with
    ``timestamp`` and ``source_index`` from the source. A stream is iterated once.

    Args:
        model: a :class:`~cmasktrack.model.CMaskTrack` in eval mode.
        frames: anything :func:`~cmasktrack.data.frames.read_frames` takes, or a
            :class:`~cmasktrack.data.frames.FrameSource` (for sampling, streams, raw pipes:
            ``read_frames("rtsp://...", fps=5)``).
        options: :class:`~cmasktrack.tracking.TrackOptions`; keyword arguments override its
            fields. A live source (no known end) is best tracked with ``causal=True``: each
            result is then ready when its frame is pushed; without it a result waits for
            ``num_refs`` later frames (a warning says so).
        images: also yield each frame's image.
        progress: a tqdm progress bar.

    Attributes:
        source: the :class:`~cmasktrack.data.frames.FrameSource`.
        tracker: the :class:`~cmasktrack.tracking.video.VideoTracker` (``keep_results=False``).
        frames_done: results yielded so far.
        stop_signal: the signal that stopped the stream (``stop_on_signals``), else None.
    """

    def __init__(self, model: Any, frames: Any, options: Optional[TrackOptions] = None, *, images: bool = False,
                 progress: bool = False, **option_kwargs: Any):
        if getattr(model, "training", False):
            raise RuntimeError("track_stream needs eval mode: call model.eval() first")
        self.source: FrameSource = read_frames(frames)
        self.tracker = VideoTracker(model, options, keep_results=False, **option_kwargs)
        if self.source.live and not self.tracker.causal:
            warnings.warn(
                f"a live source ({self.source.kind}) tracked with future references: each result waits for "
                f"{self.tracker.num_refs} later frames; pass causal=True for a result at each frame",
                stacklevel=2,
            )
        self.images = images
        self.progress = progress
        self.frames_done = 0
        self.stop_signal: Optional[int] = None
        self._pending: Dict[int, TimedFrame] = {}
        self._stop = threading.Event()
        self._reading = False
        self._started = False
        self._finished = False
        self._broken = False

    @property
    def category_names(self) -> List[str]:
        """Names of the model's 1-based category ids."""
        return list(self.tracker.config.category_names)

    @property
    def frame_size(self) -> Optional[Tuple[int, int]]:
        """(height, width) of the frames, once the first has been read."""
        return self.tracker.frame_size

    @property
    def dropped(self) -> int:
        """Frames a realtime source dropped while the model was busy."""
        return self.source.dropped

    def stop(self) -> None:
        """Ask the iteration to end after the frame being tracked (thread-safe); the frames
        waiting for future references are then finished and yielded."""
        self._stop.set()

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[Union[FrameResult, Tuple[FrameResult, np.ndarray]]]:
        if self._started:
            raise RuntimeError("a TrackStream is iterated once; make a new one (model.track_stream(...))")
        self._started = True
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.source.length_hint, desc="tracking", unit="frame")
        frames = self.source.timed()
        try:
            while not self._stop.is_set():
                self._reading = True
                try:
                    frame = next(frames, None)
                except _StopReading:
                    break
                finally:
                    self._reading = False
                if frame is None:
                    break
                self._pending[self.tracker.num_pushed] = frame
                try:
                    ready = self.tracker.push(frame.image, frame.name)
                except BaseException:
                    self._broken = True
                    raise
                for res in ready:
                    if bar is not None:
                        bar.update(1)
                    yield self._complete(res)
            frames.close()
            for item in self.finish():
                if bar is not None:
                    bar.update(1)
                yield item
        finally:
            frames.close()
            if bar is not None:
                bar.close()
        if self.tracker.num_pushed == 0 and self.stop_signal is None and not self._stop.is_set():
            raise ValueError("the video has no frames")

    def finish(self) -> List[Union[FrameResult, Tuple[FrameResult, np.ndarray]]]:
        """The results of the frames still waiting for future references (after the source
        ended, :meth:`stop`, or a ``KeyboardInterrupt`` while waiting for a frame). Iteration
        calls it itself at the end; calling it again returns nothing."""
        if self._finished or self._broken:
            return []
        self._finished = True
        return [self._complete(res) for res in self.tracker.finish()]

    def _complete(self, res: FrameResult) -> Union[FrameResult, Tuple[FrameResult, np.ndarray]]:
        frame = self._pending.pop(res.index)
        res.timestamp = frame.timestamp
        res.source_index = frame.index
        self.frames_done += 1
        return (res, frame.image) if self.images else res

    # ------------------------------------------------------------------ signals
    @contextmanager
    def stop_on_signals(self, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)):
        """While active, the first of ``signals`` stops the stream cleanly (:attr:`stop_signal`
        records it): the frame being tracked is finished, the iteration flushes the waiting
        frames and ends normally; a wait for the source's next frame is cut short. A second
        signal raises ``KeyboardInterrupt``. Outside the main thread this does nothing
        (Python delivers signals to the main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum: int, _frame: Any) -> None:
            first = self.stop_signal is None
            if first:
                self.stop_signal = signum
                self.stop()
            if not first:
                raise KeyboardInterrupt
            if self._reading:
                raise _StopReading

        previous = {}
        for sig in signals:
            previous[sig] = signal.signal(sig, handler)
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
