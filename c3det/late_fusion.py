"""Late Fusion (LF): the clicks' class heatmaps through their own small network.

C3Det's local-context branch: the (C, H, W) class heatmaps (c3det.heatmaps.class_heatmaps)
go through a randomly initialised ResNet-18 with C input channels and its own FPN, giving
click features on the same P2..P5 grid as the image FPN (c3det.fusion concatenates them).
"""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from c3det.backbone import resnet_fpn


class LateFusionBackbone(nn.Module):
    def __init__(self, num_classes: int, out_channels: int = 256, norm: str = "bn"):
        super().__init__()
        self.body = resnet_fpn("resnet18", in_channels=num_classes, out_channels=out_channels,
                               weights="none", norm=norm)
        self.out_channels = out_channels

    def forward(self, heatmaps: Tensor) -> "OrderedDict[str, Tensor]":
        """heatmaps (B, C, H, W), H and W multiples of 32 -> {"0".."3": (B, out, H/4.., W/4..)}."""
        return self.body(heatmaps)
