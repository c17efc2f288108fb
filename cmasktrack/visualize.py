"""Drawing tracking results: coloured masks, boxes, track ids and category names.

:func:`render_frame` draws one frame's :class:`~cmasktrack.video_result.FrameResult` on its image
with ``torchvision.utils.draw_segmentation_masks`` and ``draw_bounding_boxes``;
:func:`render_video` does it for a whole :class:`~cmasktrack.video_result.VideoResult` and writes

- an animated GIF (``*.gif``, through Pillow),
- an MP4 (``*.mp4``, H.264 yuv420p through PyAV, the optional extra
  ``pip install cmasktrack[video]``), or
- a folder of PNG frames ``000000.png, 000001.png, ...`` (a path without a suffix, one ending
  in ``/``, or an existing folder).

Every track keeps one colour, :func:`track_color`, a function of its id alone, so a track has
the same colour on every frame and in every video. Labels read ``"#3 person 0.91"``
(track id, category name, score).

Where the masks of several tracks overlap (occlusion), the pixel is given to the detection
with the highest score, so every pixel is tinted by one track's colour (torchvision alone would
paint overlaps black).
"""

from __future__ import annotations

import colorsys
import io
import math
import numbers
import os
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

__all__ = ["track_color", "render_frame", "render_video", "VIDEO_SUFFIXES"]

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


@lru_cache(maxsize=1)
def _builtin_font_bytes() -> Optional[bytes]:
    """Pillow's bundled scalable font (Pillow >= 10.1 with FreeType), else None."""
    try:
        from PIL import ImageFont

        font = ImageFont.load_default(size=12)
    except Exception:  # older Pillow (no size argument) or no FreeType
        return None
    data = getattr(font, "font_bytes", None)
    return data if isinstance(data, bytes) and data else None


@lru_cache(maxsize=1)
def _system_font() -> Optional[str]:
    """A TrueType font Pillow finds on this system, else None."""
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "Arial.ttf", "LiberationSans-Regular.ttf"):
        try:
            ImageFont.truetype(name, 10)
            return name
        except OSError:
            continue
    return None


def _font_args(font: Optional[Any], font_size: int) -> Tuple[Optional[Any], Optional[int]]:
    """The ``font`` / ``font_size`` arguments for ``draw_bounding_boxes``.

    A given ``font`` (a TrueType file) is used as is; else Pillow's bundled scalable font, else a
    system font, else Pillow's small bitmap font (which has one size: ``font_size`` is ignored).
    """
    if font is not None:
        return font, font_size
    data = _builtin_font_bytes()
    if data is not None:
        return io.BytesIO(data), font_size
    name = _system_font()
    if name is not None:
        return name, font_size
    return None, None


def _default_font_size(height: int, width: int) -> int:
    return max(10, int(round(0.035 * min(height, width))))


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
    background at the box's top-left corner. Pixels outside every mask, box and label are
    left unchanged.

    Args:
        image: (H, W, 3) uint8 RGB image of the frame (not modified).
        frame_result: the frame's results; ``None`` or an empty result returns a copy.
        category_names: names of the 1-based category ids (``VideoResult.category_names``);
            ids without a name are shown as numbers.
        alpha: mask opacity in [0, 1].
        draw_masks, draw_boxes, draw_labels: what to draw (labels are drawn with the boxes).
        font: a TrueType font file for the labels; default Pillow's bundled font.
        font_size: label font size in pixels; default 3.5% of the image's shorter side (>= 10).
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
        texts: Optional[List[str]] = None
        font_arg, size_arg = None, None
        if draw_labels:
            texts = [_label_text(t, c, float(s), category_names) for t, c, s in zip(track_ids, labels, scores)]
            font_arg, size_arg = _font_args(font, size)
        canvas = draw_bounding_boxes(
            canvas,
            torch.from_numpy(boxes.astype(np.int64)),
            labels=texts,
            colors=colors,
            width=width,
            font=font_arg,
            font_size=size_arg,
            fill_labels=True,
            label_colors=[_text_color(c) for c in colors],
            label_background_colors=colors,
        )

    return canvas.permute(1, 2, 0).contiguous().numpy()


