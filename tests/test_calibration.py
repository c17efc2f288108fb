"""Temporal calibration: correlation scaling, offset layout of the deformable conv."""

import pytest
import torch
import torch.nn.functional as F

from cmasktrack.modeling.calibration import TemporalCalibration


def _naive_corr(a, b, patch, dil):
    B, C, H, W = a.shape
    out = torch.zeros(B, patch * patch, H, W, dtype=a.dtype)
    half = dil * (patch - 1) // 2
    for k in range(patch):
        for l in range(patch):
            dy, dx = dil * k - half, dil * l - half
            for y in range(H):
                for x in range(W):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < H and 0 <= xx < W:
                        out[:, k * patch + l, y, x] = (a[:, :, y, x] * b[:, :, yy, xx]).sum(1)
    return out


def test_offsets_follow_the_official_formula():
    torch.manual_seed(0)
    m = TemporalCalibration(channels=8, patch_size=4, dilation_patch=2).double()
    a, b = torch.randn(2, 8, 5, 7, dtype=torch.float64), torch.randn(2, 8, 5, 7, dtype=torch.float64)
    x = F.leaky_relu(_naive_corr(a, b, 4, 2) / 8, 0.1)
    for conv in m.offset_convs:
        x = F.relu(conv(x))
    torch.testing.assert_close(m.offsets(a, b), m.conv_offset(x))


def test_zero_offsets_give_a_plain_conv():
    torch.manual_seed(1)
    m = TemporalCalibration(channels=4, patch_size=2, dilation_patch=1).double()
    with torch.no_grad():
        m.conv_offset.weight.zero_()
        m.conv_offset.bias.zero_()
    cur, ref = torch.randn(1, 4, 6, 5, dtype=torch.float64), torch.randn(1, 4, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(m(cur, ref), cur + F.conv2d(ref, m.deform_weight, padding=1))


def test_offset_channels_are_dy_dx_per_tap():
    """Offset (dy=+1, dx=0) on every tap samples one row lower: tap i of output row y reads
    ref row y + i (instead of y - 1 + i), zero outside."""
    torch.manual_seed(2)
    m = TemporalCalibration(channels=3, patch_size=2, dilation_patch=1).double()
    with torch.no_grad():
        m.conv_offset.weight.zero_()
        bias = torch.zeros(18, dtype=torch.float64)
        bias[0::2] = 1.0  # even channels = dy
        m.conv_offset.bias.copy_(bias)
    cur, ref = torch.randn(1, 3, 6, 5, dtype=torch.float64), torch.randn(1, 3, 6, 5, dtype=torch.float64)
    lowered = F.pad(ref, (1, 1, 0, 2))  # rows y .. y + 2 for every output row y
    torch.testing.assert_close(m(cur, ref), cur + F.conv2d(lowered, m.deform_weight))


def test_model_calibrates_one_frame_against_each_reference_row():
    """``CMaskTrackRCNN.calibrate`` with a one-row target and R reference rows (what inference
    does) and ``head_features`` with R references give, per row, the module applied to that
    reference alone; P6 is not calibrated."""
    from cmasktrack.modeling.cmasktrack_rcnn import HEAD_LEVELS, CMaskTrackRCNN
    from conftest import tiny_config

    torch.manual_seed(3)
    model = CMaskTrackRCNN(tiny_config(fpn_channels=8, corr_patch_size=2, corr_dilation=1)).double().eval()
    sizes = [(6, 5), (3, 3), (2, 2), (1, 1), (1, 1)]
    cur = [torch.randn(1, 8, h, w, dtype=torch.float64) for h, w in sizes]
    refs = [[torch.randn_like(c) for c in cur] for _ in range(3)]
    with torch.no_grad():
        stacked = [torch.cat([r[lvl] for r in refs]) for lvl in range(len(sizes))]
        out = model.calibrate(cur, stacked)
        head = model.head_features(cur, refs)
    assert len(out) == len(head) == HEAD_LEVELS == 4
    for lvl in range(HEAD_LEVELS):
        assert out[lvl].shape[0] == 3
        for r in range(3):
            expected = model.calibration(cur[lvl], refs[r][lvl])
            torch.testing.assert_close(out[lvl][r: r + 1], expected)
            torch.testing.assert_close(head[lvl][r: r + 1], expected)


def test_grid_sample_deform_conv_matches_torchvision_values_and_gradients():
    """The opt-in training implementation against torchvision's op: values and the gradients
    of input, offsets and weight, with non-integer offsets (some sampling outside the map)."""
    from torchvision.ops import deform_conv2d

    from cmasktrack.modeling.calibration import deform_conv2d_3x3_grid_sample

    torch.manual_seed(4)
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64)
    off = (torch.rand(2, 18, 7, 6, dtype=torch.float64) - 0.5) * 5.0  # up to +-2.5 px: borders crossed
    off = off + 0.013  # away from integer positions, where bilinear sampling has no derivative
    wt = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    g = torch.randn(2, 4, 7, 6, dtype=torch.float64)
    ins_a = [t.clone().requires_grad_(True) for t in (x, off, wt)]
    ins_b = [t.clone().requires_grad_(True) for t in (x, off, wt)]
    ref = deform_conv2d(ins_a[0], ins_a[1], ins_a[2], padding=(1, 1))
    out = deform_conv2d_3x3_grid_sample(*ins_b)
    torch.testing.assert_close(out, ref)
    (ref * g).sum().backward()
    (out * g).sum().backward()
    for a, b in zip(ins_a, ins_b):
        torch.testing.assert_close(b.grad, a.grad)


