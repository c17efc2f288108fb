"""Dataset inference in shares: which videos a process tracks, the per-video part files that
make a run resumable, failure records, and merging the parts into the results json.

Nothing here imports torch, so ``cmasktrack merge`` starts quickly. The processes themselves
are :func:`cmasktrack.tracking.dataset.run_dataset`'s.

* **Shares.** :func:`assign_shards` deals the videos to ``N`` shares balanced by frame count
  (longest first, each to the share with the fewest frames so far). A video's share depends
  only on the videos' frame counts and ``N`` — not on which videos an earlier, interrupted run
  finished — so a resumed run, a torchrun rank and a job-array task agree on it.
* **Part files.** Each finished video is one file ``<out>.partial/<video_id>.part``, written to
  a temporary name and renamed (atomic): a header line (json: the video, its frame count, the
  run key, the sha256 and byte count of the payload, ...) and the payload, the video's results
  entries as ``json.dumps`` writes them. A part whose payload does not match its checksum
  (truncated, corrupt) is detected by :func:`read_part` and redone, never merged.
* **Failure records.** A video that could not be tracked leaves ``<video_id>.failed`` (its
  name and the reason), removed when a later run tracks it.
* **Merging.** :func:`merge_parts` writes the payloads in video-id order into the results json
  — the bytes ``json.dump`` writes for the concatenated entries, so a merged file is identical
  to a single process's — and the zip the evaluation servers take (a reproducible zip: fixed
  time stamp).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import shutil
import uuid
import zipfile
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "PART_SUFFIX",
    "FAILED_SUFFIX",
    "Part",
    "PartError",
    "VideoFailure",
    "DatasetTrackingError",
    "MergeReport",
    "partial_dir",
    "parse_shard",
    "assign_shards",
    "video_name",
    "part_path",
    "write_part",
    "read_part",
    "write_failure",
    "read_failure",
    "collect_parts",
    "merge_parts",
    "merge_files",
    "zip_path_for",
]

PART_SUFFIX = ".part"
FAILED_SUFFIX = ".failed"
_PART_FORMAT = "cmasktrack-part/1"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the zip format's earliest date: a reproducible archive


def partial_dir(out_path: str) -> str:
    """The directory of the part files of a run writing ``out_path``: ``<out_path>.partial``."""
    return os.fspath(out_path) + ".partial"


def zip_path_for(out_path: str) -> str:
    """The zip written next to a results json: ``results.json`` -> ``results.zip``."""
    return os.path.splitext(os.fspath(out_path))[0] + ".zip"


def parse_shard(text: str) -> Tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``.

    Raises:
        ValueError: anything else (the message quotes the text).
    """
    try:
        index_text, count_text = str(text).split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise ValueError(f"--shard must be I/N with 0 <= I < N (e.g. 0/4 ... 3/4), got {text!r}")
    return index, count


def assign_shards(frame_counts: Mapping[int, int], num_shards: int) -> List[List[int]]:
    """Deal videos to ``num_shards`` shares balanced by frame count.

    Longest processing time first: the videos in order of frame count, largest first (equal
    counts: smaller id first), each to the share with the fewest frames so far (equal: the
    lower share). Deterministic: the result depends only on ``frame_counts`` (``{video id:
    frames}``, in any order) and ``num_shards``. Returns the video ids of each share, ascending.
    """
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive whole number, got {num_shards!r}")
    loads = [(0, s) for s in range(num_shards)]  # (frames so far, share index): a min-heap
    shares: List[List[int]] = [[] for _ in range(num_shards)]
    for vid in sorted(frame_counts, key=lambda v: (-int(frame_counts[v]), v)):
        frames, s = heapq.heappop(loads)
        shares[s].append(vid)
        heapq.heappush(loads, (frames + int(frame_counts[vid]), s))
    return [sorted(share) for share in shares]


