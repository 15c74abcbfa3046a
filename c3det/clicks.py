"""Simulated annotator clicks: for training (random subsets) and evaluation (click orders).

Training (C3Det paper, Sec. 3.4): per image draw Nu ~ U{0..max_clicks}, click
K = min(Nu, #clickable objects) ground-truth objects chosen without replacement, each at its
box centre with its class. A share of samples (`zero_click_share`) gets no click at all so the
interactive model stays as good as the plain detector before anybody clicks.

Ignore regions are never clicked: they are not objects, and an object whose centre lies in an
ignore region is not clickable either (an annotator would not click inside a DontCare area).

Evaluation: every object gets a random position in a per-image click order; after k clicks the
first k objects of that order are clicked (one random not-yet-clicked object per step).

Tensors:
    boxes   (N, 4) float xyxy, image pixels
    labels  (N,)   int64 in 1..C (0 is background, as in torchvision)
    ignore  (M, 4) float xyxy
    clicks  (K, 3) float rows (x, y, class_index 0..C-1)
    clicked (N,)   bool, which objects were clicked (UEL uses it)
"""
from __future__ import annotations

import numpy as np
import torch


def clickable(boxes: torch.Tensor, ignore: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) bool: objects whose centre lies outside every ignore region."""
    ok = torch.ones(len(boxes), dtype=torch.bool)
    if ignore is None or len(ignore) == 0 or len(boxes) == 0:
        return ok
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    ig = ignore.to(boxes.dtype)
    inside = ((cx[:, None] >= ig[None, :, 0]) & (cx[:, None] <= ig[None, :, 2])
              & (cy[:, None] >= ig[None, :, 1]) & (cy[:, None] <= ig[None, :, 3]))
    return ok & ~inside.any(dim=1)


def clicks_for(boxes: torch.Tensor, labels: torch.Tensor, chosen: torch.Tensor,
               noise_px: float = 0.0, rng: np.random.Generator | None = None) -> torch.Tensor:
    """(K, 3) clicks at the centres of boxes[chosen] with class index labels-1.

    `noise_px` adds isotropic Gaussian noise (std in pixels) to each click position.
    """
    chosen = torch.as_tensor(chosen, dtype=torch.long)
    if len(chosen) == 0:
        return torch.zeros((0, 3), dtype=torch.float32)
    b = boxes[chosen].float()
    xy = torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], dim=1)
    if noise_px > 0:
        rng = rng if rng is not None else np.random.default_rng()
        xy = xy + torch.from_numpy(rng.normal(0.0, noise_px, size=xy.shape)).float()
    cls = (labels[chosen] - 1).float()[:, None]
    return torch.cat([xy, cls], dim=1)


def synthesize_training_clicks(boxes: torch.Tensor, labels: torch.Tensor,
                               ignore: torch.Tensor | None, rng: np.random.Generator,
                               max_clicks: int = 20, zero_click_share: float = 0.0,
                               noise_px: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Training clicks for one image: (clicks (K,3), clicked (N,) bool).

    K = 0 with probability `zero_click_share`, else K = min(U{0..max_clicks}, #clickable).
    """
    clicked = torch.zeros(len(boxes), dtype=torch.bool)
    candidates = torch.nonzero(clickable(boxes, ignore)).flatten()
    n_user = 0 if rng.random() < zero_click_share else int(rng.integers(0, max_clicks + 1))
    k = min(n_user, len(candidates))
    if k == 0:
        return torch.zeros((0, 3), dtype=torch.float32), clicked
    pick = candidates[torch.from_numpy(rng.choice(len(candidates), size=k, replace=False))]
    clicked[pick] = True
    return clicks_for(boxes, labels, pick, noise_px, rng), clicked


def click_order(boxes: torch.Tensor, ignore: torch.Tensor | None,
                rng: np.random.Generator) -> torch.Tensor:
    """A random order of the clickable objects: clicking k times clicks order[:k]."""
    candidates = torch.nonzero(clickable(boxes, ignore)).flatten()
    return candidates[torch.from_numpy(rng.permutation(len(candidates)))]
