"""What each inference precision changes (issue 12, section 2): the demo model on the demo clip
(``examples/demo.py``'s synthetic clip: seed 7, 24 frames of 320x192), official setting (5 + 5
references), score threshold 0.05, run once per precision and compared with the fp32 run.

Per precision: detections matched to fp32's by (frame, track id, label); how many match, the
unmatched ones on either side (and the highest score among them: a detection near the score
threshold can appear or vanish), the largest score difference and the smallest mask IoU of the
matched ones, whether the tracks are equal (same ids, labels and frames), the clip's video AP
against its ground truth, and s/frame.

On the CPU: fp32, fp32 with a channels-last backbone, bf16 and fp16 (CPU autocast; tf32 is fp32
there). On CUDA: fp32 (TF32 off), tf32, bf16, fp16.

Second part (``--backbone-reps``, 0 = skip): torch.mm GFLOP/s in fp32 and bf16 (2048^3), and the
backbone + FPN alone — the demo model's ResNet-18-FPN (64 channels) at 320x192 and the official
ResNet-50-FPN at 640x384, random weights — in fp32 / bf16 / fp16, NCHW and channels-last (the
median of interleaved repetitions): what decides the ``channels_last`` default and whether bf16
pays on this CPU.

Third part (``--compile-frames N``, default 0 = skip): the demo model with ``compile=True``
(inductor) against eager on the clip's first N frames: the first video's time (compiling
included) and the s/frame of a second video once compiled.

    python benchmarks/bench_precision.py [--device cpu] [--json out.json]
    python benchmarks/bench_precision.py --runs fp32 --backbone-reps 0 --compile-frames 12
    python benchmarks/bench_precision.py --frames 4 --num-refs 1 --backbone-reps 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CPU_RUNS = [("fp32", {}), ("fp32 channels_last", {"channels_last": True}), ("bf16", {"precision": "bf16"}),
            ("fp16", {"precision": "fp16"})]
CUDA_RUNS = [("fp32", {}), ("tf32", {"precision": "tf32"}), ("bf16", {"precision": "bf16"}),
             ("fp16", {"precision": "fp16"})]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def compare(run, ref) -> Dict[str, Any]:
    """``run`` against ``ref`` (two VideoResults of one clip), detections matched by (frame,
    track id, label)."""
    from cmasktrack.video_result import decode_rle

    matched, score_diffs, ious, only_run, only_ref = 0, [], [], [], []
    for fa, fb in zip(run.frames, ref.frames):
        ka = {(int(t), int(c)): i for i, (t, c) in enumerate(zip(fa.track_ids, fa.labels))}
        kb = {(int(t), int(c)): i for i, (t, c) in enumerate(zip(fb.track_ids, fb.labels))}
        for key, i in ka.items():
            if key not in kb:
                only_run.append(float(fa.scores[i]))
                continue
            j = kb[key]
            matched += 1
            score_diffs.append(abs(float(fa.scores[i]) - float(fb.scores[j])))
            ious.append(_iou(decode_rle(fa.masks[i]), decode_rle(fb.masks[j])))
        only_ref += [float(fb.scores[j]) for key, j in kb.items() if key not in ka]

    def tracks(res) -> List[Tuple[int, int, Tuple[int, ...]]]:
        return sorted((t.track_id, t.category_id, tuple(t.frame_indices)) for t in res.tracks)

    return {"matched": matched, "only_this": len(only_run), "only_fp32": len(only_ref),
            "max_unmatched_score": max(only_run + only_ref, default=None),
            "max_score_diff": max(score_diffs, default=0.0), "min_mask_iou": min(ious, default=1.0),
            "mean_mask_iou": float(np.mean(ious)) if ious else 1.0, "tracks_equal": tracks(run) == tracks(ref),
            "tracks": len(run.tracks)}


def mm_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


BACKBONES = {"demo": ("demo R18-FPN-64", 18, 64, (192, 320)), "r50": ("official R50-FPN", 50, 256, (384, 640))}


def backbone_speed(device: torch.device, reps: int, models: Tuple[str, ...] = ("demo", "r50"),
                   precisions: Tuple[str, ...] = ("fp32", "bf16", "fp16")) -> List[Dict[str, Any]]:
    """ms of the backbone + FPN per (model, precision, layout), interleaved repetitions."""
    from cmasktrack.modeling.backbone import ResNetFPN

    variants = [("fp32", None, False), ("fp32", None, True), ("bf16", torch.bfloat16, False),
                ("bf16", torch.bfloat16, True), ("fp16", torch.float16, True)]
    variants = [v for v in variants if v[0] in precisions]
    if not variants or variants[0][:2] != ("fp32", None):
        raise ValueError("the backbone part needs fp32 (its reference)")
    rows = []
    for label, depth, channels, (h, w) in (BACKBONES[m] for m in models):
        torch.manual_seed(0)
        net = ResNetFPN(depth, channels).eval().to(device)
        x = torch.randn(1, 3, h, w, device=device)
        times: Dict[int, List[float]] = {i: [] for i in range(len(variants))}
        with torch.no_grad():
            for rep in range(reps + 1):  # the first round is the warm-up
                for i, (_, dtype, last) in enumerate(variants):
                    xi = x.contiguous(memory_format=torch.channels_last) if last else x
                    with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        t0 = time.perf_counter()
                        net(xi)
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                    if rep:
                        times[i].append(time.perf_counter() - t0)
        base = statistics.median(times[0])
        for i, (prec, _, last) in enumerate(variants):
            ms = statistics.median(times[i]) * 1e3
            rows.append({"model": label, "size": f"{w}x{h}", "precision": prec,
                         "layout": "channels_last" if last else "NCHW", "ms": ms, "vs_fp32_nchw": ms / 1e3 / base})
            print(f"  {label} {w}x{h} {prec} {rows[-1]['layout']}: {ms:.0f} ms ({rows[-1]['vs_fp32_nchw']:.2f}x fp32 "
                  "NCHW)", flush=True)
    return rows


def compile_gain(model, frames, num_refs: Optional[int], backend: str) -> Dict[str, Any]:
    """Eager vs ``compile=backend``: s/frame of a warm run, the first compiled video's wall time
    (compiling included) and a second compiled video's s/frame."""
    import torch._dynamo

    def run(**kw) -> float:
        t0 = time.perf_counter()
        model.track_video(frames, num_refs=num_refs, progress=False, **kw)
        return time.perf_counter() - t0

    run()  # warm-up
    eager = run()
    torch._dynamo.reset()
    first = run(compile=backend)
    second = run(compile=backend)
    n = len(frames)
    out = {"backend": backend, "frames": n, "eager_s_per_frame": eager / n, "first_compiled_video_s": first,
           "compiled_s_per_frame": second / n, "speedup": eager / second,
           "break_even_frames": (first - second) / max(eager / n - second / n, 1e-9) if eager > second else None}
    print(f"  compile={backend!r}: eager {eager / n:.3f} s/frame; first compiled video {first:.0f} s for {n} frames "
          f"(compiling included); then {second / n:.3f} s/frame ({out['speedup']:.2f}x)", flush=True)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda[:N] (default when available) or cpu")
    ap.add_argument("--frames", type=int, default=24, help="frames of the clip (demo.py: 24)")
    ap.add_argument("--num-refs", type=int, default=None, help="references (default: the model's 5)")
    ap.add_argument("--score-threshold", type=float, default=0.05)
    ap.add_argument("--runs", default=None, help="comma list of run names (default: all for the device)")
    ap.add_argument("--backbone-reps", type=int, default=5, help="repetitions of the backbone part (0: skip)")
    ap.add_argument("--backbone-models", default="demo,r50",
                    help="comma list of the backbone part's models: demo, r50 (default both)")
    ap.add_argument("--backbone-precisions", default="fp32,bf16,fp16",
                    help="comma list of the backbone part's precisions (fp32 is the reference; on CPUs without "
                         "bf16 / fp16 units the R50 in bf16 takes minutes per repetition)")
    ap.add_argument("--compile-frames", type=int, default=0, help="frames of the compile part (0: skip)")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compile part")
    ap.add_argument("--json", default=None, metavar="PATH")
    args = ap.parse_args(argv)

    import cmasktrack
    from cmasktrack import CMaskTrack, VISDataset, evaluate_vis
    from cmasktrack.data.synthetic import generate
    from cmasktrack.selftest import environment, format_environment

    env = environment()
    print(format_environment(env), flush=True)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    runs = CUDA_RUNS if device.type == "cuda" else CPU_RUNS
    if args.runs:
        wanted = [r.strip() for r in args.runs.split(",")]
        runs = [r for r in runs if r[0] in wanted or r[0] == "fp32"]
    tmp = tempfile.mkdtemp(prefix="cmasktrack_precision_")
    ann = generate(os.path.join(tmp, "clip"), num_videos=1, seed=7, num_frames=args.frames, overwrite=True)
    dataset = VISDataset.from_json(ann, image_root=os.path.join(tmp, "clip", "frames"))
    vid = dataset.video_ids[0]
    frames = dataset.frame_paths(vid)
    model = CMaskTrack.from_pretrained(cmasktrack.DEMO_MODEL, device=device)
    print(f"demo model on the demo clip ({len(frames)} frames, seed 7) on {device}, num_refs "
          f"{args.num_refs if args.num_refs is not None else model.config.num_refs}, score threshold "
          f"{args.score_threshold}", flush=True)
    rows, ref = [], None
    for name, opts in runs:
        row: Dict[str, Any] = {"run": name, "options": opts}
        try:
            model.track_video(frames[:2], num_refs=1, progress=False, **opts)  # warm-up (kernels, autocast caches)
            t0 = time.perf_counter()
            res = model.track_video(frames, num_refs=args.num_refs, score_threshold=args.score_threshold,
                                    progress=False, **opts)
            row["s_per_frame"] = (time.perf_counter() - t0) / len(frames)
            row["clip_AP"] = evaluate_vis(dataset, res.to_ytvis(video_id=vid)).stats["AP"]
            if ref is None:
                ref = res
                row.update(matched=sum(len(f) for f in res.frames), tracks=len(res.tracks))
            else:
                row.update(compare(res, ref))
        except Exception as exc:  # noqa: BLE001 - an unsupported precision is reported, not fatal
            row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        rows.append(row)
        print(f"  {name}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in row.items() if k not in ("run", "options")), flush=True)
    print()
    print("| precision | tracks equal | detections matched / only this / only fp32 (max score) | max score diff "
          "| min mask IoU | clip AP | s/frame |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['run']} | {r['error']} | | | | | |")
        elif r is rows[0]:
            print(f"| {r['run']} (reference) | - | {r['matched']} detections, {r['tracks']} tracks | - | - | "
                  f"{r['clip_AP']:.3f} | {r['s_per_frame']:.2f} |")
        else:
            unm = f" ({r['max_unmatched_score']:.2f})" if r["max_unmatched_score"] is not None else ""
            print(f"| {r['run']} | {'yes' if r['tracks_equal'] else 'no'} | {r['matched']} / {r['only_this']} / "
                  f"{r['only_fp32']}{unm} | {r['max_score_diff']:.1e} | {r['min_mask_iou']:.3f} | "
                  f"{r['clip_AP']:.3f} | {r['s_per_frame']:.2f} |")
    report = {"environment": env, "device": str(device), "rows": rows}
    if args.backbone_reps > 0:
        report["mm_gflops"] = {"fp32": mm_gflops(device, torch.float32)}
        if "bf16" in args.backbone_precisions.split(","):
            report["mm_gflops"]["bf16"] = mm_gflops(device, torch.bfloat16)
        print("\ntorch.mm 2048^3: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in report["mm_gflops"].items()),
              flush=True)
        print(f"backbone + FPN alone ({args.backbone_reps} interleaved repetitions, median):", flush=True)
        report["backbone"] = backbone_speed(device, args.backbone_reps, tuple(args.backbone_models.split(",")),
                                            tuple(args.backbone_precisions.split(",")))
    if args.compile_frames > 0:
        print(f"\ntorch.compile of the demo model ({args.compile_frames} frames):", flush=True)
        report["compile"] = compile_gain(model, frames[:args.compile_frames], args.num_refs, args.compile_backend)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
