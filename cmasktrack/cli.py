"""The ``cmasktrack`` command line (also ``python -m cmasktrack``).

Each subcommand is two small functions: ``_add_<name>_parser`` declares its arguments and
``_run_<name>`` does the work and returns the exit code. Errors are one line on stderr and exit
code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Callable, List, Optional, Sequence

from . import __version__

__all__ = ["main", "build_parser"]

EXIT_ERROR = 2


# --------------------------------------------------------------------------------------------
# eval


def _add_subcommand(subparsers: "argparse._SubParsersAction", name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand parser with the options every subcommand shares (``--debug`` may also be
    given after the subcommand name)."""
    parser = subparsers.add_parser(name, **kwargs)
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors"
    )
    return parser


_EVAL_METRICS = ("ap", "hota", "clear", "identity")


def _add_eval_parser(subparsers: "argparse._SubParsersAction") -> None:
    parser = _add_subcommand(
        subparsers,
        "eval",
        help="evaluate a results json against OVIS / YouTube-VIS ground truth (official AP/AR, HOTA, CLEAR, IDF1)",
        description=(
            "Video instance segmentation AP/AR exactly as the official YouTube-VIS / OVIS "
            "evaluation, per-category AP, TrackEval's HOTA / CLEAR / Identity metrics, and the "
            "occlusion breakdown of AP/AR and IDF1 / AssA / IDSW (official OVIS labels, or derived "
            "from box overlaps when the ground truth has none)."
        ),
    )
    parser.add_argument("--gt", required=True, metavar="ANNOTATIONS_JSON", help="ground-truth annotation json")
    parser.add_argument("--pred", required=True, metavar="RESULTS_JSON", help="results json (the server format)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (as the last line of stdout) instead of the table",
    )
    parser.add_argument(
        "--derived-occlusion",
        choices=("auto", "on", "off"),
        default="auto",
        help="derived (box-overlap) occlusion breakdown: auto = only when the ground truth has "
        "no official occlusion labels (default: auto)",
    )
    parser.add_argument(
        "--metrics",
        default=",".join(_EVAL_METRICS),
        metavar="LIST",
        help="comma-separated metric families among ap, hota, clear, identity (default: all)",
    )
    parser.add_argument(
        "--plot",
        default=None,
        metavar="IMAGE",
        help="also draw the report on one figure (png, pdf or svg; needs matplotlib: cmasktrack[plot])",
    )
    parser.set_defaults(func=_run_eval)


def _parse_eval_metrics(text: str) -> List[str]:
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in _EVAL_METRICS]
    if unknown or not names:
        raise ValueError(
            f"--metrics: {'unknown metric ' + repr(unknown[0]) if unknown else 'nothing chosen'} "
            f"(choose from {', '.join(_EVAL_METRICS)})"
        )
    return [m for m in _EVAL_METRICS if m in names]


def _run_eval(args: argparse.Namespace) -> int:
    from .data.results import load_results
    from .data.ytvis import VISDataset
    from .evaluation import evaluate_tracking, evaluate_vis, format_results_table

    metrics = _parse_eval_metrics(args.metrics)
    tracking_metrics = [m for m in metrics if m != "ap"]
    if args.plot is not None:
        from .evaluation.plot import _import_matplotlib

        _import_matplotlib()  # fail before the work when matplotlib is missing
    dataset = VISDataset.from_json(args.gt)
    predictions = load_results(args.pred, dataset)
    derived = {"auto": None, "on": True, "off": False}[args.derived_occlusion]
    result = tracking = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if "ap" in metrics:
            result = evaluate_vis(dataset, predictions, derived_occlusion=derived)
        if tracking_metrics:
            tracking = evaluate_tracking(
                dataset, predictions, metrics=tracking_metrics, derived_occlusion=derived,
                progress=not args.json and sys.stderr.isatty(),
            )
    for message in dict.fromkeys(str(w.message) for w in caught):
        print(f"cmasktrack: warning: {message}", file=sys.stderr)
    if args.plot is not None:
        from .evaluation import plot_evaluation

        import os

        plot_evaluation(args.plot, result, tracking,
                        title=f"{os.path.basename(args.pred)} on {os.path.basename(args.gt)}")
    if args.json:
        out = result.to_dict() if result is not None else {}
        out.update(tracking or {})
        print(json.dumps(out))
    else:
        print(format_results_table(result, tracking=tracking))
        if args.plot is not None:
            print(f"\nplot -> {args.plot}")
    return 0


