"""``cmasktrack train``: the command line of :func:`cmasktrack.train.train`.

``add_train_subparser(subparsers)`` registers the subcommand on the ``cmasktrack`` parser;
``python -m cmasktrack.train ...`` takes the same arguments (handy under ``torchrun``)::

    cmasktrack train --config cfg.json --data annotations.json --image-root DIR --out DIR
    torchrun --nproc_per_node 4 -m cmasktrack.train --preset ovis --init mask_rcnn_r50_fpn_1x.pth \\
        --data annotations_train.json --image-root train_images --out work/ovis
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["add_train_subparser", "run_train", "build_train_parser", "main"]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
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


def add_train_subparser(subparsers: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """Register ``train`` on a ``cmasktrack`` subparsers object; the parser's ``func`` is
    :func:`run_train`."""
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a model on OVIS / YouTube-VIS json data",
        description="Train CMaskTrack R-CNN with the official recipe (or a configured variant). Run under "
                    "torchrun for several processes/GPUs.",
    )
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors")
    _add_arguments(parser)
    parser.set_defaults(func=run_train)
    return parser


def _parse_set(items: Sequence[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
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


def resolve_config(args: argparse.Namespace):
    """The :class:`TrainConfig` the arguments describe."""
    from .config import TrainConfig

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


def run_train(args: argparse.Namespace) -> int:
    """Run ``cmasktrack train``; returns the exit code."""
    from .loop import train

    cfg = resolve_config(args)
    if args.print_config:
        print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    result = train(cfg, args.data, args.image_root, args.out, resume=args.resume, device=args.device,
                   progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(result.out_dir)
    return 0


def build_train_parser() -> argparse.ArgumentParser:
    """The stand-alone parser of ``python -m cmasktrack.train``."""
    parser = argparse.ArgumentParser(prog="python -m cmasktrack.train", description="Train CMaskTrack R-CNN.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    _add_arguments(parser)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``python -m cmasktrack.train``."""
    args = build_train_parser().parse_args(argv)
    try:
        return run_train(args)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001
        if args.debug:
            raise
        print(f"cmasktrack train: error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 2
