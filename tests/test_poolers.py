"""Legacy RoIAlign (mmdetection v1 kernel semantics) against a scalar re-implementation."""

import math

import torch

from cmasktrack.modeling.poolers import MultiLevelRoIAlign, legacy_roi_align, map_roi_levels


def _bilinear_ref(f, H, W, y, x):
    if y < -1.0 or y > H or x < -1.0 or x > W:
        return 0.0
    y = max(y, 0.0)
    x = max(x, 0.0)
    yl, xl = int(y), int(x)
    if yl >= H - 1:
        yh = yl = H - 1
        y = float(yl)
    else:
        yh = yl + 1
    if xl >= W - 1:
        xh = xl = W - 1
        x = float(xl)
    else:
        xh = xl + 1
    ly, lx = y - yl, x - xl
    hy, hx = 1 - ly, 1 - lx
    return hy * hx * f[yl][xl] + hy * lx * f[yl][xh] + ly * hx * f[yh][xl] + ly * lx * f[yh][xh]


def _roi_align_ref(feat, roi, out, scale, sr=2):
    """Straight transcription of the legacy CUDA kernel, one output at a time (float64)."""
    b = int(roi[0])
    x1, y1 = roi[1] * scale, roi[2] * scale
    x2, y2 = (roi[3] + 1) * scale, (roi[4] + 1) * scale
    rw, rh = max(x2 - x1, 0.0), max(y2 - y1, 0.0)
    bw, bh = rw / out, rh / out
    C, H, W = feat.shape[1:]
    res = torch.zeros(C, out, out, dtype=torch.float64)
    f = feat[b].tolist()
    for c in range(C):
        for ph in range(out):
            for pw in range(out):
                acc = 0.0
                for iy in range(sr):
                    y = y1 + ph * bh + (iy + 0.5) * bh / sr
                    for ix in range(sr):
                        x = x1 + pw * bw + (ix + 0.5) * bw / sr
                        acc += _bilinear_ref(f[c], H, W, y, x)
                res[c, ph, pw] = acc / (sr * sr)
    return res


def test_legacy_roi_align_matches_kernel_transcription():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 3, 9, 13, generator=g, dtype=torch.float64)
    rois = torch.tensor(
        [
            [0, 3.2, 5.1, 40.7, 30.3],  # ordinary
            [1, 0.0, 0.0, 51.0, 35.0],  # whole map
            [0, 10.0, 10.0, 10.0, 10.0],  # degenerate point box: 0.25 cell wide
            [1, 47.0, 2.0, 48.5, 3.0],  # thinner than a cell (needs the small-RoI path)
            [0, -8.0, -6.0, 60.0, 50.0],  # reaching outside
            [1, 20.0, 5.0, 21.0, 30.0],  # thin in x only
        ],
        dtype=torch.float64,
    )
    scale = 0.25
    ours = legacy_roi_align(feat, rois, 7, scale)
    for k in range(rois.size(0)):
        ref = _roi_align_ref(feat, rois[k].tolist(), 7, scale)
        torch.testing.assert_close(ours[k], ref, rtol=1e-9, atol=1e-9, msg=f"roi {k}")


def test_torchvision_alone_differs_on_small_rois():
    """The reason for the small-RoI path: torchvision forces sizes below one cell up to 1."""
    from torchvision.ops import roi_align

    feat = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    roi = torch.tensor([[0, 10.0, 10.0, 10.0, 10.0]], dtype=torch.float64)
    shifted = roi.clone()
    shifted[:, 3:] += 1
    tv = roi_align(feat, shifted, 7, 0.25, 2, aligned=False)
    ref = _roi_align_ref(feat, roi[0].tolist(), 7, 0.25)
    assert not torch.allclose(tv[0], ref)
    torch.testing.assert_close(legacy_roi_align(feat, roi, 7, 0.25)[0], ref)


def test_map_roi_levels_hand_values():
    def roi(side):
        return [0, 0.0, 0.0, side - 1.0, side - 1.0]

    rois = torch.tensor([roi(10), roi(56), roi(111), roi(112), roi(224), roi(448), roi(1000)])
    # floor(log2(side / 56 + 1e-6)) clamped to [0, 3]
    expected = [max(0, min(3, math.floor(math.log2(s / 56 + 1e-6)))) for s in (10, 56, 111, 112, 224, 448, 1000)]
    assert map_roi_levels(rois, 4).tolist() == expected == [0, 0, 0, 1, 2, 3, 3]


def test_multilevel_pooler_uses_each_rois_level():
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(1, 2, 64 // s, 64 // s, generator=g, dtype=torch.float64) for s in (4, 8, 16, 32)]
    rois = torch.tensor([[0, 1.0, 2.0, 30.0, 40.0], [0, 0.0, 0.0, 200.0, 150.0], [0, 5.0, 5.0, 130.0, 100.0]],
                        dtype=torch.float64)
    pooler = MultiLevelRoIAlign(7)
    out = pooler(feats, rois)
    lv = map_roi_levels(rois, 4).tolist()
    for k in range(3):
        ref = _roi_align_ref(feats[lv[k]], rois[k].tolist(), 7, 1.0 / (4 * 2 ** lv[k]))
        torch.testing.assert_close(out[k], ref)


def test_pool_shared_matches_transcription_on_every_row():
    g = torch.Generator().manual_seed(2)
    feats = [torch.randn(3, 2, 64 // s, 96 // s, generator=g, dtype=torch.float64) for s in (4, 8, 16, 32)]
    boxes = torch.tensor([[1.0, 2.0, 30.0, 40.0], [10.0, 10.0, 10.5, 30.0], [0.0, 0.0, 95.0, 63.0],
                          [50.0, 20.0, 51.0, 21.0], [5.0, 5.0, 130.0, 60.0]], dtype=torch.float64)
    out = MultiLevelRoIAlign(7).pool_shared(feats, boxes)
    assert out.shape == (3 * 5, 2, 7, 7)
    lv = map_roi_levels(torch.cat([torch.zeros(5, 1, dtype=torch.float64), boxes], 1), 4).tolist()
    for r in range(3):
        for k in range(5):
            ref = _roi_align_ref(feats[lv[k]], [r] + boxes[k].tolist(), 7, 1.0 / (4 * 2 ** lv[k]))
            torch.testing.assert_close(out[r * 5 + k], ref, msg=f"row {r} box {k}")
