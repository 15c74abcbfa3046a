"""Passthrough: the C3Det paper's simplest interactive baseline.

The plain detector runs without looking at the clicks; a click then relabels every predicted
box it falls in to the clicked class (when several clicks fall in one box, the last one wins).
Same API as c3det.model.ClickDetector: train -> the plain detector's losses; eval -> detections.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from c3det.click_to_box import contains
from c3det.config import C3DetParams
from c3det.model import ClickDetector, build_model


def relabel_by_clicks(detection: dict[str, Tensor], clicks: Tensor) -> dict[str, Tensor]:
    """Boxes containing a click (x, y, class 0..C-1) take the class of the last such click."""
    labels = detection["labels"]
    if len(clicks) == 0 or len(labels) == 0:
        return detection
    inside = contains(detection["boxes"], clicks[:, :2].to(detection["boxes"]))   # (K, D)
    order = torch.arange(1, len(clicks) + 1, device=labels.device)[:, None]
    last = (inside * order).argmax(0)                                              # (D,)
    new = torch.where(inside.any(0), clicks[last, 2].long().to(labels) + 1, labels)
    return {**detection, "labels": new}


class Passthrough(nn.Module):
    kind = "passthrough"

    def __init__(self, plain: ClickDetector):
        super().__init__()
        if plain.kind != "plain":
            raise ValueError(f"Passthrough wraps a plain detector, got kind {plain.kind!r}")
        self.plain = plain

    @property
    def num_classes(self) -> int:
        return self.plain.num_classes

    @property
    def params(self) -> C3DetParams:
        return self.plain.params

    def forward(self, images: list[Tensor], clicks: list[Tensor] | None = None,
                targets: list[dict[str, Tensor]] | None = None):
        if self.training:
            return self.plain(images, None, targets)
        out = self.plain(images)
        if clicks is None:
            return out
        return [relabel_by_clicks(d, c.reshape(-1, 3)) for d, c in zip(out, clicks)]


def build_passthrough(num_classes: int, params: C3DetParams | None = None) -> Passthrough:
    return Passthrough(build_model("plain", num_classes, params))