# --------------------------------------------------------------------------------------------
# track


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="SOURCE",
                        help="model directory, Hugging Face hub id or official .pth checkpoint "
                             "(default: the demo model shipped with the package)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--num-refs", type=int, default=None,
                        help="reference frames before (and after) each frame; 0 = no calibration (default: the model's)")
    parser.add_argument("--causal", action="store_true", help="use past frames only as references (live streams)")
    parser.add_argument("--score-threshold", type=float, default=None, help="detection score threshold (default 0.05)")
    parser.add_argument("--batch-refs", type=int, default=None, help="calibrate at most this many references at once")


def _add_track_parser(subparsers: "argparse._SubParsersAction") -> None:
    parser = _add_subcommand(
        subparsers, "track",
        help="segment and track the objects of a video (or of every video of a dataset)",
        description=(
            "Track one video (INPUT: a folder of frames or a video file) and write its OVIS / YouTube-VIS "
            "results json, optionally an overlay (--vis); or, with --dataset, every video of an annotation "
            "file, writing the results json and the zip the evaluation server takes (resumable)."
        ),
    )
    parser.add_argument("input", nargs="?", help="a folder of frames or a video file")
    parser.add_argument("--out", required=True, metavar="RESULTS_JSON", help="where to write the results json")
    parser.add_argument("--vis", default=None, metavar="PATH", help="overlay output: out.gif, out.mp4 or a directory")
    parser.add_argument("--video-id", type=int, default=1, help="video_id written in the results (single video)")
    parser.add_argument("--dataset", default=None, metavar="ANNOTATIONS_JSON",
                        help="track every video of this OVIS / YouTube-VIS annotation file")
    parser.add_argument("--image-root", default=None, metavar="DIR", help="frames directory of --dataset")
    parser.add_argument("--no-resume", action="store_true", help="with --dataset: redo videos already finished")
    parser.add_argument("--no-zip", action="store_true", help="with --dataset: do not write the zip")
    _add_model_options(parser)
    _add_speed_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=_run_track)


#: TrackOptions' precisions (cmasktrack.tracking.PRECISIONS; not imported: building the parser
#: must not import torch).
_PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def _add_speed_options(parser: argparse.ArgumentParser) -> None:
    """How the network runs (issue 12): precision, torch.compile, layout, fast mode, prefetching."""
    group = parser.add_argument_group("speed")
    group.add_argument("--precision", choices=_PRECISIONS, default=None,
                       help="fp32 (default), tf32 (CUDA; = fp32 on the CPU), bf16 or fp16 autocast of the backbone "
                            "and heads; the calibration, decoding, NMS and the tracker stay float32")
    group.add_argument("--compile", action="store_true", help="torch.compile the per-frame network (slow first frames)")
    group.add_argument("--compile-backend", default=None, metavar="NAME",
                       help="torch.compile backend (implies --compile; default inductor)")
    group.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                       help="channels-last backbone input (auto: with bf16 / fp16 only)")
    group.add_argument("--share-heads", action="store_true",
                       help="fast mode: one box / mask head pass on the references' mean calibrated features "
                            "(not the official model; see BENCHMARKS.md, Fast mode)")
    group.add_argument("--prefetch", type=int, default=None, metavar="N",
                       help="frames decoded ahead in a background thread (default 2; 0 = none)")


def _load_model(args: argparse.Namespace):
    from . import DEMO_MODEL
    from .model import CMaskTrack

    import os

    if args.model is None and not os.path.isdir(DEMO_MODEL):
        raise FileNotFoundError(f"no --model given and this installation has no demo model ({DEMO_MODEL}); "
                                "pass --model DIR|HUB_ID|official.pth")
    return CMaskTrack.from_pretrained(args.model or DEMO_MODEL, device=args.device)


