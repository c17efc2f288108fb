"""Reading video frames from folders, files, arrays and streams as RGB uint8 arrays.

Every source becomes a :class:`FrameSource`, an iterable of :class:`Frame` ``(name, image)``
tuples where ``image`` is an (H, W, 3) uint8 RGB numpy array:

- a folder of images (``.jpg .jpeg .png .bmp .webp``, any letter case), in natural order
  (``2.jpg`` before ``10.jpg``); hidden files (``.*``) and subfolders are ignored;
- a list or tuple of image paths and/or arrays;
- a (T, H, W, 3) numpy array or torch uint8 tensor;
- any other iterable or generator of paths and/or arrays, read lazily (streaming);
- a video file (``.mp4 .avi .mov .mkv .webm .m4v .mpg .mpeg .wmv .flv .ts``) through PyAV,
  an optional dependency (``pip install cmasktrack[video]``), or an animated ``.gif``
  (through Pillow);
- a single image file (a one-frame video);
- live sources (see :mod:`cmasktrack.data.streams`): a network stream (``rtsp://``,
  ``http(s)://``, ...), a camera (``/dev/video0``), any FFmpeg input with its ``format``
  (``lavfi``, ``avfoundation``, ...), raw RGB frames on a pipe (``"-"`` with ``size``).

Sampling belongs to the source: ``start`` / ``start_time`` cut the beginning, ``stride`` or
``fps`` thin the frames out, ``max_frames`` cuts the end; frames skipped are not decoded.

Decoding parity with the official code, which reads frames with ``cv2.imread(path,
IMREAD_COLOR)``, was checked against OpenCV 4.5.5 and 5.0.0 (see ``tests/test_frames.py``):

- JPEG (baseline and progressive, 4:4:4, 4:2:2, 4:2:0, grayscale), PNG, BMP and WebP decode
  to identical bytes with Pillow and with OpenCV (both use libjpeg-turbo's default integer
  IDCT with fancy upsampling);
- the EXIF orientation tag is applied, as ``cv2.imread`` does by default (JPEG and PNG);
- grayscale and 1-bit images are replicated to three channels; palette images are expanded;
  the alpha channel of RGBA / LA / PA images is dropped (not composited), like OpenCV;
- 16-bit images keep the high byte (``x >> 8``), as OpenCV's ``IMREAD_COLOR`` does;
- CMYK JPEGs are converted with OpenCV's integer formula.

Pillow is the default decoder; ``decoder="opencv"`` uses ``cv2.imdecode`` when OpenCV is
installed. A truncated or corrupt file is an error naming the file (``cv2.imread`` would
silently return a partly grey image for a truncated JPEG).

Arrays are taken as RGB (convert OpenCV's BGR with ``img[..., ::-1]``). Only uint8 arrays are
accepted; (H, W) and (H, W, 1) arrays are replicated to RGB and (H, W, 4) arrays lose their
alpha channel. Float, bool and 16-bit arrays are rejected with a message that says how to
convert them, because their value range is ambiguous.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from . import streams as _streams
from .frame_types import Frame, FrameError, SourceItem, TimedFrame

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Frame",
    "TimedFrame",
    "FrameError",
    "FrameSource",
    "read_frames",
    "read_image",
    "to_rgb_uint8",
    "list_image_files",
    "natural_sort_key",
    "check_frame_sizes",
    "parse_size",
]

#: Image file extensions read from a folder (compared case-insensitively).
IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: Video file extensions read through PyAV.
VIDEO_EXTENSIONS: Tuple[str, ...] = (
    ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
)
_GIF_EXTENSIONS: Tuple[str, ...] = (".gif",)


PathLike = Union[str, "os.PathLike[str]"]
FrameLike = Union[PathLike, np.ndarray, torch.Tensor, "Frame", Any]


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

_DIGITS = re.compile(r"(\d+)")


def natural_sort_key(name: str) -> Tuple[Tuple[Any, ...], str]:
    """Sort key that orders digit runs by value: ``"2.jpg" < "10.jpg"``, case-insensitive
    for the text parts, ties broken by the raw name."""
    parts = _DIGITS.split(name)
    key = tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts))
    return key, name


def list_image_files(folder: PathLike) -> List[Path]:
    """The image files of ``folder`` in natural order.

    Raises:
        FileNotFoundError: the folder does not exist.
        NotADirectoryError: it is not a folder.
        FrameError: it holds no image file (the message says what it does hold).
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    entries = [e for e in os.scandir(folder) if not e.name.startswith(".")]
    files = [
        Path(e.path)
        for e in entries
        if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
    ]
    if not files:
        subdirs = sum(1 for e in entries if e.is_dir())
        video_exts = VIDEO_EXTENSIONS + _GIF_EXTENSIONS
        videos = [
            e.name for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in video_exts
        ]
        hint = ""
        if videos:
            hint = f"; it holds video file(s) such as {videos[0]!r}: pass that file instead"
        elif subdirs:
            hint = f"; it holds {subdirs} subfolder(s): pass the folder of one video's frames"
        raise FrameError(
            f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {folder}{hint}"
        )
    files.sort(key=lambda p: natural_sort_key(p.name))
    return files


