"""Dataset inference in shares: torchrun ranks (2 gloo processes), job-array shares and merge,
resume after a killed process, damaged part files and unreadable frames.

The reference everywhere is independent of the sharding code: each video tracked on its own
with ``model.track_video`` and the entries concatenated by video id and dumped with
``json.dumps`` (what a single process always wrote), at one thread per process.
"""

import dataclasses
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import cmasktrack
from cmasktrack import DEMO_MODEL
from cmasktrack.cli import main
from cmasktrack.data.synthetic import generate
from cmasktrack.data.ytvis import VISDataset
from cmasktrack.model import CMaskTrack
from cmasktrack.tracking import DatasetTrackingError, track_dataset
from cmasktrack.tracking.shards import (
    PartError,
    assign_shards,
    merge_parts,
    parse_shard,
    read_part,
    write_part,
)

ROOT = str(Path(cmasktrack.__file__).resolve().parent.parent)
NUM_REFS = "1"


def lpt_reference(lengths, n):
    """Longest processing time first, written out with plain lists: videos by frames (largest
    first, then smaller id), each to the first share with the fewest frames."""
    loads, shares = [0] * n, [[] for _ in range(n)]
    for vid in sorted(lengths, key=lambda v: (-lengths[v], v)):
        s = loads.index(min(loads))
        shares[s].append(vid)
        loads[s] += lengths[vid]
    return [sorted(x) for x in shares]


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, one_thread):
    """6 synthetic videos of 2-5 frames (96x64), the demo model at a 96x64 input, and the
    reference results text."""
    root = tmp_path_factory.mktemp("shards")
    ann = generate(root / "ds", num_videos=6, seed=1, num_frames=(2, 5), size=(96, 64), objects_per_video=(1, 2))
    model = CMaskTrack.from_pretrained(DEMO_MODEL, device="cpu")
    model.config = dataclasses.replace(model.config, image_scale=(96, 64))
    model.save_pretrained(root / "model")
    ds = VISDataset.from_json(ann, image_root=root / "ds" / "frames")
    per_video = {vid: model.track_video(ds.frame_paths(vid), num_refs=1, progress=False).to_ytvis(vid)
                 for vid in sorted(ds.video_ids)}
    reference = json.dumps([e for vid in sorted(per_video) for e in per_video[vid]])
    assert sum(len(v) for v in per_video.values()) > 6  # the model finds objects: a meaningful comparison
    return {"root": root, "ann": str(ann), "frames": str(root / "ds" / "frames"), "model_dir": str(root / "model"),
            "model": model, "ds": ds, "per_video": per_video, "reference": reference}


def track_args(s, out, *extra, frames=None, quiet=True):
    return ["track", "--dataset", s["ann"], "--image-root", frames or s["frames"], "--model", s["model_dir"],
            "--out", str(out), "--device", "cpu", "--threads", "1", "--num-refs", NUM_REFS,
            *(["--quiet"] if quiet else []), *extra]


@pytest.fixture(scope="module")
def single(setup, tmp_path_factory):
    """One process, one thread, through the command line."""
    out = tmp_path_factory.mktemp("single") / "results.json"
    assert main(track_args(setup, out)) == 0
    return out


def part_stats(directory):
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in Path(directory).glob("*.part")}


def shard_of_parts(directory):
    return {read_part(str(p)).video_id: read_part(str(p)).header["shard"] for p in Path(directory).glob("*.part")}


def copy_partial(single, out):
    shutil.copytree(str(single) + ".partial", str(out) + ".partial")


# --------------------------------------------------------------------------------------------
# shares, part files, merge (no tracking)


def test_assign_shards_balanced_by_frames_and_deterministic():
    rng = random.Random(0)
    for _ in range(50):
        lengths = {rng.randrange(1, 10_000): rng.randrange(1, 300) for _ in range(rng.randrange(1, 60))}
        n = rng.randrange(1, 9)
        shares = assign_shards(lengths, n)
        assert shares == lpt_reference(lengths, n)
        shuffled = dict(rng.sample(list(lengths.items()), len(lengths)))  # another dict order
        assert assign_shards(shuffled, n) == shares
        assert sorted(v for s in shares for v in s) == sorted(lengths)
        loads = [sum(lengths[v] for v in s) for s in shares]
        assert max(loads) - min(loads) <= max(lengths.values())
    # balanced by frames, not by count: one long video against four short ones
    assert assign_shards({1: 100, 2: 25, 3: 25, 4: 25, 5: 25}, 2) == [[1], [2, 3, 4, 5]]


