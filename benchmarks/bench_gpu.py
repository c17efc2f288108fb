"""GPU speed of cmasktrack (issue 12, section 3; a benchmark, not a test).  <= 8 minutes on one GPU.

In one run, on 640x360 frames (random weights, as benchmarks/bench_inference.py):

1. the machine: GPU, torch/CUDA, the CPU's model and ISA; torch.mm peaks measured now (fp32
   with TF32 off, TF32, bf16);
2. the correlation op alone, compiled vs the PyTorch fallback, on the five FPN level shapes of
   a 640x384 frame (patch 16, dilation 2), forward and forward+backward in fp32, GFLOP/s as a
   fraction of the fp32 peak of step 1;
3. ms/frame (= 1 / frames/s over a stream of 40 frames after a warm-up), per-frame latency
   (median time of a ``push`` that returned a result) of torchvision's maskrcnn_resnet50_fpn
   (bench_inference.py's settings: no weights, 26 classes, score threshold 0 so 100 detections
   reach the mask head), cmasktrack with ``num_refs=0`` and in the official setting (5
   references before and after; the first and last 5 frames of a stream have fewer), each in
   fp32 / TF32 / bf16 / fp16, eager and with torch.compile, and the time ratio to
   torchvision in the same precision;
4. peak GPU memory of a 100- and a 1000-frame stream in the official setting, 320x192 frames
   by default as bench_inference.py's memory runs (it must not grow with the video: the ratio
   is printed).

Precision: fp32 = TF32 off for matmuls and cuDNN; tf32 = both on; bf16 / fp16 = autocast.
torchvision gets them from torch.autocast and the TF32 flags; torch.compile there compiles the
backbone + FPN (the per-frame network).  cmasktrack gets them from its own tracking options
(issue 12, phase 2): ``new_tracker(precision=...)`` (fp32 = TF32 off, tf32 = on, for the call;
bf16 / fp16 = autocast of the backbone and the heads, the calibration float32) and
``new_tracker(compile=<backend>)`` (backbone + FPN, RPN head, calibration and the heads);
``PRECISION_KWARG`` / ``COMPILE_KWARG`` below.  Where an installed cmasktrack has no such option,
fp32 and tf32 are still measured (the TF32 flags are global) and the other rows say "not
available in this build".

The runs are ordered by priority and the script watches ``--budget-s``: the compiled runs come
last and are skipped (and say so) once the budget is spent; the 1000-frame memory run is
skipped if the measured official speed says it would not fit.

Anchor for scale: MaskTrack R-CNN R50 runs at ~26 frames/s on an RTX 2080 Ti (published
figure); cmasktrack with ``num_refs=0`` is that network.

    python benchmarks/bench_gpu.py [--json out.json] [--budget-s 450]
    python benchmarks/bench_gpu.py --device cpu --tiny          # smoke run (small sizes)
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_correlation import DILATION, LEVELS, PATCH  # noqa: E402
from bench_inference import make_frames  # noqa: E402

#: cmasktrack's tracker options that phase 2 of issue 12 adds (keyword names of
#: ``CMaskTrack.new_tracker``); rows that need them say "not available in this build" until then.
PRECISION_KWARG = "precision"
COMPILE_KWARG = "compile"
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
ANCHOR = "MaskTrack R-CNN R50: ~26 frames/s on an RTX 2080 Ti (published figure)"


class Budget:
    """Seconds left of --budget-s."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def precision_flags(precision: str, device: torch.device):
    """TF32 on only for "tf32"; autocast for bf16 / fp16."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(precision: str, device: torch.device):
    if precision in AUTOCAST:
        return torch.autocast(device_type=device.type, dtype=AUTOCAST[precision])
    return nullcontext()


def timed(fn, device: torch.device, reps: int, warmup: int = 2) -> float:
    """Median seconds of ``fn()`` (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------ 1


def mm_peaks(device: torch.device, n: int, reps: int) -> dict:
    """torch.mm TFLOP/s in fp32 (TF32 off), TF32 and bf16 (random data)."""
    out = {}
    for name in ("fp32", "tf32", "bf16"):
        if device.type == "cpu" and name == "tf32":
            continue
        dtype = torch.bfloat16 if name == "bf16" else torch.float32
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        with precision_flags("tf32" if name == "tf32" else "fp32", device):
            seconds = timed(lambda: torch.mm(a, b), device, reps)
        out[name] = 2 * n**3 / seconds / 1e12
    return out


# ------------------------------------------------------------------------------------------ 2


def bench_correlation(device: torch.device, levels, reps: int, fp32_peak_tflops: float) -> list:
    from cmasktrack.ops import correlation, has_extension

    rows = []
    backends = ["ext", "torch"] if has_extension(device) else ["torch"]
    for shape in levels:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(shape, generator=gen).to(device)
        b = torch.randn(shape, generator=gen).to(device)
        grad = torch.randn(shape[0], PATCH, PATCH, shape[2], shape[3], generator=gen).to(device)
        flops = 2 * shape[1] * PATCH**2 * shape[2] * shape[3] * shape[0]
        row = {"shape": list(shape)}
        for backend in backends:
            with precision_flags("fp32", device):
                with torch.no_grad():
                    fwd = timed(lambda: correlation(a, b, PATCH, DILATION, backend=backend), device, reps)
                a_, b_ = a.clone().requires_grad_(), b.clone().requires_grad_()

                def fwd_bwd():
                    correlation(a_, b_, PATCH, DILATION, backend=backend).backward(grad)

                both = timed(fwd_bwd, device, reps)
            row[backend] = {"forward_ms": fwd * 1e3, "fwd_bwd_ms": both * 1e3,
                            "forward_gflops": flops / fwd / 1e9, "fwd_bwd_gflops": 3 * flops / both / 1e9,
                            "forward_of_peak": flops / fwd / 1e12 / fp32_peak_tflops}
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ 3


def torchvision_model(device: torch.device, size: tuple):
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    w, h = size
    return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=26, min_size=min(w, h),
                                 max_size=max(w, h), box_score_thresh=0.0).eval().to(device)


