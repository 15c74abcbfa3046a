"""Box geometry over arrays: the one place where IoU matrices, area shares, the
ignore-region rule and class-wise NMS are computed, for axis-aligned boxes and, as
polygons, for oriented boxes.

Boxes are (N, 4) xyxy arrays in pixels (numpy arrays or anything `np.asarray` takes);
results are numpy. Axis-aligned IoU and NMS are torchvision's (`torchvision.ops.box_iou`,
`torchvision.ops.batched_nms`), run on float64 CPU tensors; torch is imported on first use
so that what only needs shares (and flows' CLI) starts without it. A single pair of boxes
has `tinyloop.annotations.Box.iou`, which gives the same number.

Oriented boxes (`polygon_iou_matrix`, `polygon_share_inside`, `nms_polygons`) are shapely
polygons built by `as_polygons` from OrientedBox-es, Box-es or shapely geometries, and are
computed with shapely 2's vectorised functions (shapely imported on first use).

The ignore rule (`in_ignore_regions`): a box counts as inside the ignore regions when at
least `min_share` (default 0.5) of its area lies inside one region;
`polygons_in_ignore_regions` is the same rule on polygon areas. Box-level diffs
(flows.accounting.workload, flows.accounting.simulator) and mAP (c3det.evaluate,
c3det.evaluate_oriented) leave such boxes out.
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
    return _mostly_inside(share_inside(boxes, regions), min_share)


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


def boxes_touch(a, b) -> np.ndarray:
    """Do xyxy boxes a (..., 4) and b (..., 4) overlap with positive area (broadcast)?
    The cheap test that keeps far-apart pairs away from shapely."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return ((np.minimum(a[..., 2], b[..., 2]) > np.maximum(a[..., 0], b[..., 0])) &
            (np.minimum(a[..., 3], b[..., 3]) > np.maximum(a[..., 1], b[..., 1])))


def _mostly_inside(shares: np.ndarray, min_share: float) -> np.ndarray:
    """(N,) bool from (N, M) shares inside regions: the ignore rule (see the module doc)."""
    if not shares.size:
        return np.zeros(len(shares), dtype=bool)
    return ((shares > 0) & (shares >= min_share)).any(axis=1)


# --- polygons: oriented boxes ---------------------------------------------------------------
# shapely 2's vectorised functions over (N,) object arrays of polygons; shapely is imported
# on first use. Pairs whose bounding boxes do not touch are never handed to shapely (their
# overlap is 0), which keeps hundreds of boxes per image fast.

def oriented_corners(params) -> np.ndarray:
    """(N, 5) cx, cy, w, h, angle (radians, clockwise on screen) -> (N, 4, 2) corners, in
    the order of tinyloop.annotations.OrientedBox.corners (the same floats)."""
    p = np.asarray(params, dtype=np.float64).reshape(-1, 5)
    c, s = np.cos(p[:, 4:5]), np.sin(p[:, 4:5])
    dx = np.array([-0.5, 0.5, 0.5, -0.5]) * p[:, 2:3]          # (N, 4) along the box's width
    dy = np.array([-0.5, -0.5, 0.5, 0.5]) * p[:, 3:4]          # (N, 4) along its height
    return np.stack([p[:, 0:1] + dx * c - dy * s, p[:, 1:2] + dx * s + dy * c], axis=-1)


def as_polygons(items) -> np.ndarray:
    """(N,) object array of shapely polygons from OrientedBox-es (anything with `as_list()`
    -> cx, cy, w, h, angle), axis-aligned Box-es (anything with `xyxy()`) or shapely
    geometries, mixed freely. An axis-aligned box is the polygon of its four corners."""
    import shapely
    items = list(items)
    out = np.empty(len(items), dtype=object)
    oriented = [k for k, x in enumerate(items) if hasattr(x, "as_list")]
    aligned = [k for k, x in enumerate(items) if not hasattr(x, "as_list") and hasattr(x, "xyxy")]
    if oriented:
        out[oriented] = shapely.polygons(oriented_corners([items[k].as_list() for k in oriented]))
    if aligned:
        x1, y1, x2, y2 = as_boxes([items[k].xyxy() for k in aligned]).T
        out[aligned] = shapely.polygons(np.stack([np.stack([x1, x2, x2, x1], -1),
                                                  np.stack([y1, y1, y2, y2], -1)], -1))
    for k in set(range(len(items))) - set(oriented) - set(aligned):
        out[k] = items[k]
    return out


