"""The ``cmasktrack`` command line (also ``python -m cmasktrack``).

Each subcommand is two small functions: ``_add_<name>_parser`` declares its arguments and
``_run_<name>`` does the work and returns the exit code. Errors are one line on stderr and exit
code 2; ``--debug`` shows the traceback instead. ``track --dataset`` and ``merge`` exit with 1
when some videos failed (listed on stderr; the results hold the others).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from contextlib import contextmanager
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _start_value(text: str):
    """``--start``: a frame index (``120``) or seconds (``12.5s``)."""
    raw = text.strip().lower()
    try:
        if raw.endswith("s"):
            seconds = float(raw[:-1])
            if not seconds >= 0:
                raise ValueError
            return ("time", seconds)
        frame = int(raw)
        if frame < 0:
            raise ValueError
        return ("frame", frame)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a frame number (120) or seconds (12.5s), got {text!r}") from None


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, metavar="SOURCE",
                        help="model directory, Hugging Face hub id or official .pth checkpoint "
                             "(default: the demo model shipped with the package)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--num-refs", type=int, default=None,
                        help="reference frames before (and after) each frame; 0 = no calibration (default: the model's)")
    parser.add_argument("--causal", action="store_true",
                        help="use past frames only as references: each result is ready when its frame arrives (the "
                             "mode for live sources, chosen automatically for them)")
    parser.add_argument("--score-threshold", type=float, default=None, help="detection score threshold (default 0.05)")
    parser.add_argument("--batch-refs", type=int, default=None, help="calibrate at most this many references at once")


def _add_track_parser(subparsers: "argparse._SubParsersAction") -> None:
    parser = _add_subcommand(
        subparsers, "track",
        help="segment and track the objects of a video (or of every video of a dataset)",
        description=(
            "Track one video (INPUT: a folder of frames, a video file, a stream, a camera or a pipe) frame by "
            "frame, writing its results (*.jsonl as frames finish, or the OVIS / YouTube-VIS results json) and "
            "optionally an overlay (--vis); Ctrl-C stops cleanly with what was done written. Or, with --dataset, "
            "every video of an annotation file, writing the results json and the zip the evaluation server "
            "takes (resumable)."
        ),
    )
    parser.add_argument("input", nargs="?",
                        help="a folder of frames, a video file, a stream URL (rtsp://, http(s)://, ...), a camera "
                             "(/dev/video0), or - (raw RGB frames on stdin, with --size WxH)")
    parser.add_argument("--out", required=True, metavar="RESULTS",
                        help="results: *.jsonl (one JSON line per frame, written as each frame finishes: usable "
                             "while a stream runs) or *.json (the benchmark's results json, written at the end)")
    parser.add_argument("--vis", default=None, metavar="PATH", help="overlay output: out.gif, out.mp4 or a directory "
                        "(checked before tracking starts)")
    parser.add_argument("--vis-fps", type=_positive_float, default=None, metavar="F",
                        help="frame rate of the overlay (default: the source's, divided by --stride; 10 for frame "
                             "folders)")
    parser.add_argument("--video-id", type=int, default=1, help="video_id written in the results (single video)")
    sampling = parser.add_argument_group("frame sampling and live input (single INPUT)")
    sampling.add_argument("--stride", type=_positive_int, default=None, metavar="K", help="track every K-th frame")
    sampling.add_argument("--fps", type=_positive_float, default=None, metavar="F",
                          help="track F frames per second of the source (by timestamp; OVIS is annotated at 5 fps: "
                               "a 30 fps video with --fps 5 runs 6x faster)")
    sampling.add_argument("--start", type=_start_value, default=None, metavar="N|Ts",
                          help="start at frame N, or at T seconds (e.g. 12.5s)")
    sampling.add_argument("--max-frames", type=_positive_int, default=None, metavar="M",
                          help="stop after M tracked frames")
    sampling.add_argument("--size", default=None, metavar="WxH", help="size of the raw RGB24 frames read from stdin (-)")
    sampling.add_argument("--format", default=None, metavar="FMT",
                          help="FFmpeg input format (v4l2, avfoundation, dshow, lavfi, mpegts, ...; default: guessed)")
    sampling.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                          help="drop the frames that arrive while the model is busy, so results keep up with a live "
                               "source (default: on for cameras and network streams without an end)")
    parser.add_argument("--dataset", default=None, metavar="ANNOTATIONS_JSON",
                        help="track every video of this OVIS / YouTube-VIS annotation file")
    parser.add_argument("--image-root", default=None, metavar="DIR", help="frames directory of --dataset")
    parser.add_argument("--no-resume", action="store_true", help="with --dataset: redo videos already finished")
    parser.add_argument("--no-zip", action="store_true", help="with --dataset: do not write the zip")
    _add_dataset_run_options(parser)
    _add_model_options(parser)
    _add_speed_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=_run_track)


def _add_dataset_run_options(parser: argparse.ArgumentParser) -> None:
    """``track --dataset`` in several processes: torchrun ranks or job-array shares."""
    group = parser.add_argument_group(
        "large datasets (with --dataset)",
        "Under torchrun (torchrun --nproc_per_node N -m cmasktrack track --dataset ...) every rank tracks its "
        "share of the videos (balanced by frames; one GPU per rank, gloo CPU processes without GPUs) and rank 0 "
        "merges. Exit code 1: some videos failed (listed; the results hold the others).")
    group.add_argument("--resume", action="store_true",
                       help="take the videos an earlier run finished from <out>.partial/ (the default)")
    group.add_argument("--shard", default=None, metavar="I/N",
                       help="job arrays: track share I of N (0 <= I < N) only; the last share to finish merges, "
                            "or run `cmasktrack merge`")
    group.add_argument("--skip-bad-frames", action="store_true",
                       help="an unreadable frame becomes an empty frame (a warning) instead of failing its video")
    group.add_argument("--threads", type=int, default=None, metavar="N",
                       help="CPU threads of each process (default: under torchrun on the CPU, the cores / processes)")
    group.add_argument("--verbose", action="store_true", help="a line per video from every process")


def _add_speed_options(parser: argparse.ArgumentParser) -> None:
    """How the network runs (issue 12): precision, torch.compile, layout, fast mode, prefetching."""
    from .tracking.options import PRECISIONS  # no torch: the parser is built without it

    group = parser.add_argument_group("speed")
    group.add_argument("--precision", choices=PRECISIONS, default=None,
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
                       help="frames decoded ahead in a background thread (default: 2 on CUDA, 0 on the CPU)")


def _load_model(args: argparse.Namespace):
    from . import DEMO_MODEL
    from .model import CMaskTrack

    import os

    if args.model is None and not os.path.isdir(DEMO_MODEL):
        raise ValueError(f"no --model given and this installation has no demo model ({DEMO_MODEL}); "
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


_SINGLE_INPUT_OPTIONS = ("stride", "fps", "start", "max_frames", "size", "format", "realtime", "vis_fps")


def _run_track(args: argparse.Namespace) -> int:

    if args.dataset is not None and any(getattr(args, k) is not None for k in _SINGLE_INPUT_OPTIONS):
        used = [k for k in _SINGLE_INPUT_OPTIONS if getattr(args, k) is not None]
        raise ValueError(f"--{used[0].replace('_', '-')} works on a single INPUT, not with --dataset")
    if args.dataset is not None:
        return _run_track_dataset(args)
    if args.shard is not None or args.skip_bad_frames or args.resume or args.threads is not None:
        raise ValueError("--shard, --resume, --skip-bad-frames and --threads work with --dataset")
    if args.input is None:
        raise ValueError("give INPUT (a folder of frames, a video file, a stream URL, a camera or -) or --dataset")
    return _track_input(args)


def _open_input(args: argparse.Namespace):
    """The :class:`~cmasktrack.data.frames.FrameSource` of INPUT and the sampling options."""
    from .data.frames import read_frames

    start = args.start or ("frame", 0)
    return read_frames(
        args.input, stride=args.stride or 1, fps=args.fps, max_frames=args.max_frames, size=args.size,
        format=args.format, realtime=args.realtime,
        start=start[1] if start[0] == "frame" else 0, start_time=start[1] if start[0] == "time" else None,
    )


def _results_writer(path: str):
    """``(kind, file)``: ``"jsonl"`` with the file open (one line per frame, flushed), or
    ``"json"`` with None (written at the end); the folder is checked now."""
    import os

    kind = "jsonl" if path.lower().endswith(".jsonl") else "json"
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        if kind == "jsonl":
            return kind, open(path, "w", encoding="utf-8")
        if not os.access(folder, os.W_OK):
            raise PermissionError(13, "Permission denied", folder)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write the results {path}: {exc.strerror or exc}") from None
    return kind, None


def _track_input(args: argparse.Namespace) -> int:
    """``cmasktrack track INPUT``: a file, a folder, a stream, a camera or a pipe, tracked frame by
    frame (:meth:`CMaskTrack.track_stream`); results and overlay are written as frames finish,
    and SIGINT / SIGTERM stop cleanly with what was done written."""
    import os
    import time

    from .tracking.options import TrackOptions

    options = _track_options(args)
    source = _open_input(args)
    if source.live and not options.causal:
        options = TrackOptions.build(options, causal=True)
        _note(f"{args.input} is a live source: tracking causally (past references only, --causal), the only "
              f"mode that gives each frame's result when it arrives")
    overlay = None
    kind, results_file = _results_writer(args.out)
    try:
        if args.vis is not None:
            from .visualize import OverlayWriter

            fps = args.vis_fps or source.output_fps or 10.0
            overlay = OverlayWriter(args.vis, fps=fps, expected_frames=source.length_hint)
        model = _load_model(args)
        if overlay is not None:
            overlay.category_names = list(model.config.category_names)
        stream = model.track_stream(source, options, images=overlay is not None, progress=not args.quiet)
        names = stream.category_names
        done = []
        track_ids = set()
        t0 = time.perf_counter()
        with stream.stop_on_signals():
            for item in stream:
                res, image = item if overlay is not None else (item, None)
                track_ids.update(int(t) for t in res.track_ids)
                if results_file is not None:
                    results_file.write(json.dumps(res.to_json(names)) + "\n")
                    results_file.flush()
                else:
                    done.append(res)
                if overlay is not None:
                    overlay.write(image, res)
        seconds = time.perf_counter() - t0
    except BaseException:
        if overlay is not None:
            overlay.close()  # what was drawn stays, a properly closed file
        if results_file is not None and results_file.tell() == 0:
            results_file.close()
            os.remove(args.out)  # failed before the first frame: leave nothing behind
        raise
    finally:
        if results_file is not None:
            results_file.close()
    if kind == "json":
        from .video_result import VideoResult

        h, w = stream.frame_size or (0, 0)
        entries = VideoResult(done, h, w, names).to_ytvis(video_id=args.video_id)
        tmp = f"{args.out}.partial-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(entries, f)
        os.replace(tmp, args.out)
    n = stream.frames_done
    print(f"{n} frames, {len(track_ids)} tracks, {seconds / max(n, 1):.2f} s/frame -> {args.out}"
          + (f" ({stream.dropped} frames dropped to keep up with the source)" if stream.dropped else ""))
    if overlay is not None:
        path = overlay.close()
        print(f"overlay -> {path}" if path is not None else "no overlay: no frame was tracked")
    if stream.stop_signal is not None:
        import signal

        name = signal.Signals(stream.stop_signal).name
        print(f"stopped by {name}: the results of the {n} frames tracked are written", file=sys.stderr)
        return 128 + int(stream.stop_signal)
    return 0


def _note(message: str) -> None:
    print(f"cmasktrack: note: {message}", file=sys.stderr)


def _run_track_dataset(args: argparse.Namespace) -> int:
    """``track --dataset``: this process's share (everything, a torchrun rank's, or --shard's)."""
    if args.input is not None:
        raise ValueError("give either INPUT or --dataset, not both")
    if args.image_root is None:
        raise ValueError("--dataset needs --image-root (the directory the file_names are relative to)")
    if args.vis is not None:
        raise ValueError("--vis works on a single video, not with --dataset")
    if args.resume and args.no_resume:
        raise ValueError("give --resume or --no-resume, not both")
    from .data.ytvis import VISDataset
    from .tracking.dataset import track_dataset_processes
    from .tracking.shards import parse_shard

    shard = parse_shard(args.shard) if args.shard is not None else None
    dataset = VISDataset.from_json(args.dataset, image_root=args.image_root)
    report = track_dataset_processes(
        lambda device: _load_model(argparse.Namespace(**{**vars(args), "device": str(device)})), dataset, args.out,
        device=args.device, threads=args.threads, shard=shard, resume=not args.no_resume, write_zip=not args.no_zip,
        progress=not args.quiet, verbose=args.verbose, skip_bad_frames=args.skip_bad_frames,
        options=_track_options(args))
    if not report.main:
        return 0
    print(report.summary())
    return _report_failures(report.failures, report.total_videos, args.out if report.merged else None)


