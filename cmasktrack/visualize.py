"""Drawing tracking results: coloured masks, boxes, track ids and category names.

:func:`render_frame` draws one frame's :class:`~cmasktrack.video_result.FrameResult` on its image
with ``torchvision.utils.draw_segmentation_masks`` and ``draw_bounding_boxes``;
:func:`render_video` does it for a whole :class:`~cmasktrack.video_result.VideoResult` and writes

- an animated GIF (``*.gif``, through Pillow),
- an MP4 (``*.mp4``, H.264 yuv420p through PyAV, the optional extra
  ``pip install cmasktrack[video]``), or
- a folder of PNG frames ``000000.png, 000001.png, ...`` (a path without a suffix, one ending
  in ``/``, or an existing folder).

:class:`OverlayWriter` writes frames one at a time as their results arrive (for streams; a
GIF is written frame by frame too, and any output is closed properly when stopped early).

Every track keeps one colour, :func:`track_color`, a function of its id alone, so a track has
the same colour on every frame and in every video. Labels read ``"#3 person 0.91"``
(track id, category name, score), in a font scaled to the frame; they stay inside the frame
and do not cover each other (higher scores are placed first, the others move aside).

Where the masks of several tracks overlap (occlusion), the pixel is given to the detection
with the highest score, so every pixel is tinted by one track's colour (torchvision alone would
paint overlaps black).
"""

from __future__ import annotations

import colorsys
import math
import numbers
import os
import warnings
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from .categories import category_name
from .data.ytvis import decode_rle

if TYPE_CHECKING:  # types only: video_result imports this module to render itself
    from .video_result import FrameResult, VideoResult

__all__ = ["track_color", "render_frame", "render_video", "OverlayWriter", "VIDEO_SUFFIXES", "GIF_WARN_BYTES"]

_PIP_VIDEO = "pip install cmasktrack[video]"

#: Output file suffixes :func:`render_video` writes (anything else without a suffix is a folder).
VIDEO_SUFFIXES: Tuple[str, ...] = (".gif", ".mp4")

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618..., the golden-ratio hue step
_VALUES = (1.0, 0.85, 0.7)

Color = Tuple[int, int, int]
PathLike = Union[str, "os.PathLike[str]"]


def track_color(track_id: int) -> Color:
    """The RGB colour (0-255 ints) of a track id; deterministic, the same in every frame and video.

    Hues step by the golden ratio (neighbouring ids are about 138 degrees apart, and the hues of
    any run of ids stay well spread); the brightness cycles through three levels with
    ``track_id % 3`` to separate ids whose hues come close again. Saturation is 0.75.
    """
    tid = int(track_id)
    hue = (0.05 + tid * _GOLDEN) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, _VALUES[tid % 3])
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def _text_color(color: Color) -> Color:
    """Black or white, whichever reads better on ``color``."""
    r, g, b = color
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


#: Smallest label font size in pixels (smaller text is unreadable).
MIN_FONT_SIZE = 11
#: Pillow's bundled font has poor letter spacing below this size; it is used at least this big.
_BUNDLED_MIN_SIZE = 12


@lru_cache(maxsize=1)
def _system_font() -> Optional[str]:
    """A TrueType font with good hinting at small sizes that Pillow finds here, else None."""
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "Arial.ttf", "LiberationSans-Regular.ttf", "Helvetica.ttc"):
        try:
            ImageFont.truetype(name, 10)
            return name
        except OSError:
            continue
    return None


@lru_cache(maxsize=16)
def _label_font(font: Optional[str], size: int) -> Any:
    """The label font: ``font`` (a TrueType file) as given; else a system sans font (DejaVu
    Sans, Arial, ...), else Pillow's bundled scalable font (at least 12 px, below which its
    letter spacing breaks up words), else Pillow's small bitmap font."""
    from PIL import ImageFont

    if font is not None:
        return ImageFont.truetype(font, size)
    name = _system_font()
    if name is not None:
        return ImageFont.truetype(name, size)
    try:
        return ImageFont.load_default(size=max(size, _BUNDLED_MIN_SIZE))
    except TypeError:  # Pillow < 10.1: no scalable default font
        return ImageFont.load_default()


def _default_font_size(height: int, width: int) -> int:
    """3% of the frame's shorter side, at least :data:`MIN_FONT_SIZE`: 11 px at 320x192, 32 px
    at 1920x1080."""
    return max(MIN_FONT_SIZE, int(round(0.03 * min(height, width))))


