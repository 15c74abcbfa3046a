"""One more click, cheaply: the fusion is linear up to the RPN's first ReLU.

For one image with cached FPN features F (per level), the fused features are
    X = F + W_F F + b + W_c C3 + W_l LF              (c3det.fusion, 1x1 conv split by inputs)
and everything a click changes enters only through C3 and LF. Two consumers read X:

- the RPN's 3x3 conv K:  K*X = K*(F + W_F F + b) + (K∘W_c)*C3 + (K∘W_l)*LF
  The first term is computed once per image; the two composed kernels read only C and
  lf_channels channels instead of 256, so with a narrow LF (lf_channels 64) a click's RPN conv
  costs a quarter of a full one.
- RoIAlign, linear in its input: pool(X) = pool(F + W_F F + b) + W_c pool(C3) + W_l pool(LF).
  The image term is pooled from a cached map; only the 300 RoIs' small click channels are new.

Same results as `model.heads(model.fuse(...))` up to float rounding (tests/test_c3det_model.py
compares them); Faster R-CNN kinds late_fusion and c3det only, in eval mode. `detect` takes
the external C3 templates of sliced inference too (clicks in other tiles, c3det.fusion).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.rpn import (RegionProposalNetwork,
                                              concat_box_prediction_layers)

from c3det.fusion import template_count
from c3det.model import Batch, ClickDetector


def supports(model: ClickDetector) -> bool:
    # torchvision's RPN only: its 3x3 conv is what the cache composes (not c3det.crpn)
    return (model.fusion is not None
            and isinstance(getattr(model.detector, "rpn", None), RegionProposalNetwork)
            and model.caches_image_features)


class LinearClickHeads:
    """Cached image part of fusion, RPN conv and RoI pooling for one prepared image."""

    @torch.no_grad()
    def __init__(self, model: ClickDetector, batch: Batch, features: "OrderedDict[str, Tensor]"):
        if not supports(model):
            raise ValueError(f"LinearClickHeads needs a Faster R-CNN late_fusion / c3det model, "
                             f"got {model.kind}")
        self.model, self.batch, self.features = model, batch, features
        fusion, rpn = model.fusion, model.detector.rpn
        conv = rpn.head.conv[0][0]                      # 3x3 256 -> 256, then ReLU
        c = model.num_classes if fusion.use_c3 else 0
        self.base, self.rpn_base, self.w_click, self.k_click = OrderedDict(), {}, {}, {}
        for level, (name, f) in enumerate(features.items()):
            w = fusion.mix[level].weight[:, :, 0, 0]    # (256, 256 + C + L)
            d = f.shape[1]
            g = f + F.conv2d(f, w[:, :d, None, None], fusion.mix[level].bias)
            self.base[name] = g
            self.rpn_base[name] = F.conv2d(g, conv.weight, conv.bias, padding=1)
            wc = w[:, d:]                               # (256, C + L): C3 then LF channels
            self.w_click[name] = wc
            self.k_click[name] = torch.einsum("oikl,ic->ockl", conv.weight, wc)
        self.anchors = rpn.anchor_generator(batch.images, list(features.values()))
        self.c3_channels = c

    @torch.no_grad()
    def detect(self, clicks: Tensor, candidates: bool = True,
               external: dict | None = None) -> dict[str, Tensor]:
        """clicks (K, 3) in input-image px (external: C3 templates of clicks outside the image,
        {level: (T, classes)}) -> the detections of model.heads(model.fuse(...))."""
        model, det = self.model, self.model.detector
        batch = model.with_clicks(self.batch, [clicks])
        if not (model.fusion.use_c3 and template_count(external)):
            external = None
        if len(batch.clicks[0]) == 0 and external is None:
            return model.heads(self.features, batch, candidates)[0]
        c3, lf = model.fusion.click_parts(self.features, batch.clicks, batch.padded_size,
                                          None if external is None else [external])
        click_maps = OrderedDict(
            (name, torch.cat(([c3[name]] if c3 else []) + ([lf[name]] if lf else []), 1))
            for name in self.features)
        # RPN: cached image term + composed kernels on the click channels, then its heads
        rpn, head = det.rpn, det.rpn.head
        objectness, deltas = [], []
        for name, x in click_maps.items():
            t = F.relu(self.rpn_base[name] + F.conv2d(x, self.k_click[name], padding=1))
            objectness.append(head.cls_logits(t))
            deltas.append(head.bbox_pred(t))
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(deltas, self.anchors).view(1, -1, 4)
        proposals, _ = rpn.filter_proposals(proposals, objectness, batch.images.image_sizes,
                                            per_level)
        # RoI head: pooled image term + projected pooled click channels
        roi = det.roi_heads
        sizes = batch.images.image_sizes
        pooled = roi.box_roi_pool(self.base, proposals, sizes)
        pooled_click = roi.box_roi_pool(click_maps, proposals, sizes)      # (R, C+L, 7, 7)
        levels = roi.box_roi_pool.map_levels(proposals)       # the level each RoI reads
        for level, w in enumerate(self.w_click.values()):
            idx = torch.where(levels == level)[0]
            pooled[idx] += torch.einsum("oc,rckl->rokl", w, pooled_click[idx])
        class_logits, box_regression = roi.box_predictor(roi.box_head(pooled))
        out = roi.detect(class_logits, box_regression, proposals, sizes, candidates)
        return model._to_input_pixels(out, batch)[0]
