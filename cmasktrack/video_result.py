"""What ``track_video`` returns: per-frame detections linked into tracks, and the benchmark json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from .categories import category_name
from .data.ytvis import decode_rle, encode_mask

__all__ = ["FrameResult", "Track", "VideoResult", "encode_mask", "decode_rle", "majority_label", "mean_score"]


@dataclass
class FrameResult:
    """Tracked detections of one frame (only those that got a track id).

    ``index`` is the frame's position in the tracked video (0, 1, ...); ``boxes`` (N, 4)
    float32 in original pixels, inclusive corners (x1, y1, x2, y2); ``scores`` (N,) float32;
    ``labels`` (N,) 1-based category ids; ``track_ids`` (N,); ``masks`` N COCO RLEs (``counts``
    as str). ``timestamp`` (seconds from the source's start) and ``source_index`` (the frame's
    position in the source before sampling) are filled by :meth:`CMaskTrack.track_stream
    <cmasktrack.model.CMaskTrack.track_stream>` where the source has them, else None.
    """

    index: int
    name: str
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    track_ids: np.ndarray
    masks: List[Dict[str, Any]]
    timestamp: Optional[float] = None
    source_index: Optional[int] = None

    def __len__(self) -> int:
        return len(self.track_ids)

    def to_json(self, category_names: Sequence[str] = ()) -> Dict[str, Any]:
        """This frame as one JSON-able record (a line of ``cmasktrack track --out x.jsonl``)::

            {"frame": 12, "source_frame": 72, "name": "000072", "timestamp": 2.4,
             "tracks": [{"id": 3, "category_id": 5, "category": "ring", "score": 0.98,
                         "box": [x1, y1, x2, y2], "segmentation": {"size": [h, w], "counts": "..."}}]}

        ``frame`` is the index in the tracked video (the position in the results json's
        ``segmentations``), ``source_frame`` the position in the source (differs when sampled),
        ``timestamp`` seconds from the source's start (None when unknown); ``category_id`` is
        1-based, ``box`` inclusive corners in pixels, ``segmentation`` a COCO RLE.
        """
        tracks = []
        for i, tid in enumerate(np.asarray(self.track_ids).tolist()):
            label = int(self.labels[i])
            tracks.append({
                "id": int(tid),
                "category_id": label,
                "category": category_name(category_names, label),
                "score": float(self.scores[i]),
                "box": [float(v) for v in np.asarray(self.boxes[i], dtype=np.float64)[:4]],
                "segmentation": self.masks[i],
            })
        return {
            "frame": int(self.index),
            "source_frame": int(self.source_index if self.source_index is not None else self.index),
            "name": self.name,
            "timestamp": None if self.timestamp is None else float(self.timestamp),
            "tracks": tracks,
        }


@dataclass
class Track:
    """One object through the video.

    ``frames`` maps frame index -> (box, score, label, rle) for the frames where it was found.
    ``score`` is the mean of the per-frame scores and ``category_id`` the most frequent per-frame
    label (ties to the smaller id), as the official results writer computes them.
    """

    track_id: int
    category_id: int
    category_name: str
    score: float
    frames: Dict[int, Tuple[np.ndarray, float, int, Dict[str, Any]]] = field(default_factory=dict)

    @property
    def frame_indices(self) -> List[int]:
        """Frames where the track is present, ascending."""
        return sorted(self.frames)

    def box(self, frame: int) -> Optional[np.ndarray]:
        """(x1, y1, x2, y2) of one frame in original pixels, or None where absent."""
        return self.frames[frame][0] if frame in self.frames else None

    def rle(self, frame: int) -> Optional[Dict[str, Any]]:
        """COCO RLE of one frame, or None where absent."""
        return self.frames[frame][3] if frame in self.frames else None

    def mask(self, frame: int) -> Optional[np.ndarray]:
        """Dense bool (H, W) mask of one frame, or None where the track is absent."""
        rle = self.rle(frame)
        return None if rle is None else decode_rle(rle)


def majority_label(labels: Sequence[int]) -> int:
    """Most frequent label, ties to the smallest (``np.bincount(...).argmax()``)."""
    return int(np.bincount(np.asarray(labels, dtype=np.int64)).argmax())


def mean_score(scores: Sequence[float]) -> float:
    """Mean of float32 per-frame scores computed as numpy does on a float32 array."""
    return float(np.asarray(scores, dtype=np.float32).mean())


class VideoResult:
    """Tracks of one video, built from its per-frame results.

    ``tracks`` are in order of first appearance; ``frames`` the per-frame results.
    """

    def __init__(self, frames: List[FrameResult], height: int, width: int,
                 category_names: Sequence[str] = ()):
        self.frames = frames
        self.height = height
        self.width = width
        self.category_names = list(category_names)
        self.tracks = self._build_tracks()

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[Track]:
        return iter(self.tracks)

    @property
    def num_frames(self) -> int:
        """Number of frames of the video."""
        return len(self.frames)

    def _build_tracks(self) -> List[Track]:
        order: List[int] = []
        per: Dict[int, Dict[int, Tuple[np.ndarray, float, int, Dict[str, Any]]]] = {}
        for fr in self.frames:
            for i, tid in enumerate(fr.track_ids.tolist()):
                if tid not in per:
                    per[tid] = {}
                    order.append(tid)
                per[tid][fr.index] = (fr.boxes[i], float(fr.scores[i]), int(fr.labels[i]), fr.masks[i])
        tracks = []
        for tid in order:
            frames = per[tid]
            idx = sorted(frames)
            cat = majority_label([frames[f][2] for f in idx])
            tracks.append(Track(tid, cat, category_name(self.category_names, cat), mean_score([frames[f][1] for f in idx]), frames))
        return tracks

    def masks(self, frame: int) -> Dict[int, np.ndarray]:
        """Dense masks of one frame: track id -> bool (H, W)."""
        fr = self.frames[frame]
        return {int(t): decode_rle(r) for t, r in zip(fr.track_ids, fr.masks)}

    def to_ytvis(self, video_id: int = 1, official_extras: bool = True) -> List[Dict[str, Any]]:
        """The OVIS / YouTube-VIS results entries of this video: one per track, with
        ``segmentations`` a per-frame RLE or None where the track is absent.

        With ``official_extras`` (default) each entry also has the two per-frame lists the
        official results writer adds (evaluators ignore them): ``detections``, the box
        ``[x1, y1, x2, y2]`` in original pixels, and ``cats``, the frame's label **0-based**
        (``cats[t] == category_id - 1`` when the frame's label is the track's; the official
        writer's convention, kept so that files compare with its output), both None where
        absent. ``category_id`` itself is 1-based, as in the annotations.
        """
        out = []
        for t in self.tracks:
            present = [f in t.frames for f in range(self.num_frames)]
            entry = {"video_id": int(video_id), "score": t.score, "category_id": t.category_id,
                     "segmentations": [t.frames[f][3] if p else None for f, p in enumerate(present)]}
            if official_extras:
                entry["detections"] = [np.asarray(t.frames[f][0], dtype=np.float32)[:4].tolist() if p else None
                                       for f, p in enumerate(present)]
                entry["cats"] = [int(t.frames[f][2]) - 1 if p else None for f, p in enumerate(present)]
            out.append(entry)
        return out

    def render(self, frames: Any, path: Any, **kw: Any) -> Any:
        """Draw this result on its frames and write a GIF / MP4 / PNG folder (see
        :func:`cmasktrack.visualize.render_video`); returns the path written."""
        from .visualize import render_video

        return render_video(self, frames, path, **kw)

    def __repr__(self) -> str:
        return f"VideoResult(frames={self.num_frames}, tracks={len(self.tracks)}, size={self.width}x{self.height})"
