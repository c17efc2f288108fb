"""Dataset inference in several processes (issue 14's benchmark; not a test).

On one synthetic set (default: 20 videos of 12-24 frames at 320x192, the demo model), times
``cmasktrack track --dataset`` as

  (a) 1 process x T threads            (T = --threads, default 2: this machine's cores),
  (b) torchrun, P processes x T/P threads (P = --procs, default 2; gloo CPU processes),

and with ``--gpus`` also 1 GPU against torchrun on every GPU. Each variant reports frames/s
from the first video to the merged results.json (what the command prints) and the wall time of
the whole command (process start, imports and model loading included), best of ``--repeats``.
It says whether the results files of the variants are identical (they are when the processes
use the same number of threads; across thread counts floating-point sums may differ).

The merge's cost: ``cmasktrack merge`` of the set's part files, and of ``--merge-videos``
synthetic parts (the set's parts copied under new video ids), checksums verified, time and MB/s.

    python benchmarks/bench_shards.py [--videos 20] [--threads 2] [--procs 2] [--repeats 3] [--markdown]
    python benchmarks/bench_shards.py --quick          # a smoke run: 4 tiny videos
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SUMMARY = re.compile(r"(\d+) frames tracked in ([\d.]+) s \(([\d.]+) frames/s\)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_set(out: str, videos: int, frames, size, seed: int) -> str:
    from cmasktrack.data.synthetic import generate

    return str(generate(os.path.join(out, "data"), num_videos=videos, seed=seed, num_frames=frames, size=size,
                        overwrite=True))


def run_variant(name: str, ann: str, image_root: str, out: str, procs: int, threads: int, device: str,
                num_refs: int, model: str) -> dict:
    """One timed ``cmasktrack track --dataset`` run in a fresh output directory."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    track = ["track", "--dataset", ann, "--image-root", image_root, "--out", os.path.join(out, "results.json"),
             "--device", device, "--threads", str(threads), "--quiet", "--no-zip"]
    if num_refs >= 0:
        track += ["--num-refs", str(num_refs)]
    if model:
        track += ["--model", model]
    if procs == 1:
        cmd = [sys.executable, "-m", "cmasktrack", *track]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_addr",
               "127.0.0.1", "--master_port", str(free_port()), "-m", "cmasktrack", *track]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    m = SUMMARY.search(proc.stdout)
    if m is None:
        raise SystemExit(f"{name}: no summary line in\n{proc.stdout}")
    with open(os.path.join(out, "results.json"), "rb") as f:
        data = f.read()
    return {"name": name, "frames": int(m.group(1)), "seconds": float(m.group(2)), "fps": float(m.group(3)),
            "wall": wall, "results": data}


def best_of(repeats: int, **kw) -> dict:
    runs = [run_variant(**kw) for _ in range(repeats)]
    best = max(runs, key=lambda r: r["fps"])
    print(f"# {best['name']}: {best['fps']:.2f} frames/s, command {best['wall']:.1f} s", flush=True)
    return best


