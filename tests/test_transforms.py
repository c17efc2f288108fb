"""Tests of cmasktrack.transforms, .resize and .postprocess against OpenCV and hand-written
re-implementations of the official mmdetection / mmcv code paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmasktrack.postprocess import mask_paste_boxes, paste_mask, paste_masks
from cmasktrack.resize import resize_bilinear_uint8, resize_prob_map
from cmasktrack.transforms import (
    DEFAULT_MEAN,
    DEFAULT_STD,
    FrameMeta,
    compute_scale,
    normalize_and_pad,
    preprocess_frame,
)

cv2 = pytest.importorskip("cv2")

# paste_mask (one mask) is a deprecated form of paste_masks; its tests stay
pytestmark = pytest.mark.filterwarnings("ignore:paste_mask is deprecated:DeprecationWarning")


@pytest.fixture
def no_ipp():
    """OpenCV without IPP (IPP changes float32 resizes, never 8-bit bilinear)."""
    old = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    yield
    cv2.ipp.setUseIPP(old)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------------------------
# compute_scale
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "h, w, expected",
    [
        (720, 1280, (0.5, 640, 360)),
        (1080, 1920, (1 / 3, 640, 360)),
        (480, 640, (0.75, 480, 360)),
        (1280, 720, (0.5, 360, 640)),  # portrait
        (360, 640, (1.0, 640, 360)),
        (100, 1000, (0.64, 640, 64)),  # long side limits
        (180, 320, (2.0, 640, 360)),  # upscale
        (333, 500, (360 / 333, 541, 360)),  # int(500*1.081.. + 0.5) = 541
    ],
)
def test_compute_scale_hand_values(h, w, expected):
    s, nw, nh = compute_scale(h, w)
    assert s == expected[0]
    assert (nw, nh) == expected[1:]


def test_compute_scale_matches_mmcv_formula_and_is_python_float():
    rng = _rng(1)
    for _ in range(500):
        h, w = (int(v) for v in rng.integers(20, 4000, 2))
        # mmcv.imrescale with a tuple scale, written out independently
        factor = min(640 / max(h, w), 360 / min(h, w))
        ref = (factor, int(w * factor + 0.5), int(h * factor + 0.5))
        got = compute_scale(h, w, (360, 640))  # order of the limits does not matter
        assert got == ref
        assert type(got[0]) is float


def test_compute_scale_errors():
    with pytest.raises(ValueError, match="positive"):
        compute_scale(0, 10)
    with pytest.raises(ValueError, match="aspect ratio"):
        compute_scale(1, 100000)


# ----------------------------------------------------------------------------------------------
# resize_bilinear_uint8 vs cv2.resize(INTER_LINEAR)
# ----------------------------------------------------------------------------------------------

_TYPICAL = [
    ((720, 1280), (360, 640)),  # exact 2x: OpenCV's area kernel
    ((1080, 1920), (360, 640)),
    ((480, 640), (360, 480)),
    ((1280, 720), (640, 360)),
    ((1080, 1440), (360, 480)),
    ((576, 1024), (360, 640)),
    ((360, 640), (360, 640)),  # identity
    ((240, 426), (360, 639)),  # upscale, odd width
    ((100, 100), (200, 200)),  # exact 2x up
    ((1, 1), (7, 5)),
    ((1, 9), (4, 1)),
    ((9, 1), (1, 4)),
    ((2, 3), (1, 1)),
    ((5, 7), (23, 2)),
    ((37, 101), (11, 640)),
]


@pytest.mark.parametrize("src, dst", _TYPICAL)
def test_resize_uint8_bit_exact_typical(src, dst):
    img = _rng(hash(src + dst) % 1000).integers(0, 256, src + (3,), dtype=np.uint8)
    ref = cv2.resize(img, (dst[1], dst[0]), interpolation=cv2.INTER_LINEAR)
    out = resize_bilinear_uint8(img, dst[1], dst[0])
    assert out.dtype == np.uint8 and out.shape == ref.shape
    np.testing.assert_array_equal(out, ref)


def test_resize_uint8_bit_exact_random_sizes_and_channels():
    rng = _rng(2)
    for i in range(300):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        if i % 10 == 0:  # exact 2x downscale (OpenCV's area kernel)
            dh, dw = h, w
            h, w = 2 * h, 2 * w
        elif i % 10 == 5:  # exact 2x upscale
            dh, dw = 2 * h, 2 * w
        else:
            dh, dw = (int(v) for v in rng.integers(1, 140, 2))
        c = int(rng.choice([1, 3, 4]))
        img = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
        if c == 1:
            img = img[:, :, 0]
        ref = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_LINEAR)
        out = resize_bilinear_uint8(img, dw, dh)
        np.testing.assert_array_equal(out, ref, err_msg=f"{(h, w, c)} -> {(dh, dw)}")


def test_resize_uint8_extreme_values():
    # saturated and alternating images exercise the rounding and the saturation
    for img in (
        np.full((17, 23, 3), 255, np.uint8),
        np.indices((17, 23)).sum(0).astype(np.uint8)[:, :, None].repeat(3, 2) % 2 * 255,
    ):
        img = img.astype(np.uint8)
        for dw, dh in ((5, 9), (40, 33), (23, 17), (11, 8)):
            ref = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_LINEAR)
            np.testing.assert_array_equal(resize_bilinear_uint8(img, dw, dh), ref)


@pytest.mark.parametrize("ipp", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_resize_uint8_independent_of_opencv_threads_and_ipp(ipp, threads):
    old_ipp, old_threads = cv2.ipp.useIPP(), cv2.getNumThreads()
    try:
        cv2.ipp.setUseIPP(ipp)
        cv2.setNumThreads(threads)
        img = _rng(3).integers(0, 256, (361, 641, 3), dtype=np.uint8)
        for dw, dh in ((640, 360), (320, 180), (1000, 700), (97, 55)):
            ref = cv2.resize(img, (dw, dh), interpolation=cv2.INTER_LINEAR)
            np.testing.assert_array_equal(resize_bilinear_uint8(img, dw, dh), ref)
    finally:
        cv2.ipp.setUseIPP(old_ipp)
        cv2.setNumThreads(old_threads)


def test_resize_uint8_close_to_float_bilinear():
    # independent of OpenCV: within one grey level of exact half-pixel bilinear interpolation
    rng = _rng(4)
    img = rng.integers(0, 256, (31, 47, 3), dtype=np.uint8)
    for dw, dh in ((19, 13), (90, 70)):
        t = torch.from_numpy(img.astype(np.float64)).permute(2, 0, 1)[None]
        ref = torch.nn.functional.interpolate(t, size=(dh, dw), mode="bilinear", align_corners=False)
        ref = ref[0].permute(1, 2, 0).numpy()
        out = resize_bilinear_uint8(img, dw, dh).astype(np.float64)
        assert np.abs(out - ref).max() <= 1.0


def test_resize_uint8_backends_and_errors():
    img = _rng(5).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        resize_bilinear_uint8(img, 33, 21, backend="opencv"),
        resize_bilinear_uint8(img, 33, 21, backend="numpy"),
    )
    with pytest.raises(TypeError, match="uint8"):
        resize_bilinear_uint8(img.astype(np.float32), 10, 10)
    with pytest.raises(ValueError, match="at least 1x1"):
        resize_bilinear_uint8(img, 0, 10)
    with pytest.raises(ValueError, match="backend"):
        resize_bilinear_uint8(img, 10, 10, backend="pil")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------
# preprocess_frame vs the official ImageTransform
# ----------------------------------------------------------------------------------------------


def _official_image_transform(img_bgr, scale=(640, 360), flip=False):
    """mmdet ImageTransform(to_rgb=True, size_divisor=32) with mmcv ops, written out."""
    h, w = img_bgr.shape[:2]
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    size = (int(w * factor + 0.5), int(h * factor + 0.5))
    img = cv2.resize(img_bgr, size, interpolation=cv2.INTER_LINEAR)
    img_shape = img.shape
    img = img.astype(np.float32)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = (img - np.array(DEFAULT_MEAN, np.float32)) / np.array(DEFAULT_STD, np.float32)
    if flip:
        img = np.flip(img, axis=1)
    ph, pw = int(np.ceil(img.shape[0] / 32)) * 32, int(np.ceil(img.shape[1] / 32)) * 32
    pad = np.zeros((ph, pw, 3), np.float32)
    pad[: img.shape[0], : img.shape[1]] = img
    return pad.transpose(2, 0, 1), img_shape, pad.shape, factor


@pytest.mark.parametrize("shape", [(720, 1280), (1080, 1920), (480, 640), (1280, 720), (333, 500)])
@pytest.mark.parametrize("flip", [False, True])
def test_preprocess_frame_matches_official(shape, flip):
    rgb = _rng(6).integers(0, 256, shape + (3,), dtype=np.uint8)
    ref, img_shape, pad_shape, factor = _official_image_transform(np.ascontiguousarray(rgb[:, :, ::-1]), flip=flip)
    tensor, meta = preprocess_frame(rgb, flip=flip)
    assert tensor.dtype == torch.float32
    assert torch.equal(tensor, torch.from_numpy(np.ascontiguousarray(ref)))
    assert meta == FrameMeta(
        ori_shape=shape, img_shape=img_shape[:2], pad_shape=pad_shape[:2], scale_factor=factor, flip=flip
    )
    assert meta.pad_shape[0] % 32 == 0 and meta.pad_shape[1] % 32 == 0


def test_normalize_and_pad_zero_padding_and_division():
    img = np.full((5, 7, 3), 200, np.uint8)
    out = normalize_and_pad(img, size_divisor=4)
    assert out.shape == (3, 8, 8)
    assert torch.all(out[:, 5:, :] == 0) and torch.all(out[:, :, 7:] == 0)
    for c in range(3):
        expected = (np.float32(200) - np.float32(DEFAULT_MEAN[c])) / np.float32(DEFAULT_STD[c])
        assert torch.all(out[c, :5, :7] == torch.tensor(expected))


def test_preprocess_frame_rejects_bad_input():
    with pytest.raises(TypeError, match="uint8"):
        preprocess_frame(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        preprocess_frame(np.zeros((10, 10), np.uint8))


# ----------------------------------------------------------------------------------------------
# Mask paste vs the official get_seg_masks
# ----------------------------------------------------------------------------------------------


def _official_paste(prob, box, img_h, img_w, thr=0.5):
    """fcn_mask_head.get_seg_masks for one detection (rescale=True, box already in
    original pixels)."""
    bbox = np.asarray(box, np.float32).astype(np.int32)
    w = max(bbox[2] - bbox[0] + 1, 1)
    h = max(bbox[3] - bbox[1] + 1, 1)
    im = np.zeros((img_h, img_w), np.uint8)
    m = cv2.resize(prob, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
    im[bbox[1] : bbox[1] + h, bbox[0] : bbox[0] + w] = (m > thr).astype(np.uint8)
    return im.astype(bool)


def _smooth_probs(rng, n):
    logits = rng.normal(0, 6, (n, 28, 28)).astype(np.float32)
    logits = np.stack([cv2.GaussianBlur(x, (0, 0), 2) * 3 for x in logits])
    return (1 / (1 + np.exp(-logits))).astype(np.float32)


def _random_boxes(rng, n, img_h, img_w):
    boxes = []
    for i in range(n):
        x1, y1 = rng.uniform(0, img_w - 1), rng.uniform(0, img_h - 1)
        if i % 4 == 0:  # tiny boxes: 1-3 px, below the 28 px map
            x2, y2 = x1 + rng.uniform(0, 3), y1 + rng.uniform(0, 3)
        else:
            x2, y2 = rng.uniform(x1, img_w - 1), rng.uniform(y1, img_h - 1)
        boxes.append([x1, y1, min(x2, img_w - 1), min(y2, img_h - 1)])
    # exact 2x down, identity and 2x up of the 28x28 map
    boxes += [[10, 10, 23, 23], [5, 7, 32, 34], [40, 3, 95, 58]]
    return np.array(boxes, np.float32)


def test_resize_prob_map_bit_exact_without_ipp(no_ipp):
    rng = _rng(7)
    for i in range(300):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        if i % 3 == 0:
            nh, nw = max(h // 2, 1), max(w // 2, 1)
            h, w = 2 * nh, 2 * nw
        else:
            nh, nw = (int(v) for v in rng.integers(1, 150, 2))
        p = rng.random((h, w), dtype=np.float32)
        ref = cv2.resize(p, (nw, nh), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(resize_prob_map(p, nw, nh), ref, err_msg=f"{(h, w)} -> {(nh, nw)}")


def test_paste_mask_matches_official_without_ipp(no_ipp):
    rng = _rng(8)
    img_h, img_w = 120, 200
    probs = _smooth_probs(rng, 60)
    boxes = _random_boxes(rng, 57, img_h, img_w)
    for p, box in zip(probs, boxes):
        got = paste_mask(p, box, img_h, img_w)
        assert got.dtype == np.bool_ and got.shape == (img_h, img_w)
        np.testing.assert_array_equal(got, _official_paste(p, box, img_h, img_w))
    # torch inputs
    got = paste_mask(torch.from_numpy(probs[0]), torch.from_numpy(boxes[0]), img_h, img_w)
    np.testing.assert_array_equal(got, _official_paste(probs[0], boxes[0], img_h, img_w))


def test_paste_mask_with_ipp_differs_only_at_rounding_ties():
    # OpenCV's default (IPP) float resize rounds differently by ~1 ulp: a pixel flips only
    # where the probability is within float rounding of the threshold.
    old = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(True)
    try:
        rng = _rng(9)
        img_h, img_w = 240, 320
        probs = _smooth_probs(rng, 103)
        boxes = _random_boxes(rng, 100, img_h, img_w)
        total = 0
        for p, box in zip(probs, boxes):
            diff = paste_mask(p, box, img_h, img_w) != _official_paste(p, box, img_h, img_w)
            total += int(diff.sum())
        assert total <= 3
    finally:
        cv2.ipp.setUseIPP(old)


def test_paste_mask_clips_at_frame_border(no_ipp):
    rng = _rng(10)
    p = _smooth_probs(rng, 1)[0]
    img_h, img_w = 50, 60
    box = np.array([40.7, 30.2, 79.9, 69.5], np.float32)  # extends past the frame
    got = paste_mask(p, box, img_h, img_w)
    # reference: paste on a canvas large enough, then crop
    big = _official_paste(p, box, 100, 100)
    np.testing.assert_array_equal(got, big[:img_h, :img_w])
    assert not paste_mask(p, [70, 10, 80, 20], img_h, img_w).any()  # entirely outside


def test_paste_mask_threshold_is_strict():
    p = np.full((28, 28), 0.5, np.float32)
    assert not paste_mask(p, [0, 0, 27, 27], 28, 28).any()
    assert paste_mask(p, [0, 0, 27, 27], 28, 28, threshold=0.4999).all()


def test_paste_masks_batched_matches_single(no_ipp):
    rng = _rng(11)
    img_h, img_w = 90, 160
    probs = _smooth_probs(rng, 23)
    boxes = _random_boxes(rng, 20, img_h, img_w)
    out = paste_masks(torch.from_numpy(probs), torch.from_numpy(boxes), img_h, img_w)
    assert out.dtype == torch.bool and out.shape == (23, img_h, img_w)
    for i in range(23):
        np.testing.assert_array_equal(out[i].numpy(), _official_paste(probs[i], boxes[i], img_h, img_w))
    empty = paste_masks(np.zeros((0, 28, 28), np.float32), np.zeros((0, 4), np.float32), 10, 10)
    assert empty.shape == (0, 10, 10)
    with pytest.raises(ValueError, match="boxes"):
        paste_masks(probs, boxes[:3], img_h, img_w)


def test_mask_paste_boxes_reproduce_official_round_trip():
    rng = _rng(12)
    boxes = rng.uniform(0, 1900, (5000, 4)).astype(np.float32)
    boxes[:100] = np.round(boxes[:100])  # integer coordinates are the ones that can drop a pixel
    moved = 0
    for s in (1 / 3, 0.5, 360 / 333, 0.3, 640 / 1918):
        # official: torch float32 tensor * python float, .numpy(), / python float, astype(int32)
        rois = torch.from_numpy(boxes) * s
        ref = (rois.numpy() / s).astype(np.int32)
        got = mask_paste_boxes(torch.from_numpy(boxes), s)
        np.testing.assert_array_equal(got, ref)
        moved += int((ref != boxes.astype(np.int32)).sum())
    assert moved > 0  # the round trip matters: plain truncation would differ
    with_scores = np.concatenate([boxes[:3], np.ones((3, 1), np.float32)], axis=1)
    assert mask_paste_boxes(with_scores, 0.5).shape == (3, 4)
