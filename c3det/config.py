"""Knobs of the interactive detector (params.yaml section `c3det`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class C3DetParams:
    backbone: Literal["resnet50", "resnet18"] = "resnet18"
    weights: str = "none"  # "imagenet" (needs torchvision's cached weights), a file, or "none"
