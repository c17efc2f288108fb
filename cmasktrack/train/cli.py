"""Deprecated: ``cmasktrack train`` is defined in :mod:`cmasktrack.cli` with the other
subcommands; ``python -m cmasktrack.train ...`` (for torchrun) runs ``cmasktrack train ...``.

The names below keep working and forward there.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import List, Optional

from .. import cli as _cli

__all__ = ["add_train_subparser", "run_train", "build_train_parser", "main"]

warnings.warn("cmasktrack.train.cli is deprecated: the train subcommand lives in cmasktrack.cli "
              "(cmasktrack.cli.main(['train', ...]))", DeprecationWarning, stacklevel=2)

#: The :class:`~cmasktrack.train.TrainConfig` that parsed ``train`` arguments describe.
resolve_config = _cli._train_config
#: Run parsed ``train`` arguments; returns the exit code.
run_train = _cli._run_train


def add_train_subparser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register ``train`` on a ``cmasktrack`` subparsers object."""
    _cli._add_train_parser(subparsers)
    return subparsers.choices["train"]


def build_train_parser() -> argparse.ArgumentParser:
    """A stand-alone parser of the ``train`` arguments."""
    parser = argparse.ArgumentParser(prog="python -m cmasktrack.train", description="Train CMaskTrack R-CNN.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    _cli._add_train_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """``cmasktrack train`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return _cli.main(["train", *(sys.argv[1:] if argv is None else argv)])
