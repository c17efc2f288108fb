"""Proof that training learns: a small CMaskTrack R-CNN trained on the CPU on the synthetic
occlusion benchmark, evaluated with the project's VIS evaluator on held-out synthetic videos,
with and without the temporal feature calibration (CMaskTrack R-CNN vs MaskTrack R-CNN).

    python benchmarks/bench_train_synthetic.py --out work/bench_train

(the measured runs in BENCHMARKS.md: ``--variants cmasktrack`` for the demo model, and
``--variants masktrack --iters 2400`` for the variant without calibration, one after the other
in the same ``--out``).

Data (generated once, reused): a training set (``--train-videos`` videos, seed ``--seed``) and
a held-out test set of ``--test-videos`` (>= 20) videos with seed ``--seed + 1000`` and the
generator's *default* difficulty settings; ``--tune`` evaluates on a separate validation split
(seed ``--seed + 500``) instead, for choosing settings without looking at the test set.

Each variant (``cmasktrack``: calibration on, ``masktrack``: off) trains from scratch
(``--init`` for pretrained weights) with the ``--preset`` training configuration for a wall
clock budget of ``--budget-min`` minutes that covers everything (model building, data loading,
training, saving): the iteration count is ``--iters`` (default: the preset's), the learning
rate steps at 75 % / 90 % of it, and the loop stops at the budget whatever the iteration. The
variants run one after the other, each with every core (``--threads``); ``--parallel`` trains
them at the same time instead, each with half of the cores. Then each model is evaluated
with the normal inference (``CMaskTrack.track_video``, ``--num-refs`` references before and
after every frame, default the model config's 5): VIS AP / AR, and AP by occlusion level (the
synthetic set has official-style per-frame occlusion labels). A json summary of every variant
evaluated in ``--out`` so far goes to ``<out>/results.json``. Nothing here is a test; it takes
as long as the budget says.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

VARIANTS = {"cmasktrack": True, "masktrack": False}


def make_split(out: Path, name: str, n: int, seed: int, **kw) -> Path:
    """Generate (or reuse) one split: ``n`` videos with ``seed`` (and the generator keyword
    arguments ``kw``; none = the generator's defaults) in ``out/data_<name>_<n>_<seed><tag>``."""
    from cmasktrack.data.synthetic import generate

    tag = f"_{kw['size'][0]}x{kw['size'][1]}" if "size" in kw else "_default"
    d = out / f"data_{name}_{n}_{seed}{tag}"
    if not (d / "annotations.json").is_file():
        t = time.time()
        generate(d, n, seed, overwrite=True, **kw)
        print(f"[bench] generated {name} set: {n} videos in {time.time() - t:.0f} s -> {d}", file=sys.stderr)
    return d


def held_out_split(out: Path, test_videos: int = 20, seed: int = 0) -> Path:
    """The held-out test set: ``test_videos`` videos, seed ``seed + 1000``, generator defaults
    (what BENCHMARKS.md's training section and the demo model are evaluated on)."""
    return make_split(out, "test", test_videos, seed + 1000)


def make_data(out: Path, args) -> Dict[str, Path]:
    """Generate (or reuse) the training set, the validation split and the held-out test set."""
    return {"train": make_split(out, "train", args.train_videos, args.seed, size=tuple(args.size)),
            "tune": make_split(out, "tune", args.tune_videos, args.seed + 500),  # generator defaults
            "test": held_out_split(out, args.test_videos, args.seed)}


def evaluate(model_dir: Path, data_dir: Path, num_refs: Optional[int] = None) -> Dict[str, Any]:
    """VIS evaluation of a trained model on a synthetic set with ``track_video``."""
    from cmasktrack.data.results import load_results
    from cmasktrack.data.ytvis import VISDataset
    from cmasktrack.evaluation import evaluate_vis, format_results_table
    from cmasktrack.model import CMaskTrack

    model = CMaskTrack.from_pretrained(model_dir, device="cpu")
    gt = VISDataset.from_json(data_dir / "annotations.json", image_root=data_dir / "frames")
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
    print(f"[bench] {model_dir.name} on {data_dir.name}:\n{format_results_table(result)}", file=sys.stderr)
    out = result.to_dict()
    out["num_refs"] = model.config.num_refs if num_refs is None else num_refs
    out["inference_s_per_frame"] = infer_s / max(nframes, 1)
    out["num_predictions"] = len(preds)
    out["eval_set"] = data_dir.name
    return out


def train_variant(name: str, args, data: Dict[str, Path], out: Path) -> Dict[str, Any]:
    """Train one variant within the budget; returns the run's summary (without metrics)."""
    from cmasktrack.train import TrainConfig, train

    t0 = time.time()
    run_dir = out / name
    if run_dir.exists() and not args.resume:
        shutil.rmtree(run_dir)
    budget = args.budget_min * 60.0
    base = TrainConfig.preset(args.preset)
    model = dict(base.model, calibration=VARIANTS[name])
    if args.image_scale:
        model["image_scale"] = list(args.image_scale)
    iters = args.iters or base.max_iters
    changes: Dict[str, Any] = dict(model=model, init=args.init or "", workers_per_gpu=args.workers, seed=args.seed,
                                   log_interval=args.log_interval, checkpoint_interval=0, checkpoint_iters=0,
                                   by_epoch=False, max_iters=iters,
                                   lr_steps=(int(iters * 0.75), int(iters * 0.9)),
                                   warmup_iters=min(base.warmup_iters, max(1, iters // 10)))
    for item in args.set or []:
        key, _, value = item.partition("=")
        changes[key] = json.loads(value)
    if args.lr:
        changes["lr"] = args.lr
    if args.batch:
        changes["images_per_gpu"] = args.batch
    # the loop's clock starts after model and data set-up: leave them and the final save ~30 s
    changes["max_time_s"] = max(30.0, budget - (time.time() - t0) - 30.0)
    cfg = base.replace(**changes)
    result = train(cfg, data["train"] / "annotations.json", data["train"] / "frames", run_dir,
                   progress=not args.quiet, resume=args.resume)
    wall = time.time() - t0
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if line.strip()]
    s_iter = [r["s_per_iter"] for r in log]
    return {"variant": name, "calibration": VARIANTS[name], "iterations": result.iterations,
            "planned_iterations": iters, "stopped_by_budget": result.stopped_early,
            "train_wall_minutes": wall / 60, "s_per_iter": sum(s_iter) / len(s_iter) if s_iter else None,
            "threads": torch.get_num_threads(), "last_losses": result.last_log, "config": cfg.to_dict()}


def run_variant(name: str, args, data: Dict[str, Path], out: Path) -> Dict[str, Any]:
    """Train (unless ``--eval-only``) and evaluate one variant; writes ``<out>/<name>.json``."""
    summary_path = out / f"{name}.json"
    if args.eval_only:
        run = json.loads(summary_path.read_text()) if summary_path.is_file() else {"variant": name}
    else:
        run = train_variant(name, args, data, out)
        summary_path.write_text(json.dumps(run, indent=2))
    eval_set = data["tune"] if args.tune else data["test"]
    t = time.time()
    run["metrics"] = evaluate(out / name, eval_set, args.num_refs)
    run["eval_minutes"] = (time.time() - t) / 60
    summary_path.write_text(json.dumps(run, indent=2))
    return run


def _child_argv(args, name: str, threads: int) -> List[str]:
    argv = [sys.executable, os.path.abspath(__file__), "--variants", name, "--threads", str(threads),
            "--no-parallel", "--child"]
    for key, value in vars(args).items():
        if key in ("variants", "threads", "parallel", "child") or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif key == "set":
            for item in value:
                argv += [flag, item]
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="work/bench_train", help="work directory (data, runs, results.json)")
    p.add_argument("--budget-min", type=float, default=30.0, help="wall-clock training minutes per variant")
    p.add_argument("--variants", choices=("both", "cmasktrack", "masktrack"), default="both")
    p.add_argument("--parallel", dest="parallel", action="store_true", default=False,
                   help="train the variants at the same time, each on half of the cores (default: one after "
                        "the other, each with every core)")
    p.add_argument("--no-parallel", dest="parallel", action="store_false")
    p.add_argument("--train-videos", type=int, default=60)
    p.add_argument("--tune-videos", type=int, default=10)
    p.add_argument("--test-videos", type=int, default=20)
    p.add_argument("--size", type=int, nargs=2, default=(320, 192), metavar=("W", "H"),
                   help="frame size of the training set (the validation and test sets use the generator's defaults)")
    p.add_argument("--image-scale", type=int, nargs=2, default=None, metavar=("LONG", "SHORT"),
                   help="network input scale (default: the preset's)")
    p.add_argument("--preset", default="cpu_synthetic")
    p.add_argument("--iters", type=int, default=0, help="planned iterations (default: the preset's max_iters)")
    p.add_argument("--init", default=None, help="pretrained weights (default: from scratch)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--set", action="append", metavar="KEY=JSON",
                   help="override a TrainConfig field, e.g. --set optimizer='\"adamw\"' (repeatable)")
    p.add_argument("--batch", type=int, default=None, help="frame pairs per iteration (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores, shared when parallel)")
    p.add_argument("--num-refs", type=int, default=None, help="references each side at test time (default: 5)")
    p.add_argument("--log-interval", type=int, default=20)
    p.add_argument("--tune", action="store_true", help="evaluate on the validation split, not the test set")
    p.add_argument("--resume", action="store_true", help="continue runs found in --out")
    p.add_argument("--eval-only", action="store_true", help="evaluate the models already in --out")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.test_videos < 20:
        p.error("--test-videos must be at least 20")
    names = list(VARIANTS) if args.variants == "both" else [args.variants]
    parallel = args.parallel
    cores = os.cpu_count() or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    elif parallel and len(names) > 1:
        torch.set_num_threads(max(1, cores // len(names)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = make_data(out, args)
    if args.child:
        run_variant(names[0], args, data, out)
        return 0
    t0 = time.time()
    if parallel and len(names) > 1:
        threads = max(1, (args.threads or cores) // len(names))
        procs = [subprocess.Popen(_child_argv(args, n, threads)) for n in names]
        codes = [pr.wait() for pr in procs]
        if any(codes):
            print(f"[bench] a variant failed (exit codes {codes})", file=sys.stderr)
            return 1
        runs = [json.loads((out / f"{n}.json").read_text()) for n in names]
    else:
        runs = [run_variant(n, args, data, out) for n in names]
    # earlier invocations in the same --out (e.g. the other variant) on the same set join the summary
    eval_set = runs[0]["metrics"]["eval_set"]
    for n in VARIANTS:
        path = out / f"{n}.json"
        if n not in names and path.is_file():
            earlier = json.loads(path.read_text())
            if earlier.get("metrics", {}).get("eval_set") == eval_set:
                runs.append(earlier)
    summary = {"args": vars(args), "torch": torch.__version__, "cores": cores, "parallel": parallel,
               "total_minutes": (time.time() - t0) / 60, "runs": runs}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    print(f"\nevaluated on {runs[0]['metrics']['eval_set']} with num_refs={runs[0]['metrics']['num_refs']}")
    print(f"{'variant':<11} {'iters':>5} {'s/iter':>6} {'min':>5} {'AP':>5} {'AP50':>5} {'AP75':>5} {'AR1':>5} "
          f"{'AR10':>5}  AP light/medium/heavy")
    for r in runs:
        m = r["metrics"]
        occ = "/".join(f"{100 * m[k]:.1f}" for k in ("AP_light", "AP_medium", "AP_heavy") if k in m) or "-"
        s_iter = f"{r['s_per_iter']:.2f}" if r.get("s_per_iter") else "-"
        mins = f"{r['train_wall_minutes']:.1f}" if "train_wall_minutes" in r else "-"
        print(f"{r['variant']:<11} {r.get('iterations', '-'):>5} {s_iter:>6} {mins:>5} {100 * m['AP']:5.1f} "
              f"{100 * m['AP50']:5.1f} {100 * m['AP75']:5.1f} {100 * m['AR1']:5.1f} {100 * m['AR10']:5.1f}  {occ}")
    print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
