"""The OVIS / YouTube-VIS annotation json: reading, validation and frame lookup.

Both benchmarks share one format (the "ytvos" variant of the COCO format)::

    {"videos":      [{"id", "width", "height", "length", "file_names": [...]}, ...],
     "annotations": [{"id", "video_id", "category_id", "iscrowd",
                      "segmentations": [per-frame RLE | uncompressed RLE | polygons | null],
                      "bboxes": [per-frame [x, y, w, h] | null],
                      "areas": [per-frame area | null],
                      "occlusion": [per-frame label | null]   # OVIS only
                     }, ...],
     "categories":  [{"id", "name", "supercategory"}, ...]}

:class:`VISDataset` reads such a file, checks it and fails with a :class:`VISFormatError`
that names the key and the video / annotation at fault. A frame entry that is ``null`` (or an
empty list / dict, which the official tools also treat as absent) means the object is not in
that frame. Masks are converted to compressed RLE lazily with ``pycocotools``, exactly as the
official ``ytvos.annToRLE`` does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from pycocotools import mask as mask_utils

from ..model_config import read_json

__all__ = [
    "OCCLUSION_LABELS",
    "VISAnnotation",
    "VISCategory",
    "VISDataset",
    "VISFormatError",
    "VISVideo",
    "check_segmentation",
    "decode_rle",
    "encode_mask",
    "is_absent",
    "rle_to_json",
    "segmentation_to_rle",
]

#: The per-frame occlusion labels of OVIS and the score the official evaluation gives them.
OCCLUSION_LABELS: Dict[str, float] = {
    "no_occlusion": 0.0,
    "slight_occlusion": 0.25,
    "severe_occlusion": 0.75,
}

Segmentation = Union[None, dict, list]
PathLike = Union[str, "os.PathLike[str]"]


class VISFormatError(ValueError):
    """A benchmark json (annotations or results) is malformed; the message says where."""


@dataclass(frozen=True)
class VISVideo:
    """One video: its id, frame size and the frame file names relative to the image root."""

    id: int
    width: int
    height: int
    length: int
    file_names: Tuple[str, ...] = ()


@dataclass(frozen=True)
class VISCategory:
    """One object category."""

    id: int
    name: str
    supercategory: str = ""


@dataclass
class VISAnnotation:
    """One ground-truth object track: per-frame entries as written in the file.

    ``segmentations`` has one entry per video frame (``None`` where the object is absent);
    ``bboxes``, ``areas`` and ``occlusion`` are ``None`` when the file does not give them.
    """

    id: int
    video_id: int
    category_id: int
    segmentations: List[Segmentation]
    iscrowd: bool = False
    bboxes: Optional[List[Optional[List[float]]]] = None
    areas: Optional[List[Optional[float]]] = None
    occlusion: Optional[List[Optional[str]]] = None


def is_absent(segmentation: Segmentation) -> bool:
    """True when a per-frame segmentation entry means "object not in this frame".

    ``null`` is the documented form; an empty list or dict is treated the same way, as the
    official tools do (they test the entry's truthiness).
    """
    return not segmentation


def segmentation_to_rle(segmentation: Segmentation, height: int, width: int) -> Optional[dict]:
    """Convert one frame's segmentation (RLE, uncompressed RLE or polygons) to compressed RLE.

    Returns ``None`` for an absent frame. The conversion is the official ``annToRLE``:
    polygons are rasterised and merged, uncompressed RLE is compressed, compressed RLE is
    returned as is (with ``counts`` as ``str`` or ``bytes``, both accepted by pycocotools).
    """
    if is_absent(segmentation):
        return None
    if isinstance(segmentation, list):
        rles = mask_utils.frPyObjects(segmentation, height, width)
        return mask_utils.merge(rles)
    if isinstance(segmentation, dict):
        if isinstance(segmentation.get("counts"), list):
            return mask_utils.frPyObjects(segmentation, height, width)
        return segmentation
    raise VISFormatError(f"segmentation must be RLE, polygons or null, got {type(segmentation).__name__}")


def rle_to_json(rle: Optional[dict]) -> Optional[dict]:
    """A compressed RLE with ``counts`` as ``str`` (json-serialisable), or ``None``."""
    if rle is None:
        return None
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def encode_mask(mask: np.ndarray) -> Dict[str, Any]:
    """Bool/uint8 (H, W) mask -> compressed COCO RLE with ``counts`` as str (the results-json
    form)."""
    return rle_to_json(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """Compressed COCO RLE (``counts`` str or bytes) -> dense bool (H, W) mask."""
    r = dict(rle)
    if isinstance(r["counts"], str):
        r["counts"] = r["counts"].encode("ascii")
    return mask_utils.decode(r).astype(bool)


# --------------------------------------------------------------------------------------------
# validation helpers


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _require(entry: Mapping, key: str, where: str) -> Any:
    if key not in entry:
        raise VISFormatError(f"{where}: missing key '{key}'")
    return entry[key]


def _require_int(entry: Mapping, key: str, where: str, positive: bool = False) -> int:
    value = _require(entry, key, where)
    if not _is_int(value):
        raise VISFormatError(f"{where}: '{key}' must be an integer, got {value!r}")
    if positive and value <= 0:
        raise VISFormatError(f"{where}: '{key}' must be positive, got {value}")
    return int(value)


def check_segmentation(segmentation: Any, height: int, width: int, where: str, polygons: bool = True) -> None:
    """Raise :class:`VISFormatError` unless ``segmentation`` is a valid per-frame entry.

    Valid entries: ``null``/empty (absent); a compressed RLE ``{"size": [h, w], "counts":
    str}``; an uncompressed RLE ``{"size": [h, w], "counts": [int, ...]}`` whose runs add up to
    ``h*w``; if ``polygons``, a list of polygons ``[[x0, y0, x1, y1, ...], ...]``. The RLE
    size must be the video's ``[height, width]``.
    """
    if is_absent(segmentation):
        return
    if isinstance(segmentation, dict):
        if "size" not in segmentation or "counts" not in segmentation:
            raise VISFormatError(f"{where}: RLE must have keys 'size' and 'counts', got {sorted(segmentation)}")
        size = segmentation["size"]
        if (
            not isinstance(size, (list, tuple))
            or len(size) != 2
            or not all(_is_int(s) for s in size)
        ):
            raise VISFormatError(f"{where}: RLE 'size' must be [height, width], got {size!r}")
        if [int(size[0]), int(size[1])] != [height, width]:
            raise VISFormatError(
                f"{where}: RLE size {list(size)} disagrees with the video size [{height}, {width}] "
                "([height, width])"
            )
        counts = segmentation["counts"]
        if isinstance(counts, list):
            if not all(_is_int(c) and c >= 0 for c in counts):
                raise VISFormatError(f"{where}: uncompressed RLE 'counts' must be non-negative integers")
            if sum(int(c) for c in counts) != height * width:
                raise VISFormatError(
                    f"{where}: uncompressed RLE runs add up to {sum(int(c) for c in counts)}, "
                    f"expected height*width = {height * width}"
                )
        elif not isinstance(counts, (str, bytes)):
            raise VISFormatError(
                f"{where}: RLE 'counts' must be a string (compressed) or a list of integers, "
                f"got {type(counts).__name__}"
            )
        return
    if polygons and isinstance(segmentation, list):
        for k, polygon in enumerate(segmentation):
            if (
                not isinstance(polygon, list)
                or len(polygon) < 4
                or len(polygon) % 2
                or not all(_is_number(v) for v in polygon)
            ):
                raise VISFormatError(
                    f"{where}: polygon {k} must be a flat list [x0, y0, x1, y1, ...] of an even "
                    "number (>= 4) of numbers"
                )
        return
    kinds = "an RLE dict, a list of polygons or null" if polygons else "an RLE dict or null"
    raise VISFormatError(f"{where}: segmentation must be {kinds}, got {type(segmentation).__name__}")


def _check_per_frame_list(ann: Mapping, key: str, length: int, where: str) -> Optional[list]:
    if key not in ann or ann[key] is None:
        return None
    values = ann[key]
    if not isinstance(values, list):
        raise VISFormatError(f"{where}: '{key}' must be a list with one entry per frame")
    if len(values) != length:
        raise VISFormatError(f"{where}: '{key}' has {len(values)} entries, but the video has {length} frames")
    return values


# --------------------------------------------------------------------------------------------


class VISDataset:
    """An OVIS / YouTube-VIS annotation file, validated and indexed.

    Args:
        videos, annotations, categories: the parsed entries (see :meth:`from_json`).
        image_root: directory holding the frames; ``file_names`` are relative to it.
        info: the file's optional ``info`` dict.

    Attributes:
        videos: ``{video id: VISVideo}`` in file order.
        annotations: all ``VISAnnotation`` in file order.
        categories: ``{category id: VISCategory}`` in file order.
    """

    def __init__(
        self,
        videos: Sequence[VISVideo],
        annotations: Sequence[VISAnnotation],
        categories: Sequence[VISCategory],
        image_root: Optional[PathLike] = None,
        info: Optional[dict] = None,
    ) -> None:
        self.videos: Dict[int, VISVideo] = {}
        for video in videos:
            if video.id in self.videos:
                raise VISFormatError(f"videos: duplicate video id {video.id}")
            self.videos[video.id] = video
        self.categories: Dict[int, VISCategory] = {}
        for category in categories:
            if category.id in self.categories:
                raise VISFormatError(f"categories: duplicate category id {category.id}")
            self.categories[category.id] = category
        self.annotations: List[VISAnnotation] = list(annotations)
        self._by_video: Dict[int, List[VISAnnotation]] = {vid: [] for vid in self.videos}
        seen = set()
        for ann in self.annotations:
            where = f"annotation id {ann.id} (video {ann.video_id})"
            if ann.id in seen:
                raise VISFormatError(f"annotations: duplicate annotation id {ann.id}")
            seen.add(ann.id)
            if ann.video_id not in self.videos:
                raise VISFormatError(f"{where}: 'video_id' {ann.video_id} is not in 'videos'")
            if ann.category_id not in self.categories:
                raise VISFormatError(f"{where}: 'category_id' {ann.category_id} is not in 'categories'")
            length = self.videos[ann.video_id].length
            if len(ann.segmentations) != length:
                raise VISFormatError(
                    f"{where}: 'segmentations' has {len(ann.segmentations)} entries, "
                    f"but the video has {length} frames"
                )
            self._by_video[ann.video_id].append(ann)
        self.image_root: Optional[Path] = Path(image_root) if image_root is not None else None
        self.info = info or {}
        self._rle_cache: Dict[Tuple[int, int], Optional[dict]] = {}

    # ---------------------------------------------------------------- reading
    @classmethod
    def from_json(cls, source: Union[PathLike, Mapping[str, Any]], image_root: Optional[PathLike] = None) -> "VISDataset":
        """Read and validate an annotation file (a path, or the already parsed json dict).

        Raises:
            VISFormatError: the file is not valid json or an entry is malformed; the message
                names the key and the video / annotation.
            FileNotFoundError: the path does not exist.
        """
        if isinstance(source, Mapping):
            data = source
            name = "annotations"
        else:
            name = os.fspath(source)
            data = read_json(name, VISFormatError)
        if not isinstance(data, Mapping):
            raise VISFormatError(f"{name}: the top level must be a json object, got {type(data).__name__}")
        for key in ("videos", "categories"):
            if key not in data:
                raise VISFormatError(f"{name}: missing top-level key '{key}'")
            if not isinstance(data[key], list):
                raise VISFormatError(f"{name}: '{key}' must be a list")
        raw_annotations = data.get("annotations")
        if raw_annotations is None:  # the OVIS / YouTube-VIS test files have "annotations": null
            raw_annotations = []
        if not isinstance(raw_annotations, list):
            raise VISFormatError(f"{name}: 'annotations' must be a list (or null)")

        videos = [cls._parse_video(v, i) for i, v in enumerate(data["videos"])]
        categories = [cls._parse_category(c, i) for i, c in enumerate(data["categories"])]
        sizes = {v.id: v for v in videos}
        annotations = [cls._parse_annotation(a, i, sizes) for i, a in enumerate(raw_annotations)]
        info = data.get("info") if isinstance(data.get("info"), dict) else None
        return cls(videos, annotations, categories, image_root=image_root, info=info)

    @staticmethod
    def _parse_video(entry: Any, index: int) -> VISVideo:
        where = f"videos[{index}]"
        if not isinstance(entry, Mapping):
            raise VISFormatError(f"{where}: must be an object")
        vid = _require_int(entry, "id", where)
        where = f"video id {vid}"
        width = _require_int(entry, "width", where, positive=True)
        height = _require_int(entry, "height", where, positive=True)
        file_names = entry.get("file_names")
        if file_names is not None:
            if not isinstance(file_names, list) or not all(isinstance(f, str) for f in file_names):
                raise VISFormatError(f"{where}: 'file_names' must be a list of strings")
        length = entry.get("length")
        if length is not None:
            if not _is_int(length) or length < 0:
                raise VISFormatError(f"{where}: 'length' must be a non-negative integer, got {length!r}")
            if file_names is not None and len(file_names) != length:
                raise VISFormatError(
                    f"{where}: 'length' is {length} but 'file_names' has {len(file_names)} entries"
                )
        elif file_names is None:
            raise VISFormatError(f"{where}: needs 'file_names' or 'length' (the number of frames)")
        else:
            length = len(file_names)
        return VISVideo(vid, width, height, int(length), tuple(file_names or ()))

    @staticmethod
    def _parse_category(entry: Any, index: int) -> VISCategory:
        where = f"categories[{index}]"
        if not isinstance(entry, Mapping):
            raise VISFormatError(f"{where}: must be an object")
        cid = _require_int(entry, "id", where)
        name = entry.get("name", str(cid))
        if not isinstance(name, str):
            raise VISFormatError(f"category id {cid}: 'name' must be a string")
        supercategory = entry.get("supercategory") or ""
        return VISCategory(cid, name, str(supercategory))

    @staticmethod
    def _parse_annotation(entry: Any, index: int, videos: Mapping[int, VISVideo]) -> VISAnnotation:
        where = f"annotations[{index}]"
        if not isinstance(entry, Mapping):
            raise VISFormatError(f"{where}: must be an object")
        aid = _require_int(entry, "id", where)
        where = f"annotation id {aid}"
        vid = _require_int(entry, "video_id", where)
        where = f"annotation id {aid} (video {vid})"
        if vid not in videos:
            raise VISFormatError(f"{where}: 'video_id' {vid} is not in 'videos'")
        video = videos[vid]
        cid = _require_int(entry, "category_id", where)
        segmentations = _require(entry, "segmentations", where)
        if not isinstance(segmentations, list):
            raise VISFormatError(f"{where}: 'segmentations' must be a list with one entry per frame")
        if len(segmentations) != video.length:
            raise VISFormatError(
                f"{where}: 'segmentations' has {len(segmentations)} entries, "
                f"but the video has {video.length} frames"
            )
        for t, seg in enumerate(segmentations):
            check_segmentation(seg, video.height, video.width, f"{where}, 'segmentations' frame {t}")
        iscrowd = entry.get("iscrowd", 0)
        if iscrowd is None:
            iscrowd = 0
        if not (_is_int(iscrowd) or isinstance(iscrowd, bool)) or int(iscrowd) not in (0, 1):
            raise VISFormatError(f"{where}: 'iscrowd' must be 0 or 1, got {iscrowd!r}")

        bboxes = _check_per_frame_list(entry, "bboxes", video.length, where)
        if bboxes is not None:
            for t, box in enumerate(bboxes):
                if box is not None and (
                    not isinstance(box, list) or len(box) != 4 or not all(_is_number(v) for v in box)
                ):
                    raise VISFormatError(f"{where}, 'bboxes' frame {t}: must be [x, y, w, h] or null, got {box!r}")
        areas = _check_per_frame_list(entry, "areas", video.length, where)
        if areas is not None:
            for t, area in enumerate(areas):
                if area is not None and not _is_number(area):
                    raise VISFormatError(f"{where}, 'areas' frame {t}: must be a number or null, got {area!r}")
        occlusion = _check_per_frame_list(entry, "occlusion", video.length, where)
        if occlusion is not None:
            for t, label in enumerate(occlusion):
                if label is not None and label not in OCCLUSION_LABELS:
                    raise VISFormatError(
                        f"{where}, 'occlusion' frame {t}: unknown label {label!r} "
                        f"(expected one of {sorted(OCCLUSION_LABELS)} or null)"
                    )
        return VISAnnotation(
            id=aid,
            video_id=vid,
            category_id=cid,
            segmentations=list(segmentations),
            iscrowd=bool(int(iscrowd)),
            bboxes=bboxes,
            areas=areas,
            occlusion=occlusion,
        )

    # ---------------------------------------------------------------- lookup
    def __len__(self) -> int:
        return len(self.videos)

    @property
    def video_ids(self) -> List[int]:
        """Video ids in file order."""
        return list(self.videos)

    @property
    def category_ids(self) -> List[int]:
        """Category ids in file order."""
        return list(self.categories)

    @property
    def has_occlusion_labels(self) -> bool:
        """True when the file has annotations and every one carries per-frame ``occlusion``."""
        return bool(self.annotations) and all(a.occlusion is not None for a in self.annotations)

    def video_annotations(self, video_id: int) -> List[VISAnnotation]:
        """The ground-truth tracks of one video, in file order."""
        self._check_video(video_id)
        return list(self._by_video[video_id])

    def _check_video(self, video_id: int) -> VISVideo:
        try:
            return self.videos[video_id]
        except KeyError:
            raise KeyError(f"unknown video id {video_id}") from None

    def frame_path(self, video_id: int, frame_index: int) -> Path:
        """The path of one frame: ``image_root / file_names[frame_index]``."""
        video = self._check_video(video_id)
        if self.image_root is None:
            raise ValueError("no image root given: pass image_root= to read frames")
        if not video.file_names:
            raise ValueError(f"video {video_id} has no 'file_names'")
        if not 0 <= frame_index < video.length:
            raise IndexError(f"frame {frame_index} out of range for video {video_id} ({video.length} frames)")
        return self.image_root / video.file_names[frame_index]

    def frame_paths(self, video_id: int) -> List[Path]:
        """The paths of all frames of one video, in order."""
        return [self.frame_path(video_id, t) for t in range(self._check_video(video_id).length)]

    def read_frame(self, video_id: int, frame_index: int) -> np.ndarray:
        """Load one frame as an ``(H, W, 3)`` uint8 RGB array, decoded as inference decodes
        frames (:func:`cmasktrack.data.frames.read_image`: like ``cv2.imread``, EXIF orientation
        applied, 16-bit images reduced to their high byte)."""
        from .frames import read_image

        path = self.frame_path(video_id, frame_index)
        if not path.is_file():
            raise FileNotFoundError(f"frame {frame_index} of video {video_id} not found: {path}")
        return read_image(path)

    # ---------------------------------------------------------------- masks
    def rle(self, annotation: VISAnnotation, frame_index: int) -> Optional[dict]:
        """Compressed RLE of one frame of a ground-truth track (``None`` where absent)."""
        key = (annotation.id, frame_index)
        if key not in self._rle_cache:
            video = self.videos[annotation.video_id]
            self._rle_cache[key] = segmentation_to_rle(
                annotation.segmentations[frame_index], video.height, video.width
            )
        return self._rle_cache[key]

    def rles(self, annotation: VISAnnotation) -> List[Optional[dict]]:
        """Compressed RLE of every frame of a ground-truth track."""
        return [self.rle(annotation, t) for t in range(len(annotation.segmentations))]

    def mask(self, annotation: VISAnnotation, frame_index: int) -> Optional[np.ndarray]:
        """Binary ``(H, W)`` uint8 mask of one frame of a track (``None`` where absent)."""
        rle = self.rle(annotation, frame_index)
        return None if rle is None else mask_utils.decode(rle)

    def box(self, annotation: VISAnnotation, frame_index: int) -> Optional[List[float]]:
        """``[x, y, w, h]`` of a track in one frame: the file's ``bboxes`` entry, else the mask's box."""
        if is_absent(annotation.segmentations[frame_index]):
            return None
        if annotation.bboxes is not None and annotation.bboxes[frame_index] is not None:
            return [float(v) for v in annotation.bboxes[frame_index]]
        return [float(v) for v in mask_utils.toBbox(self.rle(annotation, frame_index))]

    def average_area(self, annotation: VISAnnotation) -> float:
        """The official ``avg_area``: mean of the non-null, non-zero ``areas`` as written.

        When the file has no ``areas`` the mask areas are used instead (the official code
        needs the field). Returns 0 when no frame has a non-zero area.
        """
        if annotation.areas is not None:
            values = [a for a in annotation.areas if a]
        else:
            values = [
                int(mask_utils.area(r)) for r in self.rles(annotation) if r is not None
            ]
            values = [a for a in values if a]
        return float(np.array(values).mean()) if values else 0.0
