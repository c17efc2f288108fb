"""Legacy anchors against hand-computed values."""

import torch

from cmasktrack.modeling.anchors import AnchorGenerator, base_anchors


def test_base_anchors_stride4_hand_values():
    # base 4, scale 8: w = 32/sqrt(r), h = 32*sqrt(r); centre 1.5; corners centre -+ (w-1)/2, rounded
    # r=0.5: w=45.2548, h=22.6274 -> x: 1.5 -+ 22.1274 -> -20.63, 23.63 -> -21, 24; y: 1.5 -+ 10.8137 -> -9, 12
    expected = torch.tensor([[-21.0, -9.0, 24.0, 12.0], [-14.0, -14.0, 17.0, 17.0], [-9.0, -21.0, 12.0, 24.0]])
    assert torch.equal(base_anchors(4, [8], [0.5, 1.0, 2.0]), expected)


def test_base_anchors_round_half_to_even():
    # base 4, scale 0.75, ratio 1: w = 3, centre 1.5 -> corners 0.5 and 2.5 -> 0 and 2 (half-to-even)
    assert base_anchors(4, [0.75], [1.0]).tolist() == [[0.0, 0.0, 2.0, 2.0]]


def test_grid_order_is_y_x_anchor():
    gen = AnchorGenerator([8], [8], [0.5, 1.0, 2.0])
    a = gen.grid_anchors(0, 2, 3, torch.device("cpu"))
    base = base_anchors(8, [8], [0.5, 1.0, 2.0])
    assert a.shape == (2 * 3 * 3, 4)
    for y in range(2):
        for x in range(3):
            for k in range(3):
                shift = torch.tensor([x * 8.0, y * 8.0, x * 8.0, y * 8.0])
                assert torch.equal(a[(y * 3 + x) * 3 + k], base[k] + shift)
