"""The command line a new user meets: an instant --help (no torch), live input (a pipe of raw
frames, an FFmpeg lavfi source), --out results.jsonl written frame by frame, Ctrl-C / SIGTERM
that leave complete files, sampling, the overlay's frame rate, and one-line errors that say
what is wrong (a missing model path, the hub offline, CUDA without a GPU, a bad --vis)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cmasktrack.cli import TRAIN_PRESETS, main

from test_cli_eval import write_case
from test_streams import _write_lossless

REPO = Path(__file__).resolve().parents[1]
JSON_KEYS = {"frame", "source_frame", "name", "timestamp", "tracks"}
TRACK_KEYS = {"id", "category_id", "category", "score", "box", "segmentation"}


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("model")
    tiny_model.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    out = []
    for t in range(4):
        f = base.copy()
        f[10:30, 5 + 6 * t: 25 + 6 * t] = (250, 30, 30)
        out.append(f)
    return out


def _check_jsonl(path: Path, names) -> list:
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is complete, valid JSON
    assert [r["frame"] for r in records] == list(range(len(records)))
    for r in records:
        assert set(r) == JSON_KEYS
        for t in r["tracks"]:
            assert set(t) == TRACK_KEYS and t["category"] == names[t["category_id"] - 1]
            assert len(t["box"]) == 4 and set(t["segmentation"]) == {"size", "counts"}
    return records


# ----------------------------------------------------------------------------------------------
# An instant command line: no torch for --help, --version and eval
# ----------------------------------------------------------------------------------------------

BLOCKER = r"""
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "av", "cv2"):
            raise ImportError(f"{name} is blocked: this command must not import it")
        return None

