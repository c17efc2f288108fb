"""The OVIS / YouTube-VIS annotation reader and the results-json validation."""

import copy
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from cmasktrack.data.results import (
    ResultsFormatError,
    VISPrediction,
    load_results,
    results_to_json,
    save_results,
)
from cmasktrack.data.ytvis import VISDataset, VISFormatError

H, W = 8, 10


def enc(m):
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def block(y0, y1, x0, x1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def make_gt():
    # column-major runs of a mask whose column 1 is fully set: 8 zeros, 8 ones, 64 zeros
    uncompressed = {"size": [H, W], "counts": [8, 8, 64]}
    polygon = [[2.0, 1.0, 6.0, 1.0, 6.0, 4.0, 2.0, 4.0]]
    return {
        "info": {"description": "toy"},
        "videos": [
            {"id": 3, "width": W, "height": H, "length": 4, "file_names": [f"vid3/{t:05d}.jpg" for t in range(4)]},
            {"id": 9, "width": W, "height": H, "length": 1, "file_names": ["vid9/00000.jpg"]},
        ],
        "categories": [{"id": 1, "name": "person", "supercategory": "object"}, {"id": 2, "name": "dog"}],
        "annotations": [
            {
                "id": 11, "video_id": 3, "category_id": 1, "iscrowd": 0,
                "segmentations": [enc(block(0, 2, 0, 3)), uncompressed, polygon, None],
                "bboxes": [[0, 0, 3, 2], [1, 0, 1, 8], [2, 1, 4, 3], None],
                "areas": [6, 8, 0, None],
                "occlusion": ["no_occlusion", "slight_occlusion", "severe_occlusion", None],
            },
            {
                "id": 12, "video_id": 3, "category_id": 2, "iscrowd": 1,
                "segmentations": [[], None, {}, enc(block(4, 8, 5, 10))],
                "occlusion": [None, None, None, "no_occlusion"],
            },
        ],
    }


def test_reads_every_segmentation_format():
    ds = VISDataset.from_json(make_gt())
    assert ds.video_ids == [3, 9] and ds.category_ids == [1, 2]
    assert ds.videos[3].length == 4 and ds.videos[3].height == H and ds.videos[3].width == W
    assert ds.categories[1].name == "person" and ds.categories[2].supercategory == ""
    a, b = ds.video_annotations(3)
    assert ds.video_annotations(9) == []
    assert a.id == 11 and not a.iscrowd and b.iscrowd
    # compressed RLE
    np.testing.assert_array_equal(ds.mask(a, 0), block(0, 2, 0, 3))
    # uncompressed RLE: column 1
    expected = np.zeros((H, W), np.uint8)
    expected[:, 1] = 1
    np.testing.assert_array_equal(ds.mask(a, 1), expected)
    # polygon (2,1)-(6,4): the interior pixels are set, nothing outside its box
    poly = ds.mask(a, 2)
    assert poly[2:4, 3:6].all()
    outside = np.ones((H, W), bool)
    outside[1:5, 2:7] = False
    assert not poly[outside].any()
    # null, [] and {} are absent frames
    assert ds.mask(a, 3) is None and ds.rle(a, 3) is None
    assert [ds.rle(b, t) is None for t in range(4)] == [True, True, True, False]
    np.testing.assert_array_equal(ds.mask(b, 3), block(4, 8, 5, 10))
    assert ds.info == {"description": "toy"}


def test_average_area_and_boxes():
    ds = VISDataset.from_json(make_gt())
    a, b = ds.annotations
    # mean of the non-null, non-zero written areas
    assert ds.average_area(a) == 7.0
    # no 'areas' field: the mask areas (20 px in its one frame)
    assert ds.average_area(b) == 20.0
    assert ds.box(a, 2) == [2.0, 1.0, 4.0, 3.0]  # from 'bboxes'
    assert ds.box(b, 3) == [5.0, 4.0, 5.0, 4.0]  # from the mask
    assert ds.box(a, 3) is None


def test_occlusion_labels_flag():
    gt = make_gt()
    assert VISDataset.from_json(gt).has_occlusion_labels
    for ann in gt["annotations"]:
        del ann["occlusion"]
    assert not VISDataset.from_json(gt).has_occlusion_labels


def test_null_annotations_as_in_the_test_split(tmp_path):
    gt = make_gt()
    gt["annotations"] = None
    path = tmp_path / "test.json"
    path.write_text(json.dumps(gt))
    ds = VISDataset.from_json(path)
    assert ds.annotations == [] and len(ds) == 2


def test_frame_lookup_under_image_root(tmp_path):
    (tmp_path / "vid9").mkdir()
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[2, 3] = (10, 20, 30)
    Image.fromarray(pixels).save(tmp_path / "vid9" / "00000.png")
    gt = make_gt()
    gt["videos"][1]["file_names"] = ["vid9/00000.png"]
    ds = VISDataset.from_json(gt, image_root=tmp_path)
    assert ds.frame_path(3, 2) == tmp_path / "vid3" / "00002.jpg"
    assert ds.frame_paths(9) == [tmp_path / "vid9" / "00000.png"]
    np.testing.assert_array_equal(ds.read_frame(9, 0), pixels)
    with pytest.raises(FileNotFoundError, match="frame 0 of video 3"):
        ds.read_frame(3, 0)
    with pytest.raises(IndexError, match="frame 4 out of range"):
        ds.frame_path(3, 4)
    with pytest.raises(KeyError, match="unknown video id 5"):
        ds.frame_path(5, 0)


def test_frames_are_decoded_as_inference_decodes_them(tmp_path):
    # training reads frames through VISDataset.read_frame, inference through data.frames: one
    # decoder, so EXIF orientation and 16-bit images come out the same in both
    (tmp_path / "v").mkdir()
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "v" / "0.png", exif=exif.tobytes())
    deep = np.array([[0, 255, 256], [4660, 65535, 32768]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "v" / "1.png")
    gt = make_gt()
    gt["videos"][1].update(file_names=["v/0.png", "v/1.png"], length=2)
    gt["annotations"] = [a for a in gt["annotations"] if a["video_id"] != 9]
    ds = VISDataset.from_json(gt, image_root=tmp_path)
    rotated = ds.read_frame(9, 0)
    assert rotated.shape == (3, 2, 3)
    # clockwise: the displayed first row is the stored first column read bottom to top
    np.testing.assert_array_equal(rotated[0], pixels[::-1, 0])
    np.testing.assert_array_equal(rotated, np.rot90(pixels, k=-1))
    high_byte = np.array([[0, 0, 1], [0x12, 0xFF, 0x80]], dtype=np.uint8)
    np.testing.assert_array_equal(ds.read_frame(9, 1), np.repeat(high_byte[:, :, None], 3, axis=2))
    with pytest.raises(ValueError, match="image root"):
        VISDataset.from_json(make_gt()).frame_path(3, 0)


def _break(mutate):
    gt = make_gt()
    mutate(gt)
    return gt


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda g: g.pop("videos"), "missing top-level key 'videos'"),
        (lambda g: g.update(categories={}), "'categories' must be a list"),
        (lambda g: g["videos"][0].pop("width"), "video id 3: missing key 'width'"),
        (lambda g: g["videos"][1].update(height=0), "video id 9: 'height' must be positive"),
        (lambda g: g["videos"][0].update(length=5), "video id 3: 'length' is 5 but 'file_names' has 4"),
        (lambda g: g["videos"][0].update(id="3"), r"videos\[0\]: 'id' must be an integer"),
        (lambda g: g["videos"].append(dict(g["videos"][0])), "duplicate video id 3"),
        (lambda g: g["annotations"][1].pop("segmentations"), "annotation id 12 .video 3.: missing key 'segmentations'"),
        (lambda g: g["annotations"][0]["segmentations"].pop(), "annotation id 11 .video 3.: 'segmentations' has 3 entries, but the video has 4"),
        (lambda g: g["annotations"][0].update(video_id=4), "annotation id 11 .video 4.: 'video_id' 4 is not in 'videos'"),
        (lambda g: g["annotations"][0].update(category_id=7), "annotation id 11 .video 3.: 'category_id' 7 is not in 'categories'"),
        (lambda g: g["annotations"][1].update(id=11), "duplicate annotation id 11"),
        (lambda g: g["annotations"][0]["segmentations"].__setitem__(0, {"size": [H, W + 1], "counts": "abc"}),
         r"annotation id 11 .video 3., 'segmentations' frame 0: RLE size \[8, 11\] disagrees with the video size \[8, 10\]"),
        (lambda g: g["annotations"][0]["segmentations"].__setitem__(1, {"size": [H, W], "counts": [8, 8, 60]}),
         "frame 1: uncompressed RLE runs add up to 76, expected height.width = 80"),
        (lambda g: g["annotations"][0]["segmentations"].__setitem__(2, [[1.0, 2.0, 3.0]]), "frame 2: polygon 0 must be"),
        (lambda g: g["annotations"][0]["segmentations"].__setitem__(0, 5), "frame 0: segmentation must be"),
        (lambda g: g["annotations"][0]["segmentations"].__setitem__(0, {"counts": "x"}), "frame 0: RLE must have keys"),
        (lambda g: g["annotations"][0]["bboxes"].__setitem__(0, [1, 2, 3]), "annotation id 11 .video 3., 'bboxes' frame 0"),
        (lambda g: g["annotations"][0]["areas"].__setitem__(1, "big"), "annotation id 11 .video 3., 'areas' frame 1"),
        (lambda g: g["annotations"][0].update(areas=[1, 2]), "'areas' has 2 entries, but the video has 4 frames"),
        (lambda g: g["annotations"][0]["occlusion"].__setitem__(0, "partial"), "'occlusion' frame 0: unknown label 'partial'"),
        (lambda g: g["annotations"][0].update(iscrowd=2), "annotation id 11 .video 3.: 'iscrowd' must be 0 or 1"),
    ],
)
def test_malformed_annotations_name_the_problem(mutate, message):
    with pytest.raises(VISFormatError, match=message):
        VISDataset.from_json(_break(mutate))


