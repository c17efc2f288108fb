"""Initialising training from pretrained checkpoints (cmasktrack.train.initialisation)."""

import pytest
import torch
import torchvision

from cmasktrack.weights import CheckpointError
from cmasktrack.model_config import CMaskTrackConfig
from cmasktrack.model import CMaskTrack
from cmasktrack.train.initialisation import detect_checkpoint_kind, initialise_model, torchvision_to_cmasktrack_key

from official_keys import official_state_dict


def _randomise_frozen_bn(module):
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, torchvision.ops.misc.FrozenBatchNorm2d):
            for name in ("weight", "bias", "running_mean"):
                getattr(m, name).copy_(torch.randn(getattr(m, name).shape, generator=g) * 0.1 + (name == "weight"))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.fixture(scope="module")
def tv_maskrcnn():
    torch.manual_seed(0)
    m = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    _randomise_frozen_bn(m)
    return m.eval()


def _old_style(sd):
    """torchvision's published COCO file predates Conv2dNormActivation: rename to its keys."""
    out = {}
    for k, v in sd.items():
        k2 = k
        for i in range(4):
            k2 = k2.replace(f"fpn.inner_blocks.{i}.0.", f"fpn.inner_blocks.{i}.")
            k2 = k2.replace(f"fpn.layer_blocks.{i}.0.", f"fpn.layer_blocks.{i}.")
            k2 = k2.replace(f"roi_heads.mask_head.{i}.0.", f"roi_heads.mask_head.mask_fcn{i + 1}.")
        k2 = k2.replace("rpn.head.conv.0.0.", "rpn.head.conv.")
        out[k2] = v
    return out


def test_torchvision_maskrcnn_init(tv_maskrcnn, tmp_path):
    torch.save(tv_maskrcnn.state_dict(), tmp_path / "tv.pth")
    torch.manual_seed(1)
    model = CMaskTrack(CMaskTrackConfig(num_classes=6, calibration=True))
    init_cls = model.box_head.fc_cls.weight.clone()
    report = initialise_model(model, str(tmp_path / "tv.pth"))
    assert report.kind == "torchvision_maskrcnn"
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = model.backbone(x)
        theirs = list(tv_maskrcnn.backbone(x).values())
    assert len(ours) == len(theirs) == 5
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-5)
    rh = tv_maskrcnn.roi_heads
    assert torch.equal(model.box_head.shared_fcs[0].weight, rh.box_head.fc6.weight)
    assert torch.equal(model.box_head.shared_fcs[1].bias, rh.box_head.fc7.bias)
    assert torch.equal(model.mask_head.convs[3].weight, rh.mask_head[3][0].weight)
    assert torch.equal(model.mask_head.upsample.weight, rh.mask_predictor.conv5_mask.weight)
    assert torch.equal(model.rpn.head.rpn_conv.weight, tv_maskrcnn.rpn.head.conv[0][0].weight)
    assert torch.equal(model.rpn.head.rpn_reg.bias, tv_maskrcnn.rpn.head.bbox_pred.bias)
    # 91 -> 6 classes: class layers keep their initialisation; no tracking head in the source
    assert torch.equal(model.box_head.fc_cls.weight, init_cls)
    assert any(k.startswith("box_head.fc_cls") for k in report.kept_init)
    assert any(k.startswith("track_head.") for k in report.kept_init)
    assert any(k.startswith("calibration.") for k in report.kept_init)
    assert not any(k.startswith(("backbone.", "rpn.")) for k in report.kept_init)

    # torchvision's published COCO file has the older key names: same result
    old = _old_style(tv_maskrcnn.state_dict())
    assert "rpn.head.conv.weight" in old and "roi_heads.mask_head.mask_fcn1.weight" in old
    torch.save(old, tmp_path / "tv_old.pth")
    torch.manual_seed(1)
    model2 = CMaskTrack(CMaskTrackConfig(num_classes=6, calibration=True))
    initialise_model(model2, str(tmp_path / "tv_old.pth"))
    s1, s2 = model.state_dict(), model2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_torchvision_maskrcnn_same_class_count_loads_class_layers(tv_maskrcnn, tmp_path):
    path = tmp_path / "tv.pth"
    torch.save(tv_maskrcnn.state_dict(), path)
    model = CMaskTrack(CMaskTrackConfig(num_classes=91, calibration=False))
    initialise_model(model, str(path))
    assert torch.equal(model.box_head.fc_reg.weight, tv_maskrcnn.roi_heads.box_predictor.bbox_pred.weight)
    assert torch.equal(model.mask_head.conv_logits.bias, tv_maskrcnn.roi_heads.mask_predictor.mask_fcn_logits.bias)