def _default_line_width(height: int, width: int) -> int:
    return max(1, int(round(min(height, width) / 180)))


def _check_image(image: Any) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be an (H, W, 3) uint8 numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (values 0-255), got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {tuple(image.shape)}")
    return image


def _label_text(track_id: int, label: int, score: float, category_names: Sequence[str]) -> str:
    return f"#{track_id} {category_name(category_names, label)} {score:.2f}"


def render_frame(
    image: np.ndarray,
    frame_result: Optional[FrameResult],
    category_names: Sequence[str] = (),
    *,
    alpha: float = 0.5,
    draw_masks: bool = True,
    draw_boxes: bool = True,
    draw_labels: bool = True,
    font: Optional[str] = None,
    font_size: Optional[int] = None,
    line_width: Optional[int] = None,
) -> np.ndarray:
    """Draw one frame's tracked detections on its image and return a new image.

    Inside a track's mask a pixel becomes ``alpha * color + (1 - alpha) * pixel`` (truncated
    to uint8 as torchvision does), with ``color = track_color(track_id)``; overlapping masks
    give the pixel to the higher-scoring detection. Boxes (inclusive corners, rounded to whole
    pixels and clipped to the image) are outlined ``line_width`` pixels wide inside the box, in
    the track's colour, with a label ``"#<track id> <category> <score>"`` on a filled
    background inside the box's top-left corner. Labels stay inside the frame (a label too
    wide for it is shortened with "…") and do not cover each other: in order of score, a label
    whose spot is taken moves above its box, below it, inside its bottom, or to the nearest
    free place. Pixels outside every mask, box and label are left unchanged.

    Args:
        image: (H, W, 3) uint8 RGB image of the frame (not modified).
        frame_result: the frame's results; ``None`` or an empty result returns a copy.
        category_names: names of the 1-based category ids (``VideoResult.category_names``);
            ids without a name are shown as numbers.
        alpha: mask opacity in [0, 1].
        draw_masks, draw_boxes, draw_labels: what to draw (labels are drawn with the boxes).
        font: a TrueType font file for the labels; default a system sans font (DejaVu Sans,
            Arial, ...), else Pillow's bundled font.
        font_size: label font size in pixels; default 3% of the image's shorter side (at least
            11): readable at 320x192 and at 1080p.
        line_width: box outline width; default ``min(H, W) / 180`` rounded (>= 1).

    Returns:
        (H, W, 3) uint8 RGB array.

    Raises:
        ValueError: a bad image, alpha, or a mask whose size differs from the image's.
    """
    image = _check_image(image)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    h, w = image.shape[:2]
    if frame_result is None or len(frame_result) == 0:
        return image.copy()
    n = len(frame_result)
    for field_name in ("boxes", "scores", "labels", "masks"):
        if len(getattr(frame_result, field_name)) != n:
            raise ValueError(
                f"frame {frame_result.index}: {len(getattr(frame_result, field_name))} {field_name} "
                f"for {n} track ids"
            )
    track_ids = [int(t) for t in np.asarray(frame_result.track_ids).tolist()]
    scores = np.asarray(frame_result.scores, dtype=np.float64).reshape(n)
    labels = [int(x) for x in np.asarray(frame_result.labels).tolist()]
    colors = [track_color(t) for t in track_ids]

    canvas = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()

    if draw_masks:
        masks = np.zeros((n, h, w), dtype=bool)
        for i, rle in enumerate(frame_result.masks):
            size = tuple(int(s) for s in rle["size"])
            if size != (h, w):
                raise ValueError(
                    f"frame {frame_result.index} ({frame_result.name!r}): the mask of track "
                    f"{track_ids[i]} is {size[1]}x{size[0]} (width x height) but the image is "
                    f"{w}x{h}; render the frames the result was computed on"
                )
            masks[i] = decode_rle(rle)
        # Overlaps go to the higher-scoring detection (stable for ties: the earlier one).
        claimed = np.zeros((h, w), dtype=bool)
        for i in np.argsort(-scores, kind="stable"):
            masks[i] &= ~claimed
            claimed |= masks[i]
        if claimed.any():
            blended = draw_segmentation_masks(canvas, torch.from_numpy(masks), alpha=float(alpha), colors=colors)
            union = torch.from_numpy(claimed)
            canvas = canvas.clone()
            canvas[:, union] = blended[:, union]

    if draw_boxes:
        boxes = np.asarray(frame_result.boxes, dtype=np.float64).reshape(n, 4)
        boxes = np.round(boxes)
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w - 1)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h - 1)
        boxes[:, 2] = np.maximum(boxes[:, 2], boxes[:, 0])
        boxes[:, 3] = np.maximum(boxes[:, 3], boxes[:, 1])
        size = int(font_size) if font_size is not None else _default_font_size(h, w)
        if size < 1:
            raise ValueError(f"font_size must be >= 1, got {font_size}")
        width = int(line_width) if line_width is not None else _default_line_width(h, w)
        if width < 1:
            raise ValueError(f"line_width must be >= 1, got {line_width}")
        canvas = draw_bounding_boxes(canvas, torch.from_numpy(boxes.astype(np.int64)), colors=colors, width=width)
        out = canvas.permute(1, 2, 0).contiguous().numpy()
        if draw_labels:
            texts = [_label_text(t, c, float(s), category_names) for t, c, s in zip(track_ids, labels, scores)]
            out = _draw_labels(out, boxes.astype(np.int64), texts, colors, scores, _label_font(font, size), width)
        return out

    return canvas.permute(1, 2, 0).contiguous().numpy()


