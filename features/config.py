"""Knobs of embedding and ordering (params.yaml sections `features` and `order`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class FeaturesParams:
    extractor: Literal["resnet50", "resnet18", "simnet"] = "resnet18"
    weights: str = "none"


@dataclass
class OrderParams:
    method: Literal["dissimilar", "similar", "random", "temporal"] = "dissimilar"
    first_batch_size: int = 10
    batch_size: int = 10