def _report_failures(failures, total: int, out: Optional[str]) -> int:
    """Every failed video on stderr, by name with the reason; the exit code (1 when any)."""
    if not failures:
        return 0
    where = f" ({out} holds the other {total - len(failures)})" if out else ""
    print(f"cmasktrack: error: {len(failures)} of {total} videos failed{where}:", file=sys.stderr)
    for failure in failures:
        print(f"  {failure}", file=sys.stderr)
    return 1


# --------------------------------------------------------------------------------------------
# merge


def _add_merge_parser(subparsers: "argparse._SubParsersAction") -> None:
    parser = _add_subcommand(
        subparsers, "merge",
        help="merge the part files of a sharded dataset run (job arrays) into one results json",
        description="Merge the per-video part files that `cmasktrack track --dataset ... --shard I/N` writes "
                    "into <out>.partial/ into the results json (by video id; identical to a single-process run) "
                    "and the zip. Truncated or corrupt parts are an error that names them.",
    )
    parser.add_argument("parts", nargs="+", metavar="PART", help="part files, or directories of them (<out>.partial)")
    parser.add_argument("--out", required=True, metavar="RESULTS_JSON", help="where to write the results json")
    parser.add_argument("--dataset", default=None, metavar="ANNOTATIONS_JSON",
                        help="check that every video of this annotation file is there (failed ones are listed)")
    parser.add_argument("--no-zip", action="store_true", help="do not write the zip")
    parser.set_defaults(func=_run_merge)


