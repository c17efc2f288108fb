"""Training samples (cmasktrack.train.dataset) against values derived by hand from the json."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from cmasktrack.train.dataset import GroupedBatchSampler, VISTrainDataset, collate_train


def _rle(h, w, box):
    m = np.zeros((h, w), dtype=np.uint8)
    x, y, bw, bh = box
    m[y:y + bh, x:x + bw] = 1
    r = mask_utils.encode(np.asfortranarray(m))
    return {"size": [h, w], "counts": r["counts"].decode()}, m


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    """One 3-frame 60x40 video; categories listed as ids 7 ('b') then 3 ('a')."""
    root = tmp_path_factory.mktemp("hand")
    h, w = 40, 60
    rng = np.random.default_rng(0)
    names = []
    for t in range(3):
        names.append(f"v/{t}.png")
        (root / "v").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / names[-1])
    boxes = {11: [[10, 4, 20, 12], None, [12, 6, 20, 12]],
             12: [[40, 20, 15, 18], [40, 20, 15, 18], None],
             13: [[0, 30, 8, 8], [0, 30, 8, 8], None]}
    anns, masks = [], {}
    for aid, cat, crowd in ((11, 7, 0), (12, 3, 0), (13, 3, 1)):
        segs, areas = [], []
        for t, b in enumerate(boxes[aid]):
            if b is None:
                segs.append(None)
                areas.append(None)
                continue
            rle, m = _rle(h, w, b)
            masks[(aid, t)] = m
            segs.append(rle)
            areas.append(0 if (aid == 12 and t == 1) else int(m.sum()))  # ann 12 has area 0 in frame 1
        anns.append({"id": aid, "video_id": 1, "category_id": cat, "iscrowd": crowd, "segmentations": segs,
                     "bboxes": boxes[aid], "areas": areas})
    data = {"videos": [{"id": 1, "width": w, "height": h, "length": 3, "file_names": names}],
            "categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}], "annotations": anns}
    (root / "ann.json").write_text(json.dumps(data))
    return root, boxes, masks


def _expected_box(b, s, W, flip, H=20):
    x, y, bw, bh = b
    c = np.array([x, y, x + bw - 1, y + bh - 1], dtype=np.float32) * np.float32(s)
    if flip:
        c = np.array([W - c[2] - 1, c[1], W - c[0] - 1, c[3]], dtype=np.float32)
    return np.clip(c, 0, [W, H, W, H])


def test_handmade_sample_targets(handmade):
    cv2 = pytest.importorskip("cv2")
    root, boxes, masks = handmade
    ds = VISTrainDataset(root / "ann.json", root, scale=(30, 20), flip_ratio=0.5)
    # frame 1 only has a crowd object and an object of area 0: not a training frame
    assert ds.samples == [(1, 0), (1, 2)]
    assert ds.cat2label == {7: 1, 3: 2} and ds.category_names == ["b", "a"]
    seen_flips = set()
    for seed in range(12):
        s = ds[(0, seed)]
        flip = s.meta.flip
        seen_flips.add(flip)
        assert s.meta.scale_factor == 0.5 and s.meta.img_shape == (20, 30) and s.meta.pad_shape == (32, 32)
        assert s.image.shape == (3, 32, 32) and s.ref_frame_index == 2 and s.ref_meta.flip == flip
        exp = np.stack([_expected_box(boxes[11][0], 0.5, 30, flip), _expected_box(boxes[12][0], 0.5, 30, flip)])
        assert np.allclose(s.gt_boxes.numpy(), exp)
        assert s.gt_labels.tolist() == [1, 2]
        assert s.gt_ref_index.tolist() == [1, 0]  # ann 11 is in frame 2 (first gt there), ann 12 is not
        assert np.allclose(s.ref_boxes.numpy(), _expected_box(boxes[11][2], 0.5, 30, flip)[None])
        assert np.allclose(s.gt_boxes_ignore.numpy(), _expected_box(boxes[13][0], 0.5, 30, flip)[None])
        for i, aid in enumerate((11, 12)):
            m = cv2.resize(masks[(aid, 0)], (30, 20), interpolation=cv2.INTER_NEAREST)
            if flip:
                m = m[:, ::-1]
            assert np.array_equal(s.gt_masks[i, :20, :30].numpy(), m)
            assert s.gt_masks[i, 20:].sum() == 0 and s.gt_masks[i, :, 30:].sum() == 0
        # the image is the frame, resized and normalised (flipped back for comparison)
        img = np.asarray(Image.open(root / "v/0.png"))
        from cmasktrack.transforms import preprocess_frame

        ref_img, _ = preprocess_frame(img, (30, 20), flip=flip)
        assert torch.equal(s.image, ref_img)
    assert seen_flips == {True, False}
    # the same seed gives the same sample
    assert torch.equal(ds[(1, 3)].gt_boxes, ds[(1, 3)].gt_boxes) and ds[(1, 3)].meta == ds[(1, 3)].meta


def test_single_usable_frame_is_its_own_reference(handmade, tmp_path):
    root, _, _ = handmade
    data = json.loads((root / "ann.json").read_text())
    for a in data["annotations"]:
        a["segmentations"][2] = None
        a["bboxes"][2] = None
        a["areas"][2] = None
    p = tmp_path / "one.json"
    p.write_text(json.dumps(data))
    ds = VISTrainDataset(p, root, scale=(30, 20))
    assert ds.samples == [(1, 0)]
    s = ds[(0, 1)]
    assert s.ref_frame_index == 0 and s.gt_ref_index.tolist() == [1, 2]


def test_synthetic_samples_match_json(tiny_synthetic):
    ann_path, frames = tiny_synthetic
    data = json.loads(open(ann_path).read())
    by_id = {a["id"]: a for a in data["annotations"]}
    ds = VISTrainDataset(ann_path, frames, scale=(64, 40), ref_range=2)
    usable = 0
    for i, (vid, t) in enumerate(ds.samples):
        s = ds[(i, 100 + i)]
        assert abs(s.ref_frame_index - t) <= 2 or s.ref_frame_index == t
        present = [a for a in data["annotations"] if a["video_id"] == vid and a["bboxes"][t] is not None]
        usable += bool(present)
        assert len(present) == s.gt_boxes.size(0)
        exp = np.stack([_expected_box(a["bboxes"][t], 0.5, 64, s.meta.flip, H=40) for a in present])
        assert np.allclose(s.gt_boxes.numpy(), exp)
        ref_present = [a["id"] for a in data["annotations"] if a["video_id"] == vid
                       and a["bboxes"][s.ref_frame_index] is not None]
        for k, a in enumerate(present):
            j = int(s.gt_ref_index[k])
            assert j == (ref_present.index(a["id"]) + 1 if a["id"] in ref_present else 0)
            if j:
                rb = _expected_box(by_id[a["id"]]["bboxes"][s.ref_frame_index], 0.5, 64, s.meta.flip, H=40)
                assert np.allclose(s.ref_boxes[j - 1].numpy(), rb)
        assert s.gt_labels.tolist() == [a["category_id"] for a in present]
    assert usable == len(ds)


def test_collate_pads_to_the_largest():
    from cmasktrack.train.dataset import TrainSample
    from cmasktrack.transforms import FrameMeta

    def sample(h, w):
        meta = FrameMeta((h, w), (h, w), (h, w), 1.0)
        return TrainSample(torch.ones(3, h, w), torch.full((3, h, w), 2.0), meta, meta, torch.zeros(1, 4),
                           torch.ones(1, dtype=torch.long), torch.ones(1, h, w, dtype=torch.uint8),
                           torch.zeros(1, dtype=torch.long), torch.zeros(0, 4), torch.zeros(1, 4))

    b = collate_train([sample(32, 64), sample(64, 32)])
    assert b.images.shape == (2, 3, 64, 64) and b.ref_images.shape == (2, 3, 64, 64)
    assert b.images[0, :, :32, :64].min() == 1 and b.images[0, :, 32:].abs().sum() == 0
    assert b.ref_images[1, :, :64, :32].min() == 2 and b.ref_images[1, :, :, 32:].abs().sum() == 0
    assert b.pad_shapes == [(32, 64), (64, 32)] and len(b) == 2


def test_grouped_batch_sampler():
    flags = np.array([0] * 7 + [1] * 4)
    s0 = GroupedBatchSampler(flags, 2, num_replicas=2, rank=0, seed=3)
    s1 = GroupedBatchSampler(flags, 2, num_replicas=2, rank=1, seed=3)
    # group 0: 7 -> 8 (4 batches), group 1: 4 (2 batches); 6 batches over 2 ranks
    assert len(s0) == len(s1) == 3
    for epoch in range(3):
        b0, b1 = s0.epoch_batches(epoch), s1.epoch_batches(epoch)
        everything = [i for b in b0 + b1 for i in b]
        assert set(everything) == set(range(11)) and len(everything) == 12
        for b in b0 + b1:
            assert len({int(flags[i]) for i in b}) == 1  # never mixes aspect-ratio groups
    assert s0.epoch_batches(0) != s0.epoch_batches(1)
    assert s0.epoch_batches(4) == GroupedBatchSampler(flags, 2, 2, 0, seed=3).epoch_batches(4)
    s0.set_epoch(2)
    full = list(s0)
    s0.set_epoch(2)
    s0.set_start(1)
    assert list(s0) == full[1:]
    assert list(s0) == full  # the start only applies once
    seeds = [seed for b in full for _, seed in b]
    assert len(set(seeds)) == len(seeds)
    with pytest.raises(ValueError):
        GroupedBatchSampler(flags, 2, num_replicas=2, rank=2)


@pytest.fixture(scope="module")
def tiny_synthetic(tmp_path_factory):
    from cmasktrack.data.synthetic import generate

    out = tmp_path_factory.mktemp("synth")
    ann = generate(out, 3, 0, num_frames=(5, 7), size=(128, 80), objects_per_video=(2, 4))
    return ann, out / "frames"
