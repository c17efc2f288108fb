"""`cmasktrack track` and `cmasktrack convert` end to end on a tiny model and synthetic clips."""

import json
import os

import pytest
import torch

from cmasktrack.cli import main
from cmasktrack.data.synthetic import generate
from cmasktrack.data.ytvis import VISDataset
from cmasktrack.evaluation import evaluate_vis
from cmasktrack.data.results import load_results

from official_keys import official_state_dict


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    ann = generate(root, num_videos=2, seed=3, num_frames=3, size=(96, 64), objects_per_video=2)
    return root, ann


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("model")
    tiny_model.save_pretrained(d)
    return str(d)


def test_track_single_video(synth, model_dir, tmp_path, capsys):
    root, ann = synth
    ds = VISDataset.from_json(ann, image_root=root / "frames")
    vid = ds.video_ids[0]
    folder = os.path.dirname(ds.frame_paths(vid)[0])
    out = tmp_path / "r.json"
    gif = tmp_path / "vis.gif"
    assert main(["track", folder, "--model", model_dir, "--out", str(out), "--quiet", "--device", "cpu",
                 "--vis", str(gif)]) == 0
    assert "frames" in capsys.readouterr().out
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == ds.videos[vid].length and im.size == (ds.videos[vid].width, ds.videos[vid].height)
    entries = json.loads(out.read_text())
    assert all(len(e["segmentations"]) == ds.videos[vid].length for e in entries)


def test_track_dataset_resumes_and_is_evaluable(synth, model_dir, tmp_path, capsys):
    root, ann = synth
    out = tmp_path / "results.json"
    args = ["track", "--dataset", str(ann), "--image-root", str(root / "frames"), "--model", model_dir,
            "--out", str(out), "--quiet", "--device", "cpu"]
    assert main(args) == 0
    first = json.loads(out.read_text())
    assert (tmp_path / "results.zip").is_file()
    ds = VISDataset.from_json(ann)
    assert {e["video_id"] for e in first} <= set(ds.video_ids)
    evaluate_vis(ds, load_results(str(out), ds))  # the evaluator accepts the file
    # resume: a finished video is read back, not recomputed (its part file stays the same file)
    part = tmp_path / "results.json.partial"

    def part_stats():
        return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in part.glob("*.part")}

    cached = part_stats()
    assert len(cached) == 2
    assert main(args) == 0
    assert part_stats() == cached and json.loads(out.read_text()) == first
    assert "2 resumed" in capsys.readouterr().out
    assert main(args + ["--no-resume"]) == 0
    redone = part_stats()
    assert all(redone[k] != cached[k] for k in cached)
    assert json.loads(out.read_text()) == first


def test_track_errors_are_one_line(tmp_path, capsys):
    assert main(["track", str(tmp_path / "nope"), "--out", str(tmp_path / "o.json"), "--model", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cmasktrack: error: no such file or directory: {tmp_path / 'nope'}"]
    assert main(["track", "--dataset", "a.json", "--out", "o.json"]) == 2
    assert "--image-root" in capsys.readouterr().err


def test_convert(tmp_path, capsys):
    sd = official_state_dict(depth=18, num_classes=41, calibration=False)
    pth = tmp_path / "masktrack.pth"
    torch.save({"state_dict": sd, "meta": {}}, pth)
    assert main(["convert", str(pth), str(tmp_path / "out"), "--fp16"]) == 0
    out = capsys.readouterr().out
    assert f"read {pth}: {len([k for k in sd if not k.endswith('num_batches_tracked')])} tensors" in out
    assert "model:       MaskTrack R-CNN, ResNet-18-FPN" in out
    assert "classes:     40 categories (YouTube-VIS 2019: person, giant_panda, lizard, parrot, ...)" in out
    assert "calibration: no (no calibration weights" in out
    assert "checked: it loads back with all" in out
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert w["box_head.fc_cls.weight"].dtype == torch.float16
    assert torch.equal(w["backbone.fpn.inner_blocks.1.0.weight"], sd["neck.lateral_convs.1.conv.weight"].half())
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_classes"] == 41


def test_default_model_is_the_shipped_demo(synth, tmp_path, capsys):
    import cmasktrack

    assert os.path.isfile(os.path.join(cmasktrack.DEMO_MODEL, "model.safetensors"))
    root, ann = synth
    ds = VISDataset.from_json(ann, image_root=root / "frames")
    vid = ds.video_ids[0]
    out = tmp_path / "d.json"
    assert main(["track", os.path.dirname(ds.frame_paths(vid)[0]), "--out", str(out), "--quiet",
                 "--device", "cpu"]) == 0
    entries = json.loads(out.read_text())
    assert all(e["category_id"] in (1, 2, 3, 4, 5) for e in entries)  # the five synthetic categories


def test_bad_tracking_option_is_one_line(tmp_path, capsys):
    # checked before any model is loaded
    assert main(["track", str(tmp_path), "--out", str(tmp_path / "r.json"), "--batch-refs", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "cmasktrack: error: batch_refs must be >= 1, got 0"

