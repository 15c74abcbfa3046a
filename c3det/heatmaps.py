"""Clicks rendered as Gaussian heatmaps.

A click is a row (x, y, class) in image pixels; pixel (col j, row i) covers [j, j+1) x [i, i+1),
so its centre is (j + 0.5, i + 0.5) (the convention of tinyloop.annotations).

- `class_heatmaps`  the Late-Fusion / Early-Fusion input: one Gaussian per click (peak 1,
  sigma 1 px as in the reference code), pixel-wise max per class -> (C, H, W); classes nobody
  clicked are all zeros.
- `pooled_click_maps` the C3 weights U_k: each click's Gaussian integrated over the cells of a
  feature map of stride s (exact area pooling, via erf), normalised to sum 1. A nearest-neighbour
  resize of a 3 px Gaussian to stride 32 can miss every sample and vanish (the reference's
  weakness); the integral over a cell never does.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def class_heatmaps(clicks: Tensor, num_classes: int, height: int, width: int,
                   sigma: float) -> Tensor:
    """clicks (K, 3) -> (C, H, W): per class the pixel-wise max of its clicks' Gaussians."""
    out = torch.zeros(num_classes, height, width, dtype=torch.float32, device=clicks.device)
    if clicks.numel() == 0:
        return out
    xs = torch.arange(width, dtype=torch.float32, device=clicks.device) + 0.5
    ys = torch.arange(height, dtype=torch.float32, device=clicks.device) + 0.5
    gx = torch.exp(-(xs[None] - clicks[:, 0:1]) ** 2 / (2 * sigma ** 2))  # (K, W)
    gy = torch.exp(-(ys[None] - clicks[:, 1:2]) ** 2 / (2 * sigma ** 2))  # (K, H)
    classes = clicks[:, 2].long()
    for c in classes.unique().tolist():  # per class, vectorised over its clicks
        mine = classes == c
        out[c] = (gy[mine, :, None] * gx[mine, None, :]).amax(0)
    return out


def _cell_mass(centres: Tensor, cells: int, stride: float, sigma: float) -> Tensor:
    """(K,) positions -> (K, cells): share of a 1-D Gaussian inside each cell [s*j, s*(j+1))."""
    edges = torch.arange(cells + 1, dtype=torch.float32, device=centres.device) * stride
    cdf = 0.5 * (1 + torch.erf((edges[None] - centres[:, None]) / (sigma * math.sqrt(2))))
    return cdf[:, 1:] - cdf[:, :-1]


def pooled_click_maps(clicks: Tensor, height: int, width: int, stride: float,
                      sigma: float) -> Tensor:
    """clicks (K, >=2) in image px -> U (K, h, w) on a stride-`stride` grid, each summing to 1."""
    mx = _cell_mass(clicks[:, 0], width, stride, sigma)   # (K, w)
    my = _cell_mass(clicks[:, 1], height, stride, sigma)  # (K, h)
    u = my[:, :, None] * mx[:, None, :]
    # a click on the grid always has mass; the clamp only guards clicks far outside it
    return u / u.flatten(1).sum(1).clamp_min(1e-12)[:, None, None]
