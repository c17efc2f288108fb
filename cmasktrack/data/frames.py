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
- a single image file (a one-frame video).

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

import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Frame",
    "FrameError",
    "FrameSource",
    "read_frames",
    "read_image",
    "to_rgb_uint8",
    "list_image_files",
    "natural_sort_key",
    "check_frame_sizes",
]

#: Image file extensions read from a folder (compared case-insensitively).
IMAGE_EXTENSIONS: Tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: Video file extensions read through PyAV.
VIDEO_EXTENSIONS: Tuple[str, ...] = (
    ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
)
_GIF_EXTENSIONS: Tuple[str, ...] = (".gif",)

_PIP_VIDEO = "pip install cmasktrack[video]"

PathLike = Union[str, "os.PathLike[str]"]
FrameLike = Union[PathLike, np.ndarray, torch.Tensor, "Frame", Any]


class FrameError(ValueError):
    """A frame that cannot be used: unreadable, corrupt, of the wrong type or size."""


class Frame(NamedTuple):
    """One video frame: ``name`` (file name, or a zero-padded index) and ``image``, an
    (H, W, 3) uint8 RGB array."""

    name: str
    image: np.ndarray


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
# Videos
# ----------------------------------------------------------------------------------------------


def _import_av():
    try:
        import av
    except ImportError as exc:
        raise ImportError(
            f"reading video files needs PyAV, an optional dependency: {_PIP_VIDEO} "
            f"(or pip install av); alternatively extract the frames to a folder"
        ) from exc
    return av


def _rotate_display(img: np.ndarray, degrees: int) -> np.ndarray:
    """Apply a display-matrix rotation (counter-clockwise degrees), as OpenCV's VideoCapture
    does by default."""
    k = int(round(degrees / 90.0)) % 4
    return np.ascontiguousarray(np.rot90(img, k)) if k else img


def _video_frame_count(path: Path) -> Optional[int]:
    av = _import_av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            n = int(container.streams.video[0].frames or 0)
            return n if n > 0 else None
    except Exception:
        return None


