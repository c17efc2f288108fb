"""Tracking a whole benchmark: run a model over every video of an OVIS / YouTube-VIS json and
write the results file (and the zip) the evaluation server takes, resumable after an interruption."""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Dict, List, Optional, Sequence

from ..data.ytvis import VISDataset
from .options import TrackOptions

__all__ = ["track_dataset"]


def _partial_dir(out_path: str) -> str:
    return out_path + ".partial"


def track_dataset(
    model: Any,
    dataset: VISDataset,
    out_path: str,
    *,
    video_ids: Optional[Sequence[int]] = None,
    resume: bool = True,
    write_zip: bool = True,
    progress: bool = True,
    options: Optional[TrackOptions] = None,
    **option_kwargs: Any,
) -> List[Dict[str, Any]]:
    """Track every video of ``dataset`` (frames under its image root) and write ``out_path``.

    Each finished video is stored at once in ``<out_path>.partial/<video_id>.json``; with
    ``resume`` a rerun skips those videos, so an interrupted run picks up where it stopped. At
    the end the entries of all videos (in dataset order) are written to ``out_path`` and, with
    ``write_zip``, to a zip next to it holding ``results.json`` (what the servers expect).
    ``options`` (a :class:`TrackOptions`, or its fields as keyword arguments: ``num_refs``,
    ``causal``, ...) say how each video is tracked. Returns the results entries.
    """
    options = TrackOptions.build(options, **option_kwargs)
    ids = list(dataset.video_ids if video_ids is None else video_ids)
    unknown = [v for v in ids if v not in dataset.videos]
    if unknown:
        raise ValueError(f"video ids not in the annotation file: {unknown[:10]}")
    part = _partial_dir(out_path)
    os.makedirs(part, exist_ok=True)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ids), desc="videos", unit="video")
    entries: List[Dict[str, Any]] = []
    try:
        for vid in ids:
            cache = os.path.join(part, f"{vid}.json")
            if resume and os.path.isfile(cache):
                with open(cache) as f:
                    video_entries = json.load(f)
            else:
                video = dataset.videos[vid]
                paths = dataset.frame_paths(vid)
                missing = [p for p in paths if not os.path.isfile(p)]
                if missing:
                    raise FileNotFoundError(
                        f"video {vid}: {len(missing)} of {len(paths)} frames missing under the image root, "
                        f"first: {missing[0]}"
                    )
                result = model.track_video(paths, options, progress=False)
                if (result.height, result.width) != (video.height, video.width):
                    raise ValueError(
                        f"video {vid}: frames are {result.width}x{result.height} but the annotation file says "
                        f"{video.width}x{video.height}"
                    )
                video_entries = result.to_ytvis(video_id=vid)
                tmp = cache + ".tmp"
                with open(tmp, "w") as f:
                    json.dump(video_entries, f)
                os.replace(tmp, cache)
            entries.extend(video_entries)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(entries, f)
    if write_zip:
        zpath = os.path.splitext(out_path)[0] + ".zip"
        with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.write(out_path, arcname="results.json")
    return entries
