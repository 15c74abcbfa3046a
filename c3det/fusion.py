"""Fusion of click information into every FPN level (C3Det, Late Fusion).

At each level: concat(image FPN (256), C3 maps (C), LF FPN (lf_channels)) -> 1x1 conv -> 256,
as in the reference code, written as a residual

    fused = F_img + conv1x1(concat(F_img, C3, LF))      for images with >= 1 click
    fused = F_img                                        for images with no click

The residual form is the reference's 1x1 conv with its image-channel block initialised to the
identity (W = [I + W_img, W_c3, W_lf]); the conv starts at zero, so an untrained fusion is the
plain detector exactly. Guarantee (1), "0 clicks is as accurate as the plain detector": an
image without clicks never enters the click branch, so at 0 clicks the model IS its plain
detector (same backbone, FPN, RPN and heads). Those shared weights stay good at 0 clicks only
if training keeps showing zero-click samples (TrainParams.zero_click_share); the reference had
neither the gate nor the share, and lost 2.8 mAP at 0 clicks.

External templates (sliced inference, c3det.predict): `forward(..., external=...)` gives an
image the C3 templates of clicks outside it, per level {level: (T (K, D), classes (K,))}
(`ClickFusion.templates` takes them on the tile holding the click). They are correlated with
the image's features alongside its own clicks' templates (C3 only: LF stays local, a click
outside an image has no heatmap in it), and an image with external templates but no click
of its own enters the click branch. Without `external` nothing changes.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from c3det.c3 import c3_correlate, c3_maps, c3_templates, click_images
from c3det.heatmaps import class_heatmaps
from c3det.late_fusion import LateFusionBackbone


class ClickFusion(nn.Module):
    def __init__(self, num_classes: int, channels: int = 256, use_lf: bool = True,
                 use_c3: bool = True, lf_channels: int = 256, heatmap_sigma: float = 1.0,
                 c3_sigma: float = 3.0, c3_normalize: bool = True, levels: int = 4,
                 lf_backbone: str = "resnet18"):
        super().__init__()
        self.num_classes = num_classes
        self.use_c3 = use_c3
        self.heatmap_sigma, self.c3_sigma, self.c3_normalize = heatmap_sigma, c3_sigma, c3_normalize
        self.lf = LateFusionBackbone(num_classes, lf_channels, arch=lf_backbone) \
            if use_lf else None
        width = channels + (num_classes if use_c3 else 0) + (lf_channels if use_lf else 0)
        self.mix = nn.ModuleList(nn.Conv2d(width, channels, 1) for _ in range(levels))
        for conv in self.mix:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, features: "OrderedDict[str, Tensor]", clicks: list[Tensor],
                padded_size: tuple[int, int], external: list[dict | None] | None = None
                ) -> "OrderedDict[str, Tensor]":
        """features: image FPN levels (B, 256, h_l, w_l); clicks[b] (K_b, 3) in network-input px;
        padded_size (H, W) of the batch tensor; external[b]: templates of clicks outside image
        b, {level: (T (K, D), classes (K,))} or None. Returns the fused levels, same shapes."""
        if external is not None and not self.use_c3:
            external = None                      # only C3 reads templates
        clicked = [i for i, c in enumerate(clicks)
                   if len(c) or (external is not None and template_count(external[i]))]
        if not clicked:
            return features
        first = next(iter(features.values()))
        idx = torch.tensor(clicked, device=first.device)
        own = OrderedDict((k, f.index_select(0, idx)) for k, f in features.items())
        c3, lf = self.click_parts(own, [clicks[i] for i in clicked], padded_size,
                                  None if external is None else [external[i] for i in clicked])
        out = OrderedDict()
        for level, (name, f) in enumerate(own.items()):
            parts = [f] + ([c3[name]] if c3 else []) + ([lf[name]] if lf else [])
            delta = self.mix[level](torch.cat(parts, 1))
            out[name] = self._add_to(features[name], clicked, delta)
        return out

    def click_parts(self, features: "OrderedDict[str, Tensor]", clicks: list[Tensor],
                    padded_size: tuple[int, int], external: list[dict | None] | None = None):
        """(C3 maps, LF features), each {level: (B, C or lf_channels, h, w)} or None, for
        images that all have clicks (their own, or external templates: see `forward`)."""
        first = next(iter(features.values()))
        clicks = [c.to(first.device) for c in clicks]
        lf = c3 = None
        if self.lf is not None:
            heat = torch.stack([class_heatmaps(c, self.num_classes, *padded_size,
                                               self.heatmap_sigma) for c in clicks])
            lf = self.lf(heat.to(first.dtype))
        if self.use_c3 and external is None:
            c3 = OrderedDict((name, c3_maps(f, clicks, self.num_classes,
                                            padded_size[0] / f.shape[-2], self.c3_sigma,
                                            self.c3_normalize))
                             for name, f in features.items())
        elif self.use_c3:
            c3 = OrderedDict((name, self._c3_with_external(name, f, clicks, external,
                                                           padded_size))
                             for name, f in features.items())
        return c3, lf

    def templates(self, features: "OrderedDict[str, Tensor]", clicks: Tensor,
                  padded_size: tuple[int, int]) -> dict:
        """C3 templates (eq. 1) of the clicks (K, 3) (network-input px) of ONE image,
        {level: (T (K, D), classes (K,))}: the `external` entries for other images."""
        clicks = clicks.reshape(-1, 3)
        return OrderedDict(
            (name, (c3_templates(f, [clicks.to(f.device)], padded_size[0] / f.shape[-2],
                                 self.c3_sigma), clicks[:, 2].long().to(f.device)))
            for name, f in features.items())

    def _c3_with_external(self, name: str, f: Tensor, clicks: list[Tensor],
                          external: list[dict | None], padded_size: tuple[int, int]) -> Tensor:
        """C3 maps of one level from each image's own clicks plus its external templates."""
        t = [c3_templates(f, clicks, padded_size[0] / f.shape[-2], self.c3_sigma)]
        classes = [torch.cat([c.reshape(-1, 3) for c in clicks])[:, 2].long()]
        images = [click_images(clicks, f.device)]
        for i, e in enumerate(external):
            if template_count(e):
                t.append(e[name][0].to(f))
                classes.append(e[name][1].to(f.device).long())
                images.append(torch.full((len(e[name][0]),), i, dtype=torch.long,
                                         device=f.device))
        return c3_correlate(f, torch.cat(t), torch.cat(classes), self.num_classes,
                            self.c3_normalize, torch.cat(images))

    @staticmethod
    def _add_to(f: Tensor, clicked: list[int], delta: Tensor) -> Tensor:
        """f with delta added to the images in `clicked` (index_add is slow on CPU)."""
        if len(clicked) == len(f):
            return f + delta
        rows = list(f.unbind(0))
        for j, i in enumerate(clicked):
            rows[i] = rows[i] + delta[j]
        return torch.stack(rows)


def template_count(external: dict | None) -> int:
    """How many templates an image's external entry holds (0 for None / empty)."""
    if not external:
        return 0
    return len(next(iter(external.values()))[0])