def cmasktrack_model(device: torch.device, num_refs: int, size: tuple):
    from cmasktrack.model_config import ovis_config
    from cmasktrack.model import CMaskTrack

    torch.manual_seed(0)
    w, h = size
    return CMaskTrack(ovis_config(num_refs=num_refs, score_threshold=0.0, image_scale=(max(w, h), min(w, h)))
                      ).eval().to(device)


def cmasktrack_options(model, precision: str, compiled: bool, backend: str = "inductor"):
    """(tracker kwargs, None) or (None, why the run is not possible with this build).  The
    compiled runs pass the backend name (``compile="inductor"``, or ``"eager"`` in the smoke
    run), like torchvision's."""
    params = set(inspect.signature(model.new_tracker).parameters)
    try:  # new_tracker takes the TrackOptions fields as keyword arguments
        from cmasktrack.tracking import TrackOptions

        params |= {f.name for f in dataclasses.fields(TrackOptions)}
    except ImportError:
        pass
    kwargs = {}
    if PRECISION_KWARG in params:
        kwargs[PRECISION_KWARG] = precision
    elif precision in AUTOCAST:
        return None, (f"not available in this build (needs CMaskTrack.new_tracker({PRECISION_KWARG}=...), "
                      "issue 12 phase 2)")
    if compiled:
        if COMPILE_KWARG not in params:
            return None, (f"not available in this build (needs CMaskTrack.new_tracker({COMPILE_KWARG}=True), "
                          "issue 12 phase 2)")
        kwargs[COMPILE_KWARG] = backend
    return kwargs, None


def run_stream(push, finish, frames, device: torch.device) -> tuple:
    """(median seconds of the pushes that returned a result, frames/s over the stream incl.
    finish).  A push returns None or the list of frames that became ready; a push that only
    buffers a frame (the official setting waits for 5 future references) is not a latency."""
    sync(device)
    times = []
    t_start = time.perf_counter()
    for f in frames:
        t0 = time.perf_counter()
        ready = push(f)
        sync(device)
        if ready is None or len(ready) > 0:
            times.append(time.perf_counter() - t0)
    finish()
    sync(device)
    total = time.perf_counter() - t_start
    return (statistics.median(times) if times else float("nan")), len(frames) / total


def time_cmasktrack(model, frames, warm_frames, num_refs: int, precision: str, kwargs: dict, device):
    """Warm-up stream (compiles when asked), then the timed stream."""
    with precision_flags(precision, device), torch.no_grad():
        t0 = time.perf_counter()
        tracker = model.new_tracker(num_refs=num_refs, **kwargs)
        run_stream(tracker.push, tracker.finish, warm_frames, device)
        warmup = time.perf_counter() - t0
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        tracker = model.new_tracker(num_refs=num_refs, **kwargs)
        latency, fps = run_stream(tracker.push, tracker.finish, frames, device)
        dets = float(np.mean([len(r) for r in tracker.results]))
    return latency, fps, warmup, dets