def _overlapping_pairs(pa: np.ndarray, pb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (i, j) of the polygon pairs whose bounding boxes touch."""
    import shapely
    ba, bb = shapely.bounds(pa).reshape(-1, 4), shapely.bounds(pb).reshape(-1, 4)
    return np.nonzero(boxes_touch(ba[:, None], bb[None]))


def _pair_intersections(pa: np.ndarray, pb: np.ndarray):
    """Indices (i, j) of the polygon pairs whose bounding boxes touch and their
    intersection areas (the pairs no other pair can overlap are skipped)."""
    import shapely
    i, j = _overlapping_pairs(pa, pb)
    return i, j, shapely.area(shapely.intersection(pa[i], pb[j]))


def polygon_iou_matrix(a, b) -> np.ndarray:
    """(len(a), len(b)) IoU of polygons (anything `as_polygons` takes); 0 where the union
    has no area. Polygons must be valid (oriented boxes always are)."""
    import shapely
    pa, pb = as_polygons(a), as_polygons(b)
    ious = np.zeros((len(pa), len(pb)))
    if not ious.size:
        return ious
    i, j, inter = _pair_intersections(pa, pb)
    union = shapely.area(pa)[i] + shapely.area(pb)[j] - inter
    ious[i, j] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return ious


def polygon_share_inside(polygons, regions) -> np.ndarray:
    """(len(polygons), len(regions)): the share of each polygon's area inside each region
    (0 for a polygon without area); `share_inside` for oriented boxes."""
    import shapely
    pa, pr = as_polygons(polygons), as_polygons(regions)
    shares = np.zeros((len(pa), len(pr)))
    if not shares.size:
        return shares
    i, j, inter = _pair_intersections(pa, pr)
    shares[i, j] = inter / np.maximum(shapely.area(pa)[i], 1e-12)
    return shares


def polygons_in_ignore_regions(polygons, regions, min_share: float = IGNORE_SHARE) -> np.ndarray:
    """(len(polygons),) bool: `in_ignore_regions` with areas measured on the polygons (an
    oriented box's corners hold much less than its bounding box)."""
    return _mostly_inside(polygon_share_inside(polygons, regions), min_share)


def nms_polygons(polygons, scores, iou: float, classes=None) -> np.ndarray:
    """Greedy class-wise NMS on polygons (anything `as_polygons` takes) -> kept indices,
    best first: `nms` with polygon IoU, same rule and ties.

    A polygon is suppressed when its IoU with a kept, better polygon of its class
    (`classes`, (N,) ints; None: one class) exceeds `iou`. Equal scores: the larger polygon
    goes first (a copy cut by a tile border loses to the whole one), then the lower index.
    """
    import shapely
    polys = as_polygons(polygons)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(polys):
        return np.zeros(0, dtype=np.int64)
    classes = np.zeros(len(polys), np.int64) if classes is None else np.asarray(classes)
    areas, bounds = shapely.area(polys), shapely.bounds(polys).reshape(-1, 4)
    order = np.lexsort((-areas, -scores))       # stable: lower index last
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        near = rest[(classes[rest] == classes[i]) & boxes_touch(bounds[i], bounds[rest])]
        inter = shapely.area(shapely.intersection(polys[i], polys[near]))
        union = areas[i] + areas[near] - inter
        ious = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[~np.isin(rest, near[ious > iou])]
    return np.asarray(keep, dtype=np.int64)