def _run_merge(args: argparse.Namespace) -> int:
    from .tracking.shards import merge_files

    expected = None
    if args.dataset is not None:
        from .data.ytvis import VISDataset

        expected = VISDataset.from_json(args.dataset).video_ids
    merged, failures = merge_files(args.parts, args.out, expected=expected, write_zip=not args.no_zip)
    print(f"{merged.videos} videos, {merged.tracks} tracks -> {merged.out_path}"
          + (f" and {merged.zip_path}" if merged.zip_path else ""))
    return _report_failures(failures, merged.videos + len(failures), merged.out_path)


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
    import os

    import torch

    from .model import CMaskTrack
    from .weights import WEIGHTS_NAME, load_official_state_dict

    official = load_official_state_dict(args.checkpoint)  # read once: reported, then converted
    found = [v for k, v in official.items() if not k.endswith("num_batches_tracked")]
    print(f"read {args.checkpoint}: {len(found)} tensors, {sum(v.numel() for v in found) / 1e6:.1f} M "
          f"values ({', '.join(sorted({str(v.dtype).replace('torch.', '') for v in found}))})")
    model = CMaskTrack.from_official_state_dict(official, args.checkpoint)
    del official, found
    cfg = model.config
    state = model.state_dict()
    kind = "CMaskTrack R-CNN" if cfg.calibration else "MaskTrack R-CNN"
    dataset = {"ovis": "OVIS", "ytvis2019": "YouTube-VIS 2019"}.get(cfg.dataset, cfg.dataset or "unknown dataset")
    names = list(cfg.category_names)
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    print(f"  model:       {kind}, ResNet-{cfg.depth}-FPN")
    print(f"  classes:     {cfg.num_categories} categories ({dataset}{': ' + shown if names else ''})")
    print("  calibration: " + (f"yes (temporal feature calibration; {cfg.num_refs} reference frames before and "
                               "after each frame)" if cfg.calibration else
                               "no (no calibration weights: runs without calibration, num_refs 0)"))
    dtype = torch.float16 if args.fp16 else None
    model.save_pretrained(args.out_dir, dtype=dtype)
    # check: the written directory loads back and gives the same tensors
    again = CMaskTrack.from_pretrained(args.out_dir, device="cpu").state_dict()
    for key, value in state.items():
        expected = value.to(dtype).to(value.dtype) if dtype is not None and value.is_floating_point() else value
        if not torch.equal(again[key], expected):
            raise RuntimeError(f"check failed: {key} differs after writing {args.out_dir}")
    size = os.path.getsize(os.path.join(args.out_dir, WEIGHTS_NAME)) / 1e6
    print(f"wrote {args.out_dir} (config.json, {WEIGHTS_NAME} {size:.1f} MB{', fp16' if args.fp16 else ''}); "
          f"checked: it loads back with all {len(state)} tensors equal")
    return 0


