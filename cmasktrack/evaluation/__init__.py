"""Benchmark evaluation: the official YouTube-VIS / OVIS AP / AR, per-category AP and occlusion breakdowns."""

from .occlusion import (
    OCCLUSION_RANGES,
    box_coverage,
    derived_occlusion_scores,
    occlusion_group,
    official_occlusion_score,
)
from .table import format_results_table
from .video_iou import video_iou_matrix
from .vis_eval import (
    AREA_RANGES,
    SUMMARY_KEYS,
    VideoCOCOeval,
    VISEvalResult,
    evaluate_vis,
    prediction_average_area,
)

__all__ = [
    "AREA_RANGES",
    "OCCLUSION_RANGES",
    "SUMMARY_KEYS",
    "VISEvalResult",
    "VideoCOCOeval",
    "box_coverage",
    "derived_occlusion_scores",
    "evaluate_vis",
    "format_results_table",
    "occlusion_group",
    "official_occlusion_score",
    "prediction_average_area",
    "video_iou_matrix",
]