def time_torchvision(model, frames, warm_frames, precision: str, device):
    xs = [torch.from_numpy(f).permute(2, 0, 1).float().div(255) for f in frames]
    warm = [torch.from_numpy(f).permute(2, 0, 1).float().div(255) for f in warm_frames]
    out = {}

    def push(x):
        out["last"] = model([x.to(device, non_blocking=True)])
        return None

    with precision_flags(precision, device), autocast(precision, device), torch.no_grad():
        t0 = time.perf_counter()
        run_stream(push, lambda: None, warm, device)
        warmup = time.perf_counter() - t0
        latency, fps = run_stream(push, lambda: None, xs, device)
    return latency, fps, warmup, float(len(out["last"][0]["boxes"]))


def bench_models(device, frames, warm_frames, official_warm, budget: Budget, compile_backend: str,
                 plans, rows: list, log, save) -> None:
    """Step 3 for ``plans`` [(compiled, precision), ...] in order, appending to ``rows`` (and
    calling ``save()``) after each; compiled runs are skipped once the budget is spent."""
    if not plans:
        return
    size = (frames[0].shape[1], frames[0].shape[0])
    min_left = 120 if compile_backend == "inductor" else 10  # a compile of the R50-FPN takes a while
    tv = torchvision_model(device, size)
    tv_backbone = tv.backbone
    models = {"cmasktrack num_refs=0": (cmasktrack_model(device, 0, size), 0),
              "cmasktrack official (5+5 refs)": (cmasktrack_model(device, 5, size), 5)}
    for compiled, precision in plans:
        tag = f"{precision}{' compiled' if compiled else ''}"
        if compiled and budget.left() < min_left:
            for name in ["torchvision maskrcnn_resnet50_fpn", *models]:
                rows.append({"model": name, "precision": precision, "compiled": True,
                             "skipped": "time budget spent"})
            log(f"  {tag}: skipped (time budget)")
            save()
            continue
        # torchvision
        row = {"model": "torchvision maskrcnn_resnet50_fpn", "precision": precision, "compiled": compiled}
        try:
            if compiled:
                torch._dynamo.reset()
                tv.backbone = torch.compile(tv_backbone, backend=compile_backend, dynamic=False)
            lat, fps, warm, dets = time_torchvision(tv, frames, warm_frames, precision, device)
            row.update(ms_per_frame=1e3 / fps, latency_ms=lat * 1e3, fps=fps, warmup_s=warm, detections=dets)
        except Exception as exc:  # noqa: BLE001 - a failed configuration is reported, not fatal
            row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        finally:
            tv.backbone = tv_backbone
        rows.append(row)
        log(f"  {tag} torchvision: {_fmt_row(row)}")
        tv_fps = row.get("fps")
        for name, (model, num_refs) in models.items():
            row = {"model": name, "precision": precision, "compiled": compiled}
            kwargs, why = cmasktrack_options(model, precision, compiled, compile_backend)
            if why:
                row["unavailable"] = why
            else:
                try:
                    if compiled:
                        torch._dynamo.reset()
                    warm = official_warm if num_refs else warm_frames
                    lat, fps, warm_s, dets = time_cmasktrack(model, frames, warm, num_refs, precision, kwargs, device)
                    row.update(ms_per_frame=1e3 / fps, latency_ms=lat * 1e3, fps=fps, warmup_s=warm_s,
                               detections=dets)
                    if tv_fps:
                        row["vs_torchvision"] = tv_fps / fps  # time ratio: how many torchvision frames per frame
                except Exception as exc:  # noqa: BLE001
                    row["error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            rows.append(row)
            log(f"  {tag} {name}: {_fmt_row(row)}")
        save()


def _ms(value: float, unit: str = " ms") -> str:
    return "-" if value != value else f"{value:.1f}{unit}"  # NaN: no push returned a result


def _fmt_row(row: dict) -> str:
    if "fps" in row:
        extra = f", {row['vs_torchvision']:.2f}x torchvision's time" if "vs_torchvision" in row else ""
        return (f"{row['ms_per_frame']:.1f} ms/frame, {row['fps']:.1f} frames/s, latency {_ms(row['latency_ms'])}"
                f"{extra} (warm-up {row['warmup_s']:.1f} s, {row['detections']:.0f} detections)")
    return row.get("unavailable") or row.get("skipped") or row.get("error", "?")


# ------------------------------------------------------------------------------------------ 4


def stream_memory(device: torch.device, n_frames: int, size: tuple) -> dict:
    """Peak GPU memory of one official-setting stream of ``n_frames`` generated frames."""
    model = cmasktrack_model(device, 5, size)
    base = make_frames(1, h=size[1], w=size[0])[0]
    frames = (np.roll(base, 3 * t, axis=1) for t in range(n_frames))
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        result = model.track_video(frames, progress=False)
    sync(device)
    return {"frames": result.num_frames, "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "seconds": time.perf_counter() - t0}


def bench_memory(device: torch.device, counts, size: tuple, budget: Budget, log) -> list:
    """Step 4: one stream per length in ``counts``; a stream is skipped when the previous one's
    speed says it would not fit in the budget."""
    rows = []
    per_frame = None  # seconds per frame of the last run
    for count in counts:
        estimate = 30.0 if per_frame is None else count * per_frame * 1.15 + 5
        if estimate > budget.left():
            rows.append({"frames": count, "skipped": f"needs ~{estimate:.0f} s, {budget.left():.0f} s of budget left"})
            log(f"stream memory {count} frames: skipped (needs ~{estimate:.0f} s)")
            continue
        m = stream_memory(device, count, size)
        per_frame = m["seconds"] / count
        rows.append(m)
        log(f"stream memory {count} frames of {size[0]}x{size[1]} (official setting, torch's default precision "
            f"flags): peak {m['peak_mib']:.0f} MiB in {m['seconds']:.0f} s")
    done = [m for m in rows if "peak_mib" in m]
    if len(done) >= 2:
        ratio = done[-1]["peak_mib"] / done[0]["peak_mib"]
        log(f"  peak ratio {done[-1]['frames']} / {done[0]['frames']} frames: {ratio:.3f} "
            f"({'flat' if ratio <= 1.05 else 'GROWS'})")
    return rows


# ------------------------------------------------------------------------------------------


def _precision_list(text: str, device: torch.device) -> list:
    names = [p.strip() for p in text.split(",") if p.strip()]
    for p in names:
        if p not in PRECISIONS:
            raise SystemExit(f"bench_gpu: unknown precision {p!r} (use {', '.join(PRECISIONS)})")
        if device.type == "cpu" and p in ("tf32", "fp16"):
            raise SystemExit(f"bench_gpu: {p} is a GPU precision")
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda (default when available), cuda:N or cpu")
    ap.add_argument("--tiny", action="store_true", help="smoke run: 160x96 frames, few frames, small shapes")
    ap.add_argument("--frames", type=int, default=None, help="timed frames per run (default 40; tiny 3)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="stop starting compiled runs after this")
    ap.add_argument("--memory-frames", default="100,1000", help="stream lengths of the memory runs")
    ap.add_argument("--memory-size", default="320x192",
                    help="frame size of the memory runs (default 320x192, as bench_inference.py's; 640x360 "
                         "takes ~4x longer for the same question: does memory grow with the video?)")
    ap.add_argument("--compile-backend", default=None,
                    help="torch.compile backend (default inductor; tiny: eager, to keep the smoke run short)")
    ap.add_argument("--precisions", default=None,
                    help="comma list of fp32,tf32,bf16,fp16 (default: all on CUDA; fp32,bf16 on the CPU; tiny: fp32)")
    ap.add_argument("--compile-precisions", default=None,
                    help="precisions also run with torch.compile (default: the same; tiny: fp32; '' = none)")
    ap.add_argument("--json", default=None, metavar="PATH", help="write every figure as json")
    args = ap.parse_args(argv)
    budget = Budget(args.budget_s)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("bench_gpu: CUDA is not available; use --device cpu --tiny for a smoke run")
        device = torch.device("cuda", device.index or 0)
        torch.cuda.set_device(device)

    def log(line: str) -> None:
        print(line, flush=True)

    from cmasktrack.ops import has_extension
    from cmasktrack.selftest import environment, format_environment

    env = environment()
    log(format_environment(env))
    log(f"device under test: {device}; compiled correlation op on it: {has_extension(device)}; "
        f"budget {args.budget_s:.0f} s")
    report = {"environment": env, "device": str(device), "tiny": args.tiny, "anchor": ANCHOR}

    def save() -> None:  # after every stage, so that a run killed at its time limit leaves its figures
        if args.json:
            report["seconds"] = args.budget_s - budget.left()
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)

    # 1. peaks
    n = 512 if args.tiny else (8192 if device.type == "cuda" else 2048)
    report["mm_peak_tflops"] = peaks = mm_peaks(device, n, reps=3 if args.tiny else 10)
    log("torch.mm peak: " + ", ".join(f"{k} {v:.2f} TFLOP/s" for k, v in peaks.items()) + f" ({n}x{n}x{n})")
    save()

    # 2. correlation op
    levels = [(1, 64, 24, 40), (1, 64, 12, 20)] if args.tiny else LEVELS
    rows = bench_correlation(device, levels, reps=3 if args.tiny else 20, fp32_peak_tflops=peaks["fp32"])
    report["correlation"] = rows
    log(f"correlation (patch {PATCH}, dilation {DILATION}, fp32): forward / forward+backward ms, "
        "compiled vs fallback")
    for r in rows:
        parts = [f"{tuple(r['shape'])}"]
        for backend in ("ext", "torch"):
            if backend in r:
                x = r[backend]
                parts.append(f"{backend} {x['forward_ms']:.3f} / {x['fwd_bwd_ms']:.3f} ms "
                             f"({x['forward_gflops']:.0f} GFLOP/s = {x['forward_of_peak']:.1%} of fp32 peak)")
        if "ext" in r:
            parts.append(f"speed-up fwd {r['torch']['forward_ms'] / r['ext']['forward_ms']:.1f}x, "
                         f"fwd+bwd {r['torch']['fwd_bwd_ms'] / r['ext']['fwd_bwd_ms']:.1f}x")
        log("  " + "; ".join(parts))
    save()

    # 3. models
    size = (160, 96) if args.tiny else (640, 360)
    n_frames = args.frames or (2 if args.tiny else 40)
    n_warm = 3 if args.tiny else 12  # the official setting: full reference windows
    frames = make_frames(n_frames + n_warm, h=size[1], w=size[0])
    warm_frames, official_warm, timed_frames = frames[:2], frames[:n_warm], frames[n_warm:]
    backend = args.compile_backend or ("eager" if args.tiny else "inductor")
    default = "fp32" if args.tiny else ",".join(PRECISIONS) if device.type == "cuda" else "fp32,bf16"
    precisions = _precision_list(args.precisions if args.precisions is not None else default, device)
    compile_precisions = _precision_list(args.compile_precisions if args.compile_precisions is not None
                                         else ",".join(precisions), device)
    log(f"models on {size[0]}x{size[1]} frames, {n_frames} timed frames per run (after {n_warm} warm-up frames), "
        f"precisions {', '.join(precisions)}, compiled ({backend}): {', '.join(compile_precisions) or 'none'}")
    report["models"] = []
    bench_models(device, timed_frames, warm_frames, official_warm, budget, backend,
                 [(False, p) for p in precisions], report["models"], log, save)

    # 4. memory (before the compiled runs, which take what is left of the budget)
    if device.type != "cuda":
        report["memory"] = []
        log("stream memory: n/a on the CPU (GPU memory)")
    else:
        report["memory"] = bench_memory(device, [int(c) for c in args.memory_frames.split(",")],
                                        tuple(int(v) for v in args.memory_size.split("x")), budget, log)
    save()

    # 3b. compiled runs, the precisions that matter most first, while the budget lasts
    order = ("tf32", "bf16", "fp16", "fp32")
    bench_models(device, timed_frames, warm_frames, official_warm, budget, backend,
                 [(True, p) for p in sorted(compile_precisions, key=order.index)], report["models"], log, save)

    # summary table
    log("")
    log(f"summary ({device}; {env['gpus'][0]['name'] if device.type == 'cuda' else env['cpu']['model']}); {ANCHOR}")
    log(f"{'model':<34} {'precision':<9} {'compile':<7} {'ms/frame':>9} {'latency':>9} {'frames/s':>9} "
        f"{'time / torchvision':>18}")
    for r in report["models"]:
        if "fps" in r:
            ratio = f"{r['vs_torchvision']:.2f}" if "vs_torchvision" in r else "-"
            log(f"{r['model']:<34} {r['precision']:<9} {'yes' if r['compiled'] else 'no':<7} "
                f"{r['ms_per_frame']:9.1f} {_ms(r['latency_ms'], ''):>9} {r['fps']:9.1f} {ratio:>18}")
        else:
            log(f"{r['model']:<34} {r['precision']:<9} {'yes' if r['compiled'] else 'no':<7} {_fmt_row(r)}")
    save()
    log(f"total {args.budget_s - budget.left():.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
