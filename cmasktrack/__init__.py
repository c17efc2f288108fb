"""cmasktrack: CMaskTrack R-CNN video instance segmentation under occlusion, in modern PyTorch.

>>> from cmasktrack import CMaskTrack, VISDataset, evaluate_vis, render_video, track_dataset  # doctest: +SKIP
>>> model = CMaskTrack.from_pretrained("path/or/hub-id")                # doctest: +SKIP
>>> result = model.track_video("frames/")                               # doctest: +SKIP
>>> result.to_ytvis(video_id=1)                                         # doctest: +SKIP
>>> gt = VISDataset.from_json("annotations.json", image_root="frames/") # doctest: +SKIP
>>> evaluate_vis(gt, track_dataset(model, gt, "results.json"))          # doctest: +SKIP

Training is :mod:`cmasktrack.train` (``from cmasktrack.train import TrainConfig, train``).

Heavy modules (torch) are imported on first use, so ``cmasktrack eval`` starts quickly.
"""

from typing import Any

__version__ = "0.1.0.dev0"

import os as _os

#: The demo model shipped inside the package (trained on the synthetic occlusion benchmark).
DEMO_MODEL = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "assets", "demo_model")

_LAZY = {
    "CMaskTrack": ("cmasktrack.model", "CMaskTrack"),
    "CMaskTrackConfig": ("cmasktrack.model_config", "CMaskTrackConfig"),
    "VideoResult": ("cmasktrack.video_result", "VideoResult"),
    "Track": ("cmasktrack.video_result", "Track"),
    "FrameResult": ("cmasktrack.video_result", "FrameResult"),
    "VideoTracker": ("cmasktrack.tracking", "VideoTracker"),
    "TrackOptions": ("cmasktrack.tracking", "TrackOptions"),
    "TrackStream": ("cmasktrack.tracking", "TrackStream"),
    "read_frames": ("cmasktrack.data.frames", "read_frames"),
    "evaluate_vis": ("cmasktrack.evaluation", "evaluate_vis"),
    "evaluate_tracking": ("cmasktrack.evaluation", "evaluate_tracking"),
    "VISDataset": ("cmasktrack.data.ytvis", "VISDataset"),
    "load_results": ("cmasktrack.data.results", "load_results"),
    "track_dataset": ("cmasktrack.tracking", "track_dataset"),
    "render_video": ("cmasktrack.visualize", "render_video"),
    "render_frame": ("cmasktrack.visualize", "render_frame"),
}

__all__ = ["__version__", "DEMO_MODEL", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cmasktrack' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
