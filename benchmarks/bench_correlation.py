"""Speed of the correlation op on the CPU: compiled (cmasktrack._C) vs the PyTorch fallback.

In one run, on the five FPN level shapes of a 640x384 frame, (1, 256, 96, 160) ...
(1, 256, 6, 10), with patch 16 and dilation 2 (CMaskTrack R-CNN's setting), prints for both
implementations the forward and the forward+backward time, their ratio, and the achieved
GFLOP/s as a fraction of this machine's torch.mm fp32 peak measured in the same run.

FLOPs: a forward does 2*C*patch^2*H*W; a backward computes two gradients of the same size, so
forward+backward counts 3x that.  The machine may be shared, so every case is timed in each of
--passes passes over all cases, each pass taking the best of at least --repeats runs (more for
fast cases, up to ~0.5 s of runs) after a warm-up, and the best over the passes is reported; the
mm peak is measured before every level of every pass and its highest value is used for all
fractions (so they are conservative).

    python benchmarks/bench_correlation.py [--threads N] [--repeats 5] [--passes 3] [--quick] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from cmasktrack.ops import correlation, extension_info, has_extension  # noqa: E402
from cmasktrack.selftest import cpu_model as cpu_name  # noqa: E402

LEVELS = [(1, 256, 96, 160), (1, 256, 48, 80), (1, 256, 24, 40), (1, 256, 12, 20), (1, 256, 6, 10)]
PATCH, DILATION = 16, 2


def best_time(fn: Callable[[], object], repeats: int, min_total: float = 0.5, max_runs: int = 200) -> float:
    """Best wall time of at least `repeats` runs, continuing until `min_total` seconds are spent."""
    fn()  # warm-up
    best, total, runs = float("inf"), 0.0, 0
    while runs < repeats or (total < min_total and runs < max_runs):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, total, runs = min(best, elapsed), total + elapsed, runs + 1
    return best


def mm_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_time(lambda: torch.mm(a, b), repeats, min_total=0.0) / 1e9


def measure(shape: tuple[int, int, int, int], backend: str, repeats: int) -> tuple[float, float]:
    """(forward seconds, forward+backward seconds) of one implementation on one shape."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(shape, generator=gen)
    b = torch.randn(shape, generator=gen)
    grad = torch.randn(shape[0], PATCH, PATCH, shape[2], shape[3], generator=gen)
    with torch.no_grad():
        forward = best_time(lambda: correlation(a, b, PATCH, DILATION, backend=backend), repeats)
    a.requires_grad_(True)
    b.requires_grad_(True)

    def forward_backward():
        correlation(a, b, PATCH, DILATION, backend=backend).backward(grad)

    return forward, best_time(forward_backward, repeats)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (best is kept)")
    parser.add_argument("--passes", type=int, default=3, help="passes over all cases (best is kept)")
    parser.add_argument("--quick", action="store_true", help="only the three smallest levels, 2 repeats, 1 pass")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    levels = LEVELS[2:] if args.quick else LEVELS
    repeats = 2 if args.quick else args.repeats
    passes = 1 if args.quick else args.passes
    backends = ["ext", "torch"] if has_extension("cpu") else ["torch"]

    info = extension_info()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_name()}")
    print(f"cmasktrack._C: {'available' if info['available'] else 'NOT available: ' + str(info['error'])}"
          + (f", CPU kernels: {info['cpu_kernel_isa']}, CUDA kernels: {info['cuda']}" if info["available"] else ""))
    peaks = [mm_peak_gflops()]
    print(f"patch {PATCH}, dilation {DILATION}; best of {passes} passes of >= {repeats} runs; "
          "fwd+bwd counts 3x the forward FLOPs\n")

    best: dict[tuple, tuple[float, float]] = {}
    for _ in range(passes):
        for shape in levels:
            peaks.append(mm_peak_gflops())
            for backend in backends:
                fwd, fwd_bwd = measure(shape, backend, repeats)
                old = best.get((shape, backend), (float("inf"), float("inf")))
                best[shape, backend] = (min(old[0], fwd), min(old[1], fwd_bwd))
    peaks.append(mm_peak_gflops())
    results = []
    for shape in levels:
        flops = 2 * shape[0] * shape[1] * PATCH**2 * shape[2] * shape[3]
        for backend in backends:
            fwd, fwd_bwd = best[shape, backend]
            results.append((shape, backend, fwd, flops / fwd / 1e9, fwd_bwd, 3 * flops / fwd_bwd / 1e9))
    header = f"{'shape':>20} {'impl':>6} {'fwd ms':>9} {'GFLOP/s':>8} {'%peak':>6} {'fwd+bwd ms':>11} {'GFLOP/s':>8} {'%peak':>6}"
    peak = max(peaks)
    print(f"torch.mm fp32 peak: {peak:.1f} GFLOP/s (highest of {len(peaks)} measurements during the run; "
          f"lowest {min(peaks):.1f})\n")
    print(header)
    times = {}
    for shape, backend, fwd, rate_f, fwd_bwd, rate_fb in results:
        times[shape, backend] = (fwd, fwd_bwd)
        print(f"{str(shape):>20} {backend:>6} {fwd * 1e3:9.2f} {rate_f:8.1f} {rate_f / peak:6.1%}"
              f" {fwd_bwd * 1e3:11.2f} {rate_fb:8.1f} {rate_fb / peak:6.1%}")
        if backend == "torch" and (shape, "ext") in times:
            ext, fallback = times[shape, "ext"], times[shape, "torch"]
            print(f"{'':>20} {'ratio':>6} fallback/compiled: forward {fallback[0] / ext[0]:.1f}x, "
                  f"forward+backward {fallback[1] / ext[1]:.1f}x")

    if args.markdown:
        print("\n| shape (B, C, H, W) | implementation | forward ms | GFLOP/s | % of mm peak "
              "| fwd+bwd ms | GFLOP/s | % of mm peak |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for shape, backend, fwd, rate_f, fwd_bwd, rate_fb in results:
            name = "compiled (C++)" if backend == "ext" else "PyTorch fallback"
            print(f"| {shape} | {name} | {fwd * 1e3:.1f} | {rate_f:.1f} | {rate_f / peak:.0%} "
                  f"| {fwd_bwd * 1e3:.1f} | {rate_fb:.1f} | {rate_fb / peak:.0%} |")


if __name__ == "__main__":
    main()