def _iter_video(path: Path) -> Iterator[Frame]:
    av = _import_av()
    try:
        container = av.open(str(path))
    except Exception as exc:
        raise FrameError(f"cannot open video {path}: {exc}") from exc
    with container:
        if not container.streams.video:
            raise FrameError(f"video {path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = 0
        try:
            for frame in container.decode(stream):
                img = frame.to_ndarray(format="rgb24")
                rotation = getattr(frame, "rotation", 0) or 0
                yield Frame(f"{index:06d}", _rotate_display(img, rotation))
                index += 1
        except av.error.FFmpegError as exc:  # type: ignore[attr-defined]
            raise FrameError(f"cannot decode frame {index} of video {path}: {exc}") from exc
    if index == 0:
        raise FrameError(f"video {path} has no decodable frames")


def _iter_gif(path: Path) -> Iterator[Frame]:
    from PIL import Image, ImageSequence

    try:
        with Image.open(path) as img:
            for index, frame in enumerate(ImageSequence.Iterator(img)):
                yield Frame(f"{index:06d}", _pil_to_rgb(frame.convert("RGB"), f"{path} frame {index}"))
    except FrameError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise FrameError(f"cannot read animated image {path}: {exc}") from exc


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


class FrameSource:
    """An iterable of :class:`Frame` read lazily from any supported source (see the module
    docstring).

    ``len()`` works when the number of frames is known without decoding (folders, lists,
    arrays, GIFs); for generators and videos it raises ``TypeError`` (``length_hint`` gives a
    video container's frame count when it records one). Sources other than one-shot iterators
    can be iterated several times.

    Args:
        source: a folder, a video/image file, a list/tuple of paths or arrays, a (T, H, W, C)
            array or tensor, or any iterable of paths / arrays / :class:`Frame`.
        decoder: image decoder, ``"pillow"`` (default) or ``"opencv"``.
        exif_orientation: apply EXIF orientation tags (default, as OpenCV does).
        check_size: raise :class:`FrameError` when a frame's size differs from the first's.
    """

    def __init__(
        self,
        source: Any,
        *,
        decoder: str = "pillow",
        exif_orientation: bool = True,
        check_size: bool = True,
    ) -> None:
        if decoder not in ("pillow", "opencv"):
            raise ValueError(f"decoder must be 'pillow' or 'opencv', got {decoder!r}")
        self.decoder = decoder
        self.exif_orientation = exif_orientation
        self.check_size = check_size
        self._length: Optional[int] = None
        self._length_hint: Optional[int] = None
        #: Frame names when known before reading (folders), else ``None``.
        self.names: Optional[List[str]] = None
        self._one_shot = False
        self._consumed = False
        self._factory: Callable[[], Iterator[Frame]]
        self.kind: str
        self._setup(source)

    # -- construction ------------------------------------------------------------------------

    def _setup(self, source: Any) -> None:
        if isinstance(source, FrameSource):
            source = iter(source)
        if isinstance(source, (str, os.PathLike)):
            self._setup_path(Path(source))
        elif isinstance(source, (np.ndarray, torch.Tensor)):
            self._setup_array(source)
        elif isinstance(source, (list, tuple)):
            items = list(source)
            if not items:
                raise FrameError("the list of frames is empty")
            self.kind = "list"
            self._length = len(items)
            self._factory = lambda: (self._load_item(i, x) for i, x in enumerate(items))
        elif isinstance(source, (bytes, bytearray)):
            raise TypeError("frames cannot be read from raw bytes; pass a path, an array or a list of them")
        elif isinstance(source, Iterable):
            self.kind = "stream"
            self._one_shot = iter(source) is source
            self._factory = lambda: (self._load_item(i, x) for i, x in enumerate(source))
        else:
            raise TypeError(
                f"cannot read frames from {type(source).__name__}: pass a folder, a video file, "
                f"a list of image paths or arrays, a (T, H, W, 3) uint8 array, or an iterable of frames"
            )

    def _setup_path(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"frame source not found: {path}")
        if path.is_dir():
            files = list_image_files(path)
            self.kind = "folder"
            self._length = len(files)
            self.names = [f.name for f in files]
            self._factory = lambda: (Frame(f.name, self._decode(f)) for f in files)
            return
        ext = path.suffix.lower()
        if ext in IMAGE_EXTENSIONS:
            self.kind = "image"
            self._length = 1
            self._factory = lambda: iter([Frame(path.name, self._decode(path))])
        elif ext in _GIF_EXTENSIONS:
            self.kind = "gif"
            from PIL import Image

            try:
                with Image.open(path) as img:
                    self._length = int(getattr(img, "n_frames", 1))
            except (OSError, ValueError, SyntaxError) as exc:
                raise FrameError(f"cannot read animated image {path}: {exc}") from exc
            self._factory = lambda: _iter_gif(path)
        elif ext in VIDEO_EXTENSIONS:
            self.kind = "video"
            _import_av()  # fail early with the install hint
            self._length_hint = _video_frame_count(path)
            self._factory = lambda: _iter_video(path)
        else:
            images = ", ".join(IMAGE_EXTENSIONS)
            videos = ", ".join(VIDEO_EXTENSIONS + _GIF_EXTENSIONS)
            raise FrameError(
                f"unsupported file type {path.suffix!r} for {path}: expected a folder, "
                f"an image ({images}) or a video ({videos})"
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
            Frame(f"{i:06d}", to_rgb_uint8(array[i], f"frame {i}"))
            for i in range(int(array.shape[0]))
        )

    # -- decoding ----------------------------------------------------------------------------

    def _decode(self, path: Path) -> np.ndarray:
        return read_image(path, decoder=self.decoder, exif_orientation=self.exif_orientation)

    def _load_item(self, index: int, item: Any) -> Frame:
        if isinstance(item, Frame):
            return Frame(str(item.name), to_rgb_uint8(item.image, f"frame {index} ({item.name!r})"))
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if not path.is_file():
                raise FileNotFoundError(f"frame {index}: image file not found: {path}")
            return Frame(path.name, self._decode(path))
        if isinstance(item, (np.ndarray, torch.Tensor)):
            return Frame(f"{index:06d}", to_rgb_uint8(item, f"frame {index}"))
        if type(item).__module__.startswith("PIL.") and hasattr(item, "mode"):
            return Frame(f"{index:06d}", _pil_to_rgb(item, f"frame {index}"))
        raise FrameError(
            f"frame {index}: expected an image path or an (H, W, 3) uint8 array, got {type(item).__name__}"
        )

    # -- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Frame]:
        if self._one_shot:
            if self._consumed:
                raise RuntimeError(
                    "this FrameSource wraps a one-shot iterator (e.g. a generator) that has "
                    "already been consumed; create a new one to read the frames again"
                )
            self._consumed = True
        frames = self._factory()
        if self.check_size:
            frames = check_frame_sizes(frames)
        empty = True
        for frame in frames:
            empty = False
            yield frame
        if empty and self.kind == "stream":
            raise FrameError("the frame iterable yielded no frames")

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError(
                f"the number of frames of this {self.kind} source is not known before reading it"
            )
        return self._length

    def __length_hint__(self) -> int:
        return self.length_hint or 0

    @property
    def length(self) -> Optional[int]:
        """Number of frames when known without decoding, else ``None``."""
        return self._length

    @property
    def length_hint(self) -> Optional[int]:
        """:attr:`length`, or a video container's recorded frame count (may be approximate)."""
        return self._length if self._length is not None else self._length_hint

    def __repr__(self) -> str:
        n = self._length if self._length is not None else "?"
        return f"FrameSource(kind={self.kind!r}, frames={n})"


def read_frames(
    source: Any,
    *,
    decoder: str = "pillow",
    exif_orientation: bool = True,
    check_size: bool = True,
) -> FrameSource:
    """Frames of a video from any supported source, as a :class:`FrameSource`.

    ``for name, image in read_frames("video_dir/"): ...`` yields (H, W, 3) uint8 RGB arrays.
    See :class:`FrameSource` and the module docstring for sources, conversions and errors.
    """
    return FrameSource(source, decoder=decoder, exif_orientation=exif_orientation, check_size=check_size)
