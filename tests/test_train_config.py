"""TrainConfig json round trip, presets and the learning-rate schedule."""

import json

import pytest
import torch

from cmasktrack.train import PRESETS, TrainConfig, WarmupStepLR, lr_factor


def test_defaults_are_the_official_recipe():
    c = TrainConfig()
    assert TrainConfig.preset("ovis") == c
    assert (c.lr, c.momentum, c.weight_decay, c.grad_clip) == (0.005, 0.9, 1e-4, 35.0)
    assert (c.warmup_iters, c.warmup_ratio, c.max_epochs, c.lr_steps, c.lr_gamma) == (500, 1 / 3, 12, (8, 11), 0.1)
    assert (c.rpn_pos_iou, c.rpn_neg_iou, c.rpn_min_pos_iou, c.rpn_num_samples, c.rpn_pos_fraction) == (
        0.7, 0.3, 0.3, 256, 0.5)
    assert (c.rcnn_pos_iou, c.rcnn_neg_iou, c.rcnn_num_samples, c.rcnn_pos_fraction) == (0.5, 0.5, 512, 0.25)
    assert c.rcnn_add_gt_as_proposals and c.rpn_allowed_border == 0
    assert c.frozen_stages == 1 and c.batchnorm == "affine"  # mmdet v1: frozen_stages=1, norm_eval, BN trained
    assert c.rpn_smoothl1_beta == pytest.approx(1 / 9) and c.flip_ratio == 0.5 and c.ref_range == 5
    assert c.effective_lr(4) == pytest.approx(0.005) and c.effective_lr(1) == pytest.approx(0.00125)
    m = c.model_config(26, [f"c{i}" for i in range(25)])
    assert m.depth == 50 and m.calibration and m.image_scale == (640, 360) and m.num_classes == 26


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip(tmp_path, name):
    c = TrainConfig.preset(name)
    c.save(str(tmp_path))
    back = TrainConfig.load(str(tmp_path))
    assert back == c
    assert json.loads((tmp_path / "train_config.json").read_text()) == c.to_dict()


def test_preset_with_overrides_and_errors(tmp_path):
    p = tmp_path / "cfg.json"
    p.write_text(json.dumps({"preset": "cpu_small", "max_iters": 7, "model": {"calibration": False}}))
    c = TrainConfig.load(str(p))
    assert c.max_iters == 7 and c.model["calibration"] is False and c.model["depth"] == 18
    assert c.model_config(3, ["a", "b"]).calibration is False
    with pytest.raises(ValueError, match="bogus"):
        TrainConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="preset"):
        TrainConfig.preset("nope")
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=-1.0)
    with pytest.raises(ValueError, match="num_classes"):
        TrainConfig(model={"num_classes": 5})
    with pytest.raises(ValueError, match="depth"):
        TrainConfig(model={"depth": 7})
    with pytest.raises(ValueError, match="lr_steps"):
        TrainConfig(lr_steps=(11, 8))
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="frozen_stages"):
        TrainConfig(frozen_stages=5)
    with pytest.raises(ValueError, match="batchnorm"):
        TrainConfig(precise_bn_batches=10)
    with pytest.raises(ValueError, match="batchnorm"):
        TrainConfig(batchnorm="sync")


def test_configs_of_earlier_versions_still_load():
    """``train_batchnorm`` (true: batch statistics; false: everything frozen, what it meant
    then) maps to ``batchnorm`` with a DeprecationWarning; ``mask_size`` 28 is accepted and
    dropped, any other size refused."""
    with pytest.warns(DeprecationWarning, match="train_batchnorm"):
        assert TrainConfig.from_dict({"train_batchnorm": True, "mask_size": 28}).batchnorm == "batch"
    with pytest.warns(DeprecationWarning):
        old = TrainConfig(train_batchnorm=False)
    assert old.batchnorm == "frozen" and "train_batchnorm" not in old.to_dict()
    with pytest.warns(DeprecationWarning):
        assert TrainConfig.from_dict({"preset": "cpu_small", "train_batchnorm": True}).batchnorm == "batch"
    with pytest.raises(ValueError, match="mask_size"):
        TrainConfig.from_dict({"mask_size": 32})


def test_lr_factor_hand_values():
    c = TrainConfig()  # warm-up 500 from 1/3, steps after epochs 8 and 11
    ipe = 100
    assert lr_factor(0, c, ipe) == pytest.approx(1 / 3)
    assert lr_factor(250, c, ipe) == pytest.approx(2 / 3)
    assert lr_factor(499, c, ipe) == pytest.approx(1 / 3 + 2 / 3 * 499 / 500)
    assert lr_factor(500, c, ipe) == 1.0
    assert lr_factor(799, c, ipe) == 1.0
    assert lr_factor(800, c, ipe) == pytest.approx(0.1)
    assert lr_factor(1099, c, ipe) == pytest.approx(0.1)
    assert lr_factor(1100, c, ipe) == pytest.approx(0.01)
    it = TrainConfig(by_epoch=False, max_iters=30, lr_steps=(10, 20), warmup_iters=0)
    assert [lr_factor(i, it, 5) for i in (9, 10, 19, 20)] == pytest.approx([1, 0.1, 0.1, 0.01])


def test_scheduler_learning_rates_by_hand_and_resume():
    c = TrainConfig(by_epoch=False, max_iters=30, lr_steps=(6,), warmup_iters=4, warmup_ratio=0.25)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.2)
    sched = WarmupStepLR(opt, c, 3)
    seen = []
    for _ in range(8):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # warm-up from 0.25 over 4 iterations: 0.2 * (1 - (1 - i / 4) * 0.75); x0.1 from iteration 6
    assert seen == pytest.approx([0.05, 0.0875, 0.125, 0.1625, 0.2, 0.2, 0.02, 0.02])
    state = sched.state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    sched2 = WarmupStepLR(opt2, c, 3)
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = sched2.get_last_lr()[0]
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