# --------------------------------------------------------------------------------------------
# train (also ``python -m cmasktrack.train``, which torchrun needs)


#: The names of :data:`cmasktrack.train.PRESETS`, here so that building the parser imports no torch
#: (a test checks they are the same).
TRAIN_PRESETS = ("ovis", "cpu_small", "cpu_synthetic")


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--config", metavar="CFG_JSON", help="training configuration json (TrainConfig fields; "
                     "may name a \"preset\" and override some of its fields)")
    src.add_argument("--preset", default=None, choices=TRAIN_PRESETS,
                     help="a named configuration: ovis (the official recipe, default), cpu_small (small CPU jobs) "
                          "or cpu_synthetic (the demo model's recipe: from scratch on the synthetic benchmark)")
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
    _add_merge_parser,
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


@contextmanager
def _warnings_as_lines():
    """Python warnings become ``cmasktrack: warning: ...`` lines on stderr (each message once)."""
    seen = set()
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        text = " ".join(str(message).split())
        if text not in seen:
            seen.add(text)
            print(f"cmasktrack: warning: {text}", file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Errors print one line ``cmasktrack: error: ...`` on stderr and return 2; with ``--debug``
    the exception propagates with its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with _warnings_as_lines():
            return int(args.func(args))
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("cmasktrack: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
        if args.debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, FileNotFoundError) and exc.filename:
            message = f"no such file or directory: {exc.filename}"
        elif isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
            message = " ".join(exc.strerror.split())  # without "[Errno N]"
        print(f"cmasktrack: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
