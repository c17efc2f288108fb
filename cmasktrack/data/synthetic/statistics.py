"""Occlusion statistics of an OVIS-format dataset, computed as OVIS computes them, and a
Markdown table that sets them beside the published OVIS numbers."""

from __future__ import annotations

import os
from typing import Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np

from ...evaluation.occlusion import OCCLUSION_RANGES, occlusion_group, official_occlusion_score
from ...model_config import read_json
from ..ytvis import OCCLUSION_LABELS

__all__ = ["OVIS_REFERENCE", "occlusion_statistics", "format_statistics"]

PathLike = Union[str, os.PathLike]

#: Published OVIS numbers that ``format_statistics`` prints next to ours. Sources:
#: videos/instances/per-video/per-frame counts: the OVIS project page (songbai.site/ovis);
#: mBOR: the OVIS paper (Qi et al., arXiv:2102.01558, dataset comparison table; YouTube-VIS
#: 0.06). The mBOR value was quoted from the paper by the author of this module and could not be
#: re-checked against a stored copy of the table.
OVIS_REFERENCE: Dict[str, float] = {
    "videos": 901,
    "instances": 5223,
    "objects_per_video": 5.80,
    "visible_objects_per_frame": 4.72,
    "mBOR": 0.22,
}



def _runs(flags: Sequence[bool]) -> List[Tuple[int, int]]:
    """(start, end) of the maximal runs of False strictly between two True values."""
    present = [i for i, f in enumerate(flags) if f]
    if not present:
        return []
    runs = []
    start = None
    for i in range(present[0], present[-1] + 1):
        if not flags[i] and start is None:
            start = i
        elif flags[i] and start is not None:
            runs.append((start, i))
            start = None
    return runs