# ----------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------


Rect = Tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends)


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _fit_text(text: str, font: Any, max_width: int) -> str:
    """``text``, shortened with "…" until it is at most ``max_width`` pixels wide."""
    if font.getlength(text) <= max_width:
        return text
    while len(text) > 1 and font.getlength(text + "…") > max_width:
        text = text[:-1]
    return text.rstrip() + "…"


def _place_labels(boxes: np.ndarray, sizes: List[Tuple[int, int]], order: Sequence[int], width: int, height: int,
                  inset: int) -> List[Tuple[int, int]]:
    """Top-left corners of the labels: each label (in ``order``) takes the first free spot among
    inside its box's top-left corner, above the box, below it, inside its bottom; failing
    those, the free spot nearest the box's top in the frame; failing that, the first spot
    (more labels than room). Every spot is clamped into the frame."""
    placed: List[Rect] = []
    corners: List[Tuple[int, int]] = [(0, 0)] * len(sizes)
    for i in order:
        lw, lh = sizes[i]
        x1, y1, x2, y2 = (int(v) for v in boxes[i])
        x = min(max(0, x1 + inset), max(0, width - lw))

        def clamp_y(y: int) -> int:
            return min(max(0, y), max(0, height - lh))

        candidates = [clamp_y(y) for y in (y1 + inset, y1 - lh, y2 + 1, y2 - inset - lh + 1)]
        step = max(1, lh // 2)
        scan = sorted(range(0, max(1, height - lh + 1), step), key=lambda y: (abs(y - (y1 + inset)), y))
        chosen = None
        for y in candidates + scan:
            rect = (x, y, x + lw, y + lh)
            if not any(_overlaps(rect, r) for r in placed):
                chosen = y
                break
        if chosen is None:
            chosen = candidates[0]
        corners[i] = (x, chosen)
        placed.append((x, chosen, x + lw, chosen + lh))
    return corners


def _draw_labels(image: np.ndarray, boxes: np.ndarray, texts: List[str], colors: List[Color], scores: np.ndarray,
                 font: Any, inset: int) -> np.ndarray:
    """Draw the labels on filled backgrounds in the track colours, laid out by
    :func:`_place_labels`; returns the image."""
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (font.getbbox("Ag")[3], 0)
    pad = max(1, int(round((ascent + descent) / 8)))
    fitted = [_fit_text(t, font, max(1, w - 2 * pad)) for t in texts]
    sizes = [(min(w, int(np.ceil(font.getlength(t))) + 2 * pad), min(h, ascent + descent + 2 * pad)) for t in fitted]
    order = [int(i) for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")]
    corners = _place_labels(boxes, sizes, order, w, h, inset)
    for i in order:
        (x, y), (lw, lh) = corners[i], sizes[i]
        draw.rectangle((x, y, x + lw - 1, y + lh - 1), fill=colors[i])
        draw.text((x + pad, y + pad), fitted[i], font=font, fill=_text_color(colors[i]))
    return np.array(pil)


# ----------------------------------------------------------------------------------------------
# Videos
# ----------------------------------------------------------------------------------------------


#: A GIF overlay expected to grow past this many bytes triggers a warning suggesting MP4.
GIF_WARN_BYTES = 20_000_000


def _output_kind(path: PathLike) -> Tuple[str, Path]:
    raw = os.fspath(path)
    out = Path(raw)
    if raw.endswith(("/", os.sep)) or out.is_dir():
        return "png", out
    suffix = out.suffix.lower()
    if suffix == "":
        return "png", out
    if suffix == ".gif":
        return "gif", out
    if suffix == ".mp4":
        return "mp4", out
    raise ValueError(
        f"cannot write {suffix!r} ({raw}): use a .gif or .mp4 file, or a folder for PNG frames "
        f"(a path without a suffix or ending in '/')"
    )


def _import_av() -> Any:
    try:
        import av
    except ImportError as exc:
        raise ImportError(f"writing MP4 needs PyAV: {_PIP_VIDEO} (or write a .gif or a PNG folder)") from exc
    return av


def _pad_even(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class _GifWriter:
    """An animated GIF written frame by frame (Pillow's GIF encoder, one frame at a time), so
    memory does not grow with the video and a stopped run still leaves a valid file."""

    def __init__(self, tmp: Path, fps: float):
        self.file = open(tmp, "wb")
        self.duration = 1000.0 / fps  # ms; GIF stores hundredths of a second
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        from PIL import GifImagePlugin, Image

        # Each frame gets its own 256-colour palette (fast octree) and Floyd-Steinberg
        # dithering: smooth image regions keep their shading instead of banding.
        rgb = Image.fromarray(image)
        palette = rgb.quantize(256, method=Image.Quantize.FASTOCTREE)
        frame = rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
        if self.frames == 0:
            header, _ = GifImagePlugin.getheader(frame, None, {"loop": 0, "duration": self.duration})
            for chunk in header:
                self.file.write(chunk)
        for chunk in GifImagePlugin.getdata(frame, (0, 0), duration=self.duration, include_color_table=True):
            self.file.write(chunk)
        self.frames += 1

    def size(self) -> int:
        return self.file.tell()

    def close(self, tmp: Path) -> None:
        self.file.write(b";")  # trailer
        self.file.close()

    def abort(self) -> None:
        self.file.close()


class _Mp4Writer:
    def __init__(self, tmp: Path, fps: float, codec: Optional[str], crf: int):
        av = _import_av()
        self.av = av
        if codec is None:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        self.container = av.open(str(tmp), mode="w", format="mp4")
        try:
            self.stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(100000))
        except Exception as exc:
            self.container.close()
            raise ValueError(f"cannot write MP4 with codec {codec!r}: {exc}") from exc
        self.stream.pix_fmt = "yuv420p"
        if self.stream.codec_context.name in ("libx264", "h264", "libx265", "hevc"):
            self.stream.options = {"crf": str(int(crf))}
        self.fps = fps
        self.opened = False

    def write(self, image: np.ndarray) -> None:
        image = _pad_even(image)
        if not self.opened:
            h, w = image.shape[:2]
            self.stream.height, self.stream.width = h, w
            if self.stream.codec_context.name not in ("libx264", "h264", "libx265", "hevc"):
                # encoders without crf: a generous bit rate instead of FFmpeg's low default
                self.stream.bit_rate = int(max(2_000_000, 0.5 * h * w * self.fps))
            self.opened = True
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self, tmp: Path) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass


class OverlayWriter:
    """Draws tracking results on frames and writes them, one frame at a time, to a GIF, an MP4
    or a folder of PNGs (see :func:`render_video` for the formats).

    Everything that can fail before the first frame fails in the constructor: an unsupported
    suffix, a bad ``fps``, PyAV missing for MP4, an unknown codec, a folder that cannot be
    created or written. A GIF or MP4 is written under a temporary name in the target folder and
    appears under its name at :meth:`close` (also after a run stopped early, with the frames
    written so far); :meth:`abort` removes it. As a context manager it closes on success and
    on ``KeyboardInterrupt``, and aborts on other errors.

    A GIF that will exceed ``gif_warn_bytes`` (estimated from its first frame and
    ``expected_frames``, or measured while it grows when the count is unknown) gives one
    warning suggesting MP4 (typically 10-50x smaller).

    Args:
        path: output ``*.gif``, ``*.mp4``, or a folder (no suffix, ending in ``/``, or existing).
        fps: frames per second of the GIF / MP4.
        category_names: names of the 1-based category ids.
        expected_frames: the number of frames, when known (for the GIF size estimate).
        alpha, draw_masks, draw_boxes, draw_labels, font, font_size, line_width: as in
            :func:`render_frame`; crf, codec: MP4 settings as in :func:`render_video`.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        fps: float = 10.0,
        category_names: Sequence[str] = (),
        expected_frames: Optional[int] = None,
        alpha: float = 0.5,
        draw_masks: bool = True,
        draw_boxes: bool = True,
        draw_labels: bool = True,
        font: Optional[str] = None,
        font_size: Optional[int] = None,
        line_width: Optional[int] = None,
        crf: int = 18,
        codec: Optional[str] = None,
        gif_warn_bytes: int = GIF_WARN_BYTES,
    ) -> None:
        kind, out = _output_kind(path)
        if isinstance(fps, bool) or not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if kind == "mp4":
            _import_av()
        self.kind, self.path, self.fps = kind, out, float(fps)
        self.category_names = list(category_names)
        self.expected_frames = expected_frames
        self.gif_warn_bytes = gif_warn_bytes
        self._draw = dict(alpha=alpha, draw_masks=draw_masks, draw_boxes=draw_boxes, draw_labels=draw_labels,
                          font=font, font_size=font_size, line_width=line_width)
        self._tmp: Optional[Path] = None
        self._writer: Any = None
        self._warned = False
        self._closed = False
        #: Frames written so far.
        self.count = 0
        try:
            if kind == "png":
                out.mkdir(parents=True, exist_ok=True)
                probe = out / f".cmasktrack-write-test-{os.getpid()}"
                probe.write_bytes(b"")
                probe.unlink()
            else:
                if out.is_dir():
                    raise ValueError(f"{out} is a folder; cannot write a {kind.upper()} file there")
                out.parent.mkdir(parents=True, exist_ok=True)
                self._tmp = out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix}")
                self._writer = _GifWriter(self._tmp, self.fps) if kind == "gif" else _Mp4Writer(
                    self._tmp, self.fps, codec, crf)
        except OSError as exc:
            self._remove_tmp()
            reason = exc.strerror or str(exc)
            blocker = next((p for p in (out, *out.parents) if p.exists()), None)
            if blocker is not None and not blocker.is_dir() and blocker != out:
                reason = f"{blocker} is a file, not a folder"
            raise OSError(exc.errno, f"cannot write the overlay {out}: {reason}") from None
        except BaseException:
            self._remove_tmp()
            raise

    def write(self, image: np.ndarray, frame_result: Optional[FrameResult]) -> None:
        """Draw one frame's results on its image (see :func:`render_frame`) and write it."""
        self.write_image(render_frame(image, frame_result, self.category_names, **self._draw))

    def write_image(self, image: np.ndarray) -> None:
        """Write one already drawn (H, W, 3) uint8 RGB frame."""
        if self._closed:
            raise RuntimeError(f"the overlay {self.path} is closed")
        image = _check_image(image)
        if self.kind == "png":
            from PIL import Image

            Image.fromarray(image).save(self.path / f"{self.count:06d}.png")
        else:
            self._writer.write(image)
            if self.kind == "gif":
                self._check_gif_size(image)
        self.count += 1

    def _check_gif_size(self, image: np.ndarray) -> None:
        if self._warned:
            return
        size = self._writer.size()
        n = self.count + 1
        expected = self.expected_frames
        estimate = size / n * expected if expected else size
        if estimate > self.gif_warn_bytes:
            self._warned = True
            h, w = image.shape[:2]
            frames = f"{expected} frames" if expected else f"{n} frames so far"
            warnings.warn(
                f"the GIF overlay {self.path} will be {'about' if expected else 'over'} "
                f"{estimate / 1e6:.0f} MB ({frames} of {w}x{h}); an MP4 is typically 10-50x smaller: "
                f"write {self.path.with_suffix('.mp4').name} instead",
                stacklevel=3,
            )

    def close(self) -> Optional[Path]:
        """Finish the file (GIF trailer, MP4 index) and give it its name; returns the path
        written, or None when no frame was written (nothing is left behind then)."""
        if self._closed:
            return self.path if self.count else None
        self._closed = True
        if self.kind == "png":
            return self.path if self.count else None
        if self.count == 0:
            self._writer.abort()
            self._remove_tmp()
            return None
        try:
            self._writer.close(self._tmp)
            os.replace(self._tmp, self.path)
        except BaseException:
            self._writer.abort()
            self._remove_tmp()
            raise
        return self.path

    def abort(self) -> None:
        """Stop and remove the unfinished GIF / MP4 (PNG frames already written stay)."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.abort()
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self._tmp is not None and self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self) -> "OverlayWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None or issubclass(exc_type, KeyboardInterrupt):
            self.close()
        else:
            self.abort()


def render_video(
    result: VideoResult,
    frames: Any,
    path: PathLike,
    *,
    fps: float = 10.0,
    alpha: float = 0.5,
    draw_masks: bool = True,
    draw_boxes: bool = True,
    draw_labels: bool = True,
    font: Optional[str] = None,
    font_size: Optional[int] = None,
    line_width: Optional[int] = None,
    crf: int = 18,
    codec: Optional[str] = None,
    progress: bool = False,
) -> Path:
    """Draw a video's tracking result on its frames and write a GIF, an MP4 or PNG frames.

    The output is chosen by ``path``: ``*.gif`` an animated GIF (Pillow, written frame by
    frame; looping, one frame every ``1000 / fps`` ms -- GIF stores hundredths of a second; a
    GIF that would exceed ~20 MB warns and suggests MP4); ``*.mp4`` H.264 (PyAV, ``pip install
    cmasktrack[video]``; ``crf`` is the quality, lower is better; odd widths/heights are padded
    by one replicated row/column because yuv420p needs even sizes); a path without a suffix, one
    ending in ``/``, or an existing folder: PNG files ``000000.png, 000001.png, ...`` (other
    files there are left alone). A GIF or MP4 is written under a temporary name and only
    appears when complete; missing parent folders are created. See :class:`OverlayWriter` to
    write frames as they arrive.

    Args:
        result: the tracking result (``track_video(...)``).
        frames: the same frames the result was computed on, in any form
            :func:`cmasktrack.data.frames.read_frames` accepts (a folder, a video file, a list
            of paths or arrays, a (T, H, W, 3) array, an iterable of frames).
        path: output file or folder.
        fps: frames per second of the GIF / MP4.
        alpha, draw_masks, draw_boxes, draw_labels, font, font_size, line_width: as in
            :func:`render_frame`.
        crf: H.264 constant rate factor for MP4 (0-51).
        codec: MP4 encoder; default ``libx264`` (``mpeg4`` if the FFmpeg build lacks it).
        progress: show a tqdm progress bar.

    Returns:
        The path written (file or folder).

    Raises:
        ValueError: unknown output suffix, bad ``fps``, the frames and the result differ in
            number of frames or in frame size, an MP4 ``codec`` FFmpeg does not have.
        ImportError: MP4 requested but PyAV is not installed.
    """
    from .data.frames import read_frames

    _output_kind(path)  # a bad suffix first: before reading any frame
    n = result.num_frames
    if n == 0:
        raise ValueError("the result has no frames: nothing to render")
    source = read_frames(frames)
    if source.length is not None and source.length != n:
        raise ValueError(
            f"the result has {n} frames but the frames given have {source.length}; "
            f"render the frames the result was computed on"
        )

    from tqdm.auto import tqdm

    writer = OverlayWriter(path, fps=fps, category_names=result.category_names, expected_frames=n, alpha=alpha,
                           draw_masks=draw_masks, draw_boxes=draw_boxes, draw_labels=draw_labels, font=font,
                           font_size=font_size, line_width=line_width, crf=crf, codec=codec)
    bar = tqdm(total=n, desc=f"rendering {writer.path.name or writer.path}", unit="frame", disable=not progress)
    count = 0
    try:
        for index, (name, image) in enumerate(source):
            if index >= n:
                raise ValueError(
                    f"the frames given have more than the result's {n} frames; "
                    f"render the frames the result was computed on"
                )
            ih, iw = image.shape[:2]
            if result.height and result.width and (ih, iw) != (result.height, result.width):
                raise ValueError(
                    f"frame {index} ({name!r}) is {iw}x{ih} (width x height) but the result is for "
                    f"{result.width}x{result.height} frames; render the frames the result was computed on"
                )
            writer.write(image, result.frames[index])
            count += 1
            bar.update(1)
        if count != n:
            raise ValueError(
                f"the result has {n} frames but the frames given have {count}; "
                f"render the frames the result was computed on"
            )
        out = writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    assert out is not None
    return out
