"""The parameter names and shapes of the official mmdetection-v1 models, written out from the
official model definitions (ResNet, FPN, RPNHead, SharedFCBBoxHead, FCNMaskHead, TrackHead of
qjy981010/CMaskTrack-RCNN) — independent of cmasktrack's key map."""

from collections import OrderedDict

import torch


def _bn(prefix, c, out):
    out[f"{prefix}.weight"] = (c,)
    out[f"{prefix}.bias"] = (c,)
    out[f"{prefix}.running_mean"] = (c,)
    out[f"{prefix}.running_var"] = (c,)
    out[f"{prefix}.num_batches_tracked"] = ()


def official_shapes(num_classes=26, depth=50, track=True, calibration=True):
    out = OrderedDict()
    out["backbone.conv1.weight"] = (64, 3, 7, 7)
    _bn("backbone.bn1", 64, out)
    blocks = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}[depth]
    bottleneck = depth >= 50
    exp = 4 if bottleneck else 1
    inplanes = 64
    c_outs = []
    for li, (n, planes) in enumerate(zip(blocks, [64, 128, 256, 512])):
        for b in range(n):
            p = f"backbone.layer{li + 1}.{b}"
            cin = inplanes if b == 0 else planes * exp
            if bottleneck:
                out[f"{p}.conv1.weight"] = (planes, cin, 1, 1); _bn(f"{p}.bn1", planes, out)
                out[f"{p}.conv2.weight"] = (planes, planes, 3, 3); _bn(f"{p}.bn2", planes, out)
                out[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1); _bn(f"{p}.bn3", planes * 4, out)
            else:
                out[f"{p}.conv1.weight"] = (planes, cin, 3, 3); _bn(f"{p}.bn1", planes, out)
                out[f"{p}.conv2.weight"] = (planes, planes, 3, 3); _bn(f"{p}.bn2", planes, out)
            if b == 0 and (cin != planes * exp or li > 0):
                out[f"{p}.downsample.0.weight"] = (planes * exp, cin, 1, 1)
                _bn(f"{p}.downsample.1", planes * exp, out)
        inplanes = planes * exp
        c_outs.append(inplanes)
    for i, c in enumerate(c_outs):
        out[f"neck.lateral_convs.{i}.conv.weight"] = (256, c, 1, 1)
        out[f"neck.lateral_convs.{i}.conv.bias"] = (256,)
    for i in range(4):
        out[f"neck.fpn_convs.{i}.conv.weight"] = (256, 256, 3, 3)
        out[f"neck.fpn_convs.{i}.conv.bias"] = (256,)
    out["rpn_head.rpn_conv.weight"] = (256, 256, 3, 3); out["rpn_head.rpn_conv.bias"] = (256,)
    out["rpn_head.rpn_cls.weight"] = (3, 256, 1, 1); out["rpn_head.rpn_cls.bias"] = (3,)
    out["rpn_head.rpn_reg.weight"] = (12, 256, 1, 1); out["rpn_head.rpn_reg.bias"] = (12,)
    out["bbox_head.fc_cls.weight"] = (num_classes, 1024); out["bbox_head.fc_cls.bias"] = (num_classes,)
    out["bbox_head.fc_reg.weight"] = (num_classes * 4, 1024); out["bbox_head.fc_reg.bias"] = (num_classes * 4,)
    out["bbox_head.shared_fcs.0.weight"] = (1024, 256 * 49); out["bbox_head.shared_fcs.0.bias"] = (1024,)
    out["bbox_head.shared_fcs.1.weight"] = (1024, 1024); out["bbox_head.shared_fcs.1.bias"] = (1024,)
    if track:
        out["track_head.fcs.0.weight"] = (1024, 256 * 49); out["track_head.fcs.0.bias"] = (1024,)
        out["track_head.fcs.1.weight"] = (1024, 1024); out["track_head.fcs.1.bias"] = (1024,)
        if calibration:
            for i in range(3):
                out[f"track_head.offset_convs.{i}.conv.weight"] = (256, 256, 3, 3)
                out[f"track_head.offset_convs.{i}.conv.bias"] = (256,)
            out["track_head.conv_offset.weight"] = (18, 256, 3, 3); out["track_head.conv_offset.bias"] = (18,)
            out["track_head.dconv_featureflow.weight"] = (256, 256, 3, 3)
    for i in range(4):
        out[f"mask_head.convs.{i}.conv.weight"] = (256, 256, 3, 3)
        out[f"mask_head.convs.{i}.conv.bias"] = (256,)
    out["mask_head.upsample.weight"] = (256, 256, 2, 2); out["mask_head.upsample.bias"] = (256,)
    out["mask_head.conv_logits.weight"] = (num_classes, 256, 1, 1); out["mask_head.conv_logits.bias"] = (num_classes,)
    return out


def official_state_dict(seed=0, dtype=torch.float32, **kw):
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for k, shape in official_shapes(**kw).items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(0)
        elif k.endswith("running_var"):
            sd[k] = (torch.rand(shape, generator=g) + 0.5).to(dtype)
        else:
            sd[k] = (torch.randn(shape, generator=g) * 0.02).to(dtype)
    return sd
