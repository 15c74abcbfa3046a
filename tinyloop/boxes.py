"""Axis-aligned box arithmetic over arrays: the one place where IoU matrices, area shares,
the ignore-region rule and class-wise NMS are computed.

Boxes are (N, 4) xyxy arrays in pixels (numpy arrays or anything `np.asarray` takes);
results are numpy. IoU and NMS are torchvision's (`torchvision.ops.box_iou`,
`torchvision.ops.batched_nms`), run on float64 CPU tensors; torch is imported on first use
so that what only needs shares (and flows' CLI) starts without it. A single pair of boxes
has `tinyloop.annotations.Box.iou`, which gives the same number.

The ignore rule (`in_ignore_regions`): a box counts as inside the ignore regions when at
least `min_share` (default 0.5) of its area lies inside one region. Box-level diffs
(flows.accounting.workload, flows.accounting.simulator) and mAP (c3det.evaluate) both leave such
boxes out.
"""
from __future__ import annotations

import numpy as np

IGNORE_SHARE = 0.5  # share of a box's area inside one ignore region that makes it ignored


def as_boxes(boxes) -> np.ndarray:
    """(N, 4) float64 xyxy (an empty input gives shape (0, 4))."""
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def iou_matrix(a, b) -> np.ndarray:
    """(len(a), len(b)) IoU; 0 where both boxes have no area (torchvision gives nan there)."""
    a, b = as_boxes(a), as_boxes(b)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    import torch
    from torchvision.ops import box_iou
    iou = box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    return np.nan_to_num(iou, nan=0.0)


def share_inside(boxes, regions) -> np.ndarray:
    """(len(boxes), len(regions)): the share of each box's area inside each region (0 for
    a box without area)."""
    b, r = as_boxes(boxes)[:, None, :], as_boxes(regions)[None, :, :]
    iw = np.clip(np.minimum(b[..., 2], r[..., 2]) - np.maximum(b[..., 0], r[..., 0]), 0, None)
    ih = np.clip(np.minimum(b[..., 3], r[..., 3]) - np.maximum(b[..., 1], r[..., 1]), 0, None)
    area = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return iw * ih / np.maximum(area, 1e-12)


def in_ignore_regions(boxes, regions, min_share: float = IGNORE_SHARE) -> np.ndarray:
    """(len(boxes),) bool: at least `min_share` of the box's area (and some of it) lies
    inside one of the ignore `regions`."""
    shares = share_inside(boxes, regions)
    if not shares.size:
        return np.zeros(len(shares), dtype=bool)
    return ((shares > 0) & (shares >= min_share)).any(axis=1)


def nms(boxes, scores, iou: float, classes=None) -> np.ndarray:
    """Greedy class-wise NMS (torchvision.ops.batched_nms) -> kept indices, best first.

    A box is suppressed when its IoU with a kept, better box of its class (`classes`, (N,)
    ints; None: one class) exceeds `iou`. Equal scores: the larger box goes first (a copy
    cut by a tile border loses to the whole one), then the lower index.
    """
    boxes = as_boxes(boxes)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(boxes):
        return np.zeros(0, dtype=np.int64)
    import torch
    from torchvision.ops import batched_nms
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1],
                                                                  0, None)
    order = np.lexsort((-areas, -scores))
    # torchvision sorts by score only and its sort is not stable: give it ranks instead
    rank = np.empty(len(order), dtype=np.float64)
    rank[order] = np.arange(len(order), 0, -1)
    idxs = np.zeros(len(boxes), np.int64) if classes is None else np.asarray(classes, np.int64)
    keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(rank),
                       torch.from_numpy(idxs), iou)
    return keep.numpy().astype(np.int64)
