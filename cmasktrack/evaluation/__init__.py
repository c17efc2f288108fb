"""Benchmark evaluation: the official YouTube-VIS / OVIS AP / AR, per-category AP and occlusion
breakdowns; TrackEval's HOTA / CLEAR / Identity metrics and identity metrics per occlusion level."""

from .occlusion import (
    OCCLUSION_RANGES,
    box_coverage,
    derived_occlusion_scores,
    occlusion_group,
    occlusion_score_sets,
    occlusion_subsets,
    official_occlusion_score,
    official_occlusion_scores,
)
from .plot import plot_evaluation
from .table import format_results_table
from .tracking_metrics import TRACKING_KEYS, TRACKING_METRICS, evaluate_tracking
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
    "TRACKING_KEYS",
    "TRACKING_METRICS",
    "VISEvalResult",
    "VideoCOCOeval",
    "box_coverage",
    "derived_occlusion_scores",
    "evaluate_tracking",
    "evaluate_vis",
    "format_results_table",
    "occlusion_group",
    "occlusion_score_sets",
    "occlusion_subsets",
    "official_occlusion_score",
    "official_occlusion_scores",
    "plot_evaluation",
    "prediction_average_area",
    "video_iou_matrix",
]
