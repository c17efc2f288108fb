"""One-figure report of an evaluation (``cmasktrack eval --plot report.png``; extra ``plot``).

Panels, each drawn when its numbers are there: HOTA, DetA and AssA against the localisation
threshold alpha; AP per category; AP and IDF1 (and AssA) by occlusion level (light / medium /
heavy; official OVIS labels, else the derived scores, so titled).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from .occlusion import OCCLUSION_RANGES
from .vis_eval import VISEvalResult

__all__ = ["plot_evaluation"]

PathLike = Union[str, "os.PathLike[str]"]

_COLOURS = {"HOTA": "#d62728", "DetA": "#1f77b4", "AssA": "#2ca02c", "AP": "#1f77b4", "IDF1": "#d62728"}


def _import_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "the evaluation plot needs matplotlib: pip install 'cmasktrack[plot]' (or matplotlib)"
        ) from None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return matplotlib, Figure, FigureCanvasAgg


def _occlusion_values(
    vis_result: Optional[VISEvalResult], tracking: Optional[Mapping[str, Any]]
) -> Tuple[str, Dict[str, List[Optional[float]]]]:
    """(suffix, {metric: [light, medium, heavy] in percent or None}) of the breakdown to show."""
    levels = list(OCCLUSION_RANGES)
    for suffix, source in (("", "official"), ("_derived", "derived")):
        series: Dict[str, List[Optional[float]]] = {}
        ap = None
        if vis_result is not None:
            ap = vis_result.occlusion if suffix == "" else vis_result.derived_occlusion
        if ap is not None:
            series["AP"] = [ap[f"AP_{lv}{suffix}"] for lv in levels]
        if tracking is not None:
            for key in ("IDF1", "AssA"):
                if f"{key}_light{suffix}" in tracking:
                    series[key] = [tracking[f"{key}_{lv}{suffix}"] for lv in levels]
        if series:
            return source, {k: [None if v <= -1 else 100.0 * v for v in vals] for k, vals in series.items()}
    return "", {}


def plot_evaluation(
    path: PathLike,
    vis_result: Optional[VISEvalResult] = None,
    tracking: Optional[Mapping[str, Any]] = None,
    title: Optional[str] = None,
) -> str:
    """Draw the evaluation on one figure and save it (format from the extension: png, pdf, svg).

    Args:
        path: output file.
        vis_result: what :func:`~cmasktrack.evaluation.evaluate_vis` returned (AP panels), or None.
        tracking: what :func:`~cmasktrack.evaluation.evaluate_tracking` returned (HOTA curve,
            IDF1 / AssA by occlusion level), or None.
        title: figure title.

    Returns:
        The path written.

    Raises:
        ImportError: matplotlib is not installed (extra ``cmasktrack[plot]``).
        ValueError: there is nothing to draw.
    """
    _, Figure, FigureCanvasAgg = _import_matplotlib()
    panels = []
    if tracking is not None and "per_alpha" in tracking:
        panels.append("alpha")
    if vis_result is not None and vis_result.per_category_ap:
        panels.append("category")
    occlusion_source, occlusion = _occlusion_values(vis_result, tracking)
    if occlusion:
        panels.append("occlusion")
    if not panels:
        raise ValueError("nothing to plot: give AP results (vis_result) and/or HOTA results (tracking)")

    num_categories = len(vis_result.per_category_ap) if "category" in panels else 0
    height = max(4.8, 0.26 * num_categories + 1.6)
    widths = {"alpha": 1.0, "category": 1.0, "occlusion": 0.9}
    fig = Figure(figsize=(5.6 * len(panels), height), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), width_ratios=[widths[p] for p in panels], squeeze=False)[0]

    for ax, panel in zip(axes, panels):
        if panel == "alpha":
            per_alpha = tracking["per_alpha"]
            alphas = per_alpha["alpha"]
            for key in ("HOTA", "DetA", "AssA"):
                values = [100.0 * v for v in per_alpha[key]]
                mean = sum(values) / len(values)
                ax.plot(alphas, values, "-o", markersize=3.5, color=_COLOURS[key], label=f"{key} (mean {mean:.1f})")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 100)
            ax.set_xlabel("localisation threshold α (mask IoU)")
            ax.set_ylabel("%")
            ax.set_title("HOTA, DetA, AssA against α (class-averaged)")
            ax.grid(alpha=0.3)
            ax.legend(loc="best")
        elif panel == "category":
            items = list(vis_result.per_category_ap.items())
            names = [vis_result.category_names.get(c, str(c)) for c, _ in items]
            values = [100.0 * ap if ap > -1 else 0.0 for _, ap in items]
            ypos = list(range(len(items)))[::-1]
            ax.barh(ypos, values, color=_COLOURS["AP"], height=0.7)
            for y, (_, ap), v in zip(ypos, items, values):
                ax.text(v + 1, y, f"{100.0 * ap:.1f}" if ap > -1 else "no GT", va="center", fontsize=8)
            ax.set_yticks(ypos, names, fontsize=9)
            ax.set_xlim(0, 110)
            ax.set_xlabel("AP % (IoU 0.50:0.95)")
            ax.set_title(f"AP per category (overall AP {100.0 * vis_result.stats['AP']:.1f})")
            ax.grid(axis="x", alpha=0.3)
        else:
            levels = list(OCCLUSION_RANGES)
            keys = list(occlusion)
            width = 0.8 / len(keys)
            for k, key in enumerate(keys):
                xs = [i + (k - (len(keys) - 1) / 2) * width for i in range(len(levels))]
                values = occlusion[key]
                ax.bar(xs, [v or 0.0 for v in values], width=width * 0.95, label=key,
                       color=_COLOURS.get(key, "#2ca02c"))
                for x, v in zip(xs, values):
                    ax.text(x, (v or 0.0) + 1, "n/a" if v is None else f"{v:.1f}", ha="center", fontsize=8)
            ax.set_xticks(range(len(levels)), [f"{lv}\n[{lo:g}, {hi:g}]" for lv, (lo, hi) in OCCLUSION_RANGES.items()])
            ax.set_ylim(0, 110)
            ax.set_ylabel("%")
            label = "OVIS occlusion labels" if occlusion_source == "official" else "DERIVED from box overlaps"
            ax.set_title(f"By occlusion level ({label})")
            ax.grid(axis="y", alpha=0.3)
            ax.legend(loc="upper right")
    if title:
        fig.suptitle(title)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(path)
    return path