def time_merge(partial: str, out: str, copies: int, repeats: int) -> dict:
    """``merge_files`` on ``partial`` (or on ``copies`` synthetic parts made from it)."""
    from cmasktrack.tracking.shards import collect_parts, merge_files, write_part

    source = partial
    if copies:
        source = os.path.join(out, "many.partial")
        shutil.rmtree(source, ignore_errors=True)
        os.makedirs(source)
        parts = collect_parts([partial])
        for i in range(copies):
            p = parts[i % len(parts)]
            vid = i + 1
            entries = [dict(e, video_id=vid) for e in p.entries]
            write_part(source, vid, entries, run=p.run, name=f"copy{vid}", frames=p.frames)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        report, _ = merge_files([source], os.path.join(out, "merged.json"), write_zip=False)
        best = min(best, time.perf_counter() - t0)
    t0 = time.perf_counter()
    merge_files([source], os.path.join(out, "merged.json"), write_zip=True)
    with_zip = time.perf_counter() - t0
    return {"videos": report.videos, "mb": report.bytes / 1e6, "seconds": best, "with_zip": with_zip}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="work/bench_shards", help="working directory")
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--frames", default="12,24", help="frames per video: N or MIN,MAX (default 12,24)")
    parser.add_argument("--size", default="320x192", help="frame size WxH (default 320x192)")
    parser.add_argument("--seed", type=int, default=1400)
    parser.add_argument("--threads", type=int, default=2, help="threads of the single process (default 2)")
    parser.add_argument("--procs", type=int, default=2, help="torchrun processes on the CPU (default 2)")
    parser.add_argument("--num-refs", type=int, default=-1, help="default: the model's (5)")
    parser.add_argument("--model", default="", help="default: the demo model")
    parser.add_argument("--repeats", type=int, default=1, help="runs per variant, the best is kept (default 1)")
    parser.add_argument("--merge-videos", type=int, default=1000, help="synthetic parts for the merge timing")
    parser.add_argument("--gpus", action="store_true", help="also 1 GPU against torchrun on every GPU")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 videos of 2-3 frames at 96x64, num_refs 1")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    if args.quick:
        args.videos, args.frames, args.size, args.merge_videos, args.num_refs = 4, "2,3", "96x64", 50, 1
    frames = tuple(int(x) for x in args.frames.split(","))
    frames = frames[0] if len(frames) == 1 else frames
    size = tuple(int(x) for x in args.size.lower().split("x"))
    os.makedirs(args.out, exist_ok=True)
    ann = make_set(args.out, args.videos, frames, size, args.seed)
    image_root = os.path.join(args.out, "data", "frames")
    from cmasktrack.data.ytvis import VISDataset

    total = sum(v.length for v in VISDataset.from_json(ann).videos.values())
    common = dict(ann=ann, image_root=image_root, num_refs=args.num_refs, model=args.model)
    per = max(1, args.threads // args.procs)
    variants = [
        best_of(args.repeats, name=f"1 process x {args.threads} threads", out=os.path.join(args.out, "a"), procs=1,
                threads=args.threads, device="cpu", **common),
        best_of(args.repeats, name=f"{args.procs} processes x {per} thread{'s' if per > 1 else ''} (torchrun, gloo)",
                out=os.path.join(args.out, "b"), procs=args.procs, threads=per, device="cpu", **common),
    ]
    if args.gpus:
        import torch

        n = torch.cuda.device_count()
        variants.append(best_of(args.repeats, name="1 GPU", out=os.path.join(args.out, "g1"), procs=1, threads=1,
                                device="cuda", **common))
        if n > 1:
            variants.append(best_of(args.repeats, name=f"{n} GPUs (torchrun)", out=os.path.join(args.out, "gn"),
                                    procs=n, threads=1, device="cuda", **common))
    merge_small = time_merge(os.path.join(args.out, "b", "results.json.partial"), args.out, 0, 5)
    merge_big = time_merge(os.path.join(args.out, "b", "results.json.partial"), args.out, args.merge_videos, 3)
    identical = variants[0]["results"] == variants[1]["results"]

    import torch

    print(f"{args.videos} videos, {total} frames at {size[0]}x{size[1]}; torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs; best of {args.repeats}")
    if args.markdown:
        print("\n| variant | frames/s | tracking s | command wall s |\n|---|---:|---:|---:|")
        for v in variants:
            print(f"| {v['name']} | {v['fps']:.2f} | {v['seconds']:.1f} | {v['wall']:.1f} |")
        print("\n| merge | videos | MB | merge s | MB/s | + zip s |\n|---|---:|---:|---:|---:|---:|")
        for label, m in (("the set's parts", merge_small), ("synthetic parts", merge_big)):
            print(f"| {label} | {m['videos']} | {m['mb']:.2f} | {m['seconds']:.3f} | "
                  f"{m['mb'] / m['seconds'] if m['seconds'] else 0:.0f} | {m['with_zip']:.3f} |")
    else:
        for v in variants:
            print(f"{v['name']:>45}: {v['fps']:.2f} frames/s ({v['frames']} frames in {v['seconds']:.1f} s; "
                  f"command {v['wall']:.1f} s)")
        for label, m in (("merge, the set's parts", merge_small), ("merge, synthetic parts", merge_big)):
            print(f"{label:>45}: {m['videos']} videos, {m['mb']:.2f} MB in {m['seconds']:.3f} s "
                  f"(+ zip: {m['with_zip']:.3f} s)")
    print(f"results of (a) and (b) byte-identical: {'yes' if identical else 'no (different thread counts)'}")


if __name__ == "__main__":
    main()