def test_grid_sample_deform_conv_zero_offsets_are_a_conv_and_module_switch():
    from cmasktrack.modeling.calibration import deform_conv2d_3x3_grid_sample

    torch.manual_seed(5)
    x = torch.randn(1, 3, 5, 4, dtype=torch.float64)
    wt = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(deform_conv2d_3x3_grid_sample(x, torch.zeros(1, 18, 5, 4, dtype=torch.float64), wt),
                               F.conv2d(x, wt, padding=1))
    m = TemporalCalibration(channels=4, patch_size=2, dilation_patch=1).double()
    cur, ref = torch.randn(2, 4, 6, 5, dtype=torch.float64), torch.randn(2, 4, 6, 5, dtype=torch.float64)
    base = m(cur, ref)
    m.deform_impl = "grid_sample"
    torch.testing.assert_close(m(cur, ref), base)
    assert "deform_impl" not in str(list(m.state_dict()))


@pytest.mark.parametrize("shape,scale", [((2, 5, 7, 6, 9), 1.5), ((1, 8, 8, 1, 1), 2.0), ((3, 4, 6, 5, 4), 4.0),
                                         ((1, 3, 3, 7, 7), 0.0), ((2, 16, 16, 12, 10), 8.0)])
def test_gather_deform_conv_matches_torchvision(shape, scale):
    """Project-then-sample equals torchvision's deform_conv2d: random, integer, far-outside and
    border-straddling sampling positions, in float64 (exact up to rounding) and float32."""
    from torchvision.ops import deform_conv2d

    from cmasktrack.modeling.calibration import deform_conv2d_3x3_gather

    b, c, o, h, w = shape
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    wt = torch.randn(o, c, 3, 3, generator=g, dtype=torch.float64)
    off = torch.randn(b, 18, h, w, generator=g, dtype=torch.float64) * scale
    off[:, :6] = torch.round(off[:, :6])  # integer positions (corners exactly on pixels)
    off[:, 6:8, 0, 0] = torch.tensor([-1.0, -0.999], dtype=torch.float64)  # at / just inside the -1 limit
    ref = deform_conv2d(x, off, wt, padding=(1, 1))
    torch.testing.assert_close(deform_conv2d_3x3_gather(x, off, wt), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(deform_conv2d_3x3_gather(x.float(), off.float(), wt.float()), ref.float(),
                               rtol=1e-4, atol=1e-4)


def test_module_deform_impls_agree():
    torch.manual_seed(2)
    m = TemporalCalibration(channels=8, patch_size=2, dilation_patch=1).double()
    with torch.no_grad():
        m.conv_offset.weight.mul_(50)  # offsets of a few pixels
    cur, ref = torch.randn(3, 8, 6, 7, dtype=torch.float64), torch.randn(3, 8, 6, 7, dtype=torch.float64)
    m.deform_impl = "torchvision"
    with torch.no_grad():
        base = m(cur, ref)
        assert float(m.offsets(cur, ref).abs().max()) > 1.0
        for impl in ("auto", "gather", "grid_sample"):
            m.deform_impl = impl
            torch.testing.assert_close(m(cur, ref), base, rtol=1e-10, atol=1e-10)
    m.deform_impl = "nonsense"
    with pytest.raises(ValueError, match="deform_impl"):
        m(cur, ref)
