"""Frames from sources that PyAV opens (video files, network streams, cameras, FFmpeg inputs
such as ``lavfi``) and raw RGB frames on a pipe; and a reader that keeps only the newest frame
when the consumer falls behind a real-time source.

:class:`~cmasktrack.data.frames.FrameSource` uses these; the functions here yield the
internal :class:`~cmasktrack.data.frame_types.SourceItem` records (a frame's position in the
source, its name, its timestamp and a function that decodes it), so that frames a sampling step
skips are never converted.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Any, BinaryIO, Deque, Dict, Iterator, Optional, Tuple

import numpy as np

from .frame_types import FrameError, SourceItem

__all__ = [
    "is_url",
    "is_device",
    "StreamInfo",
    "stream_info",
    "open_av",
    "probe_video_file",
    "iter_av",
    "iter_raw",
    "LatestFrameReader",
]

_PIP_VIDEO = "pip install cmasktrack[video]"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
#: (open, read) timeouts in seconds for network streams: a stalled stream ends with an error.
NETWORK_TIMEOUT: Tuple[float, float] = (15.0, 30.0)


def is_url(source: str) -> bool:
    """``scheme://...`` (rtsp, rtmp, http(s), udp, srt, ...): a network source PyAV opens."""
    return bool(_URL.match(source))


def is_device(source: str) -> bool:
    """A camera device file (``/dev/video0``; any character device)."""
    if re.match(r"^/dev/video\d+$", source):
        return True
    try:
        return stat.S_ISCHR(os.stat(source).st_mode)
    except OSError:
        return False


def import_av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise ImportError(
            f"reading videos and streams needs PyAV, an optional dependency: {_PIP_VIDEO} "
            f"(or pip install av); alternatively extract the frames to a folder"
        ) from exc
    return av


def _reason(exc: BaseException) -> str:
    """FFmpeg's message without its errno and file name (``Invalid data found ...``)."""
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())


@dataclass
class StreamInfo:
    """What a container says about its first video stream (None: not recorded)."""

    fps: Optional[float]
    frames: Optional[int]
    duration: Optional[float]
    #: No known end (a stream or a camera, not a file): tracking must be causal.
    live: bool


def stream_info(container: Any, regular_file: bool = False) -> StreamInfo:
    """:class:`StreamInfo` of an open container."""
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else None
    frames = int(stream.frames or 0) or None
    duration = container.duration / 1_000_000 if container.duration else None
    return StreamInfo(fps=fps if fps and fps > 0 else None, frames=frames, duration=duration,
                      live=not regular_file and duration is None)


def open_av(target: Any, label: str, *, format: Optional[str] = None,
            options: Optional[Dict[str, str]] = None, file: bool = False) -> Any:
    """Open ``target`` (a path, a URL, an FFmpeg input such as a ``lavfi`` graph, or a binary
    file object) with PyAV and check it has a video stream.

    Raises:
        FileNotFoundError: no such file or device.
        FrameError: FFmpeg cannot open it or it has no video stream (one line, no errno).
    """
    av = import_av()
    kwargs: Dict[str, Any] = {"options": dict(options or {})}
    if format is not None:
        kwargs["format"] = format
    if isinstance(target, str) and is_url(target):
        kwargs["timeout"] = NETWORK_TIMEOUT
    try:
        container = av.open(target, **kwargs)
    except av.error.FileNotFoundError:
        raise FileNotFoundError(2, "No such file or directory", label) from None
    except Exception as exc:  # FFmpegError subclasses (connection refused, invalid data, ...)
        if not isinstance(exc, av.error.FFmpegError) and format is not None and "format" in str(exc):
            raise FrameError(f"FFmpeg (PyAV's build) has no input format {format!r}") from None
        if file:
            raise FrameError(f"cannot decode video {label}: not a video file or unsupported codec "
                             f"({_reason(exc)})") from None
        raise FrameError(f"cannot open {label}: {_reason(exc)}") from None
    if not container.streams.video:
        container.close()
        raise FrameError(f"{label} has no video stream")
    return container


def probe_video_file(path: str) -> StreamInfo:
    """Open a video file and decode its first frame, so that a file that is not a video (or
    whose codec FFmpeg lacks) fails here, before any work, with one line."""
    container = open_av(path, path, file=True)
    with container:
        info = stream_info(container, regular_file=True)
        try:
            next(iter(container.decode(container.streams.video[0])))
        except StopIteration:
            raise FrameError(f"cannot decode video {path}: it has no frames") from None
        except Exception as exc:
            raise FrameError(f"cannot decode video {path}: not a video file or unsupported codec "
                             f"({_reason(exc)})") from None
    return info


