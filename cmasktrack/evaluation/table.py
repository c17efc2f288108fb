"""A readable text table of a :class:`~cmasktrack.evaluation.vis_eval.VISEvalResult`."""

from __future__ import annotations

from typing import List

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


def format_results_table(result: VISEvalResult, per_category: bool = True) -> str:
    """The evaluation as a text table, numbers in percent ("-" where there is no ground truth).

    Args:
        result: what :func:`~cmasktrack.evaluation.vis_eval.evaluate_vis` returned.
        per_category: append the per-category AP.
    """
    lines: List[str] = [
        f"Video instance segmentation: {result.num_videos} videos, "
        f"{result.num_predictions} predictions"
        + (f" ({result.num_ignored_predictions} of unknown categories ignored)" if result.num_ignored_predictions else ""),
        "",
        f"{'metric':<8} {'':<18} {'IoU':<10} {'area':<7} {'maxDets':>7} {'%':>6}",
    ]
    for key, title, iou, area, max_dets in _SUMMARY_ROWS:
        lines.append(f"{key:<8} {title:<18} {iou:<10} {area:<7} {max_dets:>7} {_pct(result.stats[key])}")

    for heading, values, suffix in (
        ("Occlusion (official OVIS labels; IoU 0.50:0.95, all areas, 100 dets)", result.occlusion, ""),
        (
            "Occlusion, DERIVED from box overlaps (not the official OVIS labels; "
            "IoU 0.50:0.95, all areas, 100 dets)",
            result.derived_occlusion,
            "_derived",
        ),
    ):
        if values is None:
            continue
        lines += ["", heading, f"{'':<11} {'light':>7} {'medium':>7} {'heavy':>7}"]
        for metric in ("AP", "AR"):
            cells = " ".join(f"{_pct(values[f'{metric}_{level}{suffix}']):>7}" for level in ("light", "medium", "heavy"))
            lines.append(f"{metric + suffix:<11} {cells}")

    if per_category and result.per_category_ap:
        width = max(8, max(len(result.category_names.get(c, str(c))) for c in result.per_category_ap))
        lines += ["", "Per-category AP (IoU 0.50:0.95, all areas, 100 dets)", f"{'id':>4}  {'category':<{width}} {'AP %':>6}"]
        for cat, ap in result.per_category_ap.items():
            lines.append(f"{cat:>4}  {result.category_names.get(cat, str(cat)):<{width}} {_pct(ap)}")
    return "\n".join(lines)