def test_not_json_and_not_an_object(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(VISFormatError, match="bad.json: not valid json"):
        VISDataset.from_json(bad)
    bad.write_text("[]")
    with pytest.raises(VISFormatError, match="top level must be a json object"):
        VISDataset.from_json(bad)
    with pytest.raises(FileNotFoundError):
        VISDataset.from_json(tmp_path / "missing.json")


# ------------------------------------------------------------------------ results


def good_results():
    return [
        {"video_id": 3, "category_id": 1, "score": 0.75,
         "segmentations": [enc(block(0, 2, 0, 3)), None, {"size": [H, W], "counts": [8, 8, 64]}, None]},
        {"video_id": 9, "category_id": 2, "score": 1, "segmentations": [enc(block(0, 8, 0, 10))]},
    ]


def test_results_load_and_round_trip(tmp_path):
    ds = VISDataset.from_json(make_gt())
    preds = load_results(good_results(), ds)
    assert [(p.video_id, p.category_id, p.score) for p in preds] == [(3, 1, 0.75), (9, 2, 1.0)]
    assert preds[0].segmentations[1] is None
    expected = np.zeros((H, W), np.uint8)
    expected[:, 1] = 1
    np.testing.assert_array_equal(mask_utils.decode(preds[0].segmentations[2]), expected)
    path = tmp_path / "results.json"
    with pytest.deprecated_call():
        save_results(preds, path)
    again = load_results(path, ds)
    for p, q in zip(preds, again):
        assert (p.video_id, p.category_id, p.score) == (q.video_id, q.category_id, q.score)
        for r, s in zip(p.segmentations, q.segmentations):
            assert (r is None and s is None) or np.array_equal(mask_utils.decode(r), mask_utils.decode(s))
    assert isinstance(json.loads(path.read_text())[0]["segmentations"][2]["counts"], str)
    assert load_results([], ds) == []
    # integral floats are accepted as ids
    loose = good_results()[1:]
    loose[0].update(video_id=9.0, category_id=2.0)
    assert (load_results(loose, ds)[0].video_id, load_results(loose, ds)[0].category_id) == (9, 2)
    with pytest.deprecated_call():
        assert results_to_json([VISPrediction(9, 1, 0.5, [None])]) == [
            {"video_id": 9, "score": 0.5, "category_id": 1, "segmentations": [None]}
        ]


def _bad_results(index, **changes):
    results = good_results()
    results[index].update(changes)
    return results


@pytest.mark.parametrize(
    "results, message",
    [
        ({"video_id": 3}, "must be a json list"),
        (_bad_results(0, video_id=4), r"results\[0\]: unknown video_id 4"),
        (_bad_results(1, segmentations=[None, None]), r"results\[1\] \(video 9\): 'segmentations' has 2 frames, but the video has 1"),
        (_bad_results(1, segmentations=[{"size": [H + 1, W], "counts": "abc"}]),
         r"results\[1\] \(video 9\), frame 0: RLE size \[9, 10\] disagrees with the video size \[8, 10\]"),
        (_bad_results(0, score="high"), r"results\[0\] \(video 3\): 'score' must be a finite number, got 'high'"),
        (_bad_results(0, score=None), "'score' must be a finite number"),
        (_bad_results(0, score=float("nan")), "'score' must be a finite number"),
        (_bad_results(0, score=True), "'score' must be a finite number"),
        (_bad_results(0, category_id="1"), "'category_id' must be an integer"),
        (_bad_results(0, category_id=1.5), "'category_id' must be an integer"),
        (_bad_results(0, video_id=True), "'video_id' must be an integer"),
        (_bad_results(1, segmentations=[[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]]), "frame 0: segmentation must be an RLE dict or null"),
        ([{"video_id": 3, "category_id": 1, "score": 0.5}], r"results\[0\]: missing key 'segmentations'"),
        ([good_results()[0], 7], r"results\[1\]: must be an object"),
    ],
)
def test_malformed_results_name_the_problem(results, message):
    ds = VISDataset.from_json(make_gt())
    with pytest.raises(ResultsFormatError, match=message):
        load_results(copy.deepcopy(results), ds)


def test_results_file_not_json(tmp_path):
    ds = VISDataset.from_json(make_gt())
    path = tmp_path / "r.json"
    path.write_text("[{")
    with pytest.raises(ResultsFormatError, match="not valid json"):
        load_results(path, ds)
