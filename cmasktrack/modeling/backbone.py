"""ResNet + FPN backbone: torchvision's ResNet (frozen BatchNorm) and FeaturePyramidNetwork."""

from __future__ import annotations

from typing import List

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d


#: Top-level modules of a torchvision ResNet body by stage: the stem, then layer1..layer4.
_STAGES = (("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",))


def frozen_prefixes(frozen_stages: int) -> tuple:
    """Names of the top-level modules of a ResNet body that ``frozen_stages`` freezes: -1
    nothing, 0 the stem, 1 the stem and ``layer1`` (official), up to 4."""
    if not -1 <= frozen_stages <= 4:
        raise ValueError(f"frozen_stages must be in [-1, 4], got {frozen_stages}")
    return tuple(name for stage in _STAGES[: frozen_stages + 1] for name in stage)


def set_frozen_stages(body: nn.Module, frozen_stages: int) -> None:
    """Freeze (no gradient) the parameters of the first ``frozen_stages`` stages of a ResNet
    ``body`` (:func:`frozen_prefixes`) and unfreeze the rest."""
    frozen = frozen_prefixes(frozen_stages)
    for name, p in body.named_parameters():
        p.requires_grad_(not name.startswith(frozen))


class ResNetFPN(nn.Module):
    """ResNet-{18,34,50,101} ("pytorch" style: stride on the 3x3 conv) with frozen BatchNorm,
    and an FPN (1x1 laterals, 3x3 outputs, nearest top-down) giving P2-P6, P6 = max-pool(k=1, s=2)
    of P5. The stem and layer1 are frozen (no gradient), as in the official training.
    """

    def __init__(self, depth: int = 50, out_channels: int = 256):
        super().__init__()
        net = getattr(resnet, f"resnet{depth}")(weights=None, norm_layer=FrozenBatchNorm2d)
        c2 = net.inplanes // 8  # channels of layer1's output (C2)
        self.body = IntermediateLayerGetter(
            net, return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
        )
        self.fpn = FeaturePyramidNetwork([c2, c2 * 2, c2 * 4, c2 * 8], out_channels, extra_blocks=LastLevelMaxPool())
        set_frozen_stages(self.body, 1)
        for m in self.fpn.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, H, W) normalised images (H, W multiples of 32) -> [P2, P3, P4, P5, P6]."""
        return list(self.fpn(self.body(x)).values())