def _rotate_display(img: np.ndarray, degrees: int) -> np.ndarray:
    """Apply a display-matrix rotation (counter-clockwise degrees), as OpenCV's VideoCapture
    does by default."""
    k = int(round(degrees / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def _converter(frame: Any):
    def load() -> np.ndarray:
        img = frame.to_ndarray(format="rgb24")
        return _rotate_display(img, getattr(frame, "rotation", 0) or 0)

    return load


def iter_av(container: Any, label: str, *, threads: bool = True) -> Iterator[SourceItem]:
    """The frames of an open container's first video stream, with their presentation times in
    seconds (``None`` where the stream has none); the container is closed at the end.

    ``threads``: FFmpeg's frame threading (fast for files; it holds frames back, so live
    sources turn it off).
    """
    av = import_av()
    index = 0
    try:
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield SourceItem(index, f"{index:06d}", frame.time, _converter(frame))
                index += 1
        except av.error.FFmpegError as exc:
            if index == 0:
                raise FrameError(f"cannot decode video {label}: not a video file or unsupported codec "
                                 f"({_reason(exc)})") from None
            raise FrameError(f"cannot decode frame {index} of {label}: {_reason(exc)}") from None
    finally:
        container.close()
    if index == 0:
        raise FrameError(f"{label} has no decodable frames")


def iter_raw(stream: BinaryIO, width: int, height: int, label: str) -> Iterator[SourceItem]:
    """Raw RGB24 frames of ``width`` x ``height`` read one after the other from a binary stream
    (e.g. ``ffmpeg -i ... -f rawvideo -pix_fmt rgb24 -``). Timestamps are arrival times in
    seconds since the first frame. A stream that ends inside a frame warns (the partial frame
    is not used)."""
    size = width * height * 3
    read_into = getattr(stream, "readinto", None)
    t0: Optional[float] = None
    index = 0
    while True:
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            if read_into is not None:
                n = read_into(view[got:])
            else:
                chunk = stream.read(size - got)
                n = len(chunk) if chunk else 0
                view[got:got + n] = chunk or b""
            if not n:
                break
            got += n
        if got == 0:
            break
        if got < size:
            warnings.warn(f"{label} ended inside frame {index} ({got} of the {size} bytes of a {width}x{height} "
                          f"RGB frame); that partial frame is not used", stacklevel=2)
            break
        now = time.monotonic()
        if t0 is None:
            t0 = now
        image = np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3)
        yield SourceItem(index, f"{index:06d}", now - t0, (lambda img=image: img))
        index += 1
    if index == 0:
        raise FrameError(f"{label} ended before its first frame")


def stdin_binary() -> BinaryIO:
    """The process's standard input as a binary stream."""
    return sys.stdin.buffer


class LatestFrameReader:
    """Reads a real-time source in a background thread and keeps only the newest ``capacity``
    frames: when the consumer (the model) is slower than the camera, the older frames are
    dropped (counted in :attr:`dropped`) instead of piling up, so the delay between capture
    and result stays bounded.

    Frames are decoded in the reader thread. Iterating waits for the next frame (in short,
    interruptible waits); an error of the source is raised there.
    """

    def __init__(self, items: Iterator[SourceItem], capacity: int = 1):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._items = items
        self._capacity = capacity
        self._buffer: Deque[SourceItem] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._done = False
        self._error: Optional[BaseException] = None
        #: Frames dropped because the consumer was still busy with an earlier one.
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="cmasktrack-frame-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._items:
                if self._stop.is_set():
                    break
                image = item.load()
                ready = item._replace(load=(lambda img=image: img))
                with self._cond:
                    if len(self._buffer) >= self._capacity:
                        self._buffer.popleft()
                        self.dropped += 1
                    self._buffer.append(ready)
                    self._cond.notify()
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._error = exc
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def __iter__(self) -> Iterator[SourceItem]:
        try:
            while True:
                with self._cond:
                    while not self._buffer and not self._done:
                        self._cond.wait(0.2)
                    if self._buffer:
                        item = self._buffer.popleft()
                    elif self._error is not None:
                        raise self._error
                    else:
                        return
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop reading (the thread ends after the frame it is reading)."""
        self._stop.set()
