"""Proof that training learns: a small CMaskTrack R-CNN trained on the CPU on the synthetic
occlusion benchmark, evaluated with the project's VIS evaluator on held-out synthetic videos,
with and without the temporal feature calibration (CMaskTrack R-CNN vs MaskTrack R-CNN).

    python benchmarks/bench_train_synthetic.py --out work/bench_train --budget-min 30

For each variant: a short probe measures seconds per iteration, the iteration count that fits
the time budget (probe included) is set with lr steps at 75 % and 90 % of it, the model is
trained from scratch (``--init`` to start from pretrained weights) with the ``cpu_small``
preset, saved, and evaluated (VIS AP / AR and the occlusion breakdown). A json summary goes to
``<out>/results.json``. Nothing here is a test; it takes as long as the budget says.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch


def make_data(out: Path, train_videos: int, val_videos: int, seed: int, size) -> Dict[str, Path]:
    """Generate (or reuse) the training and held-out synthetic sets."""
    from cmasktrack.data.synthetic import generate

    paths = {}
    for name, n, s in (("train", train_videos, seed), ("val", val_videos, seed + 1000)):
        d = out / f"data_{name}_{n}_{s}_{size[0]}x{size[1]}"
        ann = d / "annotations.json"
        if not ann.is_file():
            t = time.time()
            generate(d, n, s, size=tuple(size), overwrite=True)
            print(f"[bench] generated {name} set: {n} videos in {time.time() - t:.0f} s -> {d}", file=sys.stderr)
        paths[name] = d
    return paths


def evaluate(model_dir: Path, val_dir: Path, num_refs: Optional[int] = None) -> Dict[str, Any]:
    """VIS evaluation of a trained model on a synthetic set."""
    from cmasktrack.data.results import load_results
    from cmasktrack.data.ytvis import VISDataset
    from cmasktrack.evaluation import evaluate_vis, format_results_table
    from cmasktrack.model import CMaskTrack

    model = CMaskTrack.from_pretrained(model_dir, device="cpu")
    gt = VISDataset.from_json(val_dir / "annotations.json", image_root=val_dir / "frames")
    preds: List[Dict[str, Any]] = []
    t = time.time()
    nframes = 0
    for vid in gt.video_ids:
        paths = [str(p) for p in gt.frame_paths(vid)]
        nframes += len(paths)
        res = model.track_video(paths, progress=False, num_refs=num_refs)
        preds.extend(res.to_ytvis(video_id=vid))
    infer_s = time.time() - t
    result = evaluate_vis(gt, load_results(preds, gt))
    print(format_results_table(result), file=sys.stderr)
    out = result.to_dict()
    out["inference_s_per_frame"] = infer_s / max(nframes, 1)
    out["num_predictions"] = len(preds)
    return out


def run_variant(name: str, calibration: bool, args, data: Dict[str, Path], out: Path) -> Dict[str, Any]:
    from cmasktrack.train import TrainConfig, train

    run_dir = out / name
    if run_dir.exists() and not args.resume:
        shutil.rmtree(run_dir)
    budget = args.budget_min * 60.0
    base = TrainConfig.preset(args.preset)
    model = dict(base.model, calibration=calibration)
    if args.image_scale:
        model["image_scale"] = list(args.image_scale)
    common = dict(model=model, init=args.init or "", workers_per_gpu=args.workers, seed=args.seed,
                  log_interval=args.log_interval, checkpoint_interval=0, checkpoint_iters=0)
    if args.lr:
        common["lr"] = args.lr
    t0 = time.time()
    # probe: seconds per iteration of this variant on this machine
    probe = base.replace(**common, max_iters=args.probe_iters, warmup_iters=0, lr_steps=())
    probe_dir = out / f"{name}_probe"
    shutil.rmtree(probe_dir, ignore_errors=True)
    tp = time.time()
    train(probe, data["train"] / "annotations.json", data["train"] / "frames", probe_dir, progress=False)
    sec = (time.time() - tp) / args.probe_iters
    shutil.rmtree(probe_dir, ignore_errors=True)
    remaining = budget - (time.time() - t0)
    iters = max(10, int(remaining / sec * 0.93))
    cfg = base.replace(**common, max_iters=iters, warmup_iters=min(base.warmup_iters, iters // 10),
                       lr_steps=(int(iters * 0.75), int(iters * 0.9)), max_time_s=max(60.0, remaining - 30))
    print(f"[bench] {name}: {sec:.2f} s/iter (probe incl. setup) -> {iters} iterations in the remaining "
          f"{remaining / 60:.1f} min", file=sys.stderr)
    result = train(cfg, data["train"] / "annotations.json", data["train"] / "frames", run_dir,
                   progress=not args.quiet, resume=args.resume)
    train_s = time.time() - t0
    metrics = evaluate(run_dir, data["val"])
    return {"variant": name, "calibration": calibration, "iterations": result.iterations,
            "stopped_early": result.stopped_early, "train_minutes_incl_probe": train_s / 60,
            "last_losses": result.last_log, "config": cfg.to_dict(), "metrics": metrics}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="work/bench_train", help="work directory (data, runs, results.json)")
    p.add_argument("--budget-min", type=float, default=30.0, help="training minutes per variant (default 30)")
    p.add_argument("--variants", choices=("both", "calibration", "no_calibration"), default="both")
    p.add_argument("--train-videos", type=int, default=60)
    p.add_argument("--val-videos", type=int, default=20)
    p.add_argument("--size", type=int, nargs=2, default=(320, 192), metavar=("W", "H"), help="synthetic frame size")
    p.add_argument("--image-scale", type=int, nargs=2, default=None, metavar=("LONG", "SHORT"),
                   help="network input scale (default: the preset's)")
    p.add_argument("--preset", default="cpu_small")
    p.add_argument("--init", default=None, help="pretrained weights (default: from scratch)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--probe-iters", type=int, default=8)
    p.add_argument("--log-interval", type=int, default=20)
    p.add_argument("--resume", action="store_true", help="continue runs found in --out")
    p.add_argument("--eval-only", action="store_true", help="evaluate the models already in --out")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.val_videos < 20:
        p.error("--val-videos must be at least 20")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = make_data(out, args.train_videos, args.val_videos, args.seed, args.size)
    variants = {"both": [("cmasktrack", True), ("masktrack", False)],
                "calibration": [("cmasktrack", True)], "no_calibration": [("masktrack", False)]}[args.variants]
    summary = {"args": vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(), "runs": []}
    for name, calib in variants:
        if args.eval_only:
            summary["runs"].append({"variant": name, "calibration": calib, "metrics": evaluate(out / name, data["val"])})
        else:
            summary["runs"].append(run_variant(name, calib, args, data, out))
        (out / "results.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{'variant':<12} {'iters':>6} {'AP':>6} {'AP50':>6} {'AP75':>6} {'AR10':>6}  occlusion AP (light/medium/heavy)")
    for r in summary["runs"]:
        m = r["metrics"]
        occ = "/".join(f"{100 * m[k]:.1f}" for k in ("AP_light", "AP_medium", "AP_heavy") if k in m) or "-"
        print(f"{r['variant']:<12} {r.get('iterations', '-'):>6} {100 * m['AP']:6.1f} {100 * m['AP50']:6.1f} "
              f"{100 * m['AP75']:6.1f} {100 * m['AR10']:6.1f}  {occ}")
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
