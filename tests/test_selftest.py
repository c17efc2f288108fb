"""`python -m cmasktrack.selftest`: the quick run passes on the CPU, and its checks can fail.

The quick CPU run is part of the suite (it is the CPU half of what a GPU machine runs). The
comparison helpers are tested on hand-made results and with a deliberately wrong op, so that
a selftest that always says PASS would be caught.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import cmasktrack.ops
from cmasktrack import cli, selftest
from cmasktrack.video_result import FrameResult, VideoResult, encode_mask


@pytest.fixture
def one_thread():
    # Like the training tests: the run is small, and on a shared 2-core machine a second
    # OpenMP thread mostly waits for the other jobs.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_quick_cpu_run_passes(tmp_path, capsys, one_thread):
    path = tmp_path / "report.json"
    rc = selftest.main(["--quick", "--device", "cpu", "--json", str(path), "--quiet"])
    out = capsys.readouterr().out
    report = json.loads(path.read_text())
    rows = {r["check"]: r for r in report["results"]}
    assert rc == 0 and report["ok"], out
    assert {r["device"] for r in report["results"]} == {"cpu"}
    has_ext = cmasktrack.ops.has_extension("cpu")
    for check in ("correlation float64", "correlation float32", "correlation gradcheck float64",
                  "demo model: op vs fallback", "R50 random 192x112: op vs fallback"):
        assert rows[check]["status"] == ("PASS" if has_ext else "SKIP"), rows[check]
    for check in ("demo model: tracks vs CPU run", "R50 random 192x112: tracks vs CPU run", "train demo: AMP step"):
        assert rows[check]["status"] == "n/a", rows[check]
    assert rows["train demo: fp32 step"]["status"] == "PASS"
    assert rows["DDP step (gloo, 1 process)"]["status"] == "PASS", rows["DDP step (gloo, 1 process)"]
    if has_ext:  # the model comparisons compared something
        for check in ("demo model: op vs fallback", "R50 random 192x112: op vs fallback"):
            assert "no detections" not in rows[check]["detail"] and " 0 detections" not in rows[check]["detail"]
    info = cmasktrack.ops.extension_info()
    assert report["environment"]["extension"]["cpu_kernel_isa"] == info["cpu_kernel_isa"]
    assert report["environment"]["extension"]["available"] == info["available"]
    assert "-> OK" in out and "correlation float32" in out


# ------------------------------------------------------------------------------ can fail


def test_correlation_check_fails_for_a_wrong_op(monkeypatch):
    if not cmasktrack.ops.has_extension("cpu"):
        pytest.skip("no compiled op")
    real = cmasktrack.ops.correlation
    monkeypatch.setattr(cmasktrack.ops, "correlation", lambda *a, **k: real(*a, **k) * (1 + 1e-4))
    status, detail = selftest._check_correlation("cpu", torch.float32, selftest._QUICK)
    assert status == "FAIL", detail
    status, detail = selftest._check_correlation("cpu", torch.float64, selftest._QUICK)
    assert status == "FAIL", detail


def test_gradcheck_fails_for_a_wrong_gradient(monkeypatch):
    if not cmasktrack.ops.has_extension("cpu"):
        pytest.skip("no compiled op")
    real = cmasktrack.ops.correlation
    # the forward is right, the gradient of input2 is lost
    monkeypatch.setattr(cmasktrack.ops, "correlation",
                        lambda a, b, *r, **k: real(a, b.detach(), *r, **k) + 0 * b.sum())
    with pytest.raises(Exception, match="Jacobian"):
        selftest._check_gradcheck("cpu", selftest._QUICK)


def _frame(index, ids, labels, scores, masks):
    n = len(ids)
    return FrameResult(index=index, name=str(index), boxes=np.zeros((n, 4), np.float32),
                       scores=np.asarray(scores, np.float32), labels=np.asarray(labels),
                       track_ids=np.asarray(ids), masks=[encode_mask(m) for m in masks])


def _masks(seed, n, shape=(20, 30)):
    rng = np.random.default_rng(seed)
    return [rng.random(shape) > 0.5 for _ in range(n)]


def _video(frames):
    return VideoResult(frames, 20, 30, ["a", "b", "c"])


def test_compare_tracks():
    m0, m1 = _masks(0, 2), _masks(1, 1)
    ref = _video([_frame(0, [0, 1], [1, 2], [0.9, 0.5], m0), _frame(1, [1], [2], [0.6], m1)])
    # same content, other detection order within a frame, scores within 1e-3
    same = _video([_frame(0, [1, 0], [2, 1], [0.5004, 0.9], m0[::-1]), _frame(1, [1], [2], [0.6], m1)])
    ok, detail = selftest.compare_tracks(same, ref)
    assert ok, detail
    assert "3 detections" in detail and "max score diff 4.0e-04" in detail
    # a score off by 2e-3
    bad = _video([_frame(0, [0, 1], [1, 2], [0.9, 0.502], m0), _frame(1, [1], [2], [0.6], m1)])
    assert not selftest.compare_tracks(bad, ref)[0]
    # a label changed
    bad = _video([_frame(0, [0, 1], [1, 3], [0.9, 0.5], m0), _frame(1, [1], [2], [0.6], m1)])
    ok, detail = selftest.compare_tracks(bad, ref)
    assert not ok and "label 3 vs 2" in detail
    # another track id
    bad = _video([_frame(0, [0, 2], [1, 2], [0.9, 0.5], m0), _frame(1, [1], [2], [0.6], m1)])
    ok, detail = selftest.compare_tracks(bad, ref)
    assert not ok and "track ids [0, 2] vs [0, 1]" in detail
    # a mask with 2% of its pixels flipped: IoU below 0.99
    flipped = m1[0].copy()
    flipped.flat[: flipped.size // 50] ^= True
    bad = _video([_frame(0, [0, 1], [1, 2], [0.9, 0.5], m0), _frame(1, [1], [2], [0.6], [flipped])])
    ok, detail = selftest.compare_tracks(bad, ref)
    iou = (flipped & m1[0]).sum() / (flipped | m1[0]).sum()
    assert not ok and f"min mask IoU {iou:.4f}" in detail
    # nothing to compare is not a pass
    empty = _video([_frame(0, [], [], [], []), _frame(1, [], [], [], [])])
    ok, detail = selftest.compare_tracks(empty, empty)
    assert not ok and "no detections" in detail


def test_report_exit_status_and_required_extension():
    env = {"extension": {}}
    rows = [selftest.CheckResult("cpu", "a", "PASS"), selftest.CheckResult("cpu", "b", "n/a"),
            selftest.CheckResult("cuda:0", "c", "SKIP", "compiled op cmasktrack._C has no CUDA kernels")]
    assert selftest.SelftestReport(env, rows).ok
    assert not selftest.SelftestReport(env, rows, require_extension=True).ok
    assert not selftest.SelftestReport(env, rows + [selftest.CheckResult("cpu", "d", "FAIL")]).ok


def test_unavailable_device_fails_and_bad_names_are_errors(capsys):
    assert cli.main(["selftest", "--device", "cuda:99", "--quick", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "cuda:99" in out and "FAIL" in out and "-> FAILED" in out
    assert cli.main(["selftest", "--device", "tpu"]) == 2
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "cmasktrack.selftest", "--device", "cuda:99", "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "compiled op cmasktrack._C" in result.stdout and "cuda:99" in result.stdout