def test_key_map_examples():
    assert torchvision_to_cmasktrack_key("roi_heads.mask_head.mask_fcn2.bias") == "mask_head.convs.1.bias"
    assert torchvision_to_cmasktrack_key("backbone.fpn.inner_blocks.3.weight") == "backbone.fpn.inner_blocks.3.0.weight"
    assert torchvision_to_cmasktrack_key("roi_heads.box_predictor.cls_score.weight") == "box_head.fc_cls.weight"
    assert torchvision_to_cmasktrack_key("transform.something") is None


def test_official_coco_mask_rcnn_init(tmp_path):
    sd = official_state_dict(seed=2, num_classes=81, depth=18, track=False, calibration=False)
    path = tmp_path / "mask_rcnn_coco.pth"
    torch.save({"meta": {}, "state_dict": sd}, path)
    torch.manual_seed(0)
    model = CMaskTrack(CMaskTrackConfig(num_classes=6, depth=18))
    init_track = model.track_head.fcs[0].weight.clone()
    init_cal = model.calibration.conv_offset.weight.clone()
    report = initialise_model(model, str(path))
    assert report.kind == "mmdet"
    assert torch.equal(model.backbone.body.conv1.weight, sd["backbone.conv1.weight"])
    assert torch.equal(model.backbone.body.layer3[1].bn2.running_var, sd["backbone.layer3.1.bn2.running_var"])
    assert torch.equal(model.backbone.fpn.inner_blocks[2][0].weight, sd["neck.lateral_convs.2.conv.weight"])
    assert torch.equal(model.box_head.shared_fcs[0].weight, sd["bbox_head.shared_fcs.0.weight"])
    assert torch.equal(model.mask_head.convs[0].bias, sd["mask_head.convs.0.conv.bias"])
    assert torch.equal(model.track_head.fcs[0].weight, init_track)
    assert torch.equal(model.calibration.conv_offset.weight, init_cal)
    assert model.box_head.fc_cls.weight.shape == (6, 1024)
    kept = {".".join(k.split(".")[:2]) for k in report.kept_init}
    assert kept == {"box_head.fc_cls", "box_head.fc_reg", "mask_head.conv_logits", "track_head.fcs",
                    "calibration.offset_convs", "calibration.conv_offset", "calibration.deform_weight"}


def test_official_depth_mismatch_is_an_error(tmp_path):
    sd = official_state_dict(seed=2, num_classes=81, depth=18, track=False, calibration=False)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointError):
        initialise_model(CMaskTrack(CMaskTrackConfig(num_classes=6, depth=34)), str(path))


def test_torchvision_resnet_backbone_init(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    assert detect_checkpoint_kind(net.state_dict()) == "torchvision_resnet"
    model = CMaskTrack(CMaskTrackConfig(num_classes=3, depth=18))
    report = initialise_model(model, str(path))
    assert torch.equal(model.backbone.body.layer2[0].downsample[0].weight, net.layer2[0].downsample[0].weight)
    assert torch.equal(model.backbone.body.bn1.running_mean, net.bn1.running_mean)
    assert all(not k.startswith("backbone.body.") for k in report.kept_init)
    with pytest.raises(CheckpointError):
        initialise_model(CMaskTrack(CMaskTrackConfig(num_classes=3, depth=34)), str(path))


def test_cmasktrack_directory_init(tmp_path):
    torch.manual_seed(0)
    src = CMaskTrack(CMaskTrackConfig(num_classes=4, depth=18, fpn_channels=64, box_head_fc=128,
                                      track_head_fc=128))
    src.save_pretrained(tmp_path / "m")
    torch.manual_seed(5)
    dst = CMaskTrack(CMaskTrackConfig(num_classes=7, depth=18, fpn_channels=64, box_head_fc=128,
                                      track_head_fc=128))
    initial = {k: v.clone() for k, v in dst.state_dict().items()}
    report = initialise_model(dst, str(tmp_path / "m"))
    s, d = src.state_dict(), dst.state_dict()
    for k in d:
        if k.startswith(("box_head.fc_cls", "box_head.fc_reg", "mask_head.conv_logits")):
            assert torch.equal(d[k], initial[k]), k
        else:
            assert torch.equal(d[k], s[k]), k
    assert report.kind == "cmasktrack"
    with pytest.raises(FileNotFoundError):
        initialise_model(dst, str(tmp_path / "missing.pth"))
