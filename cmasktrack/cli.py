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


def _add_eval_parser(subparsers: "argparse._SubParsersAction") -> None:
    parser = _add_subcommand(
        subparsers,
        "eval",
        help="evaluate a results json against OVIS / YouTube-VIS ground truth (official AP/AR)",
        description=(
            "Video instance segmentation AP/AR exactly as the official YouTube-VIS / OVIS "
            "evaluation, per-category AP, and the occlusion breakdown (official OVIS labels, "
            "or derived from box overlaps when the ground truth has none)."
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
    parser.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from .data.results import load_results
    from .data.ytvis import VISDataset
    from .evaluation import evaluate_vis, format_results_table

    dataset = VISDataset.from_json(args.gt)
    predictions = load_results(args.pred, dataset)
    derived = {"auto": None, "on": True, "off": False}[args.derived_occlusion]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluate_vis(dataset, predictions, derived_occlusion=derived)
    for warning in caught:
        print(f"cmasktrack: warning: {warning.message}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(format_results_table(result))
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
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=_run_track)


def _load_model(args: argparse.Namespace):
    from . import DEMO_MODEL
    from .model import CMaskTrack

    import os

    if args.model is None and not os.path.isdir(DEMO_MODEL):
        raise FileNotFoundError(f"no --model given and this installation has no demo model ({DEMO_MODEL}); "
                                "pass --model DIR|HUB_ID|official.pth")
    return CMaskTrack.from_pretrained(args.model or DEMO_MODEL, device=args.device)


def _track_kwargs(args: argparse.Namespace) -> dict:
    return dict(num_refs=args.num_refs, causal=args.causal, score_threshold=args.score_threshold,
                batch_refs=args.batch_refs)


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
        from .inference import track_dataset

        dataset = VISDataset.from_json(args.dataset, image_root=args.image_root)
        model = _load_model(args)
        t0 = time.perf_counter()
        entries = track_dataset(model, dataset, args.out, resume=not args.no_resume, write_zip=not args.no_zip,
                                progress=not args.quiet, **_track_kwargs(args))
        print(f"{len(dataset.video_ids)} videos, {len(entries)} tracks, {time.perf_counter() - t0:.1f} s "
              f"-> {args.out}" + ("" if args.no_zip else f" and {os.path.splitext(args.out)[0]}.zip"))
        return 0
    if args.input is None:
        raise ValueError("give INPUT (a folder of frames or a video file) or --dataset")
    if not os.path.exists(args.input):
        raise FileNotFoundError(2, "No such file or directory", args.input)
    model = _load_model(args)
    t0 = time.perf_counter()
    result = model.track_video(args.input, progress=not args.quiet, **_track_kwargs(args))
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
# train


def _add_train_parser(subparsers: "argparse._SubParsersAction") -> None:
    from .train.cli import add_train_subparser

    add_train_subparser(subparsers)


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
# Subcommand registry. HOOK for the lead: add `track`, `train` and `convert` here as
# `_add_<name>_parser(subparsers)` functions that create their parser with `_add_subcommand`
# and call `parser.set_defaults(func=_run_<name>)`, with `_run_<name>(args) -> int` importing
# what it needs lazily (keeps `eval` free of torch). Raise exceptions with a clear message;
# `main` turns them into one stderr line and exit code 2.

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