sys.meta_path.insert(0, Block())
from cmasktrack.cli import main
for argv in ARGVS:
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    print(f"EXIT {argv[:2]} {code}", flush=True)
assert not any(m.split(".")[0] in ("torch", "torchvision") for m in sys.modules)
"""


def test_help_version_and_eval_import_no_torch(tmp_path):
    gt, pred = write_case(tmp_path, occlusion=True)
    argvs = [["--help"], ["--version"], ["eval", "--help"], ["track", "--help"], ["convert", "--help"],
             ["train", "--help"], ["eval", "--gt", gt, "--pred", pred, "--json"]]
    code = f"ARGVS = {argvs!r}\n" + BLOCKER
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    for argv in argvs:
        assert f"EXIT {argv[:2]} 0" in proc.stdout, proc.stdout + proc.stderr
    assert "cmasktrack 0." in proc.stdout  # --version
    assert "--size WxH" in proc.stdout and "--max-frames" in proc.stdout  # track --help
    for preset in TRAIN_PRESETS:
        assert preset in proc.stdout  # train --help lists every preset
    assert '"AP50"' in proc.stdout and '"HOTA"' in proc.stdout  # the whole evaluation ran


def test_preset_names_are_the_training_presets():
    from cmasktrack.train import PRESETS

    assert TRAIN_PRESETS == tuple(PRESETS)


# ----------------------------------------------------------------------------------------------
# Live input and clean interruption
# ----------------------------------------------------------------------------------------------


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"exited early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("no result line in time")


def test_pipe_of_raw_frames_interrupted_by_sigint(model_dir, frames, tmp_path):
    av = pytest.importorskip("av")
    out, vis = tmp_path / "live.jsonl", tmp_path / "live.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cmasktrack", "track", "-", "--size", "64x48", "--model", model_dir, "--out", str(out),
         "--vis", str(vis), "--device", "cpu", "--quiet", "--num-refs", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=tmp_path,
    )
    try:
        for f in frames[:2]:
            proc.stdin.write(f.tobytes())
        proc.stdin.flush()
        _wait_for_lines(out, 2, proc)  # results arrive while the source is still open
        proc.send_signal(signal.SIGINT)  # Ctrl-C while it waits for the next frame
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, stderr
    assert "live source: tracking causally" in stderr.decode()
    assert "stopped by SIGINT" in stderr.decode()
    records = _check_jsonl(out, ["a", "b", "c"])
    assert len(records) == 2 and [r["source_frame"] for r in records] == [0, 1]
    with av.open(str(vis)) as container:  # the MP4 was finished: it opens and has every frame
        decoded = list(container.decode(video=0))
    assert len(decoded) == 2 and decoded[0].width == 64 and decoded[0].height == 48
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.jsonl", "live.mp4"]


def test_lavfi_stream_stopped_by_sigterm(model_dir, tmp_path):
    av = pytest.importorskip("av")
    if "lavfi" not in av.formats_available:
        pytest.skip("this FFmpeg build has no lavfi")
    out, vis = tmp_path / "t.jsonl", tmp_path / "t.gif"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cmasktrack", "track", "testsrc2=size=64x48:rate=25", "--format", "lavfi",
         "--fps", "5", "--model", model_dir, "--out", str(out), "--vis", str(vis), "--device", "cpu", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
    )
    try:
        _wait_for_lines(out, 1, proc)
        proc.send_signal(signal.SIGTERM)  # while the model is busy: the frame being tracked is finished
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    records = _check_jsonl(out, ["a", "b", "c"])
    n = len(records)
    assert n >= 1
    # --fps 5 of a 25 fps source: every 5th source frame, 0.2 s apart
    assert [r["source_frame"] for r in records] == [5 * i for i in range(n)]
    assert [r["timestamp"] for r in records] == pytest.approx([0.2 * i for i in range(n)])
    with Image.open(vis) as gif:
        assert gif.n_frames == n and gif.info["duration"] == 200  # the overlay runs at the sampled rate


def test_pipe_to_the_end_jsonl_and_json(model_dir, frames, tmp_path, monkeypatch, capsys):
    raw = b"".join(f.tobytes() for f in frames[:3])
    for name in ("r.jsonl", "r.json"):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
        assert main(["track", "-", "--size", "64x48", "--model", model_dir, "--out", str(tmp_path / name),
                     "--device", "cpu", "--quiet"]) == 0
    records = _check_jsonl(tmp_path / "r.jsonl", ["a", "b", "c"])
    entries = json.loads((tmp_path / "r.json").read_text())
    assert len(records) == 3 and all(len(e["segmentations"]) == 3 for e in entries)
    # the same frames, the same detections, in both formats
    per_frame = {(r["frame"], t["id"]): t["segmentation"] for r in records for t in r["tracks"]}
    ids = sorted({t["id"] for r in records for t in r["tracks"]})
    assert len(entries) == len(ids)
    for tid, e in zip(ids, entries):
        assert e["segmentations"] == [per_frame.get((f, tid)) for f in range(3)]
    err = capsys.readouterr().err
    assert err.count("live source: tracking causally") == 2


# ----------------------------------------------------------------------------------------------
# Sampling and the overlay's frame rate
# ----------------------------------------------------------------------------------------------


def test_video_sampling_and_overlay_rate(model_dir, frames, tmp_path, capsys):
    av = pytest.importorskip("av")
    clip = tmp_path / "clip30.mkv"
    _write_lossless(clip, np.stack([frames[i % 4] for i in range(7)]), rate=30)
    assert main(["track", str(clip), "--stride", "3", "--model", model_dir, "--out", str(tmp_path / "r.json"),
                 "--vis", str(tmp_path / "o.mp4"), "--device", "cpu", "--quiet", "--num-refs", "1"]) == 0
    entries = json.loads((tmp_path / "r.json").read_text())
    assert all(len(e["segmentations"]) == 3 for e in entries)  # frames 0, 3, 6
    with av.open(str(tmp_path / "o.mp4")) as container:
        assert container.streams.video[0].average_rate == 10  # 30 fps / stride 3
    assert main(["track", str(clip), "--start", "0.1s", "--max-frames", "1", "--vis-fps", "4", "--model", model_dir,
                 "--out", str(tmp_path / "s.jsonl"), "--vis", str(tmp_path / "s.mp4"), "--device", "cpu",
                 "--quiet"]) == 0
    records = _check_jsonl(tmp_path / "s.jsonl", ["a", "b", "c"])
    assert [r["source_frame"] for r in records] == [3]  # 0.1 s into a 30 fps video
    with av.open(str(tmp_path / "s.mp4")) as container:
        assert container.streams.video[0].average_rate == 4
    capsys.readouterr()
    assert main(["track", "--dataset", "a.json", "--image-root", ".", "--out", "o.json", "--stride", "2"]) == 2
    assert capsys.readouterr().err.strip() == "cmasktrack: error: --stride works on a single INPUT, not with --dataset"


# ----------------------------------------------------------------------------------------------
# Errors: one line, at once
# ----------------------------------------------------------------------------------------------


@pytest.fixture()
def folder(tmp_path, frames):
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(frames[:2]):
        Image.fromarray(f).save(d / f"{i}.png")
    return str(d)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cmasktrack: error: "), err
    return err[0][len("cmasktrack: error: "):]


def test_vis_is_checked_before_the_model_is_loaded(folder, tmp_path, capsys):
    args = ["track", folder, "--out", str(tmp_path / "r.json"), "--model", "./no/such/model/"]
    assert main(args + ["--vis", str(tmp_path / "o.avi")]) == 2
    assert "cannot write '.avi'" in _one_error_line(capsys)  # not the missing model
    (tmp_path / "plain").write_text("x")
    assert main(args + ["--vis", str(tmp_path / "plain" / "o.gif")]) == 2
    assert _one_error_line(capsys).startswith(f"cannot write the overlay {tmp_path / 'plain' / 'o.gif'}: ")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("model", ["./nope", "nope.pth", "ovis_model/", "~/no-such-cmasktrack-model", "a/b/c"])
def test_missing_local_model_is_no_such_file_at_once(folder, tmp_path, capsys, monkeypatch, model):
    import cmasktrack.model as m

    def no_hub(*a, **k):
        raise AssertionError("the hub must not be asked for a local path")

    monkeypatch.setattr(m, "download_from_hub", no_hub)
    assert main(["track", folder, "--out", str(tmp_path / "r.jsonl"), "--model", model, "--device", "cpu"]) == 2
    assert _one_error_line(capsys) == f"no such file or directory: {model}"
    assert not (tmp_path / "r.jsonl").exists()  # nothing is left behind


def test_unknown_hub_name_offline_says_the_cache(folder, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["track", folder, "--out", str(tmp_path / "r.json"), "--model", "nobody-model-xyz",
                 "--device", "cpu"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("'nobody-model-xyz' is not a local file or directory, and model 'nobody-model-xyz' is "
                           f"not in the Hugging Face cache ({constants.HF_HUB_CACHE})")
    assert "HF_HUB_OFFLINE is set" in line and "set HF_HUB_OFFLINE" not in line


def test_unknown_hub_name_unreachable_says_both(folder, tmp_path, capsys, monkeypatch):
    import cmasktrack.model as m

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(m, "_hub_unreachable", lambda timeout=3.0: "https://huggingface.co cannot be reached: "
                                                                   "Name or service not known")
    t0 = time.monotonic()
    assert main(["track", folder, "--out", str(tmp_path / "r.json"), "--model", "someone/nothing-here",
                 "--device", "cpu"]) == 2
    assert time.monotonic() - t0 < 30  # no retries against an unreachable hub
    line = _one_error_line(capsys)
    assert "'someone/nothing-here' is not a local file or directory" in line
    assert "not in the Hugging Face cache" in line and "cannot be reached: Name or service not known" in line


def test_cuda_without_gpu(folder, tmp_path, capsys, monkeypatch):
    import torch

    from cmasktrack.model import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    build = f"torch {torch.__version__.split('+')[0]}, CUDA build {torch.version.cuda or 'none: a CPU-only torch'}"
    with pytest.raises(RuntimeError) as info:
        resolve_device("cuda")
    assert str(info.value) == f"CUDA requested but no GPU is visible ({build})"
    assert resolve_device(None).type == "cpu" and resolve_device("cpu").type == "cpu"
    assert main(["track", folder, "--out", str(tmp_path / "r.json"), "--device", "cuda:0"]) == 2
    assert _one_error_line(capsys) == f"CUDA requested but no GPU is visible ({build})"
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
