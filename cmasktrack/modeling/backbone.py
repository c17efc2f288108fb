"""ResNet + FPN backbone: torchvision's ResNet (frozen BatchNorm) and FeaturePyramidNetwork."""

from __future__ import annotations

from typing import List

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d


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
        for name, p in self.body.named_parameters():
            if name.startswith(("conv1", "bn1", "layer1")):
                p.requires_grad_(False)
        for m in self.fpn.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, H, W) normalised images (H, W multiples of 32) -> [P2, P3, P4, P5, P6]."""
        return list(self.fpn(self.body(x)).values())