def occlusion_statistics(annotations: Union[PathLike, Mapping]) -> Dict[str, object]:
    """Occlusion statistics of an OVIS-format dataset (a path to its json, or the loaded dict).

    Computed as OVIS computes them, so they can be set beside the published numbers:

    * ``occlusion_level``: fraction of objects in the light [0, 0.25], medium (0.25, 0.5] and
      heavy (0.5, 1] groups of the per-object occlusion score used by the official OVIS evaluator
      (qjy981010/cocoapi, oviseval.py): per-frame levels scored no 0 / slight 0.25 / severe 0.75
      over the frames where the object is present, sorted, and the mean of the highest half
      (ceil(n/2)) taken (:func:`~cmasktrack.evaluation.official_occlusion_score`, grouped by
      :func:`~cmasktrack.evaluation.occlusion_group`). (The evaluator's own groups are closed intervals [0, .25], [.25, .5],
      [.5, 1], so objects exactly on 0.25 or 0.5 count in two AP groups;
      ``evaluator_groups`` gives those overlapping fractions.) ``occlusion_level_mean`` bins the
      plain mean over present frames the same way.
    * ``mBOR``: mean over frames (with at least one object) of the bounding-box occlusion rate of
      the OVIS paper, |pixels in ≥ 2 boxes| / |pixels in ≥ 1 box|.
    * ``frame_levels``: distribution of per-frame labels over present object-frames.
    * objects per video, visible objects per frame, disappear→reappear events (a run of absent
      frames between two present ones; split by the ``visibility`` key when the file has it),
      frames in which some object is fully hidden (needs ``visibility``), and same-category pairs
      whose boxes overlap in some frame.

    Published OVIS numbers (``OVIS_REFERENCE``): 901 videos, 5,223 instances, 5.80 instances per
    video, 4.72 objects per frame (songbai.site/ovis); mBOR 0.22 vs 0.06 for YouTube-VIS
    (arXiv:2102.01558). The light/medium/heavy split of OVIS objects is not published in a
    source we could check; use the AP_so/AP_mo/AP_ho of a model instead.

    ``generate(out, 50, 0)`` with the defaults measures (OVIS in brackets): 6.08 objects per
    video (5.80), 4.84 visible objects per frame (4.72), mBOR 0.245 (0.22); objects light /
    medium / heavy 40.5 % / 16.1 % / 43.4 %; 102 disappear→reappear events, all by occlusion,
    in 32.9 % of the objects; a fully hidden object in 62.9 % of the frames.
    """
    data = annotations if isinstance(annotations, Mapping) else read_json(os.fspath(annotations))
    for key in ("videos", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"not an OVIS/YouTube-VIS annotation file: missing {key!r}")
    videos = {v["id"]: v for v in data["videos"]}
    by_video: Dict[int, List[dict]] = {vid: [] for vid in videos}
    for ann in data["annotations"]:
        if ann["video_id"] not in videos:
            raise ValueError(f"annotation {ann.get('id')} refers to unknown video "
                             f"{ann['video_id']}")
        by_video[ann["video_id"]].append(ann)

    def bins(scores: List[float]) -> Dict[str, float]:
        n = max(len(scores), 1)
        groups = [occlusion_group(s) for s in scores]
        return {name: groups.count(name) / n for name in OCCLUSION_RANGES}

    def evaluator_groups(scores: List[float]) -> Dict[str, float]:
        n = max(len(scores), 1)
        return {name: sum(low <= s <= high for s in scores) / n for name, (low, high) in OCCLUSION_RANGES.items()}

    top_half_scores: List[float] = []
    mean_scores: List[float] = []
    level_counts = {k: 0 for k in OCCLUSION_LABELS}
    reappear = {"total": 0, "hidden": 0, "outside": 0, "mixed": 0}
    gap_lengths: List[int] = []
    objects_with_reappearance = 0
    has_visibility = all("visibility" in a for a in data["annotations"])
    bors: List[float] = []
    visible_per_frame: List[int] = []
    frames_total = 0
    frames_hidden = 0
    same_cat_pairs = 0
    same_cat_frames = 0

    for vid, video in videos.items():
        anns = by_video[vid]
        height, width, length = int(video["height"]), int(video["width"]), int(video["length"])
        frames_total += length
        for ann in anns:
            levels = [o for o in ann.get("occlusion", []) if o is not None]
            for o in levels:
                if o not in OCCLUSION_LABELS:
                    raise ValueError(f"annotation {ann['id']}: unknown occlusion level {o!r}")
                level_counts[o] += 1
            if levels:
                s = sorted(OCCLUSION_LABELS[o] for o in levels)
                top_half_scores.append(official_occlusion_score(levels))
                mean_scores.append(sum(s) / len(s))
            present = [seg is not None for seg in ann["segmentations"]]
            runs = _runs(present)
            if runs:
                objects_with_reappearance += 1
            for a, b in runs:
                reappear["total"] += 1
                gap_lengths.append(b - a)
                if has_visibility:
                    reasons = set(ann["visibility"][a:b])
                    key = reasons.pop() if len(reasons) == 1 else "mixed"
                    reappear[key if key in ("hidden", "outside") else "mixed"] += 1
        for t in range(length):
            boxes = []
            cats = []
            for ann in anns:
                box = ann["bboxes"][t] if t < len(ann["bboxes"]) else None
                if box is not None:
                    boxes.append([int(round(x)) for x in box])
                    cats.append(ann["category_id"])
            visible_per_frame.append(len(boxes))
            if has_visibility and any(ann["visibility"][t] == "hidden" for ann in anns):
                frames_hidden += 1
            if not boxes:
                continue
            cover = np.zeros((height, width), dtype=np.int16)
            for x, y, w, h in boxes:
                cover[max(y, 0):y + h, max(x, 0):x + w] += 1
            union = int((cover >= 1).sum())
            bors.append(int((cover >= 2).sum()) / union if union else 0.0)
            overlap_here = False
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    if cats[i] != cats[j]:
                        continue
                    (xi, yi, wi, hi), (xj, yj, wj, hj) = boxes[i], boxes[j]
                    if min(xi + wi, xj + wj) > max(xi, xj) and min(yi + hi, yj + hj) > max(yi, yj):
                        overlap_here = True
            same_cat_frames += overlap_here
        # pairs of same-category objects whose boxes overlap in at least one frame
        for i in range(len(anns)):
            for j in range(i + 1, len(anns)):
                if anns[i]["category_id"] != anns[j]["category_id"]:
                    continue
                for bi, bj in zip(anns[i]["bboxes"], anns[j]["bboxes"]):
                    if bi is None or bj is None:
                        continue
                    if (min(bi[0] + bi[2], bj[0] + bj[2]) > max(bi[0], bj[0])
                            and min(bi[1] + bi[3], bj[1] + bj[3]) > max(bi[1], bj[1])):
                        same_cat_pairs += 1
                        break

    n_objects = len(data["annotations"])
    n_levels = max(sum(level_counts.values()), 1)
    stats: Dict[str, object] = {
        "videos": len(videos),
        "frames": frames_total,
        "objects": n_objects,
        "objects_per_video": n_objects / max(len(videos), 1),
        "visible_objects_per_frame": (float(np.mean(visible_per_frame))
                                      if visible_per_frame else 0.0),
        "occlusion_level": bins(top_half_scores),
        "occlusion_level_mean": bins(mean_scores),
        "evaluator_groups": evaluator_groups(top_half_scores),
        "mean_occlusion_score": float(np.mean(top_half_scores)) if top_half_scores else 0.0,
        "frame_levels": {k: v / n_levels for k, v in level_counts.items()},
        "mBOR": float(np.mean(bors)) if bors else 0.0,
        "reappear_events": reappear if has_visibility else {"total": reappear["total"]},
        "objects_with_reappearance": objects_with_reappearance / max(n_objects, 1),
        "mean_gap_frames": float(np.mean(gap_lengths)) if gap_lengths else 0.0,
        "frames_with_fully_hidden_object": (frames_hidden / max(frames_total, 1)
                                            if has_visibility else None),
        "same_category_overlapping_pairs": same_cat_pairs,
        "frames_with_same_category_overlap": same_cat_frames / max(frames_total, 1),
    }
    return stats


