"""How much of the frame decoding and preprocessing the background prefetching hides (issue 12,
section 2): ``TrackOptions.prefetch`` (default 2: frames decoded and preprocessed that many
frames ahead in a background thread) against ``prefetch=0`` (decode, preprocess and the
network one after the other), in one run.

Input: a folder of JPEG frames (quality 90) at ``--size`` (default 1280x720, OVIS's usual
frame size), a textured scene with moving shapes, written into ``--out`` once. Models: the
demo model (``cmasktrack.DEMO_MODEL``, ResNet-18-FPN at 320x192: decoding is a large share of
its time) and a random-weight official ResNet-50-FPN (640x360 input, score threshold 0), each
with ``num_refs=0`` (the per-frame network: where the decoding matters most) and, for the demo
model, the official 5 + 5 references. Every setting runs ``--repeats`` times, the prefetch
variants interleaved; the median wall time per frame is reported, with the decode and
preprocess time per frame (``tracker.timings``: in the background thread when prefetching),
the time the network waited for frames (``prefetch_wait``) and

    hidden = (s/frame without prefetching - s/frame with it) / (decode + preprocess s/frame)

the fraction of the decode + preprocess time the prefetching took off the wall time (1 = all of
it; on a CPU the thread competes with the network's threads for the cores).

    python benchmarks/bench_prefetch.py --out work/bench_prefetch [--frames 24] [--repeats 3]
    python benchmarks/bench_prefetch.py --out /tmp/bp --tiny          # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def write_frames(folder: Path, n: int, size: Tuple[int, int], seed: int = 0) -> List[Path]:
    """``n`` JPEG frames of ``size`` (w, h): a smooth textured background and moving discs."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{t:05d}.jpg" for t in range(n)]
    if all(p.is_file() for p in paths):
        return paths
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([128 + 60 * np.sin(xx / (17 + 9 * c) + yy / (23 + 5 * c)) for c in range(3)], axis=-1)
    base += rng.normal(0, 12, base.shape)
    centres = rng.uniform((0, 0), (w, h), size=(6, 2))
    speeds = rng.uniform(-0.01, 0.01, size=(6, 2)) * (w, h)
    colours = rng.integers(0, 255, size=(6, 3))
    radius = min(w, h) / 10
    for t, p in enumerate(paths):
        img = base.copy()
        for c, v, col in zip(centres, speeds, colours):
            cx, cy = c + t * v
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < radius ** 2] = col
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p, quality=90)
    return paths


def run_once(model, folder: Path, opts: Dict[str, Any], prefetch: int) -> Dict[str, float]:
    from cmasktrack.data.frames import read_frames
    from cmasktrack.tracking import run_tracker

    tracker = model.new_tracker(prefetch=prefetch, **opts)
    t0 = time.perf_counter()
    with torch.no_grad():
        result = run_tracker(tracker, read_frames(folder), progress=False)
    wall = time.perf_counter() - t0
    n = result.num_frames
    t = tracker.timings
    return {"s_per_frame": wall / n, "decode": t.get("decode", 0.0) / n, "preprocess": t.get("preprocess", 0.0) / n,
            "prefetch_wait": t.get("prefetch_wait", 0.0) / n, "frames": n,
            "tracks": sorted((tr.track_id, tr.category_id, len(tr.frames)) for tr in result.tracks)}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="work/bench_prefetch", help="work directory (frames, results.json)")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", default="1280x720", help="frame size WxH of the JPEG files")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prefetch", type=int, default=2, help="the prefetch depth measured against 0")
    ap.add_argument("--no-r50", action="store_true", help="skip the random-weight ResNet-50-FPN")
    ap.add_argument("--tiny", action="store_true", help="smoke run: 6 frames of 320x180, 1 repeat, demo model only")
    args = ap.parse_args(argv)
    if args.tiny:
        args.frames, args.size, args.repeats, args.no_r50 = 6, "320x180", 1, True

    import cmasktrack
    from cmasktrack import CMaskTrack
    from cmasktrack.model_config import ovis_config
    from cmasktrack.selftest import environment, format_environment

    env = environment()
    print(format_environment(env), flush=True)
    w, h = (int(v) for v in args.size.lower().split("x"))
    out = Path(args.out)
    folder = out / f"frames_{w}x{h}_{args.frames}"
    t0 = time.perf_counter()
    write_frames(folder, args.frames, (w, h))
    print(f"{args.frames} JPEG frames of {w}x{h} in {folder} ({time.perf_counter() - t0:.1f} s)", flush=True)

    demo = CMaskTrack.from_pretrained(cmasktrack.DEMO_MODEL, device="cpu")
    models = [("demo R18-FPN 320x192, num_refs=0", demo, {"num_refs": 0}),
              ("demo R18-FPN 320x192, official 5+5 refs", demo, {"num_refs": 5})]
    if not args.no_r50:
        torch.manual_seed(0)
        r50 = CMaskTrack(ovis_config(score_threshold=0.0, image_scale=(640, 360))).eval()
        models.append(("random R50-FPN 640x360, num_refs=0", r50, {"num_refs": 0}))

    rows = []
    for name, model, opts in models:
        run_once(model, folder, opts, args.prefetch)  # warm-up (allocator, file cache)
        runs: Dict[int, List[Dict[str, Any]]] = {0: [], args.prefetch: []}
        for _ in range(args.repeats):
            for depth in (0, args.prefetch):
                runs[depth].append(run_once(model, folder, opts, depth))
        assert runs[0][0]["tracks"] == runs[args.prefetch][0]["tracks"], "prefetching changed the result"
        med = {d: {k: statistics.median(r[k] for r in rs) for k in ("s_per_frame", "decode", "preprocess",
                                                                    "prefetch_wait")} for d, rs in runs.items()}
        load = med[0]["decode"] + med[0]["preprocess"]
        row = {"setting": name, "options": opts, "without": med[0], "with": med[args.prefetch],
               "speedup": med[0]["s_per_frame"] / med[args.prefetch]["s_per_frame"],
               "hidden": (med[0]["s_per_frame"] - med[args.prefetch]["s_per_frame"]) / load if load > 0 else float("nan")}
        rows.append(row)
        print(f"  {name:<40} prefetch 0: {1000 * med[0]['s_per_frame']:7.1f} ms/frame "
              f"(decode {1000 * med[0]['decode']:.1f} + preprocess {1000 * med[0]['preprocess']:.1f}); "
              f"prefetch {args.prefetch}: {1000 * med[args.prefetch]['s_per_frame']:7.1f} ms/frame "
              f"(waited {1000 * med[args.prefetch]['prefetch_wait']:.1f}); {row['speedup']:.2f}x, "
              f"hidden {100 * row['hidden']:.0f}% of the decode + preprocess time", flush=True)

    print()
    print(f"| setting | prefetch 0 ms/frame | of which decode + preprocess | prefetch {args.prefetch} ms/frame | "
          "network waited | speed-up | hidden |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        a, b = r["without"], r["with"]
        print(f"| {r['setting']} | {1000 * a['s_per_frame']:.1f} | {1000 * (a['decode'] + a['preprocess']):.1f} | "
              f"{1000 * b['s_per_frame']:.1f} | {1000 * b['prefetch_wait']:.1f} | {r['speedup']:.2f}× | "
              f"{100 * r['hidden']:.0f} % |")
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": {"cpu": env["cpu"], "torch": env["torch"], "threads": torch.get_num_threads()},
              "frames": args.frames, "size": [w, h], "repeats": args.repeats, "rows": rows}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    print(f"\nresults: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
