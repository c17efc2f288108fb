"""Datasets, frame readers and the benchmark json formats (OVIS / YouTube-VIS).

Names are imported on first use (the frame reader needs torch; the json readers do not).
"""

from typing import Any

_LAZY = {
    **{n: "cmasktrack.data.frames" for n in ("Frame", "FrameError", "FrameSource", "read_frames", "read_image")},
    **{n: "cmasktrack.data.results" for n in ("ResultsFormatError", "VISPrediction", "load_results")},
    **{n: "cmasktrack.data.ytvis" for n in ("VISAnnotation", "VISCategory", "VISDataset", "VISFormatError",
                                              "VISVideo")},
}
__all__ = list(_LAZY)
_DEPRECATED = {n: "cmasktrack.data.results" for n in ("results_to_json", "save_results")}


def __getattr__(name: str) -> Any:
    if name in _LAZY or name in _DEPRECATED:
        import importlib

        value = getattr(importlib.import_module(_LAZY.get(name) or _DEPRECATED[name]), name)
        if name in _LAZY:
            globals()[name] = value
        return value
    raise AttributeError(f"module 'cmasktrack.data' has no attribute {name!r}")
