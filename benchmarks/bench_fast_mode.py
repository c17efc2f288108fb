"""Fast mode for long videos (issue 12, section 4): what fewer references, causal references,
``share_heads`` and frame striding gain in speed and cost in accuracy, next to the official
setting (5 references before and 5 after every frame, box and mask heads once per reference).

Part 1, accuracy (deterministic): the demo model (``cmasktrack.DEMO_MODEL``) on the held-out
synthetic test set of ``bench_train_synthetic.py`` (20 videos, seed 1000, generator defaults:
the set BENCHMARKS.md's training section and the demo model are evaluated on; generated into
``--out`` the first time by the same function, reused after), every video through
``CMaskTrack.track_video``, scored with ``cmasktrack.evaluation.evaluate_vis``: AP, AP50, AP75
and the occlusion breakdown (AP light / medium / heavy). The s/frame of this part is the whole
set's wall time over its frames (decoding included).

A frame ``stride`` k tracks every k-th frame (``read_frames(..., stride=k)`` /
``cmasktrack track --stride k``) and each skipped frame takes the masks of the last tracked
frame before it (what a user needing every frame would do), so AP is measured on every frame
of the ground truth like the other settings.

Part 2, speed: a random-weight official model (ResNet-50-FPN, 25 OVIS classes) on generated
640x360 frames (``bench_inference.py``'s), score threshold 0 (up to 100 detections reach the
tracker): per setting, the steady-state s/frame = median time of the ``push`` calls that
complete a frame with its full reference window (so the first frames' shorter windows do not
flatter the official setting).

    python benchmarks/bench_fast_mode.py --out work/bench_fast_mode            # both parts
    python benchmarks/bench_fast_mode.py --out work/bench_fast_mode --part accuracy
    python benchmarks/bench_fast_mode.py --out work/bench_fast_mode --part speed --timed-frames 3
    python benchmarks/bench_fast_mode.py --out /tmp/fm --tiny                  # smoke run

``results.json`` in ``--out`` gets every figure (each part updates its own entry).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

#: (name, tracking options) of every setting, the official one first.
SETTINGS = [
    ("official (5+5 refs)", dict(num_refs=5)),
    ("num_refs=2 (2+2)", dict(num_refs=2)),
    ("num_refs=1 (1+1)", dict(num_refs=1)),
    ("causal (5 past refs)", dict(num_refs=5, causal=True)),
    ("share_heads (5+5 refs)", dict(num_refs=5, share_heads=True)),
    ("share_heads, num_refs=2", dict(num_refs=2, share_heads=True)),
    ("share_heads, causal 5", dict(num_refs=5, causal=True, share_heads=True)),
    ("num_refs=0 (no calibration)", dict(num_refs=0)),
    ("stride 2 (official refs)", dict(num_refs=5, stride=2)),
    ("stride 5 (official refs)", dict(num_refs=5, stride=5)),
]


def track_options(opts: Dict[str, Any]) -> Dict[str, Any]:
    """The tracking options of a setting (its ``stride`` is the frame sampling, not one)."""
    return {k: v for k, v in opts.items() if k != "stride"}


def hold_over_skipped(entries: List[Dict[str, Any]], stride: int, num_frames: int) -> List[Dict[str, Any]]:
    """Results entries of the frames ``0, stride, 2*stride, ...`` spread over all ``num_frames``
    frames: frame ``i`` takes what the tracked frame ``(i // stride) * stride`` has."""
    out = []
    for e in entries:
        full = dict(e)
        for key in ("segmentations", "detections", "cats"):
            if key in e:
                full[key] = [e[key][i // stride] for i in range(num_frames)]
        out.append(full)
    return out


def machine() -> Dict[str, Any]:
    from cmasktrack.selftest import environment, format_environment

    env = environment()
    print(format_environment(env), flush=True)
    return {"cpu": env["cpu"], "torch": env["torch"], "gpus": [g["name"] for g in env["gpus"]]}


# ------------------------------------------------------------------------------------------ part 1


def calibration_effect(model, paths: List[str]) -> List[Dict[str, float]]:
    """Per head level P2-P5, what the calibration does to a frame (the middle one of ``paths``)
    with its neighbours as references: mean |calibrated - plain| / mean |plain|, the median
    |offset| in pixels, and the fraction of deformable-conv samples that land inside the map
    (a sample one pixel or more outside reads zero). A model whose calibration is inert here
    cannot show an accuracy cost of fewer references."""
    import numpy as np
    from PIL import Image

    from cmasktrack.transforms import preprocess_frame

    cfg = model.config
    t = len(paths) // 2
    xs = [preprocess_frame(np.asarray(Image.open(p).convert("RGB")), cfg.image_scale, cfg.pixel_mean,
                           cfg.pixel_std, cfg.size_divisor)[0] for p in paths[t - 1: t + 2]]
    rows = []
    with torch.no_grad():
        feats = [model.extract_features(x[None]) for x in xs]
        calibrated = model.head_features(feats[1], [feats[0], feats[2]])
        for lvl, (plain, cal) in enumerate(zip(model.head_levels(feats[1]), calibrated)):
            off = model.calibration.offsets(plain, model.head_levels(feats[0])[lvl])
            h, w = plain.shape[-2:]
            dy, dx = off[:, 0::2], off[:, 1::2]
            ky = (torch.arange(9) // 3 - 1).view(1, 9, 1, 1)
            kx = (torch.arange(9) % 3 - 1).view(1, 9, 1, 1)
            py = torch.arange(h).view(1, 1, h, 1) + ky + dy
            px = torch.arange(w).view(1, 1, 1, w) + kx + dx
            inside = ((py > -1) & (py < h) & (px > -1) & (px < w)).float().mean()
            rows.append({"level": f"P{lvl + 2}", "relative_change": float((cal - plain).abs().mean() / plain.abs().mean()),
                         "median_abs_offset_px": float(off.abs().median()), "samples_inside": float(inside)})
    return rows


def accuracy(out: Path, names: List[str], tiny: bool) -> List[Dict[str, Any]]:
    import cmasktrack
    from bench_train_synthetic import held_out_split, make_split
    from cmasktrack import CMaskTrack
    from cmasktrack.data.frames import read_frames
    from cmasktrack.data.results import load_results
    from cmasktrack.data.ytvis import VISDataset
    from cmasktrack.evaluation import evaluate_vis

    data = make_split(out, "smoke", 2, 1000, num_frames=6) if tiny else held_out_split(out)
    gt = VISDataset.from_json(data / "annotations.json", image_root=data / "frames")
    model = CMaskTrack.from_pretrained(cmasktrack.DEMO_MODEL, device="cpu")
    frames = {vid: [str(p) for p in gt.frame_paths(vid)] for vid in gt.video_ids}
    n_frames = sum(len(v) for v in frames.values())
    print(f"accuracy: demo model on {data.name} ({len(frames)} videos, {n_frames} frames)", flush=True)
    model.track_video(next(iter(frames.values()))[:3], num_refs=1, progress=False)  # warm-up
    effect = calibration_effect(model, next(iter(frames.values())))
    print("  the demo model's calibration on one frame: " + "; ".join(
        f"{e['level']} changes the features by {100 * e['relative_change']:.1f}% (median |offset| "
        f"{e['median_abs_offset_px']:.3g} px, {100 * e['samples_inside']:.0f}% of samples inside)" for e in effect),
        flush=True)
    rows: List[Dict[str, Any]] = [{"setting": "calibration effect", "levels": effect}]
    for name, opts in SETTINGS:
        if name not in names:
            continue
        stride = opts.get("stride", 1)
        preds = []
        t0 = time.perf_counter()
        for vid, paths in frames.items():
            entries = model.track_video(read_frames(paths, stride=stride), progress=False,
                                        **track_options(opts)).to_ytvis(video_id=vid)
            preds.extend(hold_over_skipped(entries, stride, len(paths)) if stride > 1 else entries)
        seconds = time.perf_counter() - t0
        m = evaluate_vis(gt, load_results(preds, gt)).to_dict()
        row = {"setting": name, "options": opts, "s_per_frame": seconds / n_frames, "tracks": len(preds),
               **{k: m[k] for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AP_light", "AP_medium", "AP_heavy")
                  if k in m}}
        rows.append(row)
        print(f"  {name:<28} AP {100 * row['AP']:5.1f}  AP50 {100 * row['AP50']:5.1f}  AP_heavy "
              f"{100 * row.get('AP_heavy', float('nan')):5.1f}  {row['s_per_frame']:.3f} s/frame", flush=True)
    return rows


# ------------------------------------------------------------------------------------------ part 2


def steady_state(model, frames, opts: Dict[str, Any]) -> Dict[str, Any]:
    """Median seconds of the pushes that complete a frame with its full reference window."""
    k = opts.get("num_refs", 5)
    causal = opts.get("causal", False)
    tracker = model.new_tracker(**opts)
    times = []
    with torch.no_grad():
        for i, f in enumerate(frames):
            t0 = time.perf_counter()
            ready = tracker.push(f)
            dt = time.perf_counter() - t0
            if any(r.index >= k and (causal or r.index + k <= i) for r in ready):
                times.append(dt)
        tracker.finish()
    return {"s_per_frame": statistics.median(times) if times else float("nan"), "timed_frames": len(times)}


def speed(names: List[str], tiny: bool, timed: int) -> List[Dict[str, Any]]:
    from bench_inference import make_frames
    from cmasktrack.model import CMaskTrack
    from cmasktrack.model_config import ovis_config

    w, h = (160, 96) if tiny else (640, 360)
    torch.manual_seed(0)
    model = CMaskTrack(ovis_config(score_threshold=0.0, image_scale=(max(w, h), min(w, h)))).eval()
    print(f"speed: random-weight R50-FPN on {w}x{h} frames, score threshold 0, {timed} timed frame(s) per "
          f"setting", flush=True)
    rows = []
    for name, opts in SETTINGS:
        if name not in names:
            continue
        if "stride" in opts:  # a stride skips frames: s per input frame = the setting's / stride
            rows.append({"setting": name, "options": opts, "derived": True})
            continue
        k = opts["num_refs"]
        n = (k if opts.get("causal") else 2 * k) + timed
        t0 = time.perf_counter()
        row = {"setting": name, "options": opts, **steady_state(model, make_frames(n, h=h, w=w), opts)}
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        print(f"  {name:<28} {row['s_per_frame']:7.3f} s/frame ({row['timed_frames']} timed, "
              f"{row['wall_s']:.0f} s)", flush=True)
    for r in rows:
        if r.get("derived"):
            same = next((q for q in rows if q["options"] == track_options(r["options"]) and "s_per_frame" in q), None)
            if same is not None:
                r["s_per_frame"] = same["s_per_frame"] / r["options"]["stride"]
    base = next((r for r in rows if r["setting"] == SETTINGS[0][0] and "s_per_frame" in r), None)
    for r in rows:
        if base and "s_per_frame" in r:
            r["vs_official"] = r["s_per_frame"] / base["s_per_frame"]
    return rows


# ------------------------------------------------------------------------------------------


def markdown(report: Dict[str, Any]) -> str:
    acc = {r["setting"]: r for r in report.get("accuracy", [])}
    spd = {r["setting"]: r for r in report.get("speed", [])}
    lines = ["| setting | R50 640×360 s/frame | vs official | demo s/frame | AP | AP50 | AP light / medium / heavy |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, _ in SETTINGS:
        a, s = acc.get(name, {}), spd.get(name, {})
        if not a and not s:
            continue
        skipped = a.get("skipped") or s.get("skipped")
        if "AP" not in a and "s_per_frame" not in s and skipped:
            lines.append(f"| {name} | {skipped} | | | | | |")
            continue
        sp = f"{s['s_per_frame']:.2f}" if "s_per_frame" in s else "-"
        ratio = f"{s['vs_official']:.2f}×" if "vs_official" in s else "-"
        ds = f"{a['s_per_frame']:.3f}" if "s_per_frame" in a else "-"
        ap = f"{100 * a['AP']:.1f}" if "AP" in a else "-"
        ap50 = f"{100 * a['AP50']:.1f}" if "AP50" in a else "-"
        occ = " / ".join(f"{100 * a[k]:.1f}" for k in ("AP_light", "AP_medium", "AP_heavy") if k in a) or "-"
        lines.append(f"| {name} | {sp} | {ratio} | {ds} | {ap} | {ap50} | {occ} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="work/bench_fast_mode", help="work directory (data, results.json)")
    ap.add_argument("--part", choices=("both", "accuracy", "speed"), default="both")
    ap.add_argument("--settings", default=None,
                    help="comma list of setting numbers (1-based, in the order of SETTINGS; default: all)")
    ap.add_argument("--timed-frames", type=int, default=2, help="timed full-window frames per speed setting")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--tiny", action="store_true",
                    help="smoke run: a 2-video, 6-frame synthetic set (not the held-out set) and 160x96 frames")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n, _ in SETTINGS]
    if args.settings:
        names = [names[int(i) - 1] for i in args.settings.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    report["machine"] = machine()
    report["tiny"] = args.tiny
    if args.part in ("both", "accuracy"):
        report["accuracy"] = accuracy(out, names, args.tiny)
        path.write_text(json.dumps(report, indent=2))
    if args.part in ("both", "speed"):
        report["speed"] = speed(names, args.tiny, args.timed_frames)
        path.write_text(json.dumps(report, indent=2))
    print()
    print(markdown(report))
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
