"""The official training step: the trained-parameter set, BatchNorm under training, a fixed
pair from the dataset, and sampling that takes every candidate.

References are independent of cmasktrack's code: the parameter list written out from the
official model definitions (tests/official_keys.py) with mmdetection v1's ResNet freezing
rule, and boxes / masks / images of a small annotation file computed by hand below.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from cmasktrack.weights import official_to_cmasktrack_key
from cmasktrack.model_config import CMaskTrackConfig
from cmasktrack.model import CMaskTrack
from cmasktrack.train import TrainConfig, VISTrainDataset, collate_train, forward_train, prepare_model
from cmasktrack.train.norm import TrainableBatchNorm2d
from conftest import tiny_config
from official_keys import official_shapes

STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def _official_parameter_split(depth=50, num_classes=26):
    """(trained, frozen) official parameter names: mmdet v1 ``ResNet._freeze_stages`` with
    ``frozen_stages=1`` sets ``requires_grad=False`` on ``conv1``, ``norm1`` (``bn1``) and every
    parameter of ``layer1``; with ``normalize=dict(type='BN', frozen=False)`` every other
    parameter — BatchNorm weight and bias of layer2-layer4 included — is trained."""
    names = [k for k in official_shapes(num_classes=num_classes, depth=depth) if not k.endswith(STATISTICS)]
    frozen = {k for k in names if k.startswith(("backbone.conv1.", "backbone.bn1.", "backbone.layer1."))}
    return set(names) - frozen, frozen


def test_ovis_preset_trains_exactly_the_official_parameter_set():
    torch.manual_seed(0)
    model = CMaskTrack(CMaskTrackConfig())  # the official R50 model, 26 classes
    state = prepare_model(model, TrainConfig.preset("ovis"))
    trained, frozen = _official_parameter_split()
    assert set(state.trained) == {official_to_cmasktrack_key(k) for k in trained}
    assert set(state.frozen) == {official_to_cmasktrack_key(k) for k in frozen}
    # the 84 BatchNorm tensors (42 layers of layer2-layer4, downsample included) are among them
    bn_trained = {k for k in trained if k.startswith("backbone.layer") and (".bn" in k or ".downsample.1." in k)}
    assert len(bn_trained) == 84 and state.trained_batchnorm_layers == 42
    params = dict(model.named_parameters())
    assert all(params[official_to_cmasktrack_key(k)].requires_grad for k in bn_trained)
    assert model.training and "84" not in state.summary() and str(len(trained)) in state.summary()
    # BatchNorm normalises with its running statistics everywhere (norm_eval)
    bns = [m for m in model.backbone.body.modules() if isinstance(m, TrainableBatchNorm2d)]
    assert len(bns) == 53 and not any(m.use_batch_stats for m in bns)


def test_other_presets_state_their_parameter_sets():
    torch.manual_seed(0)
    small = CMaskTrack(TrainConfig.preset("cpu_small").model_config(3, ["a", "b"]))
    state = prepare_model(small, TrainConfig.preset("cpu_small"))  # the official policy on a ResNet-18
    trained, frozen = _official_parameter_split(depth=18, num_classes=3)
    assert {k for k in state.frozen if k.startswith("backbone.")} == {
        official_to_cmasktrack_key(k) for k in frozen}
    synthetic_cfg = TrainConfig.preset("cpu_synthetic")
    synthetic = CMaskTrack(synthetic_cfg.model_config(3, ["a", "b"]))
    state = prepare_model(synthetic, synthetic_cfg)  # from scratch: everything, batch statistics
    assert state.frozen == () and state.batchnorm == "batch"
    assert all(m.use_batch_stats for m in synthetic.backbone.body.modules() if isinstance(m, TrainableBatchNorm2d))


# ------------------------------------------------------------------------------------------
# a small annotation file, by hand


H, W = 40, 60
COLOURS = [(200, 10, 40), (30, 220, 90), (120, 60, 250), (9, 9, 9)]  # one constant colour per frame
BOXES = {  # [x, y, w, h] per frame (None: absent); category 3 is listed second (label 2); frame 3 empty
    21: (3, [[10, 4, 20, 12], [12, 6, 20, 12], None, None]),
    22: (7, [[40, 20, 16, 18], None, [40, 20, 16, 18], None]),
    23: (7, [None, [2, 2, 10, 8], [4, 4, 10, 8], None]),
}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    (root / "v").mkdir()
    names = []
    for t, colour in enumerate(COLOURS):
        names.append(f"v/{t}.png")
        Image.fromarray(np.full((H, W, 3), colour, dtype=np.uint8)).save(root / names[-1])
    anns = []
    for aid, (cat, boxes) in BOXES.items():
        segs, areas = [], []
        for b in boxes:
            if b is None:
                segs.append(None)
                areas.append(None)
                continue
            m = np.zeros((H, W), dtype=np.uint8)
            m[b[1]:b[1] + b[3], b[0]:b[0] + b[2]] = 1
            rle = mask_utils.encode(np.asfortranarray(m))
            segs.append({"size": [H, W], "counts": rle["counts"].decode()})
            areas.append(int(m.sum()))
        anns.append({"id": aid, "video_id": 5, "category_id": cat, "iscrowd": 0, "segmentations": segs,
                     "bboxes": boxes, "areas": areas})
    data = {"videos": [{"id": 5, "width": W, "height": H, "length": 4, "file_names": names}],
            "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}], "annotations": anns}
    (root / "ann.json").write_text(json.dumps(data))
    return root


def _normalised(colour):
    mean = np.array([123.675, 116.28, 103.53], dtype=np.float32)
    std = np.array([58.395, 57.12, 57.375], dtype=np.float32)
    return (np.array(colour, dtype=np.float32) - mean) / std


@pytest.mark.parametrize("flip", [False, True])
def test_pair_builds_the_official_sample_by_hand(small_dataset, flip):
    ds = VISTrainDataset(small_dataset / "ann.json", small_dataset, scale=(30, 20))
    s = ds.pair(5, 1, 2, flip=flip)
    # scale 0.5: 60x40 -> 30x20, padded to 32x32
    assert s.meta.img_shape == (20, 30) and s.meta.pad_shape == (32, 32) and s.meta.flip == flip
    # frame 1: ann 21 [12, 6, 12 + 20 - 1, 6 + 12 - 1] and ann 23 [2, 2, 11, 9], times 0.5
    boxes = np.array([[6.0, 3.0, 15.5, 8.5], [1.0, 1.0, 5.5, 4.5]], dtype=np.float32)
    ref_boxes = np.array([[20.0, 10.0, 27.5, 18.5], [2.0, 2.0, 6.5, 5.5]], dtype=np.float32)  # anns 22, 23
    if flip:  # x1' = 30 - x2 - 1, x2' = 30 - x1 - 1
        boxes = np.array([[13.5, 3.0, 23.0, 8.5], [23.5, 1.0, 28.0, 4.5]], dtype=np.float32)
        ref_boxes = np.array([[1.5, 10.0, 9.0, 18.5], [22.5, 2.0, 27.0, 5.5]], dtype=np.float32)
    np.testing.assert_array_equal(s.gt_boxes.numpy(), boxes)
    np.testing.assert_array_equal(s.ref_boxes.numpy(), ref_boxes)
    assert s.gt_labels.tolist() == [2, 1]  # category 3 is second in the file, 7 first
    assert s.gt_ref_index.tolist() == [0, 2]  # ann 21 is not in frame 2; ann 23 is its 2nd object
    assert s.gt_boxes_ignore.shape == (0, 4)
    # masks: nearest neighbour at 0.5 reads source pixel 2x, so [x, x + w) -> [ceil(x/2), ceil((x+w)/2))
    expected = np.zeros((2, 32, 32), dtype=np.uint8)
    expected[0, 3:9, 6:16] = 1  # ann 21: x 12..31, y 6..17
    expected[1, 1:5, 1:6] = 1  # ann 23: x 2..11, y 2..9
    if flip:
        expected[:, :20, :30] = expected[:, :20, :30][:, :, ::-1]
    np.testing.assert_array_equal(s.gt_masks.numpy(), expected)
    # images: frame 1 and frame 2 (constant colours), normalised, zero padding
    for image, colour in ((s.image, COLOURS[1]), (s.ref_image, COLOURS[2])):
        assert image.shape == (3, 32, 32)
        np.testing.assert_allclose(image[:, :20, :30].numpy(), np.broadcast_to(_normalised(colour)[:, None, None],
                                                                               (3, 20, 30)), rtol=0, atol=1e-6)
        assert image[:, 20:].abs().sum() == 0 and image[:, :, 30:].abs().sum() == 0
    assert (s.video_id, s.frame_index, s.ref_frame_index) == (5, 1, 2)


def test_pair_defaults_are_the_official_pipeline(small_dataset):
    ds = VISTrainDataset(small_dataset / "ann.json", small_dataset)
    assert ds.scale == (640, 360) and ds.size_divisor == 32 and ds.flip_ratio == 0.5
    assert ds.mean == (123.675, 116.28, 103.53) and ds.std == (58.395, 57.12, 57.375)
    s = ds.pair(5, 0, 1)
    # 60x40 -> scale min(640/60, 360/40) = 9: 540x360, padded to 544x384
    assert s.meta.img_shape == (360, 540) and s.meta.pad_shape == (384, 544)
    assert ds.samples == [(5, 0), (5, 1), (5, 2)]
    with pytest.raises(ValueError, match="no usable ground truth"):
        ds.pair(5, 3, 0)
    with pytest.raises(IndexError, match="out of range"):
        ds.pair(5, 0, 4)
    with pytest.raises(KeyError, match="video"):
        ds.pair(6, 0, 1)


def test_random_draws_are_pairs(small_dataset):
    ds = VISTrainDataset(small_dataset / "ann.json", small_dataset, scale=(30, 20))
    for seed in range(6):
        s = ds[(1, seed)]
        p = ds.pair(s.video_id, s.frame_index, s.ref_frame_index, s.meta.flip)
        assert torch.equal(s.gt_boxes, p.gt_boxes) and torch.equal(s.image, p.image)
        assert torch.equal(s.gt_masks, p.gt_masks) and torch.equal(s.ref_boxes, p.ref_boxes)


# ------------------------------------------------------------------------------------------
# a training step


def _batch(small_dataset):
    ds = VISTrainDataset(small_dataset / "ann.json", small_dataset, scale=(64, 48))
    return collate_train([ds.pair(5, 1, 2), ds.pair(5, 0, 2, flip=True)])


def _model(calibration=True):
    torch.manual_seed(0)
    return CMaskTrack(tiny_config(calibration=calibration))


def test_losses_do_not_depend_on_the_generator_when_every_candidate_is_taken(small_dataset):
    batch = _batch(small_dataset)
    model = _model()
    prepare_model(model, TrainConfig.preset("ovis"))
    take_all = TrainConfig(rpn_num_samples=10**7, rcnn_num_samples=10**7)
    a = forward_train(model, batch, take_all, torch.Generator().manual_seed(1))
    b = forward_train(model, batch, take_all, torch.Generator().manual_seed(2))
    assert set(a) >= {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask", "loss_match"}
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # with the official 256 / 512 samples the draw matters (the check above can fail)
    c = forward_train(model, batch, TrainConfig(rpn_num_samples=8, rcnn_num_samples=8), torch.Generator().manual_seed(1))
    d = forward_train(model, batch, TrainConfig(rpn_num_samples=8, rcnn_num_samples=8), torch.Generator().manual_seed(2))
    assert any(not torch.equal(c[k], d[k]) for k in ("loss_rpn_cls", "loss_cls"))


def test_an_ovis_step_trains_batchnorm_affine_and_keeps_its_statistics(small_dataset):
    batch = _batch(small_dataset)
    model = _model()
    cfg = TrainConfig.preset("ovis")
    prepare_model(model, cfg)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    losses = forward_train(model, batch, cfg, torch.Generator().manual_seed(0))
    total = sum(v for k, v in losses.items() if k.startswith("loss"))
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    total.backward()
    optimizer.step()
    after = model.state_dict()
    stats = [k for k in before if k.startswith("backbone.body.") and k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    bn_affine = [k for k in before if k.startswith("backbone.body.layer") and k.endswith(("weight", "bias"))
                 and (".bn" in k or ".downsample.1." in k)]
    trained = [k for k in bn_affine if not k.startswith("backbone.body.layer1.")]
    assert trained and all(not torch.equal(before[k], after[k]) for k in trained)
    frozen = [k for k in before if k.startswith(("backbone.body.conv1", "backbone.body.bn1", "backbone.body.layer1."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)


def test_training_and_inference_share_the_network(small_dataset):
    """The box head's training logits for the ground-truth RoIs equal what inference's
    :meth:`box_outputs` gives on a frame calibrated with its reference (same methods)."""
    batch = _batch(small_dataset)
    model = _model().eval()
    with torch.no_grad():
        feats_all = model.extract_features(torch.cat([batch.images, batch.ref_images]))
        feats = [f[:1] for f in feats_all]
        refs = [f[2:3] for f in feats_all]
        per_frame = model.head_features(feats, [refs])
        by_pair = model.calibrate([f[:2] for f in feats_all], [f[2:] for f in feats_all])
        for lvl in range(4):
            torch.testing.assert_close(per_frame[lvl][0], by_pair[lvl][0])
        boxes = batch.gt_boxes[0]
        rois = torch.cat([boxes.new_zeros((boxes.size(0), 1)), boxes], dim=1)
        a = model.box_outputs(by_pair, rois)
        b = model.box_outputs(per_frame, boxes)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
