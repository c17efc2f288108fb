"""Inference speed and memory on the CPU (issue 3's benchmark; not a test).

In one run, on the same 640x360 frames:
  (a) cmasktrack with num_refs=0 (the MaskTrack R-CNN path),
  (b) cmasktrack in the official setting (5 references before and 5 after),
  torchvision's maskrcnn_resnet50_fpn (no weights, same size limits, 26 classes, score
  threshold 0 so 100 detections reach the mask head) as the reference,
and prints per-frame times and their ratios, FLOPs per frame (torch.utils.flop_counter, plus
the correlation and deformable conv it does not count: the model's FLOPs, counted with
torchvision's deformable conv whatever implementation the timed runs use), achieved GFLOP/s
against torch.mm's fp32 peak measured in the same run, a time breakdown by stage, and the peak memory (RSS) of a
20-frame and a 200-frame clip at lower resolution, each in its own process.

Random weights are used: timings do not depend on them, except that the number of detections
does — the heads are made to keep 100 detections per frame (score threshold 0), as in the
torchvision reference, so the mask head always runs on a full frame's worth.

    python benchmarks/bench_inference.py [--frames 13] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def mm_peak_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def make_frames(n: int, h: int = 360, w: int = 640, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    frames = []
    for t in range(n):
        f = np.roll(base, 4 * t, axis=1).copy()
        f[100:220, 50 + 10 * t: 200 + 10 * t] = (220, 40, 40)
        frames.append(f)
    return frames


def build_model(num_refs: int):
    from cmasktrack.model_config import ovis_config
    from cmasktrack.model import CMaskTrack

    torch.manual_seed(0)
    return CMaskTrack(ovis_config(num_refs=num_refs, score_threshold=0.0)).eval()


def count_flops(model, frames, num_refs) -> float:
    """FLOPs per frame actually executed on ``frames`` (a second, counted pass of the same run):
    the ops torch.utils.flop_counter sees, plus the correlation and the deformable conv it does
    not count (analytic, per reference actually used)."""
    from torch.utils.flop_counter import FlopCounterMode

    from cmasktrack.tracking import reference_indices

    counter = FlopCounterMode(display=False)
    # count the model's FLOPs, not an implementation's: torchvision's deformable conv, which
    # the counter does not see (added analytically below); the timed runs use the default
    impl = model.calibration.deform_impl if model.calibration is not None else None
    if impl is not None:
        model.calibration.deform_impl = "torchvision"
    try:
        with counter:
            _, _, tracker = time_cmasktrack(model, frames, num_refs)
    finally:
        if impl is not None:
            model.calibration.deform_impl = impl
    flops = float(counter.get_total_flops())
    cfg = model.config
    if model.calibration is not None and num_refs:
        feats = model.extract_features(torch.zeros(1, 3, *_pad_shape(cfg, frames[0])))
        c = cfg.fpn_channels
        hw = sum(f.shape[-1] * f.shape[-2] for f in feats[:4])
        per_ref = 2 * c * cfg.corr_patch_size ** 2 * hw + 2 * c * c * 9 * hw
        n_refs = sum(len(reference_indices(t, len(frames), num_refs, False) or [t]) for t in range(len(frames)))
        flops += n_refs * per_ref
    return flops / len(frames)


def _pad_shape(cfg, frame):
    from cmasktrack.transforms import compute_scale

    _, w, h = compute_scale(frame.shape[0], frame.shape[1], cfg.image_scale)
    d = cfg.size_divisor
    return (-(-h // d) * d, -(-w // d) * d)


def time_cmasktrack(model, frames, num_refs):
    tracker = model.new_tracker(num_refs=num_refs)
    t0 = time.perf_counter()
    for f in frames:
        tracker.push(f)
    tracker.finish()
    total = time.perf_counter() - t0
    return total / len(frames), dict(tracker.timings), tracker


def time_torchvision(frames):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    m = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=26, min_size=360, max_size=640,
                              box_score_thresh=0.0).eval()
    xs = [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames]
    with torch.no_grad():
        m([xs[0]])
        t0 = time.perf_counter()
        for x in xs:
            out = m([x])
        per = (time.perf_counter() - t0) / len(xs)
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            m([xs[0]])
    return per, float(counter.get_total_flops()), len(out[0]["boxes"])


MEMORY_CHILD = r"""
import resource, sys, numpy as np, torch
sys.path.insert(0, sys.argv[1])
from cmasktrack.model_config import CMaskTrackConfig
from cmasktrack.model import CMaskTrack
n = int(sys.argv[2])
torch.manual_seed(0)
m = CMaskTrack(CMaskTrackConfig(image_scale=(320, 192), score_threshold=0.0, num_refs=2, rpn_post_nms_top_n=300,
                                rpn_max_num=300, detections_per_img=10)).eval()
rng = np.random.default_rng(0)
base = rng.integers(0, 255, (192, 320, 3), dtype=np.uint8)
frames = (np.roll(base, 3 * t, axis=1) for t in range(n))
res = m.track_video(frames, progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, res.num_frames)
"""


def peak_rss_mb(n_frames: int) -> float:
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, ROOT, str(n_frames)], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=13, help="frames of the timed clip (>= 11 for full windows)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="skip the 200-frame memory run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import cmasktrack.ops as ops

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, correlation extension: "
          f"{ops.has_extension()}")
    if not args.quick:
        # First, before this process's own thread pool is busy: its idle OpenMP threads would
        # compete with the child processes.
        m20, m200 = peak_rss_mb(20), peak_rss_mb(200)
        print(f"peak RSS 320x192 (2+2 refs, 300 proposals, 10 detections/frame): 20 frames {m20:.0f} MB, "
              f"200 frames {m200:.0f} MB (ratio {m200 / m20:.3f})")
    peak = mm_peak_gflops()
    print(f"torch.mm fp32 peak: {peak:.1f} GFLOP/s")
    frames = make_frames(args.frames)

    tv_time, tv_flops, tv_dets = time_torchvision(frames[:3])
    print(f"torchvision maskrcnn_resnet50_fpn: {tv_time:.2f} s/frame, {tv_flops / 1e9:.0f} GFLOP/frame, "
          f"{tv_dets} detections, {tv_flops / tv_time / 1e9:.1f} GFLOP/s")

    rows = {}
    for name, refs, n in (("(a) num_refs=0", 0, min(args.frames, 5)), ("(b) official, 5+5 refs", 5, args.frames)):
        model = build_model(refs)
        with torch.no_grad():
            per, timings, tracker = time_cmasktrack(model, frames[:n], refs)
            flops = count_flops(model, frames[:n], refs)
        dets = sum(len(r) for r in tracker.results) / len(tracker.results)
        rows[name] = (per, flops)
        print(f"{name}: {per:.2f} s/frame ({per / tv_time:.2f}x torchvision), {flops / 1e9:.0f} GFLOP/frame "
              f"(mean), {flops / per / 1e9:.1f} GFLOP/s = {flops / per / 1e9 / peak:.0%} of mm peak, "
              f"{dets:.0f} tracked detections/frame")
        total = sum(timings.values())
        print("    breakdown: " + ", ".join(f"{k} {v / len(frames[:n]):.2f}s ({v / total:.0%})"
                                          for k, v in sorted(timings.items(), key=lambda kv: -kv[1])))
    print(json.dumps({k: {"s_per_frame": v[0], "gflop": v[1] / 1e9} for k, v in rows.items()}))


if __name__ == "__main__":
    main()
