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
TRACKING = ["HOTA", "DetA", "AssA", "LocA", "DetRe", "DetPr", "AssRe", "AssPr", "MOTA", "MOTP", "IDSW", "Frag",
            "MT", "PT", "ML", "IDF1", "IDP", "IDR", "per_class", "det_av", "per_alpha"]
IDENTITY_OCCLUSION = [f"{m}_{level}" for m in ("IDF1", "AssA", "IDSW") for level in ("light", "medium", "heavy")]


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
    assert set(result) == set(SUMMARY) | set(OCCLUSION) | {"per_category_AP"} | set(TRACKING) | set(IDENTITY_OCCLUSION)
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
    assert {k + "_derived" for k in IDENTITY_OCCLUSION} <= set(result)
    assert main(["eval", "--gt", gt, "--pred", pred, "--json", "--derived-occlusion", "off"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == set(SUMMARY) | {"per_category_AP"} | set(TRACKING)


def test_metrics_choice(tmp_path, capsys):
    gt, pred = write_case(tmp_path, occlusion=True)
    assert main(["eval", "--gt", gt, "--pred", pred, "--json", "--metrics", "ap"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == set(SUMMARY) | set(OCCLUSION) | {"per_category_AP"}
    assert main(["eval", "--gt", gt, "--pred", pred, "--json", "--metrics", "identity,clear"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "AP" not in result and "HOTA" not in result and "AssA_light" not in result
    # person: both frames matched, the dog's mask labelled person is 1 FP:
    #   MOTA = (2 - 1 - 0) / 2 = 0.5, IDF1 = 2 / (2 + 0.5 * 1) = 0.8
    # dog: 1 FN -> MOTA 0, IDF1 0; cat: empty class -> 0. Class average: sum / 3.
    assert result["MOTA"] == pytest.approx(0.5 / 3) and result["IDF1"] == pytest.approx(0.8 / 3)
    assert result["per_class"]["person"]["MOTA"] == pytest.approx(0.5)
    assert result["MT"] == 1 and result["ML"] == 1 and isinstance(result["IDSW"], int)
    assert result["IDF1_light"] == pytest.approx(0.8) and result["IDF1_heavy"] == 0.0
    assert result["IDF1_medium"] == -1.0 and result["IDSW_heavy"] == 0
    assert main(["eval", "--gt", gt, "--pred", pred, "--metrics", "ap,mota"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown metric 'mota'" in err[0]


def test_table_order(tmp_path, capsys):
    gt, pred = write_case(tmp_path, occlusion=True)
    assert main(["eval", "--gt", gt, "--pred", pred]) == 0
    out = capsys.readouterr().out
    order = [out.index(s) for s in ("AP50 ", "\nIdentity", "\nHOTA ", "\nAssA ", "\nIDF1 ", "\nIDSW ", "\nMOTA ",
                                     "\nOcclusion", "\nIDF1" + " " * 10, "Per-category AP")]
    assert order == sorted(order)
    assert "  16.7" in out  # MOTA of the class average, in percent


def test_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    gt, pred = write_case(tmp_path, occlusion=True)
    out = tmp_path / "report.png"
    assert main(["eval", "--gt", gt, "--pred", pred, "--plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot -> {out}" in capsys.readouterr().out


def test_evaluation_imports_no_torch(tmp_path):
    # the evaluation (AP, tracking metrics, table, plot) must work where torch is not installed
    gt, pred = write_case(tmp_path, occlusion=True)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from cmasktrack.evaluation import evaluate_tracking, evaluate_vis, format_results_table, plot_evaluation\n"
        f"vis = evaluate_vis({gt!r}, {pred!r})\n"
        f"tracking = evaluate_tracking({gt!r}, {pred!r})\n"
        "print(format_results_table(vis, tracking=tracking))\n"
        f"plot_evaluation({str(tmp_path / 'p.png')!r}, vis, tracking)\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules if sys.modules[m] is not None)\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "IDF1" in proc.stdout


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
    assert capsys.readouterr().err.strip() == f"cmasktrack: error: no such file or directory: {tmp_path / 'nope.json'}"
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