def _shape_str(h: int, w: int) -> str:
    return f"{w}x{h} (width x height)"


def to_rgb_uint8(array: Union[np.ndarray, torch.Tensor], name: str = "frame") -> np.ndarray:
    """Check and convert one in-memory frame to an (H, W, 3) uint8 RGB array.

    (H, W) and (H, W, 1) arrays are replicated to three channels, (H, W, 4) arrays lose their
    alpha channel; (H, W, 3) arrays are returned as they are (made contiguous). Values are
    taken as RGB.

    Raises:
        FrameError: not uint8, or not an image shape; the message names ``name``.
    """
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    if not isinstance(array, np.ndarray):
        raise FrameError(f"{name}: expected a numpy array or torch tensor, got {type(array).__name__}")
    if array.dtype != np.uint8:
        if array.dtype == np.bool_:
            how = "a bool array is not an image; use arr.astype(np.uint8) * 255"
        elif np.issubdtype(array.dtype, np.floating):
            how = "if its values are in [0, 1] use (arr * 255).round().astype(np.uint8)"
        elif array.dtype == np.uint16:
            how = "for 16-bit images use (arr >> 8).astype(np.uint8), as OpenCV does"
        else:
            how = "convert it to uint8 values 0-255"
        raise FrameError(f"{name}: expected a uint8 image, got dtype {array.dtype} ({how})")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise FrameError(f"{name}: expected an (H, W, 3) image, got shape {tuple(array.shape)}")
    h, w, c = array.shape
    if h < 1 or w < 1:
        raise FrameError(f"{name}: empty image of shape {tuple(array.shape)}")
    if c == 3:
        return np.ascontiguousarray(array)
    if c == 1:
        return np.ascontiguousarray(np.repeat(array, 3, axis=2))
    if c == 4:
        return np.ascontiguousarray(array[:, :, :3])
    if c == 2:
        return np.ascontiguousarray(np.repeat(array[:, :, :1], 3, axis=2))
    if array.shape[0] in (1, 3, 4):
        raise FrameError(
            f"{name}: shape {tuple(array.shape)} looks channels-first; pass (H, W, 3) "
            f"(e.g. arr.transpose(1, 2, 0) or tensor.permute(1, 2, 0))"
        )
    raise FrameError(f"{name}: expected (H, W, 3) with 1, 3 or 4 channels, got shape {tuple(array.shape)}")


# ----------------------------------------------------------------------------------------------
# Image decoding
# ----------------------------------------------------------------------------------------------


