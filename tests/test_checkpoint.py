"""Official checkpoint conversion: every official key lands, nothing is left over."""


import pytest
import torch

from cmasktrack.weights import (CheckpointError, convert_official_state_dict, infer_config,
                                load_official_state_dict)
from cmasktrack.model import CMaskTrack

from official_keys import official_state_dict

# The parameter correspondences, spelled out by hand for one of each kind.
HAND_MAP = {
    "backbone.conv1.weight": "backbone.body.conv1.weight",
    "backbone.layer3.5.bn2.running_var": "backbone.body.layer3.5.bn2.running_var",
    "backbone.layer2.0.downsample.0.weight": "backbone.body.layer2.0.downsample.0.weight",
    "neck.lateral_convs.2.conv.weight": "backbone.fpn.inner_blocks.2.0.weight",
    "neck.fpn_convs.3.conv.bias": "backbone.fpn.layer_blocks.3.0.bias",
    "rpn_head.rpn_reg.weight": "rpn.head.rpn_reg.weight",
    "bbox_head.shared_fcs.1.weight": "box_head.shared_fcs.1.weight",
    "bbox_head.fc_reg.bias": "box_head.fc_reg.bias",
    "mask_head.convs.3.conv.weight": "mask_head.convs.3.weight",
    "mask_head.upsample.weight": "mask_head.upsample.weight",
    "track_head.fcs.0.weight": "track_head.fcs.0.weight",
    "track_head.offset_convs.1.conv.bias": "calibration.offset_convs.1.bias",
    "track_head.conv_offset.weight": "calibration.conv_offset.weight",
    "track_head.dconv_featureflow.weight": "calibration.deform_weight",
}


def _save(tmp_path, sd, name="official.pth", **extra):
    p = tmp_path / name
    torch.save({"state_dict": sd, "meta": {"epoch": 12, "CLASSES": ["a", "b"]}, **extra}, p)
    return str(p)


def test_cmasktrack_checkpoint_converts_with_every_key(tmp_path):
    sd = official_state_dict()
    model = CMaskTrack.from_official_checkpoint(_save(tmp_path, sd))
    cfg = model.config
    assert (cfg.num_classes, cfg.depth, cfg.calibration) == (26, 50, True)
    assert cfg.category_names[0] == "Person" and len(cfg.category_names) == 25
    ours = model.state_dict()
    n_official = sum(1 for k in sd if not k.endswith("num_batches_tracked"))
    assert n_official == len(ours)  # one model parameter per official tensor, none left out
    for ok, ck in HAND_MAP.items():
        assert torch.equal(ours[ck], sd[ok]), ok


def test_masktrack_ytvis_checkpoint_has_no_calibration(tmp_path):
    sd = official_state_dict(num_classes=41, calibration=False)
    model = CMaskTrack.from_official_checkpoint(_save(tmp_path, sd))
    assert model.calibration is None and model.config.num_refs == 0
    assert model.config.category_names[-1] == "tennis_racket"


def test_fp16_checkpoint_is_cast(tmp_path):
    sd = official_state_dict(dtype=torch.float16)
    model = CMaskTrack.from_official_checkpoint(_save(tmp_path, sd))
    w = model.state_dict()["box_head.fc_cls.weight"]
    assert w.dtype == torch.float32
    assert torch.equal(w, sd["bbox_head.fc_cls.weight"].float())


def test_missing_and_unexpected_keys_are_listed():
    sd = official_state_dict()
    model = CMaskTrack(infer_config(sd))
    bad = dict(sd)
    del bad["mask_head.conv_logits.bias"]
    bad["track_head.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as e:
        convert_official_state_dict(bad, model.state_dict())
    msg = str(e.value)
    assert "mask_head.conv_logits.bias" in msg and "track_head.extra.weight" in msg
    wrong = dict(sd)
    wrong["bbox_head.fc_cls.weight"] = torch.zeros(7, 1024)
    with pytest.raises(CheckpointError, match="shape"):
        convert_official_state_dict(wrong, model.state_dict())


def test_coco_mask_rcnn_is_refused_for_tracking(tmp_path):
    sd = official_state_dict(num_classes=81, track=False)
    with pytest.raises(CheckpointError, match="no tracking head"):
        CMaskTrack.from_official_checkpoint(_save(tmp_path, sd))


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_arbitrary_objects_are_not_unpickled(tmp_path):
    p = tmp_path / "evil.pth"
    torch.save({"state_dict": official_state_dict(depth=18), "meta": _Evil()}, p)
    with pytest.raises(CheckpointError, match="holds Python objects besides tensors") as info:
        load_official_state_dict(str(p))
    assert "weights_only" not in str(info.value)  # never torch's advice to turn the safety off
    with pytest.raises(FileNotFoundError):
        load_official_state_dict(str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("content, what", [
    (b"elephant\n" * 20, "a text file"),  # torch.load itself: IndexError / KeyError: 101
    (b"hello world", "a text file"),
    (bytes(range(256)) * 4, "not a zip archive or a torch pickle"),
    (__import__("pickle").dumps({"state_dict": {}}), "a plain Python pickle"),
])
def test_files_that_are_not_checkpoints(tmp_path, content, what):
    p = tmp_path / "model.pth"
    p.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        CMaskTrack.from_pretrained(str(p), device="cpu")
    assert str(info.value) == f"{p} is not a PyTorch checkpoint ({what})"


def test_damaged_checkpoint(tmp_path):
    p = tmp_path / "cut.pth"
    torch.save({"state_dict": official_state_dict(depth=18)}, p)
    p.write_bytes(p.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"is not a readable PyTorch checkpoint \(damaged or truncated") as info:
        load_official_state_dict(str(p))
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("depth", [18, 34, 101])
def test_other_depths(depth):
    sd = official_state_dict(depth=depth)
    cfg = infer_config(sd)
    assert cfg.depth == depth
    model = CMaskTrack(cfg)
    assert len(convert_official_state_dict(sd, model.state_dict())) == len(model.state_dict())