def _track_options(args: argparse.Namespace):
    """The :class:`~cmasktrack.tracking.TrackOptions` of the model options (validated)."""
    from .tracking.options import TrackOptions

    return TrackOptions.build(num_refs=args.num_refs, causal=args.causal, score_threshold=args.score_threshold,
                              batch_refs=args.batch_refs, precision=args.precision,
                              compile=args.compile_backend or (True if args.compile else None),
                              share_heads=args.share_heads or None, prefetch=args.prefetch,
                              channels_last={"auto": None, "on": True, "off": False}[args.channels_last])


def _run_track(args: argparse.Namespace) -> int:
    import os
    import time

    if args.dataset is not None:
        if args.input is not None:
            raise ValueError("give either INPUT or --dataset, not both")
        if args.image_root is None:
            raise ValueError("--dataset needs --image-root (the directory the file_names are relative to)")
        if args.vis is not None:
            raise ValueError("--vis works on a single video, not with --dataset")
        from .data.ytvis import VISDataset
        from .tracking import track_dataset

        dataset = VISDataset.from_json(args.dataset, image_root=args.image_root)
        options = _track_options(args)
        model = _load_model(args)
        t0 = time.perf_counter()
        entries = track_dataset(model, dataset, args.out, resume=not args.no_resume, write_zip=not args.no_zip,
                                progress=not args.quiet, options=options)
        print(f"{len(dataset.video_ids)} videos, {len(entries)} tracks, {time.perf_counter() - t0:.1f} s "
              f"-> {args.out}" + ("" if args.no_zip else f" and {os.path.splitext(args.out)[0]}.zip"))
        return 0
    if args.input is None:
        raise ValueError("give INPUT (a folder of frames or a video file) or --dataset")
    if not os.path.exists(args.input):
        raise FileNotFoundError(2, "No such file or directory", args.input)
    options = _track_options(args)
    model = _load_model(args)
    t0 = time.perf_counter()
    result = model.track_video(args.input, options, progress=not args.quiet)
    seconds = time.perf_counter() - t0
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result.to_ytvis(video_id=args.video_id), f)
    print(f"{result.num_frames} frames, {len(result.tracks)} tracks, "
          f"{seconds / max(result.num_frames, 1):.2f} s/frame -> {args.out}")
    if args.vis is not None:
        from .visualize import render_video

        path = render_video(result, args.input, args.vis, progress=not args.quiet)
        print(f"overlay -> {path}")
    return 0


# --------------------------------------------------------------------------------------------
# convert


def _add_convert_parser(subparsers: "argparse._SubParsersAction") -> None:
    parser = _add_subcommand(
        subparsers, "convert",
        help="convert an official (mmdetection) checkpoint to a cmasktrack model directory",
        description="Read an official CMaskTrack R-CNN / MaskTrack R-CNN .pth (weights only, never arbitrary "
                    "pickles) and write config.json + model.safetensors.",
    )
    parser.add_argument("checkpoint", help="official .pth file")
    parser.add_argument("out_dir", help="output model directory")
    parser.add_argument("--fp16", action="store_true", help="store the weights in float16 (half the size)")
    parser.set_defaults(func=_run_convert)


def _run_convert(args: argparse.Namespace) -> int:
    import torch

    from .model import CMaskTrack

    model = CMaskTrack.from_official_checkpoint(args.checkpoint)
    model.save_pretrained(args.out_dir, dtype=torch.float16 if args.fp16 else None)
    cfg = model.config
    print(f"{args.checkpoint} -> {args.out_dir} (ResNet-{cfg.depth}, {cfg.num_categories} categories"
          f"{', ' + cfg.dataset if cfg.dataset else ''}, calibration {'on' if cfg.calibration else 'off'})")
    return 0