# ----------------------------------------------------------------------------------------------
# Videos
# ----------------------------------------------------------------------------------------------


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
    def __init__(self, fps: float):
        self.fps = fps
        self.frames: List[Any] = []

    def write(self, image: np.ndarray) -> None:
        from PIL import Image

        # Each frame gets its own 256-colour palette (fast octree) and Floyd-Steinberg
        # dithering: smooth image regions keep their shading instead of banding.
        rgb = Image.fromarray(image)
        palette = rgb.quantize(256, method=Image.Quantize.FASTOCTREE)
        self.frames.append(rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG))

    def close(self, tmp: Path) -> None:
        first, rest = self.frames[0], self.frames[1:]
        first.save(tmp, format="GIF", save_all=True, append_images=rest, loop=0,
                   duration=max(1, int(round(1000.0 / self.fps))))

    def abort(self) -> None:
        self.frames.clear()


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

    The output is chosen by ``path``: ``*.gif`` an animated GIF (Pillow; looping, one frame
    every ``1000 / fps`` ms -- GIF stores hundredths of a second, and Pillow merges identical
    consecutive frames into one longer frame); ``*.mp4`` H.264 (PyAV, ``pip install
    cmasktrack[video]``; ``crf`` is the quality, lower is better; odd widths/heights are padded
    by one replicated row/column because yuv420p needs even sizes); a path without a suffix, one
    ending in ``/``, or an existing folder: PNG files ``000000.png, 000001.png, ...`` (other
    files there are left alone). A GIF or MP4 is written under a temporary name and only
    appears when complete; missing parent folders are created.

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
    from .data.frames import FrameSource, read_frames

    kind, out = _output_kind(path)
    if isinstance(fps, bool) or not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    n = result.num_frames
    if n == 0:
        raise ValueError("the result has no frames: nothing to render")
    if kind == "mp4":
        _import_av()
    source = frames if isinstance(frames, FrameSource) else read_frames(frames)
    if source.length is not None and source.length != n:
        raise ValueError(
            f"the result has {n} frames but the frames given have {source.length}; "
            f"render the frames the result was computed on"
        )

    tmp: Optional[Path] = None
    writer: Any = None
    if kind == "png":
        out.mkdir(parents=True, exist_ok=True)
    else:
        if out.is_dir():
            raise ValueError(f"{out} is a folder; cannot write a {kind.upper()} file there")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.stem}.partial-{os.getpid()}{out.suffix}")

    from tqdm.auto import tqdm

    bar = tqdm(total=n, desc=f"rendering {out.name or out}", unit="frame", disable=not progress)
    count = 0
    try:
        if kind == "gif":
            writer = _GifWriter(float(fps))
        elif kind == "mp4":
            assert tmp is not None
            writer = _Mp4Writer(tmp, float(fps), codec, crf)
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
            drawn = render_frame(
                image, result.frames[index], result.category_names, alpha=alpha, draw_masks=draw_masks,
                draw_boxes=draw_boxes, draw_labels=draw_labels, font=font, font_size=font_size,
                line_width=line_width,
            )
            if kind == "png":
                from PIL import Image

                Image.fromarray(drawn).save(out / f"{index:06d}.png")
            else:
                writer.write(drawn)
            count += 1
            bar.update(1)
        if count != n:
            raise ValueError(
                f"the result has {n} frames but the frames given have {count}; "
                f"render the frames the result was computed on"
            )
        if writer is not None:
            assert tmp is not None
            writer.close(tmp)
            os.replace(tmp, out)
    except BaseException:
        if writer is not None:
            writer.abort()
        if tmp is not None and tmp.exists():
            tmp.unlink()
        raise
    finally:
        bar.close()
    return out
