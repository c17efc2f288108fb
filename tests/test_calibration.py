"""Temporal calibration: correlation scaling, offset layout of the deformable conv."""

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


def test_calibrate_levels_batches_references():
    torch.manual_seed(3)
    m = TemporalCalibration(channels=4, patch_size=2, dilation_patch=1).double()
    cur = [torch.randn(1, 4, 6, 5, dtype=torch.float64), torch.randn(1, 4, 3, 3, dtype=torch.float64)]
    refs = [[torch.randn_like(c) for c in cur] for _ in range(3)]
    out = m.calibrate_levels(cur, refs)
    for lvl in range(2):
        assert out[lvl].shape[0] == 3
        for r in range(3):
            torch.testing.assert_close(out[lvl][r: r + 1], m(cur[lvl], refs[r][lvl]))