def _pil_to_rgb(img: Any, name: str) -> np.ndarray:
    """Convert a loaded PIL image to (H, W, 3) uint8 RGB the way cv2.imread(IMREAD_COLOR) does."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode in ("L", "1"):
        return to_rgb_uint8(np.asarray(img.convert("L"), dtype=np.uint8), name)
    if mode in ("RGBA", "RGBX", "RGBa"):
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8)[:, :, :3])
    if mode in ("LA", "La"):
        return to_rgb_uint8(np.asarray(img, dtype=np.uint8)[:, :, 0], name)
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise FrameError(f"{name}: unsupported {mode} image with values outside 0-65535")
        return to_rgb_uint8((arr >> 8).astype(np.uint8), name)
    if mode == "CMYK":
        # OpenCV's icvCvt_CMYK2BGR on libjpeg's raw (Adobe-inverted) values; Pillow un-inverts
        # Adobe CMYK JPEGs, so invert them back first.
        raw = np.asarray(img, dtype=np.int32)
        if "adobe" in img.info:
            raw = 255 - raw
        k = raw[:, :, 3:4]
        rgb = k - (((255 - raw[:, :, :3]) * k) >> 8)
        return np.ascontiguousarray(rgb.astype(np.uint8))
    if mode == "F":
        raise FrameError(f"{name}: floating-point images (mode F) are not supported")
    try:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:  # pragma: no cover - exotic modes
        raise FrameError(f"{name}: cannot convert image mode {mode} to RGB: {exc}") from exc


def _read_pillow(path: Path, exif_orientation: bool) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if exif_orientation:
                img = ImageOps.exif_transpose(img)
            return _pil_to_rgb(img, str(path))
    except FrameError:
        raise
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FrameError(f"cannot read image {path}: corrupt, truncated or not an image ({exc})") from exc


def _read_opencv(path: Path, exif_orientation: bool) -> np.ndarray:
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(
            "decoder='opencv' needs OpenCV: pip install opencv-python-headless"
        ) from exc
    data = np.fromfile(str(path), dtype=np.uint8)
    flags = cv2.IMREAD_COLOR
    if not exif_orientation:
        flags |= cv2.IMREAD_IGNORE_ORIENTATION
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise FrameError(f"cannot read image {path}: OpenCV could not decode it")
    return np.ascontiguousarray(img[:, :, ::-1])


def read_image(
    path: PathLike, *, decoder: str = "pillow", exif_orientation: bool = True
) -> np.ndarray:
    """Decode one image file to an (H, W, 3) uint8 RGB array, matching ``cv2.imread``.

    Args:
        path: image file.
        decoder: ``"pillow"`` (default, no OpenCV needed) or ``"opencv"``.
        exif_orientation: apply the EXIF orientation tag (OpenCV's default behaviour).

    Raises:
        FileNotFoundError: no such file.
        FrameError: the file is corrupt, truncated or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    if decoder == "pillow":
        return _read_pillow(path, exif_orientation)
    if decoder == "opencv":
        return _read_opencv(path, exif_orientation)
    raise ValueError(f"decoder must be 'pillow' or 'opencv', got {decoder!r}")


# ----------------------------------------------------------------------------------------------
# Animated GIFs
# ----------------------------------------------------------------------------------------------


def _constant(image: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: image


def _iter_gif(path: Path) -> Iterator[SourceItem]:
    from PIL import Image, ImageSequence

    t = 0.0
    try:
        with Image.open(path) as img:
            for index, frame in enumerate(ImageSequence.Iterator(img)):
                image = _pil_to_rgb(frame.convert("RGB"), f"{path} frame {index}")
                yield SourceItem(index, f"{index:06d}", t, _constant(image))
                t += _gif_duration(frame.info) / 1000.0
    except FrameError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise FrameError(f"cannot read animated image {path}: {exc}") from exc


def _gif_duration(info: dict) -> float:
    """A GIF frame's duration in ms; 0 or missing counts as 100 ms, as browsers show it."""
    d = info.get("duration") or 0
    return float(d) if d > 0 else 100.0


# ----------------------------------------------------------------------------------------------
# Frame sources
# ----------------------------------------------------------------------------------------------


def check_frame_sizes(frames: Iterable[Frame]) -> Iterator[Frame]:
    """Pass frames through, raising :class:`FrameError` at the first frame whose size differs
    from the first frame's (naming the frame, the expected and the actual size)."""
    expected: Optional[Tuple[int, int]] = None
    first_name = ""
    for index, frame in enumerate(frames):
        h, w = frame.image.shape[:2]
        if expected is None:
            expected, first_name = (h, w), frame.name
        elif (h, w) != expected:
            raise FrameError(
                f"frame {index} ({frame.name!r}) is {_shape_str(h, w)} but the video's first "
                f"frame ({first_name!r}) is {_shape_str(*expected)}; all frames of a video "
                f"must have the same size"
            )
        yield frame


def _whole(name: str, value: Any, low: int, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _positive(name: str, value: Any, allow_zero: bool = False) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return v


def parse_size(size: Any) -> Tuple[int, int]:
    """``(width, height)`` from a ``(w, h)`` pair or a ``"WxH"`` string (e.g. ``"640x480"``)."""
    if isinstance(size, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", size)
        if not m:
            raise ValueError(f"a frame size is WIDTHxHEIGHT (e.g. 640x480), got {size!r}")
        w, h = int(m.group(1)), int(m.group(2))
    else:
        try:
            w, h = (int(v) for v in size)
        except (TypeError, ValueError):
            raise ValueError(f"a frame size is (width, height), got {size!r}") from None
    if w < 1 or h < 1:
        raise ValueError(f"a frame size must be at least 1x1, got {w}x{h}")
    return w, h


class FrameSource:
    """An iterable of :class:`Frame` read lazily from any supported source (see the module
    docstring).

    ``len()`` works when the number of frames is known without decoding (folders, lists,
    arrays, GIFs); for generators, videos and streams it raises ``TypeError``
    (``length_hint`` gives a video container's frame count when it records one). Sources other
    than one-shot iterators and live streams can be iterated several times.
    :meth:`timed` yields each frame with its position in the source and its timestamp.

    Args:
        source: a folder, a video/image file, a list/tuple of paths or arrays, a (T, H, W, C)
            array or tensor, any iterable of paths / arrays / :class:`Frame`; a network stream
            URL (``rtsp://``, ``http(s)://``, ...), a camera (``/dev/video0``), an FFmpeg input
            with ``format`` (e.g. ``"testsrc2=size=320x240:rate=10"`` with ``format="lavfi"``),
            or ``"-"`` / a binary file object: raw RGB frames of ``size`` (or, with
            ``format``, a container PyAV reads from the pipe).
        decoder: image decoder, ``"pillow"`` (default) or ``"opencv"``.
        exif_orientation: apply EXIF orientation tags (default, as OpenCV does).
        check_size: raise :class:`FrameError` when a frame's size differs from the first's.
        stride: keep every ``stride``-th frame (after ``start``).
        fps: keep frames at this rate (by timestamp: a 30 fps video with ``fps=5`` keeps every
            6th frame; a rate above the source's keeps every frame). Needs timestamps (videos,
            streams, GIFs, raw pipes); not with ``stride``.
        start: skip the source's first ``start`` frames.
        start_time: skip the frames before this many seconds (needs timestamps).
        max_frames: stop after this many frames (after sampling).
        size: ``(width, height)`` or ``"WxH"`` of raw RGB24 frames on a pipe.
        format: the FFmpeg input format (``lavfi``, ``v4l2``, ``avfoundation``, ``dshow``,
            ``mpegts``, ...); default: FFmpeg's guess (``v4l2`` for ``/dev/video*``).
        options: FFmpeg input options (e.g. ``{"rtsp_transport": "tcp"}``).
        realtime: read in a background thread and keep only the newest frame, dropping the
            frames that arrive while the consumer is busy (bounded latency; :attr:`dropped`
            counts them). Default: on for network streams without a known end and for cameras.

    Attributes:
        kind: ``folder``, ``image``, ``gif``, ``video``, ``list``, ``array``, ``stream`` (a Python
            iterable), ``url``, ``device``, ``av`` (an FFmpeg input with ``format``), ``raw``.
        live: the source has no known end (a stream, a camera, a pipe): only causal tracking
            gives each frame's result without waiting for later frames.
        fps: the source's frame rate when it has one (videos, streams, GIFs), else None.
        output_fps: the rate of the frames this source yields (``fps`` / ``stride``, or the
            ``fps`` asked for), else None.
        dropped: frames dropped by ``realtime`` reading so far.
    """

    def __init__(
        self,
        source: Any,
        *,
        decoder: str = "pillow",
        exif_orientation: bool = True,
        check_size: bool = True,
        stride: int = 1,
        fps: Optional[float] = None,
        start: int = 0,
        start_time: Optional[float] = None,
        max_frames: Optional[int] = None,
        size: Any = None,
        format: Optional[str] = None,
        options: Optional[dict] = None,
        realtime: Optional[bool] = None,
    ) -> None:
        if decoder not in ("pillow", "opencv"):
            raise ValueError(f"decoder must be 'pillow' or 'opencv', got {decoder!r}")
        self.decoder = decoder
        self.exif_orientation = exif_orientation
        self.check_size = check_size
        self.stride = _whole("stride", stride, 1)
        self.sample_fps = _positive("fps", fps)
        self.start = _whole("start", start, 0)
        self.start_time = _positive("start_time", start_time, allow_zero=True)
        self.max_frames = _whole("max_frames", max_frames, 1, allow_none=True)
        if self.sample_fps is not None and self.stride != 1:
            raise ValueError("give stride or fps, not both")
        self._raw_size = parse_size(size) if size is not None else None
        self._format = format
        self._av_options = dict(options or {})
        self._realtime_arg = realtime
        self._length: Optional[int] = None
        self._length_hint: Optional[int] = None
        #: Frame names when known before reading (folders), else ``None``.
        self.names: Optional[List[str]] = None
        self._one_shot = False
        self._consumed = False
        self._timestamps = False
        self._pending: Any = None  # a container opened to check the source, used by the first read
        self._reader: Any = None
        self._factory: Callable[[], Iterator[SourceItem]]
        self.kind: str
        self.live = False
        self.realtime = False
        self.fps: Optional[float] = None
        self._setup(source)
        if self._raw_size is not None and self.kind != "raw":
            raise ValueError("size is for raw frames on a pipe (\"-\" or a binary file object)")
        if (self.sample_fps is not None or self.start_time is not None) and not self._timestamps:
            what = "fps" if self.sample_fps is not None else "start_time"
            raise ValueError(
                f"{what} needs frame times, and frames from a {self.kind} have none; "
                f"use stride / start (frame counts) instead"
            )
        self.realtime = bool(self.realtime if realtime is None else realtime)
        if self._length is not None and self.start >= self._length:
            raise FrameError(f"start={self.start} but the {self.kind} has {self._length} frames")

    # -- construction ------------------------------------------------------------------------

    def _setup(self, source: Any) -> None:
        if isinstance(source, FrameSource):
            source = iter(source)
        if isinstance(source, (str, os.PathLike)):
            text = os.fspath(source)
            if text == "-":
                self._setup_pipe(None, "standard input")
            elif self._format is not None or _streams.is_url(text) or (
                isinstance(source, str) and text.startswith("/dev/") and _streams.is_device(text)
            ):
                self._setup_av(text)
            else:
                self._setup_path(Path(source))
        elif isinstance(source, (np.ndarray, torch.Tensor)):
            self._setup_array(source)
        elif isinstance(source, (list, tuple)):
            items = list(source)
            if not items:
                raise FrameError("the list of frames is empty")
            self.kind = "list"
            self._length = len(items)
            self._factory = lambda: (self._list_item(i, x) for i, x in enumerate(items))
        elif isinstance(source, (bytes, bytearray)):
            raise TypeError("frames cannot be read from raw bytes; pass a path, an array or a list of them")
        elif hasattr(source, "read"):
            self._setup_pipe(source, getattr(source, "name", None) or "the stream")
        elif isinstance(source, Iterable):
            self.kind = "stream"
            self._one_shot = iter(source) is source
            self._factory = lambda: (self._list_item(i, x) for i, x in enumerate(source))
        else:
            raise TypeError(
                f"cannot read frames from {type(source).__name__}: pass a folder, a video file, "
                f"a stream URL, a list of image paths or arrays, a (T, H, W, 3) uint8 array, or an "
                f"iterable of frames"
            )

    def _setup_path(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(2, "No such file or directory", str(path))
        if path.is_dir():
            files = list_image_files(path)
            self.kind = "folder"
            self._length = len(files)
            self.names = [f.name for f in files]
            self._factory = lambda: (
                SourceItem(i, f.name, None, (lambda f=f: self._decode(f))) for i, f in enumerate(files)
            )
            return
        ext = path.suffix.lower()
        if ext in IMAGE_EXTENSIONS:
            self.kind = "image"
            self._length = 1
            self._factory = lambda: iter([SourceItem(0, path.name, None, lambda: self._decode(path))])
        elif ext in _GIF_EXTENSIONS:
            self.kind = "gif"
            from PIL import Image

            try:
                with Image.open(path) as img:
                    self._length = int(getattr(img, "n_frames", 1))
                    self.fps = 1000.0 / _gif_duration(img.info)
            except (OSError, ValueError, SyntaxError) as exc:
                raise FrameError(f"cannot read animated image {path}: {exc}") from exc
            self._timestamps = True
            self._factory = lambda: _iter_gif(path)
        elif ext in VIDEO_EXTENSIONS:
            self.kind = "video"
            info = _streams.probe_video_file(str(path))  # fails here, with one line, on a non-video
            self._length_hint, self.fps, self._timestamps = info.frames, info.fps, True
            self._factory = lambda: _streams.iter_av(_streams.open_av(str(path), str(path), file=True), str(path))
        else:
            images = ", ".join(IMAGE_EXTENSIONS)
            videos = ", ".join(VIDEO_EXTENSIONS + _GIF_EXTENSIONS)
            raise FrameError(
                f"unsupported file type {path.suffix!r} for {path}: expected a folder, "
                f"an image ({images}) or a video ({videos}); for other FFmpeg inputs give the format"
            )

    def _setup_av(self, target: str) -> None:
        """A network stream, a camera or an FFmpeg input: opened now (so that an unreachable
        stream fails at once), read once."""
        device = target.startswith("/dev/") and _streams.is_device(target)
        fmt = self._format
        if device and fmt is None:
            fmt = "v4l2"
        self.kind = "url" if _streams.is_url(target) else "device" if device else "av"
        container = _streams.open_av(target, target, format=fmt, options=self._av_options)
        info = _streams.stream_info(container, regular_file=os.path.isfile(target))
        self.fps, self._length_hint, self._timestamps = info.fps, info.frames, True
        self.live = info.live or device
        self.realtime = device or (self.kind == "url" and info.live)
        self._pending = container
        self._one_shot = self.live
        label = target

        def factory() -> Iterator[SourceItem]:
            opened, self._pending = self._pending, None
            if opened is None:
                opened = _streams.open_av(target, label, format=fmt, options=self._av_options)
            return _streams.iter_av(opened, label, threads=not self.live)

        self._factory = factory

    def _setup_pipe(self, stream: Any, label: str) -> None:
        """Raw RGB frames of ``size`` on a pipe, or (with ``format``) a container PyAV reads
        from it."""
        self.live = True
        self._one_shot = True
        self._timestamps = True
        if self._format is not None:
            self.kind = "av"
            self._raw_size = None
            fileobj = stream if stream is not None else _streams.stdin_binary()
            container = _streams.open_av(fileobj, label, format=self._format, options=self._av_options)
            self.fps = _streams.stream_info(container).fps
            self._factory = lambda: _streams.iter_av(container, label, threads=False)
            return
        if self._raw_size is None:
            raise ValueError(
                f"frames on {label} are read as raw RGB24 frames of a given size (size=(W, H), "
                f"--size WxH), or as a container of a given FFmpeg format (format=..., --format)"
            )
        self.kind = "raw"
        w, h = self._raw_size
        self._factory = lambda: _streams.iter_raw(
            stream if stream is not None else _streams.stdin_binary(), w, h, label
        )

    def _setup_array(self, array: Union[np.ndarray, torch.Tensor]) -> None:
        if array.ndim != 4:
            raise FrameError(
                f"an array of frames must be (T, H, W, 3), got shape {tuple(array.shape)}; "
                f"for a single frame pass arr[None] or [arr]"
            )
        if array.shape[0] == 0:
            raise FrameError("the array of frames is empty (T = 0)")
        self.kind = "array"
        self._length = int(array.shape[0])
        self._factory = lambda: (
            SourceItem(i, f"{i:06d}", None, (lambda i=i: to_rgb_uint8(array[i], f"frame {i}")))
            for i in range(int(array.shape[0]))
        )

    # -- decoding ----------------------------------------------------------------------------

    def _decode(self, path: Path) -> np.ndarray:
        return read_image(path, decoder=self.decoder, exif_orientation=self.exif_orientation)

    def _list_item(self, index: int, item: Any) -> SourceItem:
        if isinstance(item, Frame):
            return SourceItem(index, str(item.name), None,
                         lambda: to_rgb_uint8(item.image, f"frame {index} ({item.name!r})"))
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise FileNotFoundError(2, f"frame {index}: no such image file", str(path))
            return SourceItem(index, path.name, None, lambda: self._decode(path))
        if isinstance(item, (np.ndarray, torch.Tensor)):
            return SourceItem(index, f"{index:06d}", None, lambda: to_rgb_uint8(item, f"frame {index}"))
        if type(item).__module__.startswith("PIL.") and hasattr(item, "mode"):
            return SourceItem(index, f"{index:06d}", None, lambda: _pil_to_rgb(item, f"frame {index}"))
        raise FrameError(
            f"frame {index}: expected an image path or an (H, W, 3) uint8 array, got {type(item).__name__}"
        )

    # -- sampling ----------------------------------------------------------------------------

    def _sampled(self, items: Iterator[SourceItem]) -> Iterator[SourceItem]:
        """``start`` / ``start_time``, then ``stride`` or ``fps`` (by timestamp)."""
        position = 0
        first_time: Optional[float] = None
        last_slot: Optional[int] = None
        for item in items:
            if item.index < self.start:
                continue
            t = item.timestamp
            if t is None and self.fps:
                t = item.index / self.fps
            if self.start_time is not None:
                if t is None:
                    raise FrameError(f"frame {item.index} has no timestamp: cannot start at {self.start_time} s")
                if t < self.start_time - 1e-9:
                    continue
            if self.sample_fps is not None:
                if t is None:
                    raise FrameError(f"frame {item.index} has no timestamp: cannot sample at {self.sample_fps} fps")
                if first_time is None:
                    first_time = t
                slot = math.floor((t - first_time) * self.sample_fps + 1e-6)
                if last_slot is not None and slot <= last_slot:
                    continue
                last_slot = slot
            else:
                keep = position % self.stride == 0
                position += 1
                if not keep:
                    continue
            yield item

    # -- iteration ---------------------------------------------------------------------------

    def timed(self) -> Iterator[TimedFrame]:
        """The frames as :class:`TimedFrame` ``(name, image, index, timestamp)``."""
        if self._one_shot:
            if self._consumed:
                raise RuntimeError(
                    f"this FrameSource wraps a one-shot {'stream' if self.live else 'iterator (e.g. a generator)'} "
                    f"that has already been consumed; create a new one to read the frames again"
                )
            self._consumed = True
        items: Iterator[SourceItem] = self._sampled(self._factory())
        if self.realtime:
            self._reader = _streams.LatestFrameReader(items)
            items = iter(self._reader)  # closes the reader when it ends or is closed
        count = 0

        def loaded() -> Iterator[TimedFrame]:
            nonlocal count
            if self.max_frames == 0:
                return
            for item in items:
                yield TimedFrame(item.name, item.load(), item.index, item.timestamp)
                count += 1
                if self.max_frames is not None and count >= self.max_frames:
                    return  # not one item more: a live source would wait for it

        frames = check_frame_sizes(loaded()) if self.check_size else loaded()
        try:
            yield from frames
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        if count == 0 and self.kind == "stream":
            raise FrameError("the frame iterable yielded no frames")
        if count == 0 and (self.start or self.start_time):
            where = f"{self.start_time} s" if self.start_time else f"frame {self.start}"
            raise FrameError(f"the {self.kind} has no frames from {where} on")

    def __iter__(self) -> Iterator[Frame]:
        for frame in self.timed():
            yield Frame(frame.name, frame.image)

    def close(self) -> None:
        """Close a stream opened to check the source and never read, and stop a realtime
        reader."""
        if self._pending is not None:
            self._pending.close()
            self._pending = None
        if self._reader is not None:
            self._reader.close()

    @property
    def dropped(self) -> int:
        """Frames dropped by realtime reading so far (0 unless ``realtime``)."""
        return self._reader.dropped if self._reader is not None else 0

    @property
    def output_fps(self) -> Optional[float]:
        """The rate of the frames this source yields, when known: the asked ``fps`` (at most the
        source's), else the source's rate divided by ``stride``."""
        if self.sample_fps is not None:
            return min(self.sample_fps, self.fps) if self.fps else self.sample_fps
        return self.fps / self.stride if self.fps else None

    def _sampled_count(self, n: Optional[int]) -> Optional[int]:
        if n is None:
            return None
        if self.start_time is not None or self.sample_fps is not None:
            if self.sample_fps is None or not self.fps or self.start_time is not None:
                return None
            n = int(math.ceil(max(0, n - self.start) * min(1.0, self.sample_fps / self.fps)))
        else:
            n = -(-max(0, n - self.start) // self.stride)
        return min(n, self.max_frames) if self.max_frames is not None else n

    def __len__(self) -> int:
        n = self.length
        if n is None:
            raise TypeError(
                f"the number of frames of this {self.kind} source is not known before reading it"
            )
        return n

    def __length_hint__(self) -> int:
        return self.length_hint or 0

    @property
    def length(self) -> Optional[int]:
        """Number of frames (after sampling) when known without decoding, else ``None``."""
        if self._length is None or self.sample_fps is not None or self.start_time is not None:
            return None
        return self._sampled_count(self._length)

    @property
    def length_hint(self) -> Optional[int]:
        """:attr:`length`, or an estimate from a video container's recorded frame count."""
        n = self.length
        if n is not None:
            return n
        return self._sampled_count(self._length if self._length is not None else self._length_hint)

    def __repr__(self) -> str:
        n = self.length if self.length is not None else "?"
        return f"FrameSource(kind={self.kind!r}, frames={n})"


def read_frames(source: Any, **kwargs: Any) -> FrameSource:
    """Frames of a video from any supported source, as a :class:`FrameSource`.

    ``for name, image in read_frames("video_dir/"): ...`` yields (H, W, 3) uint8 RGB arrays;
    ``read_frames("street.mp4", fps=5)`` samples a video, ``read_frames("rtsp://...")`` reads a
    stream, ``read_frames("-", size="640x480")`` raw frames on stdin. The keyword arguments are
    :class:`FrameSource`'s (``decoder``, ``exif_orientation``, ``check_size``, ``stride``,
    ``fps``, ``start``, ``start_time``, ``max_frames``, ``size``, ``format``, ``options``,
    ``realtime``). A :class:`FrameSource` given without keyword arguments is returned as it is.
    """
    if isinstance(source, FrameSource) and not kwargs:
        return source
    return FrameSource(source, **kwargs)