# --------------------------------------------------------------------------------------------
# train (also ``python -m cmasktrack.train``, which torchrun needs)


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--config", metavar="CFG_JSON", help="training configuration json (TrainConfig fields; "
                     "may name a \"preset\" and override some of its fields)")
    src.add_argument("--preset", default=None, help="a named configuration: ovis (the official recipe, default) "
                     "or cpu_small")
    parser.add_argument("--data", required=True, metavar="ANNOTATIONS_JSON",
                        help="training annotations (OVIS / YouTube-VIS format)")
    parser.add_argument("--image-root", required=True, metavar="DIR", help="directory the json's file_names are "
                        "relative to")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (checkpoints, log, model)")
    parser.add_argument("--init", metavar="PATH", default=None, help="initial weights: an official mmdetection "
                        ".pth (COCO Mask R-CNN), torchvision's maskrcnn_resnet50_fpn COCO weights, a torchvision "
                        "ResNet, or a cmasktrack model directory (overrides the config's init)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT_DIR",
                        help="continue from the latest checkpoint in --out (or from CHECKPOINT_DIR)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA when available)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a TrainConfig field, VALUE as json (e.g. --set max_epochs=6 "
                        "--set 'model={\"calibration\": false}'); repeatable")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar / log lines")
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")


def _add_train_parser(subparsers: "argparse._SubParsersAction") -> None:
    parser = _add_subcommand(
        subparsers, "train",
        help="train or fine-tune a model on OVIS / YouTube-VIS json data",
        description="Train CMaskTrack R-CNN with the official recipe (or a configured variant). Run under "
                    "torchrun (torchrun ... -m cmasktrack.train ...) for several processes/GPUs.",
    )
    _add_train_arguments(parser)
    parser.set_defaults(func=_run_train)


def _parse_set(items: Sequence[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare string
        out[key.strip()] = value
    return out


def _train_config(args: argparse.Namespace):
    """The :class:`~cmasktrack.train.TrainConfig` the ``train`` arguments describe."""
    from .train.config import TrainConfig

    if args.config:
        cfg = TrainConfig.load(args.config)
    else:
        cfg = TrainConfig.preset(args.preset or "ovis")
    overrides = _parse_set(args.set)
    if args.init is not None:
        overrides["init"] = args.init
    if overrides:
        d = cfg.to_dict()
        if "model" in overrides:
            d["model"] = {**d["model"], **overrides.pop("model")}
        d.update(overrides)
        cfg = TrainConfig.from_dict(d)
    return cfg


def _run_train(args: argparse.Namespace) -> int:
    import os

    from .train.loop import train

    cfg = _train_config(args)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    result = train(cfg, args.data, args.image_root, args.out, resume=args.resume, device=args.device,
                   progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(result.out_dir)
    return 0


# --------------------------------------------------------------------------------------------
# selftest


def _add_selftest_parser(subparsers: "argparse._SubParsersAction") -> None:
    from .selftest import add_arguments

    parser = _add_subcommand(
        subparsers, "selftest",
        help="check this installation on the CPU and every GPU (correlation op, model, training, DDP)",
        description="Run the compiled correlation op against its PyTorch fallback, the model on a synthetic "
                    "clip against the CPU and the fallback, a training step (with AMP on CUDA) and, on CUDA, a "
                    "one-process DDP step over NCCL; print a table; exit 1 if a check fails. Same as "
                    "`python -m cmasktrack.selftest`.",
    )
    add_arguments(parser)
    parser.set_defaults(func=_run_selftest)


def _run_selftest(args: argparse.Namespace) -> int:
    from .selftest import run_from_args

    return run_from_args(args)


# --------------------------------------------------------------------------------------------
# Subcommand registry: each `_add_<name>_parser(subparsers)` creates its parser with
# `_add_subcommand` and calls `parser.set_defaults(func=_run_<name>)`; `_run_<name>(args) -> int`
# imports what it needs lazily (keeps `eval` free of torch). Exceptions with a clear message
# become one stderr line and exit code 2 in `main`.

_SUBCOMMANDS: List[Callable[["argparse._SubParsersAction"], None]] = [
    _add_eval_parser,
    _add_track_parser,
    _add_convert_parser,
    _add_train_parser,
    _add_selftest_parser,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``cmasktrack`` argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="cmasktrack",
        description="CMaskTrack R-CNN: video instance segmentation under occlusion.",
    )
    parser.add_argument("--version", action="version", version=f"cmasktrack {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Errors print one line ``cmasktrack: error: ...`` on stderr and return 2; with ``--debug``
    the exception propagates with its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
        if args.debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, FileNotFoundError) and exc.filename:
            message = f"no such file: {exc.filename}"
        print(f"cmasktrack: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
