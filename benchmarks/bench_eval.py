"""Time of ``cmasktrack eval`` with and without the identity metrics (issue 13; not a test).

On a synthetic set (``cmasktrack.data.synthetic``, generator defaults: 320x192, 12-24 frames,
4-8 objects per video) with predictions of the demo model (``cmasktrack.DEMO_MODEL`` through
``cmasktrack track --dataset``, default settings), times

  ap        cmasktrack eval --metrics ap                        (the official AP/AR + occlusion AP)
  all       cmasktrack eval                                     (AP + HOTA + CLEAR + Identity)
  tracking  cmasktrack eval --metrics hota,clear,identity

each as a fresh process (what a user waits for: start-up, reading both files, evaluation,
printing; the process start-up, which imports torch through the command-line parser, is most of
it for small sets), the median of ``--repeats`` runs, and in-process the evaluation alone
(``evaluate_vis`` vs ``evaluate_tracking`` on already loaded data, after a warm-up run). The
identity metrics should cost no more than the AP evaluation: (all - ap) <= ap, and
evaluate_tracking <= evaluate_vis.

The data and the predictions are cached under ``--out`` (predictions per video, so an
interrupted run resumes); only the first run pays for them (for 100 videos: CPU minutes).

    python benchmarks/bench_eval.py --out work/bench_eval --videos 100     # the BENCHMARKS.md figure
    python benchmarks/bench_eval.py --out work/bench_eval_smoke --videos 5 --repeats 1   # smoke run

Writes ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

VARIANTS = {"ap": "ap", "all": "ap,hota,clear,identity", "tracking": "hota,clear,identity"}


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def prepare(out: Path, videos: int, seed: int, threads: int, num_refs=None) -> tuple:
    """The synthetic set and the demo model's predictions on it (both cached; ``num_refs``
    None = the model's setting, 5 + 5 references)."""
    from cmasktrack.data.synthetic import generate

    data = out / f"data_{videos}_{seed}"
    gt = data / "annotations.json"
    if not gt.is_file():
        t = time.perf_counter()
        generate(data, videos, seed, overwrite=True)
        print(f"[bench] generated {videos} videos in {time.perf_counter() - t:.0f} s -> {data}", file=sys.stderr)
    preds = out / f"predictions_{videos}_{seed}{'' if num_refs is None else f'_refs{num_refs}'}.json"
    if not preds.is_file():
        t = time.perf_counter()
        env = _env()
        env.setdefault("OMP_NUM_THREADS", str(threads))
        subprocess.run(
            [sys.executable, "-m", "cmasktrack", "track", "--dataset", str(gt), "--image-root", str(data / "frames"),
             "--out", str(preds), "--no-zip", "--device", "cpu"]
            + ([] if num_refs is None else ["--num-refs", str(num_refs)]),
            check=True, env=env,
        )
        print(f"[bench] predictions in {time.perf_counter() - t:.0f} s -> {preds}", file=sys.stderr)
    return gt, preds


def time_cli(gt: Path, preds: Path, metrics: str, repeats: int) -> list:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "cmasktrack", "eval", "--gt", str(gt), "--pred", str(preds), "--json",
             "--metrics", metrics],
            check=True, env=_env(), stdout=subprocess.DEVNULL,
        )
        times.append(time.perf_counter() - t)
    return times


def time_in_process(gt: Path, preds: Path, repeats: int) -> dict:
    from cmasktrack.data.results import load_results
    from cmasktrack.data.ytvis import VISDataset
    from cmasktrack.evaluation import evaluate_tracking, evaluate_vis

    t = time.perf_counter()
    dataset = VISDataset.from_json(gt)
    predictions = load_results(preds, dataset)
    load_s = time.perf_counter() - t
    evaluate_tracking(dataset, predictions)  # warm-up: imports scipy, fills the RLE cache
    out = {"load_s": load_s, "evaluate_vis_s": [], "evaluate_tracking_s": []}
    for _ in range(repeats):
        t = time.perf_counter()
        vis = evaluate_vis(dataset, predictions)
        out["evaluate_vis_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        tracking = evaluate_tracking(dataset, predictions)
        out["evaluate_tracking_s"].append(time.perf_counter() - t)
    out["AP"], out["HOTA"], out["IDF1"], out["MOTA"] = vis.stats["AP"], tracking["HOTA"], tracking["IDF1"], tracking["MOTA"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="work/bench_eval", help="cache and results directory")
    parser.add_argument("--videos", type=int, default=100, help="synthetic videos (default 100)")
    parser.add_argument("--seed", type=int, default=2000, help="synthetic set seed (default 2000: not a training seed)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per variant; the median is reported (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for generating the predictions")
    parser.add_argument("--num-refs", type=int, default=None,
                        help="reference frames of the demo model's predictions (default: its own, 5; 0 is much "
                             "faster to generate)")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gt, preds = prepare(out, args.videos, args.seed, args.threads, args.num_refs)
    with open(gt) as f:
        annotations = json.load(f)
    with open(preds) as f:
        num_predictions = len(json.load(f))
    frames = sum(v["length"] for v in annotations["videos"])

    cli = {name: time_cli(gt, preds, metrics, args.repeats) for name, metrics in VARIANTS.items()}
    inproc = time_in_process(gt, preds, args.repeats)
    med = {name: statistics.median(ts) for name, ts in cli.items()}
    vis_s = statistics.median(inproc["evaluate_vis_s"])
    trk_s = statistics.median(inproc["evaluate_tracking_s"])
    results = {
        "videos": args.videos, "num_refs": args.num_refs, "frames": frames, "objects": len(annotations["annotations"]),
        "predictions": num_predictions, "repeats": args.repeats, "cli_s": cli, "cli_median_s": med,
        "in_process": inproc, "identity_extra_s": med["all"] - med["ap"],
        "within_budget_cli": med["all"] - med["ap"] <= med["ap"],
        "within_budget_in_process": trk_s <= vis_s,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))

    print(f"{args.videos} videos, {frames} frames, {len(annotations['annotations'])} objects, "
          f"{num_predictions} predicted tracks; median of {args.repeats}")
    print(f"{'cmasktrack eval --metrics':<44} {'wall s':>8}")
    for name, metrics in VARIANTS.items():
        print(f"{metrics:<44} {med[name]:8.2f}")
    print(f"identity metrics add {med['all'] - med['ap']:.2f} s to {med['ap']:.2f} s of AP "
          f"({'within' if results['within_budget_cli'] else 'OVER'} the budget: extra <= AP)")
    print(f"in process: load {inproc['load_s']:.2f} s, evaluate_vis {vis_s:.2f} s, evaluate_tracking {trk_s:.2f} s "
          f"(AP {100 * inproc['AP']:.1f}, HOTA {100 * inproc['HOTA']:.1f}, IDF1 {100 * inproc['IDF1']:.1f}, "
          f"MOTA {100 * inproc['MOTA']:.1f}); "
          f"{'within' if results['within_budget_in_process'] else 'OVER'} the budget (tracking <= AP)")
    print(f"-> {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