def format_statistics(stats: Mapping[str, object]) -> str:
    """Render ``occlusion_statistics`` output as a markdown table beside the OVIS reference."""
    def pct(x: object) -> str:
        return "n/a" if x is None else f"{100 * float(x):.1f}%"

    lv = stats["occlusion_level"]
    lm = stats["occlusion_level_mean"]
    fl = stats["frame_levels"]
    re = stats["reappear_events"]
    rows = [
        ("videos", f"{stats['videos']}", f"{OVIS_REFERENCE['videos']:.0f}"),
        ("objects (instances)", f"{stats['objects']}", f"{OVIS_REFERENCE['instances']:.0f}"),
        ("objects per video", f"{stats['objects_per_video']:.2f}",
         f"{OVIS_REFERENCE['objects_per_video']:.2f}"),
        ("visible objects per frame", f"{stats['visible_objects_per_frame']:.2f}",
         f"{OVIS_REFERENCE['visible_objects_per_frame']:.2f}"),
        ("mBOR", f"{stats['mBOR']:.3f}", f"{OVIS_REFERENCE['mBOR']:.2f} (YouTube-VIS 0.06)"),
        ("objects light / medium / heavy (evaluator score)",
         f"{pct(lv['light'])} / {pct(lv['medium'])} / {pct(lv['heavy'])}", "not published"),
        ("objects light / medium / heavy (plain mean)",
         f"{pct(lm['light'])} / {pct(lm['medium'])} / {pct(lm['heavy'])}", "—"),
        ("object-frames no / slight / severe",
         f"{pct(fl['no_occlusion'])} / {pct(fl['slight_occlusion'])} / "
         f"{pct(fl['severe_occlusion'])}",
         "—"),
        ("disappear→reappear events (all / by occlusion)",
         f"{re['total']} / {re.get('hidden', 'n/a')}", "—"),
        ("objects that disappear and reappear", pct(stats["objects_with_reappearance"]), "—"),
        ("frames with a fully hidden object", pct(stats["frames_with_fully_hidden_object"]), "—"),
        ("same-category pairs whose boxes overlap", f"{stats['same_category_overlapping_pairs']}",
         "—"),
    ]
    lines = ["| statistic | this dataset | OVIS |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)
