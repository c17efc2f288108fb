"""``cmasktrack eval``: the table, the ``--json`` line and one-line errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from cmasktrack.cli import main

H, W = 30, 40
SUMMARY = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
OCCLUSION = ["AP_light", "AP_medium", "AP_heavy", "AR_light", "AR_medium", "AR_heavy"]


def enc(y0, y1, x0, x1):
    m = np.zeros((H, W), np.uint8, order="F")
    m[y0:y1, x0:x1] = 1
    r = mask_utils.encode(m)
    r["counts"] = r["counts"].decode("ascii")
    return r


def write_case(tmp_path, occlusion):
    a = [enc(0, 10, 0, 10), enc(0, 10, 0, 10)]
    b = [enc(15, 25, 20, 30), None]
    anns = [
        {"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": a, "areas": [100, 100]},
        {"id": 2, "video_id": 1, "category_id": 2, "iscrowd": 0, "segmentations": b, "areas": [100, None]},
    ]
    if occlusion:
        anns[0]["occlusion"] = ["no_occlusion", "no_occlusion"]
        anns[1]["occlusion"] = ["severe_occlusion", None]
    gt = {
        "videos": [{"id": 1, "width": W, "height": H, "length": 2, "file_names": ["1/0.jpg", "1/1.jpg"]}],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": anns,
    }
    # person found; dog missed (its prediction is labelled person and is a false positive)
    preds = [
        {"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": a},
        {"video_id": 1, "category_id": 1, "score": 0.3, "segmentations": b},
    ]
    gt_path, pred_path = tmp_path / "gt.json", tmp_path / "pred.json"
    gt_path.write_text(json.dumps(gt))
    pred_path.write_text(json.dumps(preds))
    return str(gt_path), str(pred_path)


def test_json_line_with_official_occlusion(tmp_path, capsys):
    gt, pred = write_case(tmp_path, occlusion=True)
    assert main(["eval", "--gt", gt, "--pred", pred, "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    assert set(result) == set(SUMMARY) | set(OCCLUSION) | {"per_category_AP"}
    # person: TP ranked first -> AP 1; dog: no detection -> 0; cat: no ground truth -> -1
    assert result["per_category_AP"] == pytest.approx({"1": 1.0, "2": 0.0, "3": -1.0})
    assert result["AP"] == pytest.approx(0.5) and result["AR100"] == pytest.approx(0.5)
    assert result["APm"] == -1 and result["ARl"] == -1
    # light = person only (found); heavy = dog only (missed); medium has no object
    assert result["AP_light"] == pytest.approx(1.0) and result["AP_heavy"] == 0.0
    assert result["AP_medium"] == -1 and result["AR_medium"] == -1


def test_json_line_without_labels_has_derived_keys_only(tmp_path, capsys):
    gt, pred = write_case(tmp_path, occlusion=False)
    assert main(["eval", "--gt", gt, "--pred", pred, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not set(OCCLUSION) & set(result)
    assert {k + "_derived" for k in OCCLUSION} <= set(result)
    assert main(["eval", "--gt", gt, "--pred", pred, "--json", "--derived-occlusion", "off"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == set(SUMMARY) | {"per_category_AP"}


def test_table(tmp_path, capsys):
    gt, pred = write_case(tmp_path, occlusion=True)
    assert main(["eval", "--gt", gt, "--pred", pred]) == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "person" in out and "light" in out
    assert "DERIVED" not in out


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p[0].update(video_id=5), r"results\[0\]: unknown video_id 5"),
        (lambda p: p[0].update(score="x"), r"results\[0\] \(video 1\): 'score' must be a finite number"),
        (lambda p: p[1]["segmentations"].pop(), r"'segmentations' has 1 frames, but the video has 2"),
    ],
)
def test_errors_are_one_line_and_exit_2(tmp_path, capsys, change, message):
    gt, pred = write_case(tmp_path, occlusion=False)
    preds = json.loads(Path(pred).read_text())
    change(preds)
    Path(pred).write_text(json.dumps(preds))
    assert main(["eval", "--gt", gt, "--pred", pred, "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cmasktrack: error: ")
    assert re.search(message, lines[0])


def test_missing_file_and_debug(tmp_path, capsys):
    gt, pred = write_case(tmp_path, occlusion=False)
    assert main(["eval", "--gt", str(tmp_path / "nope.json"), "--pred", pred]) == 2
    assert capsys.readouterr().err.strip() == f"cmasktrack: error: no such file: {tmp_path / 'nope.json'}"
    with pytest.raises(FileNotFoundError):
        main(["--debug", "eval", "--gt", str(tmp_path / "nope.json"), "--pred", pred])


def test_python_dash_m(tmp_path):
    gt, pred = write_case(tmp_path, occlusion=True)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "cmasktrack", "eval", "--gt", gt, "--pred", pred, "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["per_category_AP"]["1"] == pytest.approx(1.0)
    bad = subprocess.run(
        [sys.executable, "-m", "cmasktrack", "eval", "--gt", gt, "--pred", str(tmp_path / "x.json")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_debug_after_the_subcommand(tmp_path):
    gt, pred = write_case(tmp_path, occlusion=False)
    with pytest.raises(FileNotFoundError):
        main(["eval", "--debug", "--gt", str(tmp_path / "nope.json"), "--pred", pred])
