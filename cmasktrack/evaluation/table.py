"""A readable text table of a :class:`~cmasktrack.evaluation.vis_eval.VISEvalResult` and of the
tracking metrics (:func:`~cmasktrack.evaluation.tracking_metrics.evaluate_tracking`)."""

from __future__ import annotations

from typing import Any, List, Mapping, Optional

from .occlusion import OCCLUSION_RANGES
from .tracking_metrics import COUNT_KEYS, OCCLUSION_IDENTITY_KEYS
from .vis_eval import VISEvalResult

__all__ = ["format_results_table"]

_SUMMARY_ROWS = (
    ("AP", "Average Precision", "0.50:0.95", "all", 100),
    ("AP50", "Average Precision", "0.50", "all", 100),
    ("AP75", "Average Precision", "0.75", "all", 100),
    ("APs", "Average Precision", "0.50:0.95", "small", 100),
    ("APm", "Average Precision", "0.50:0.95", "medium", 100),
    ("APl", "Average Precision", "0.50:0.95", "large", 100),
    ("AR1", "Average Recall", "0.50:0.95", "all", 1),
    ("AR10", "Average Recall", "0.50:0.95", "all", 10),
    ("AR100", "Average Recall", "0.50:0.95", "all", 100),
    ("ARs", "Average Recall", "0.50:0.95", "small", 100),
    ("ARm", "Average Recall", "0.50:0.95", "medium", 100),
    ("ARl", "Average Recall", "0.50:0.95", "large", 100),
)


def _pct(value: float) -> str:
    """A fraction as a percentage with one decimal; -1 (no ground truth) as "-"."""
    return "     -" if value <= -1 else f"{100.0 * value:6.1f}"


def _count(value: Any) -> str:
    return f"{int(value):6d}"


#: The identity block of the table: (key, description, formatter).
_IDENTITY_ROWS = (
    ("HOTA", "Higher Order Tracking Accuracy (mean over alpha)", _pct),
    ("AssA", "Association Accuracy (mean over alpha)", _pct),
    ("IDF1", "ID F1 (IoU 0.5, one global assignment per video)", _pct),
    ("IDSW", "ID switches (CLEAR, IoU 0.5; a count)", _count),
    ("MOTA", "Multi-Object Tracking Accuracy (CLEAR)", _pct),
)


def format_results_table(
    result: Optional[VISEvalResult],
    per_category: bool = True,
    tracking: Optional[Mapping[str, Any]] = None,
) -> str:
    """The evaluation as a text table, numbers in percent ("-" where there is no ground truth).

    Order: the AP block, the identity block (HOTA, AssA, IDF1, IDSW, MOTA), the occlusion blocks
    (AP / AR and IDF1 / AssA / IDSW per level), the per-category AP.

    Args:
        result: what :func:`~cmasktrack.evaluation.vis_eval.evaluate_vis` returned, or None.
        per_category: append the per-category AP.
        tracking: what :func:`~cmasktrack.evaluation.tracking_metrics.evaluate_tracking`
            returned, or None.
    """
    lines: List[str] = []
    if result is not None:
        lines += [
            f"Video instance segmentation: {result.num_videos} videos, "
            f"{result.num_predictions} predictions"
            + (f" ({result.num_ignored_predictions} of unknown categories ignored)" if result.num_ignored_predictions else ""),
            "",
            f"{'metric':<8} {'':<18} {'IoU':<10} {'area':<7} {'maxDets':>7} {'%':>6}",
        ]
        for key, title, iou, area, max_dets in _SUMMARY_ROWS:
            lines.append(f"{key:<8} {title:<18} {iou:<10} {area:<7} {max_dets:>7} {_pct(result.stats[key])}")

    if tracking is not None:
        rows = [(key, title, fmt) for key, title, fmt in _IDENTITY_ROWS if key in tracking]
        if rows:
            if lines:
                lines.append("")
            lines.append(
                f"Identity (TrackEval definitions, mask IoU, averaged over {len(tracking['per_class'])} categories)"
            )
            for key, title, fmt in rows:
                lines.append(f"{key:<8} {title:<52} {fmt(tracking[key])}")

    levels = list(OCCLUSION_RANGES)
    for heading, suffix in (
        ("Occlusion (official OVIS labels; AP/AR: IoU 0.50:0.95, all areas, 100 dets)", ""),
        (
            "Occlusion, DERIVED from box overlaps (not the official OVIS labels; "
            "AP/AR: IoU 0.50:0.95, all areas, 100 dets)",
            "_derived",
        ),
    ):
        ap_values = None
        if result is not None:
            ap_values = result.derived_occlusion if suffix else result.occlusion
        rows: List[str] = []
        if ap_values is not None:
            for metric in ("AP", "AR"):
                cells = " ".join(f"{_pct(ap_values[f'{metric}_{level}{suffix}']):>7}" for level in levels)
                rows.append(f"{metric + suffix:<13} {cells}")
        if tracking is not None:
            for metric in OCCLUSION_IDENTITY_KEYS:
                fmt = _count if metric in COUNT_KEYS else _pct
                if f"{metric}_{levels[0]}{suffix}" in tracking:
                    cells = " ".join(f"{fmt(tracking[f'{metric}_{level}{suffix}']):>7}" for level in levels)
                    rows.append(f"{metric + suffix:<13} {cells}")
        if rows:
            if lines:
                lines.append("")
            lines += [heading, f"{'':<13} " + " ".join(f"{level:>7}" for level in levels)] + rows

    if result is not None and per_category and result.per_category_ap:
        width = max(8, max(len(result.category_names.get(c, str(c))) for c in result.per_category_ap))
        lines += ["", "Per-category AP (IoU 0.50:0.95, all areas, 100 dets)", f"{'id':>4}  {'category':<{width}} {'AP %':>6}"]
        for cat, ap in result.per_category_ap.items():
            lines.append(f"{cat:>4}  {result.category_names.get(cat, str(cat)):<{width}} {_pct(ap)}")
    return "\n".join(lines)