def test_parse_shard():
    assert parse_shard("0/2") == (0, 2) and parse_shard("3/4") == (3, 4)
    for bad in ("2/2", "-1/2", "1", "a/b", "1/0", "1/2/3"):
        with pytest.raises(ValueError, match="--shard must be I/N"):
            parse_shard(bad)


def test_part_files_detect_truncation_and_corruption(tmp_path):
    entries = [{"video_id": 7, "score": 0.5, "category_id": 2,
                "segmentations": [None, {"size": [2, 2], "counts": "04"}]}]
    path = write_part(str(tmp_path), 7, entries, run="r", frames=2)
    part = read_part(path)
    assert part.entries == entries and part.video_id == 7 and part.frames == 2 and part.tracks == 1
    data = Path(path).read_bytes()
    damaged = {
        "truncated": data[: len(data) - 9],
        "corrupt": data.replace(b'"score": 0.5', b'"score": 0.6'),
        "extended": data + b"[]\n",
        "header": data[:30],
        "empty": b"",
    }
    for what, content in damaged.items():
        Path(path).write_bytes(content)
        with pytest.raises(PartError, match=re.escape(path)):
            read_part(path)
    # the failure record of a video goes when the video is written
    from cmasktrack.tracking.shards import VideoFailure, read_failure, write_failure

    write_failure(str(tmp_path), VideoFailure(7, "v7", "boom"), run="r")
    assert read_failure(str(tmp_path), 7, run="r").reason == "boom" and read_failure(str(tmp_path), 7, run="x") is None
    write_part(str(tmp_path), 7, entries, run="r", frames=2)
    assert read_failure(str(tmp_path), 7) is None


def test_merge_writes_what_json_dump_writes_in_video_id_order(tmp_path):
    rng = random.Random(1)
    videos = {}
    for vid in rng.sample(range(1, 100), 12):
        videos[vid] = [{"video_id": vid, "score": rng.random(), "category_id": rng.randrange(1, 5),
                        "segmentations": [None, {"size": [4, 4], "counts": "0" + str(rng.randrange(9))}],
                        "detections": [None, [1.5, 2.0, 3.25, rng.random()]], "cats": [None, 1]}
                       for _ in range(rng.randrange(0, 3))]  # some videos without tracks
    d = tmp_path / "parts"
    d.mkdir()
    for vid in rng.sample(list(videos), len(videos)):
        write_part(str(d), vid, videos[vid], run="r")
    parts = [read_part(str(p)) for p in d.glob("*.part")]
    rng.shuffle(parts)
    report = merge_parts(parts, str(tmp_path / "a.json"))
    expected = json.dumps([e for vid in sorted(videos) for e in videos[vid]])
    assert (tmp_path / "a.json").read_text() == expected
    assert report.videos == 12 and report.tracks == sum(len(v) for v in videos.values())
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        assert z.namelist() == ["results.json"] and z.read("results.json").decode() == expected
    merge_parts(parts[::-1], str(tmp_path / "b.json"))
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()  # a reproducible zip
    other = read_part(write_part(str(tmp_path), 1000, [], run="another run"))
    with pytest.raises(ValueError, match="different runs"):
        merge_parts(parts + [other], str(tmp_path / "c.json"))
    with pytest.raises(ValueError, match="no part file"):
        merge_parts(parts, str(tmp_path / "c.json"), expected=list(videos) + [1000])


# --------------------------------------------------------------------------------------------
# tracking runs


