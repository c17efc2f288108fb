"""Writing a synthetic dataset: :func:`generate` plans, renders and saves every video, the
OVIS-format annotations and the scene description."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from .render import NO_OCCLUSION_MAX, SLIGHT_OCCLUSION_MAX, _FrameObject, _render_frame
from .scenes import CATEGORIES, RING_INNER, SQUARE_HALF, STAR_INNER, TRIANGLE_INRADIUS, _plan_video

__all__ = ["generate"]

IntRange = Union[int, Tuple[int, int]]
PathLike = Union[str, os.PathLike]



def _as_range(value: IntRange, name: str, minimum: int) -> Tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        lo = hi = int(value)
    else:
        try:
            lo, hi = (int(x) for x in value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an int or a (min, max) pair, got {value!r}") from None
    if lo < minimum or hi < lo:
        raise ValueError(f"{name} must satisfy {minimum} <= min <= max, got ({lo}, {hi})")
    return lo, hi


def generate(out_dir: PathLike, num_videos: int, seed: int, *,
             num_frames: IntRange = (12, 24), size: Tuple[int, int] = (320, 192),
             categories: Sequence[str] = CATEGORIES, objects_per_video: IntRange = (4, 8),
             noise_std: float = 2.0, overwrite: bool = False, progress: bool = False) -> Path:
    """Generate a synthetic occlusion dataset and return the path of its annotations.json.

    Args:
        out_dir: output directory; receives annotations.json, scenes.json and frames/.
        num_videos: number of videos (≥ 1).
        seed: non-negative integer seed; the output is a pure function of the arguments.
        num_frames: frames per video, an int or an inclusive (min, max) range (min ≥ 2).
        size: frame (width, height) in pixels, each ≥ 32.
        categories: subset of ``CATEGORIES`` (order defines the category ids, 1-based).
        objects_per_video: objects per video, int or inclusive (min, max) range (1…32). Objects
            that never become visible are dropped from the annotations, so a video may have fewer.
        noise_std: standard deviation of the per-pixel Gaussian sensor noise (0–255 scale).
        overwrite: replace an existing dataset in ``out_dir`` (its frames/ directory,
            annotations.json and scenes.json); without it an existing annotations.json is an error.
        progress: print one line per video to stderr.

    Returns:
        ``Path(out_dir) / "annotations.json"``.
    """
    if (isinstance(num_videos, bool) or not isinstance(num_videos, (int, np.integer))
            or num_videos < 1):
        raise ValueError(f"num_videos must be a positive int, got {num_videos!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    frames_lo, frames_hi = _as_range(num_frames, "num_frames", 2)
    objs_lo, objs_hi = _as_range(objects_per_video, "objects_per_video", 1)
    if objs_hi > 32:
        raise ValueError(f"objects_per_video must be at most 32, got {objs_hi}")
    try:
        width, height = (int(x) for x in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be a (width, height) pair, got {size!r}") from None
    if width < 32 or height < 32:
        raise ValueError(f"size must be at least 32x32, got {width}x{height}")
    categories = tuple(categories)
    unknown = [c for c in categories if c not in CATEGORIES]
    if not categories or unknown or len(set(categories)) != len(categories):
        raise ValueError(f"categories must be distinct names from {CATEGORIES}, got {categories!r}")
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")

    out = Path(out_dir)
    ann_path = out / "annotations.json"
    frames_root = out / "frames"
    if ann_path.exists() or frames_root.exists():
        if not overwrite:
            raise FileExistsError(f"{out} already holds a dataset (annotations.json or frames/); "
                                  "pass overwrite=True (--overwrite) to replace it")
        if frames_root.exists():
            shutil.rmtree(frames_root)
        for stale in (ann_path, out / "scenes.json"):
            if stale.exists():
                stale.unlink()
    frames_root.mkdir(parents=True, exist_ok=True)

    children = np.random.SeedSequence(int(seed)).spawn(int(num_videos))
    videos_json: List[dict] = []
    annotations: List[dict] = []
    scenes: List[dict] = []
    for k, child in enumerate(children):
        rng = np.random.default_rng(child)
        length = int(rng.integers(frames_lo, frames_hi + 1))
        n_obj = int(rng.integers(objs_lo, objs_hi + 1))
        name = f"synth_{k:05d}"
        video = _plan_video(rng, name, length, width, height, categories, n_obj)
        video_dir = frames_root / name
        video_dir.mkdir()
        per_object: List[List[_FrameObject]] = [[] for _ in video.objects]
        file_names = []
        for t in range(length):
            frame, objs = _render_frame(video, t, width, height, rng, noise_std)
            file_name = f"{name}/{t:05d}.png"
            Image.fromarray(frame).save(frames_root / file_name, format="PNG", compress_level=1)
            file_names.append(file_name)
            for i, fo in enumerate(objs):
                per_object[i].append(fo)
        video_id = k + 1
        videos_json.append({"id": video_id, "name": name, "width": width, "height": height,
                            "length": length, "file_names": file_names})
        for obj, frames in zip(video.objects, per_object):
            if all(fo.visible is None for fo in frames):
                continue
            obj.annotation_id = len(annotations) + 1
            segmentations, bboxes, areas, occlusion = [], [], [], []
            for fo in frames:
                if fo.visible is None:
                    segmentations.append(None)
                    bboxes.append(None)
                    areas.append(None)
                    occlusion.append(None)
                    continue
                rle = mask_utils.encode(fo.visible)
                segmentations.append({"size": [int(rle["size"][0]), int(rle["size"][1])],
                                      "counts": rle["counts"].decode("utf-8")})
                bboxes.append(fo.bbox)
                areas.append(fo.area)
                occlusion.append(fo.occlusion)
            annotations.append({
                "id": obj.annotation_id, "video_id": video_id, "category_id": obj.category_id,
                "iscrowd": 0, "height": height, "width": width, "length": 1,
                "segmentations": segmentations, "bboxes": bboxes, "areas": areas,
                "occlusion": occlusion, "visibility": [fo.visibility for fo in frames],
            })
        scenes.append({
            "video_id": video_id, "name": name, "background": video.background_kind,
            "objects": [{
                "annotation_id": o.annotation_id, "category_id": o.category_id,
                "category": o.category, "scenario": o.scenario, "depth": o.depth,
                "cx": o.cx.tolist(), "cy": o.cy.tolist(), "radius": o.radius.tolist(),
                "angle": o.angle.tolist(),
            } for o in video.objects],
        })
        if progress:
            print(f"[synthetic] {name}: {length} frames, {len(video.objects)} objects",
                  file=sys.stderr)

    dataset = {
        "info": {"description": "cmasktrack synthetic occlusion benchmark",
                 "version": "1.0", "seed": int(seed), "num_videos": int(num_videos),
                 "num_frames": [frames_lo, frames_hi], "size": [width, height],
                 "objects_per_video": [objs_lo, objs_hi], "noise_std": float(noise_std),
                 "occlusion_thresholds": {"no_occlusion": NO_OCCLUSION_MAX,
                                          "slight_occlusion": SLIGHT_OCCLUSION_MAX}},
        "licenses": [],
        "videos": videos_json,
        "categories": [{"id": i + 1, "name": c, "supercategory": "shape"}
                       for i, c in enumerate(categories)],
        "annotations": annotations,
    }
    with open(ann_path, "w", encoding="utf-8") as f:
        json.dump(dataset, f)
    with open(out / "scenes.json", "w", encoding="utf-8") as f:
        json.dump({"geometry": {"square_half": SQUARE_HALF, "triangle_inradius": TRIANGLE_INRADIUS,
                                "star_inner": STAR_INNER, "ring_inner": RING_INNER},
                   "videos": scenes}, f)
    return ann_path
