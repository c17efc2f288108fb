"""Tests of cmasktrack.data.synthetic: determinism, json validity, an independent re-render."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from cmasktrack.data import synthetic

# pycocotools' decode warns under numpy 2 about __array__(copy=...); not our concern here
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
TINY = dict(num_frames=(8, 10), size=(128, 80), objects_per_video=(4, 6))
LEVELS = ("no_occlusion", "slight_occlusion", "severe_occlusion")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_a")
    path = synthetic.generate(out, 3, 7, **TINY)
    return out, json.loads(path.read_text()), json.loads((out / "scenes.json").read_text())


def _frames(root: Path, data: dict):
    return {fn: np.asarray(Image.open(root / "frames" / fn))
            for v in data["videos"] for fn in v["file_names"]}


def _decode(seg):
    rle = {"size": seg["size"], "counts": seg["counts"].encode("utf-8")}
    return mask_utils.decode(rle)


# ---------------------------------------------------------------------------------------------
# determinism


def test_same_seed_gives_identical_bytes_and_pixels(tiny, tmp_path):
    out_a, data_a, _ = tiny
    synthetic.generate(tmp_path, 3, 7, **TINY)
    assert (tmp_path / "annotations.json").read_bytes() == (out_a / "annotations.json").read_bytes()
    assert (tmp_path / "scenes.json").read_bytes() == (out_a / "scenes.json").read_bytes()
    fa, fb = _frames(out_a, data_a), _frames(tmp_path, data_a)
    assert fa.keys() == fb.keys()
    for name in fa:
        np.testing.assert_array_equal(fa[name], fb[name])


def test_different_seed_differs(tiny, tmp_path):
    out_a, data_a, _ = tiny
    synthetic.generate(tmp_path, 3, 8, **TINY)
    assert (tmp_path / "annotations.json").read_bytes() != (out_a / "annotations.json").read_bytes()
    first = data_a["videos"][0]["file_names"][0]
    a = np.asarray(Image.open(out_a / "frames" / first))
    b = np.asarray(Image.open(tmp_path / "frames" / first))
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_video_does_not_depend_on_number_of_videos(tiny, tmp_path):
    out_a, data_a, _ = tiny
    path = synthetic.generate(tmp_path, 1, 7, **TINY)
    data_b = json.loads(path.read_text())
    assert data_b["videos"][0] == data_a["videos"][0]
    anns_a = [a for a in data_a["annotations"] if a["video_id"] == 1]
    assert data_b["annotations"] == anns_a
    for fn in data_b["videos"][0]["file_names"]:
        np.testing.assert_array_equal(np.asarray(Image.open(out_a / "frames" / fn)),
                                      np.asarray(Image.open(tmp_path / "frames" / fn)))


# ---------------------------------------------------------------------------------------------
# json validity


def test_json_is_valid_ovis(tiny):
    out, data, _ = tiny
    assert set(data) >= {"info", "licenses", "videos", "categories", "annotations"}
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 5]
    assert [c["name"] for c in data["categories"]] == list(synthetic.CATEGORIES)
    videos = {v["id"]: v for v in data["videos"]}
    assert sorted(videos) == [1, 2, 3]
    for v in videos.values():
        assert (v["width"], v["height"]) == TINY["size"]
        assert 8 <= v["length"] == len(v["file_names"]) <= 10
    assert [a["id"] for a in data["annotations"]] == list(range(1, len(data["annotations"]) + 1))
    for ann in data["annotations"]:
        v = videos[ann["video_id"]]
        n, h, w = v["length"], v["height"], v["width"]
        assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= 5
        assert (ann["height"], ann["width"]) == (h, w)
        for key in ("segmentations", "bboxes", "areas", "occlusion", "visibility"):
            assert len(ann[key]) == n, key
        assert any(s is not None for s in ann["segmentations"])
        for seg, box, area, occ, vis in zip(ann["segmentations"], ann["bboxes"], ann["areas"],
                                            ann["occlusion"], ann["visibility"]):
            if seg is None:
                assert box is None and area is None and occ is None
                assert vis in ("hidden", "outside")
                continue
            assert vis == "visible" and occ in LEVELS
            assert isinstance(seg["counts"], str) and seg["size"] == [h, w]
            m = _decode(seg)
            assert m.shape == (h, w)
            assert isinstance(area, int) and area == int(m.sum()) > 0
            ys, xs = np.nonzero(m)
            assert box == [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                           int(ys.max() - ys.min() + 1)]


def test_masks_of_a_frame_are_disjoint(tiny):
    _, data, _ = tiny
    for v in data["videos"]:
        anns = [a for a in data["annotations"] if a["video_id"] == v["id"]]
        for t in range(v["length"]):
            count = np.zeros((v["height"], v["width"]), dtype=np.int32)
            for a in anns:
                if a["segmentations"][t] is not None:
                    count += _decode(a["segmentations"][t])
            assert count.max() <= 1


def test_frames_are_readable_rgb_of_the_stated_size(tiny):
    out, data, _ = tiny
    for v in data["videos"]:
        for fn in v["file_names"]:
            assert not os.path.isabs(fn)
            im = Image.open(out / "frames" / fn)
            assert im.format == "PNG" and im.mode == "RGB"
            assert im.size == (v["width"], v["height"])


# ---------------------------------------------------------------------------------------------
# independent re-render from scenes.json (different point-in-shape algorithms)


def _polygon_mask(xs, ys, vx, vy):
    """Even-odd ray casting over the pixel grid."""
    inside = np.zeros(np.broadcast(xs, ys).shape, dtype=bool)
    n = len(vx)
    for k in range(n):
        x1, y1, x2, y2 = vx[k], vy[k], vx[(k + 1) % n], vy[(k + 1) % n]
        if y1 == y2:
            continue
        crosses = (y1 > ys) != (y2 > ys)
        x_at = (x2 - x1) * (ys - y1) / (y2 - y1) + x1
        inside ^= crosses & (xs < x_at)
    return inside


def _reference_shape(category, cx, cy, r, theta, w, h):
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    if category in ("disc", "ring"):
        d2 = (xs - cx) ** 2 + (ys - cy) ** 2
        m = d2 <= r * r
        if category == "ring":
            m &= d2 >= (0.55 * r) ** 2
        return m
    if category == "square":
        local = [(0.75, 0.75), (-0.75, 0.75), (-0.75, -0.75), (0.75, -0.75)]
    elif category == "triangle":
        local = [(math.cos(math.radians(a)), math.sin(math.radians(a))) for a in (90, 210, 330)]
    elif category == "star":
        local = [((1.0 if k % 2 == 0 else 0.45) * math.cos(math.radians(90 + 36 * k)),
                  (1.0 if k % 2 == 0 else 0.45) * math.sin(math.radians(90 + 36 * k)))
                 for k in range(10)]
    else:
        raise AssertionError(category)
    c, s = math.cos(theta), math.sin(theta)
    vx = [cx + r * (u * c - v * s) for u, v in local]
    vy = [cy + r * (u * s + v * c) for u, v in local]
    return _polygon_mask(xs, ys, vx, vy)


def _reference_label(fraction):
    if fraction <= 0.05:
        return "no_occlusion"
    return "slight_occlusion" if fraction <= 0.5 else "severe_occlusion"


def test_masks_and_occlusion_labels_match_an_independent_rerender(tiny):
    _, data, scenes = tiny
    anns = {a["id"]: a for a in data["annotations"]}
    videos = {v["id"]: v for v in data["videos"]}
    compared = hidden_frames = labels_checked = 0
    for scene in scenes["videos"]:
        v = videos[scene["video_id"]]
        w, h = v["width"], v["height"]
        objs = scene["objects"]
        order = sorted(range(len(objs)), key=lambda i: -objs[i]["depth"])
        for t in range(v["length"]):
            owner = np.zeros((h, w), dtype=np.int32)
            amodal = {}
            for i in order:
                o = objs[i]
                m = _reference_shape(o["category"], o["cx"][t], o["cy"][t], o["radius"][t],
                                     o["angle"][t], w, h)
                amodal[i] = int(m.sum())
                owner[m] = i + 1
            for i, o in enumerate(objs):
                visible = owner == i + 1
                if o["annotation_id"] is None:
                    assert visible.sum() <= 2  # never visible (up to boundary round-off)
                    continue
                ann = anns[o["annotation_id"]]
                assert ann["category_id"] == o["category_id"]
                seg = ann["segmentations"][t]
                if seg is None:
                    assert visible.sum() <= 2
                    expected = "outside" if amodal[i] == 0 else "hidden"
                    if amodal[i] > 2:
                        assert ann["visibility"][t] == expected
                    hidden_frames += ann["visibility"][t] == "hidden"
                    continue
                got = _decode(seg).astype(bool)
                assert np.count_nonzero(got != visible) <= 2
                compared += 1
                fraction = 1.0 - visible.sum() / amodal[i]
                if min(abs(fraction - 0.05), abs(fraction - 0.5)) > 0.01:
                    assert ann["occlusion"][t] == _reference_label(fraction)
                    labels_checked += 1
    assert compared > 50 and labels_checked > 0.9 * compared
    assert hidden_frames > 0  # the tiny set exercises fully hidden objects


def test_tiny_set_has_hidden_then_reappearing_objects_and_same_category_overlap(tiny):
    _, data, _ = tiny
    reappearing = 0
    for ann in data["annotations"]:
        vis = ann["visibility"]
        present = [i for i, x in enumerate(vis) if x == "visible"]
        if any(vis[i] == "hidden" for i in range(present[0], present[-1] + 1)):
            reappearing += 1
    assert reappearing >= 1
    stats = synthetic.occlusion_statistics(data)
    assert stats["same_category_overlapping_pairs"] >= 1


# ---------------------------------------------------------------------------------------------
# statistics on a hand-made file (expected values computed by hand)


def _hand_dataset():
    seg = {"size": [10, 10], "counts": "unused"}

    def ann(i, cat, boxes, occ, vis):
        return {"id": i, "video_id": 1, "category_id": cat, "iscrowd": 0,
                "segmentations": [seg if b else None for b in boxes], "bboxes": boxes,
                "areas": [b[2] * b[3] if b else None for b in boxes], "occlusion": occ,
                "visibility": vis}

    return {
        "videos": [{"id": 1, "width": 10, "height": 10, "length": 4, "file_names": ["a"] * 4}],
        "categories": [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}],
        "annotations": [
            ann(1, 1, [[0, 0, 4, 4], [0, 0, 4, 4], None, [2, 2, 2, 2]],
                ["no_occlusion", "slight_occlusion", None, "severe_occlusion"],
                ["visible", "visible", "hidden", "visible"]),
            ann(2, 1, [[2, 2, 4, 4], None, None, None], ["severe_occlusion", None, None, None],
                ["visible", "outside", "outside", "outside"]),
            ann(3, 2, [[6, 6, 2, 2]] * 4, ["no_occlusion"] * 4, ["visible"] * 4),
        ],
    }


def test_occlusion_statistics_on_hand_made_data(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(_hand_dataset()))
    s = synthetic.occlusion_statistics(path)
    assert s["videos"] == 1 and s["objects"] == 3 and s["frames"] == 4
    assert s["objects_per_video"] == pytest.approx(3.0)
    assert s["visible_objects_per_frame"] == pytest.approx((3 + 2 + 1 + 2) / 4)
    # scores: A top half of [0, .25, .75] = .5 (medium); B .75 (heavy); C 0 (light)
    assert s["occlusion_level"] == pytest.approx({"light": 1 / 3, "medium": 1 / 3, "heavy": 1 / 3})
    assert s["occlusion_level_mean"] == pytest.approx({"light": 1 / 3, "medium": 1 / 3,
                                                       "heavy": 1 / 3})
    assert s["evaluator_groups"] == pytest.approx({"light": 1 / 3, "medium": 1 / 3, "heavy": 2 / 3})
    assert s["frame_levels"] == pytest.approx({"no_occlusion": 5 / 8, "slight_occlusion": 1 / 8,
                                               "severe_occlusion": 2 / 8})
    # frame 0: boxes of 16, 16 and 4 px, A∩B = 4 px, union 32 → 0.125; other frames 0
    assert s["mBOR"] == pytest.approx(0.125 / 4)
    assert s["reappear_events"] == {"total": 1, "hidden": 1, "outside": 0, "mixed": 0}
    assert s["objects_with_reappearance"] == pytest.approx(1 / 3)
    assert s["mean_gap_frames"] == pytest.approx(1.0)
    assert s["frames_with_fully_hidden_object"] == pytest.approx(1 / 4)
    assert s["same_category_overlapping_pairs"] == 1
    assert s["frames_with_same_category_overlap"] == pytest.approx(1 / 4)
    table = synthetic.format_statistics(s)
    assert "| mBOR | 0.031 | 0.22" in table


# ---------------------------------------------------------------------------------------------
# errors and command line


def test_occlusion_label_thresholds():
    assert synthetic.occlusion_label(0.0) == "no_occlusion"
    assert synthetic.occlusion_label(0.05) == "no_occlusion"
    assert synthetic.occlusion_label(0.0501) == "slight_occlusion"
    assert synthetic.occlusion_label(0.5) == "slight_occlusion"
    assert synthetic.occlusion_label(0.5001) == "severe_occlusion"
    with pytest.raises(ValueError, match="occluded_fraction"):
        synthetic.occlusion_label(1.5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_videos=0), "num_videos"),
    (dict(seed=-1), "seed"),
    (dict(num_frames=(5, 3)), "num_frames"),
    (dict(num_frames=1), "num_frames"),
    (dict(size=(16, 80)), "size"),
    (dict(categories=("disc", "hexagon")), "categories"),
    (dict(objects_per_video=0), "objects_per_video"),
])
def test_bad_arguments_are_rejected(tmp_path, kwargs, match):
    args = dict(num_videos=1, seed=0, **TINY)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        synthetic.generate(tmp_path, **args)


def test_existing_dataset_needs_overwrite(tmp_path):
    synthetic.generate(tmp_path, 1, 0, num_frames=3, size=(64, 48))
    with pytest.raises(FileExistsError, match="overwrite"):
        synthetic.generate(tmp_path, 1, 0, num_frames=3, size=(64, 48))
    synthetic.generate(tmp_path, 1, 1, num_frames=4, size=(64, 48), overwrite=True)
    data = json.loads((tmp_path / "annotations.json").read_text())
    assert data["videos"][0]["length"] == 4
    assert sorted(p.name for p in (tmp_path / "frames" / "synth_00000").iterdir()) == [
        f"{i:05d}.png" for i in range(4)]


def test_subset_of_categories(tmp_path):
    path = synthetic.generate(tmp_path, 2, 3, num_frames=4, size=(96, 64),
                              categories=("ring", "star"))
    data = json.loads(path.read_text())
    assert [(c["id"], c["name"]) for c in data["categories"]] == [(1, "ring"), (2, "star")]
    assert {a["category_id"] for a in data["annotations"]} <= {1, 2}


def test_cli(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "cmasktrack.data.synthetic", "--out", str(tmp_path / "d"),
           "--videos", "2", "--seed", "5", "--frames", "4-5", "--size", "96x64"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "mBOR" in res.stdout and "objects per video" in res.stdout
    data = json.loads((tmp_path / "d" / "annotations.json").read_text())
    assert len(data["videos"]) == 2
    assert all(4 <= v["length"] <= 5 and (v["width"], v["height"]) == (96, 64)
               for v in data["videos"])
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert again.returncode == 2 and "overwrite" in again.stderr


def test_occlusion_scores_are_the_evaluators():
    from cmasktrack.data.ytvis import OCCLUSION_LABELS

    # one source of truth: the same table as the annotation reader and the evaluator use
    assert synthetic.OCCLUSION_SCORES is OCCLUSION_LABELS
    assert synthetic.OCCLUSION_SCORES == {"no_occlusion": 0.0, "slight_occlusion": 0.25, "severe_occlusion": 0.75}
