"""``python -m cmasktrack.data.synthetic``: generate a dataset and print its statistics."""

from __future__ import annotations

import argparse
import time
from typing import Optional, Sequence, Tuple

from .dataset import IntRange, generate
from .scenes import CATEGORIES
from .statistics import format_statistics, occlusion_statistics

__all__ = ["main"]



def _parse_range(text: str) -> IntRange:
    text = text.strip()
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            return int(lo), int(hi)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX, got {text!r}") from None


def _parse_size(text: str) -> Tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: generate a dataset and print its occlusion statistics."""
    parser = argparse.ArgumentParser(
        prog="python -m cmasktrack.data.synthetic",
        description="Generate the cmasktrack synthetic occlusion benchmark (OVIS format).")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--videos", type=int, required=True, help="number of videos")
    parser.add_argument("--seed", type=int, required=True, help="random seed (>= 0)")
    parser.add_argument("--frames", type=_parse_range, default=(12, 24),
                        help="frames per video: N or MIN-MAX (default 12-24)")
    parser.add_argument("--size", type=_parse_size, default=(320, 192),
                        help="frame size WIDTHxHEIGHT (default 320x192)")
    parser.add_argument("--objects", type=_parse_range, default=(4, 8),
                        help="objects per video: N or MIN-MAX (default 4-8)")
    parser.add_argument("--categories", default=",".join(CATEGORIES),
                        help=f"comma-separated subset of {','.join(CATEGORIES)}")
    parser.add_argument("--noise", type=float, default=2.0, help="sensor noise std (0-255 scale)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--quiet", action="store_true", help="do not print statistics")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        path = generate(args.out, args.videos, args.seed, num_frames=args.frames, size=args.size,
                        categories=[c.strip() for c in args.categories.split(",") if c.strip()],
                        objects_per_video=args.objects, noise_std=args.noise,
                        overwrite=args.overwrite)
    except (ValueError, FileExistsError) as exc:
        parser.error(str(exc))
    elapsed = time.perf_counter() - start
    print(f"wrote {path} ({args.videos} videos in {elapsed:.1f} s)")
    if not args.quiet:
        print(format_statistics(occlusion_statistics(path)))
    return 0