def test_single_process_equals_videos_tracked_one_by_one(setup, single):
    assert single.read_text() == setup["reference"]
    with zipfile.ZipFile(single.with_suffix(".zip")) as z:
        assert z.read("results.json").decode() == setup["reference"]
    assert shard_of_parts(str(single) + ".partial") == {v: "0/1" for v in setup["ds"].video_ids}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(s, out, *extra, env=None, log_dir=None):
    """``torchrun --nproc_per_node 2 -m cmasktrack track --dataset ...``: 2 gloo processes, 1 thread each."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port())]
    if log_dir is not None:
        cmd += ["--log-dir", str(log_dir), "--redirects", "3"]  # each rank's stdout / stderr in its own file
    cmd += ["-m", "cmasktrack", *track_args(s, out, *extra, quiet=log_dir is None)]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    **(env or {}))
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=600)


def test_torchrun_two_gloo_processes_equal_one_process(setup, single, tmp_path):
    out = tmp_path / "results.json"
    proc = torchrun(setup, out, log_dir=tmp_path / "logs")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes() == single.read_bytes()
    assert out.with_suffix(".zip").read_bytes() == single.with_suffix(".zip").read_bytes()
    # each rank tracked exactly its share
    ds = setup["ds"]
    shares = lpt_reference({v: ds.videos[v].length for v in ds.video_ids}, 2)
    assert shard_of_parts(str(out) + ".partial") == {v: f"{r}/2" for r in (0, 1) for v in shares[r]}
    # one bar, on rank 0, counting the frames of both ranks; rank 1 is quiet; rank 0 reports both
    logs = {int(p.parent.name): p for p in (tmp_path / "logs").rglob("stderr.log")}
    total = sum(ds.videos[v].length for v in ds.video_ids)
    assert f"{total}/{total}" in logs[0].read_text() and logs[1].read_text() == ""
    stdout0 = logs[0].with_name("stdout.log").read_text()
    assert "rank 0/2: 3 videos" in stdout0 and "rank 1/2: 3 videos" in stdout0 and "1 thread)" in stdout0


@pytest.mark.slow
def test_torchrun_rank_killed_then_resumed(setup, single, tmp_path):
    out = tmp_path / "results.json"
    proc = torchrun(setup, out, env={"CMASKTRACK_TEST_CRASH_AFTER": "1:1"})
    assert proc.returncode != 0 and "test hook" in proc.stderr
    before = part_stats(str(out) + ".partial")
    assert 1 <= len(before) < 6 and not out.exists()
    proc = torchrun(setup, out, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.read_bytes() == single.read_bytes()
    after = part_stats(str(out) + ".partial")
    assert {k: after[k] for k in before} == before  # the videos finished before the kill were not redone
    assert len(after) == 6
    resumed = sum(int(n) for n in re.findall(r"(\d+) resumed", proc.stdout))
    assert resumed == len(before)


def test_shards_crash_resume_and_merge(setup, single, tmp_path, capsys):
    out = tmp_path / "results.json"
    partial = str(out) + ".partial"
    ds = setup["ds"]
    shares = lpt_reference({v: ds.videos[v].length for v in ds.video_ids}, 2)
    # share 1/2 stops after one video (as if killed), then resumes: the finished one is kept
    os.environ["CMASKTRACK_TEST_CRASH_AFTER"] = "1:1"
    try:
        assert main(track_args(setup, out, "--shard", "1/2")) == 2
    finally:
        del os.environ["CMASKTRACK_TEST_CRASH_AFTER"]
    assert "test hook" in capsys.readouterr().err
    before = part_stats(partial)
    assert len(before) == 1
    assert main(track_args(setup, out, "--shard", "1/2", "--resume")) == 0
    printed = capsys.readouterr().out
    assert "1 resumed" in printed and "not finished yet" in printed and not out.exists()
    after = part_stats(partial)
    assert {k: after[k] for k in before} == before and len(after) == len(shares[1])
    assert shard_of_parts(partial) == {v: "1/2" for v in shares[1]}
    # the last share to finish merges
    assert main(track_args(setup, out, "--shard", "0/2")) == 0
    assert out.read_bytes() == single.read_bytes()
    assert shard_of_parts(partial) == {v: f"{r}/2" for r in (0, 1) for v in shares[r]}
    # and `cmasktrack merge` gives the same file
    merged = tmp_path / "merged.json"
    assert main(["merge", partial, "--out", str(merged), "--dataset", setup["ann"]]) == 0
    assert merged.read_bytes() == single.read_bytes()
    assert merged.with_suffix(".zip").read_bytes() == single.with_suffix(".zip").read_bytes()
    # a missing part is an error, nothing written
    os.unlink(os.path.join(partial, f"{shares[0][0]}.part"))
    assert main(["merge", partial, "--out", str(tmp_path / "m2.json"), "--dataset", setup["ann"]]) == 2
    assert "no part file yet" in capsys.readouterr().err and not (tmp_path / "m2.json").exists()


def test_truncated_part_is_redone_and_never_merged(setup, single, tmp_path, capsys):
    out = tmp_path / "results.json"
    copy_partial(single, out)
    partial = str(out) + ".partial"
    victim = Path(partial) / "3.part"
    victim.write_bytes(victim.read_bytes()[:-40])
    assert main(["merge", partial, "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "3.part" in err and "truncated" in err and not (tmp_path / "m.json").exists()
    before = part_stats(partial)
    assert main(track_args(setup, out)) == 0  # the CLI prints warnings as "cmasktrack: warning:" lines
    captured = capsys.readouterr()
    assert "cmasktrack: warning:" in captured.err and "video 3 is tracked again" in captured.err
    assert "1 truncated/corrupt part files redone" in captured.out
    after = part_stats(partial)
    assert [k for k in after if after[k] != before[k]] == ["3.part"]
    assert out.read_bytes() == single.read_bytes()


def test_parts_of_other_options_are_not_taken(setup, single, tmp_path, capsys):
    out = tmp_path / "results.json"
    copy_partial(single, out)
    assert main(track_args(setup, out, "--score-threshold", "0.9")) == 2
    assert "--no-resume" in capsys.readouterr().err and not out.exists()


def test_unreadable_frame_fails_its_video_only(setup, single, tmp_path, capsys):
    frames = tmp_path / "frames"
    shutil.copytree(setup["frames"], frames)
    ds = setup["ds"]
    vid = 2
    name = os.path.dirname(ds.videos[vid].file_names[0])
    bad = frames / ds.videos[vid].file_names[1]
    bad.write_bytes(bad.read_bytes()[:60])  # a truncated PNG
    out = tmp_path / "results.json"
    copy_partial(single, out)
    os.unlink(str(out) + f".partial/{vid}.part")
    assert main(track_args(setup, out, frames=str(frames))) == 1
    err = capsys.readouterr().err
    assert "1 of 6 videos failed" in err and f"video {vid} ({name}): frame 1:" in err and bad.name in err
    others = [e for v, entries in setup["per_video"].items() if v != vid for e in entries]
    assert out.read_text() == json.dumps(others)
    # the Python API raises after writing the others
    model = setup["model"]
    with pytest.raises(DatasetTrackingError, match=f"video {vid} \\({name}\\)") as info:
        track_dataset(model, VISDataset.from_json(setup["ann"], image_root=frames), str(out), progress=False,
                      num_refs=1)
    assert [f.video_id for f in info.value.failures] == [vid] and out.read_text() == json.dumps(others)
    # --skip-bad-frames: the frame becomes an empty frame (each track absent there)
    capsys.readouterr()
    assert main(track_args(setup, out, "--skip-bad-frames", frames=str(frames))) == 0
    captured = capsys.readouterr()  # the CLI prints warnings as "cmasktrack: warning:" lines
    assert f"cmasktrack: warning: video {vid} ({name}) frame 1 is replaced by an empty frame" in captured.err
    assert "replaced by empty frames" in captured.out
    paths = ds.frame_paths(vid)
    good = model.track_video([p for t, p in enumerate(paths) if t != 1], num_refs=1, progress=False).to_ytvis(vid)
    for entry in good:
        for key in ("segmentations", "detections", "cats"):
            entry[key] = entry[key][:1] + [None] + entry[key][1:]
    expected = [e for v in sorted(setup["per_video"]) for e in (good if v == vid else setup["per_video"][v])]
    assert out.read_text() == json.dumps(expected)