def video_name(video: Any) -> str:
    """A video's name for messages: the folder of its frames (OVIS / YouTube-VIS name videos by
    it), else its first file name, else ``"?"``."""
    names = getattr(video, "file_names", ()) or ()
    if not names:
        return "?"
    return os.path.dirname(names[0]) or names[0]


# --------------------------------------------------------------------------------------------
# part files


class PartError(ValueError):
    """A part file that cannot be used (truncated, corrupt, not a part file); the message says
    which file and why."""


@dataclass(frozen=True)
class Part:
    """One finished video read back from its part file.

    ``header``: ``video_id``, ``name``, ``frames``, ``tracks``, ``run`` (the run key: model and
    options), ``shard`` (``"I/N"`` of the process that tracked it), ``seconds``,
    ``skipped_frames`` (``[[frame, reason], ...]``), ``sha256`` and ``bytes`` of the payload.
    ``payload``: the video's results entries as json text.
    """

    path: str
    header: Dict[str, Any]
    payload: str

    @property
    def video_id(self) -> int:
        return int(self.header["video_id"])

    @property
    def run(self) -> str:
        return str(self.header.get("run", ""))

    @property
    def frames(self) -> int:
        return int(self.header.get("frames", 0))

    @property
    def tracks(self) -> int:
        return int(self.header.get("tracks", 0))

    @property
    def entries(self) -> List[Dict[str, Any]]:
        """The video's results entries (parsed)."""
        return json.loads(self.payload)


def part_path(directory: str, video_id: int) -> str:
    """``<directory>/<video_id>.part``."""
    return os.path.join(directory, f"{int(video_id)}{PART_SUFFIX}")


def _failure_path(directory: str, video_id: int) -> str:
    return os.path.join(directory, f"{int(video_id)}{FAILED_SUFFIX}")


def _temp_name(path: str) -> str:
    """A temporary name next to ``path``, unique to this process and call (the umask's
    permissions, unlike ``tempfile.mkstemp``'s 0600)."""
    return f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"


