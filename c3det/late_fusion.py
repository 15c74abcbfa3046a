"""Late Fusion (LF): the clicks' class heatmaps through their own small network.

C3Det's local-context branch: the (C, H, W) class heatmaps (c3det.heatmaps.class_heatmaps)
go through a network of their own giving click features on the same P2..P5 grid as the image
FPN (c3det.fusion concatenates them). Two choices (params `lf_backbone`):

- "resnet18" (the reference): a randomly initialised ResNet-18 with C input channels and its
  own FPN. It costs as much as the image backbone, and it runs again on every click.
- "light": four strided 3x3 conv stages (32-64-64-64 channels, strides 4/8/16/32) with a 1x1
  projection per level. Heatmaps of 1 px Gaussians carry little texture; this keeps the
  per-click cost far below a full forward (see docs/benchmarks/c3det_latency.md).
"""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from c3det.backbone import LEVELS, resnet_fpn


class LateFusionBackbone(nn.Module):
    def __init__(self, num_classes: int, out_channels: int = 256, norm: str = "bn",
                 arch: str = "resnet18"):
        super().__init__()
        self.arch = arch
        if arch == "resnet18":
            self.body = resnet_fpn("resnet18", in_channels=num_classes,
                                   out_channels=out_channels, weights="none", norm=norm)
        elif arch == "light":
            self.body = LightPyramid(num_classes, out_channels)
        else:
            raise ValueError(f"unknown lf_backbone {arch!r}; use resnet18 or light")
        self.out_channels = out_channels

    def forward(self, heatmaps: Tensor) -> "OrderedDict[str, Tensor]":
        """heatmaps (B, C, H, W), H and W multiples of 32 -> {"0".."3": (B, out, H/4.., W/4..)}."""
        return self.body(heatmaps)


def _stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class LightPyramid(nn.Module):
    """C -> strides 4, 8, 16, 32 with 64 channels, then 1x1 to out_channels per level."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(_stage(in_channels, 32, 2), _stage(32, width, 2))
        self.down = nn.ModuleList(_stage(width, width, 2) for _ in range(3))
        self.out = nn.ModuleList(nn.Conv2d(width, out_channels, 1) for _ in range(4))

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self.stem(x)
        levels = [x]
        for down in self.down:
            levels.append(down(levels[-1]))
        return OrderedDict((name, proj(f)) for name, proj, f in zip(LEVELS, self.out, levels))
