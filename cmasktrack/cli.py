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
# Subcommand registry. HOOK for the lead: add `track`, `train` and `convert` here as
# `_add_<name>_parser(subparsers)` functions that create their parser with `_add_subcommand`
# and call `parser.set_defaults(func=_run_<name>)`, with `_run_<name>(args) -> int` importing
# what it needs lazily (keeps `eval` free of torch). Raise exceptions with a clear message;
# `main` turns them into one stderr line and exit code 2.

_SUBCOMMANDS: List[Callable[["argparse._SubParsersAction"], None]] = [
    _add_eval_parser,
    # _add_track_parser,    # cmasktrack track --dataset annotations.json --image-root DIR --out results.json
    # _add_train_parser,
    # _add_convert_parser,
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