def _atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``path``, flush it to disk, rename it."""
    tmp = _temp_name(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_part(directory: str, video_id: int, entries: Sequence[Mapping[str, Any]], **meta: Any) -> str:
    """Write one video's results ``entries`` as a part file (atomically) and remove the
    video's failure record, if any. ``meta`` goes into the header (``run``, ``name``,
    ``frames``, ``shard``, ...). Returns the path."""
    payload = json.dumps(list(entries)).encode("ascii")
    header = {"format": _PART_FORMAT, "video_id": int(video_id), "tracks": len(entries), **meta,
              "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    path = part_path(directory, video_id)
    _atomic_write(path, json.dumps(header).encode("ascii") + b"\n" + payload + b"\n")
    failed = _failure_path(directory, video_id)
    if os.path.exists(failed):
        os.unlink(failed)
    return path


def read_part(path: str) -> Part:
    """Read and check one part file.

    Raises:
        PartError: the file is truncated, corrupt (the payload does not match its sha256) or
            not a part file.
        FileNotFoundError: no such file.
    """
    with open(path, "rb") as f:
        data = f.read()
    head, sep, rest = data.partition(b"\n")
    try:
        header = json.loads(head.decode("ascii")) if sep else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != _PART_FORMAT:
        raise PartError(f"{path}: not a cmasktrack part file (or its header is truncated)")
    try:
        size, digest = int(header["bytes"]), str(header["sha256"])
        int(header["video_id"])
    except (KeyError, TypeError, ValueError):
        raise PartError(f"{path}: the header lacks bytes / sha256 / video_id") from None
    if len(rest) != size + 1 or not rest.endswith(b"\n"):
        raise PartError(f"{path}: truncated or extended ({len(rest)} payload bytes, the header says {size + 1})")
    payload = rest[:-1]
    if hashlib.sha256(payload).hexdigest() != digest:
        raise PartError(f"{path}: corrupt (the payload does not match its sha256)")
    return Part(path, header, payload.decode("ascii"))


# --------------------------------------------------------------------------------------------
# failures


@dataclass(frozen=True)
class VideoFailure:
    """A video that could not be tracked: its id, name (the folder of its frames) and why."""

    video_id: int
    name: str
    reason: str

    def __str__(self) -> str:
        return f"video {self.video_id} ({self.name}): {self.reason}"


def write_failure(directory: str, failure: VideoFailure, run: str) -> str:
    """Record a failed video (``<video_id>.failed``, atomically). Returns the path."""
    path = _failure_path(directory, failure.video_id)
    record = {"video_id": failure.video_id, "name": failure.name, "reason": failure.reason, "run": run}
    _atomic_write(path, json.dumps(record).encode("utf-8"))
    return path


def read_failure(directory: str, video_id: int, run: Optional[str] = None) -> Optional[VideoFailure]:
    """The failure record of one video, or None (none, unreadable, or of another run when
    ``run`` is given)."""
    try:
        with open(_failure_path(directory, video_id), encoding="utf-8") as f:
            record = json.load(f)
        if run is not None and record.get("run") != run:
            return None
        return VideoFailure(int(record["video_id"]), str(record["name"]), str(record["reason"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class DatasetTrackingError(RuntimeError):
    """Some videos of a dataset could not be tracked; the others were tracked (and, when the
    run merged, written). ``failures``: the :class:`VideoFailure` s; ``entries``: the results
    of the other videos."""

    def __init__(self, failures: Sequence[VideoFailure], total: int, out_path: Optional[str] = None,
                 entries: Optional[List[Dict[str, Any]]] = None):
        self.failures = list(failures)
        self.total = total
        self.out_path = out_path
        self.entries = entries if entries is not None else []
        where = f" ({out_path} has the other {total - len(self.failures)})" if out_path else ""
        listing = "; ".join(str(f) for f in self.failures[:10])
        more = f"; ... {len(self.failures) - 10} more" if len(self.failures) > 10 else ""
        super().__init__(f"{len(self.failures)} of {total} videos failed{where}: {listing}{more}")


# --------------------------------------------------------------------------------------------
# merging


@dataclass
class MergeReport:
    """What :func:`merge_parts` wrote."""

    out_path: str
    zip_path: Optional[str]
    videos: int
    tracks: int
    bytes: int
    video_ids: List[int] = field(default_factory=list)


def collect_parts(paths: Iterable[str]) -> List[Part]:
    """Read the part files named by ``paths``: files, or directories (every ``*.part`` in
    them), checked.

    Raises:
        PartError: a file is truncated or corrupt (the message names it).
        FileNotFoundError: a path does not exist.
        ValueError: a directory holds no part file.
    """
    parts: List[Part] = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.endswith(PART_SUFFIX))
            if not names:
                raise ValueError(f"{path} holds no part files (*{PART_SUFFIX})")
            parts.extend(read_part(os.path.join(path, n)) for n in names)
        elif os.path.exists(path):
            parts.append(read_part(path))
        else:
            raise FileNotFoundError(2, "No such file or directory", path)
    return parts


def merge_parts(parts: Iterable[Part], out_path: str, *, write_zip: bool = True,
                expected: Optional[Iterable[int]] = None) -> MergeReport:
    """Write the results json of ``parts`` (in video-id order; each video's entries in their
    own order) and, with ``write_zip``, the zip next to it holding ``results.json``. Both are
    written to temporary names and renamed.

    The file is the bytes ``json.dump`` writes for the concatenated entries, whatever process
    wrote each part. ``expected``: the video ids the file must hold (an error lists the ones
    without a part).

    Raises:
        ValueError: parts of different runs (model / options), two different parts of one
            video, or a video of ``expected`` without a part.
    """
    by_video: Dict[int, Part] = {}
    for part in parts:
        seen = by_video.get(part.video_id)
        if seen is not None and seen.header["sha256"] != part.header["sha256"]:
            raise ValueError(f"two different part files for video {part.video_id}: {seen.path} and {part.path}")
        by_video[part.video_id] = part
    runs = {p.run for p in by_video.values()}
    if len(runs) > 1:
        raise ValueError(f"the part files come from {len(runs)} different runs (other models or options); "
                         "merge the parts of one run")
    if expected is not None:
        missing = sorted(set(int(v) for v in expected) - set(by_video))
        if missing:
            raise ValueError(f"{len(missing)} videos have no part file: {missing[:20]}"
                             + (" ..." if len(missing) > 20 else ""))
    ordered = [by_video[v] for v in sorted(by_video)]
    out_path = os.fspath(out_path)
    directory = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(directory, exist_ok=True)
    tmp = _temp_name(out_path)
    try:
        with open(tmp, "x", encoding="ascii") as f:
            f.write("[")
            first = True
            for part in ordered:
                body = part.payload[1:-1]  # the entries between the list's brackets
                if not body:
                    continue
                if not first:
                    f.write(", ")
                f.write(body)
                first = False
            f.write("]")
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    zpath = None
    if write_zip:
        zpath = zip_path_for(out_path)
        _write_zip(out_path, zpath)
    return MergeReport(out_path, zpath, len(ordered), sum(p.tracks for p in ordered), os.path.getsize(out_path),
                       [p.video_id for p in ordered])


def _write_zip(json_path: str, zip_path: str) -> None:
    """``zip_path`` holding ``json_path`` as ``results.json`` (what the servers take); a fixed
    time stamp makes the archive reproducible."""
    info = zipfile.ZipInfo("results.json", date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    info.file_size = os.path.getsize(json_path)  # lets zipfile choose zip64 for huge files
    tmp = _temp_name(zip_path)
    try:
        with zipfile.ZipFile(tmp, "w") as z, open(json_path, "rb") as src, z.open(info, "w") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, zip_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def merge_files(paths: Sequence[str], out_path: str, *, expected: Optional[Iterable[int]] = None,
                write_zip: bool = True) -> Tuple[MergeReport, List[VideoFailure]]:
    """``cmasktrack merge``: read the part files named by ``paths`` (files or ``<out>.partial``
    directories) and merge them (:func:`merge_parts`).

    ``expected``: the video ids of the dataset. A video without a part but with a failure
    record (in one of the directories) is left out and returned among the failures; a video
    with neither is an error (its share has not finished) and nothing is written.

    Raises:
        PartError: a part file is truncated or corrupt (rerun its share with resume to redo it).
        ValueError: unfinished videos, parts of videos ``expected`` lacks, parts of different runs,
            or two different parts of one video.
    """
    parts = collect_parts(paths)
    failures: List[VideoFailure] = []
    if expected is not None:
        expected = sorted(set(int(v) for v in expected))
        have = {p.video_id for p in parts}
        runs = {p.run for p in parts}
        run = next(iter(runs)) if len(runs) == 1 else None
        directories = [os.fspath(p) for p in paths if os.path.isdir(p)]
        unfinished = []
        for vid in expected:
            if vid in have:
                continue
            failure = next((f for f in (read_failure(d, vid, run) for d in directories) if f is not None), None)
            if failure is None:
                unfinished.append(vid)
            else:
                failures.append(failure)
        if unfinished:
            raise ValueError(f"{len(unfinished)} of {len(expected)} videos have no part file yet (their shares have "
                             f"not finished; rerun them with --resume): {unfinished[:20]}"
                             + (" ..." if len(unfinished) > 20 else ""))
        extra = sorted(have - set(expected))
        if extra:
            raise ValueError(f"part files of {len(extra)} videos that the annotation file does not have: {extra[:20]}")
    return merge_parts(parts, out_path, write_zip=write_zip), failures
