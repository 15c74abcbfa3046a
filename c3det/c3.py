"""C3 (Class-wise Collated Correlation), C3Det paper (seeds/000) equations (1)-(3).

Split in two so a template can be taken on one feature map and correlated with another
(sliced inference: a click's template from its tile, correlated with every tile):
- `c3_templates`  eq. (1): each click's template T_k, pooled from the features at the click;
- `c3_correlate`  eqs. (2)-(3): templates against a feature map, then the max per class;
- `c3_maps`       the two in sequence, each click against its own image.
"""
from __future__ import annotations

import torch
from torch import Tensor

from c3det.heatmaps import pooled_click_maps


def c3_templates(features: Tensor, clicks: list[Tensor], stride: float, sigma: float) -> Tensor:
    """features (B, D, h, w): one FPN level; clicks[b] (K_b, 3) rows (x, y, class) in image px;
    stride: image px per feature cell. Returns T (K, D), the batch's clicks in order."""
    b, d, h, w = features.shape
    rows = torch.cat([c.reshape(-1, 3) for c in clicks]).to(features)
    if rows.shape[0] == 0:
        return features.new_zeros(0, d)
    u = pooled_click_maps(rows, h, w, stride, sigma).flatten(1).to(features)  # (K, hw), sums 1
    f = features.flatten(2)                                                    # (B, D, hw)
    # (1) T_k(i) = sum_xy F(i,x,y) U_k(x,y)
    if b == 1:  # the interactive case
        return torch.einsum("dn,kn->kd", f[0], u)
    # every (image, click) pair, then each click's own image: B is small, and this avoids
    # copying F once per click
    k = torch.arange(rows.shape[0], device=features.device)
    return torch.einsum("bdn,kn->bkd", f, u)[click_images(clicks, features.device), k]


def c3_correlate(features: Tensor, templates: Tensor, template_classes: Tensor,
                 num_classes: int, normalize: bool = True,
                 template_images: Tensor | None = None) -> Tensor:
    """features (B, D, h, w); templates (K, D) of classes (K,) 0..C-1, wherever they were
    taken; template_images (K,): the image each one is correlated with (None: every image).
    Returns (B, C, h, w); classes without a template are zeros."""
    b, d, h, w = features.shape
    out = features.new_zeros(b * num_classes, h * w)
    if templates.shape[0] == 0:
        return out.view(b, num_classes, h, w)
    t, classes = templates.to(features), template_classes.to(features.device).long()
    if template_images is None:    # every template on every image
        template_images = torch.arange(b, device=features.device).repeat_interleave(len(t))
        t, classes = t.repeat(b, 1), classes.repeat(b)
    image = template_images.to(features.device).long()
    f = features.flatten(2)                                                    # (B, D, hw)
    # (2) M_k(x,y) = sum_i T_k(i) F(i,x,y)
    if b == 1:
        m = torch.einsum("kd,dn->kn", t, f[0])                                # (K, hw)
    else:
        m = torch.einsum("kd,bdn->bkn", t, f)[image, torch.arange(len(t), device=f.device)]
    if normalize:  # divided by D: O(1) values whatever the width
        m = m / d
    # (3) F_C3(c,x,y) = max{M_k(x,y) | class_k = c}; classes without clicks stay 0
    slots = image * num_classes + classes                                     # (image, class)
    out = out.index_put((slots.unique(),), max_by_slot(m, slots))
    return out.view(b, num_classes, h, w)


def c3_maps(features: Tensor, clicks: list[Tensor], num_classes: int, stride: float,
            sigma: float, normalize: bool = True) -> Tensor:
    """Correlate every click's template with its image's features, then max per class:
    (B, D, h, w) features, clicks[b] (K_b, 3) -> (B, C, h, w). All clicks of the batch go
    through one einsum per equation: no Python loop per click."""
    rows = torch.cat([c.reshape(-1, 3) for c in clicks]).to(features.device)
    return c3_correlate(features, c3_templates(features, clicks, stride, sigma), rows[:, 2],
                        num_classes, normalize, click_images(clicks, features.device))


def click_images(clicks: list[Tensor], device) -> Tensor:
    """(K,): the image index of every click of the batch, in order."""
    return torch.cat([torch.full((len(c),), i, dtype=torch.long)
                      for i, c in enumerate(clicks)]).to(device)


def max_by_slot(values: Tensor, slots: Tensor) -> Tensor:
    """values (K, N), slots (K,) -> (S, N): element-wise max of the rows sharing each of the S
    sorted unique slots. One amax per (image, class) pair, never per click; scatter_reduce
    amax does the same but is ~10x slower on CPU (it was half the cost of a click)."""
    return torch.stack([values[slots == s].amax(0) for s in slots.unique().tolist()])
