"""Cut large images into overlapping tiles and merge tile predictions back.

Aerial images (DOTA: up to 20000 px wide) do not fit a detector at full resolution, and
shrinking them erases tiny objects. So training and inference run on tiles (Tiny-DOTA:
1024 px tiles every 512 px; SODA: 800 every 650), and:

- `tile_windows`     the tile grid: windows cover every pixel; the last window of a row or
                     column sits flush with the image border instead of hanging over it, and
                     an image smaller than a tile is one window (the whole image).
- `tile_labels`      one image's labels seen through a window, in tile coordinates. An object
                     cut by the window border is kept (clipped) when at least `min_visible`
                     of its area is inside; for oriented boxes the area is the exact polygon
                     intersection (shapely). Ignore regions are clipped and kept; clicks
                     outside the window are dropped.
- `tile_label_set`   `tile_labels` over every window of every image (training on tiles).
- `crop`             the pixels of a window from an array (..., H, W).
- `merge_predictions` tile predictions shifted back to image coordinates; truncated copies
                     (touching a tile edge inside the image, lying inside an uncut
                     prediction) dropped, then duplicates from overlapping tiles removed by
                     class-wise NMS (axis-aligned IoU: tinyloop.boxes.nms, torchvision's)
                     or, when the predictions carry oriented boxes, polygon NMS
                     (tinyloop.boxes.nms_polygons).

A tile's ImageRecord keeps the source image's path; its `metadata["tile"]` holds
{"image_id", "window": [x1, y1, x2, y2]} so tile results can be traced back.
numpy, shapely (oriented boxes, imported when met) and torchvision (axis-aligned NMS,
imported on first use).
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from typing import Sequence

import numpy as np

from tinyloop.annotations import (Annotation, Box, Click, IgnoreRegion, ImageLabels,
                                  ImageRecord, LabelSet, OrientedBox)
from tinyloop.boxes import boxes_touch, nms, nms_polygons, polygon_share_inside, share_inside

_EPS = 1e-9        # float slack in "share inside >= min_visible"
_HAIRLINE = 1e-3   # an oriented box this little outside the window is not cut


def _starts(length: int, size: int, stride: int) -> list[int]:
    """Window offsets along one axis: every `stride` px, the last one flush with the end."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def tile_windows(width: int, height: int, size: int, stride: int) -> list[Box]:
    """The tile grid of a width x height image, row by row (top to bottom, left to right).

    Windows are size x size (smaller only along an axis where the image itself is smaller
    than a tile). Neighbouring windows overlap by size - stride px, except the last of a row
    or column, which is moved back to end exactly at the border (so it may overlap more).
    """
    if size <= 0 or not 0 < stride <= size:
        raise ValueError(f"tiling needs size > 0 and 0 < stride <= size; got size={size}, "
                         f"stride={stride} (fix tiling.size / tiling.stride in params.yaml)")
    if width <= 0 or height <= 0:
        raise ValueError(f"cannot tile an image of {width}x{height} px")
    return [Box(x, y, min(x + size, width), min(y + size, height))
            for y in _starts(height, size, stride) for x in _starts(width, size, stride)]


def _window_polygon(window: Box):
    from shapely.geometry import box as shapely_box
    return shapely_box(window.x1, window.y1, window.x2, window.y2)


def _shift_box(box: Box, dx: float, dy: float) -> Box:
    return Box(box.x1 + dx, box.y1 + dy, box.x2 + dx, box.y2 + dy)


def _shift_obox(obox: OrientedBox | None, dx: float, dy: float) -> OrientedBox | None:
    return None if obox is None else replace(obox, cx=obox.cx + dx, cy=obox.cy + dy)


def _clip_obox(obox: OrientedBox, window: Box) -> tuple[float, OrientedBox | None]:
    """(share of the oriented box inside the window, the part inside as an oriented box).

    A box cut by the border becomes the smallest box with the SAME angle around the part
    inside (an object's orientation does not change because a tile cut it; for a border
    parallel to a box side this is exact). A box wholly inside, or overhanging by a hairline
    (annotation tools round outwards: HIT-UAV has boxes 0.0001 px past the image border),
    is returned unchanged.
    """
    outline = obox.bounding_box()      # cheap tests first: most boxes are far from a border
    if (outline.x1 >= window.x1 and outline.y1 >= window.y1 and outline.x2 <= window.x2
            and outline.y2 <= window.y2):
        return 1.0, obox
    if (outline.x2 <= window.x1 or outline.x1 >= window.x2 or outline.y2 <= window.y1
            or outline.y1 >= window.y2):
        return 0.0, None
    poly = obox.polygon()
    if poly.area <= 0:
        return 0.0, None
    inside = poly.intersection(_window_polygon(window))
    share = inside.area / poly.area
    if share >= 1 - _HAIRLINE:
        return share, obox
    if inside.area <= 0:
        return 0.0, None
    c, s = math.cos(obox.angle), math.sin(obox.angle)
    pts = np.asarray(inside.exterior.coords) - (obox.cx, obox.cy)
    u = pts[:, 0] * c + pts[:, 1] * s          # coordinates along the box's own axes
    v = -pts[:, 0] * s + pts[:, 1] * c
    um, vm = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
    return share, OrientedBox(float(obox.cx + um * c - vm * s), float(obox.cy + um * s + vm * c),
                              float(u.max() - u.min()), float(v.max() - v.min()), obox.angle)


def _clip_box(box: Box, window: Box) -> tuple[float, Box]:
    """(share of the box's area inside the window, the box clipped to the window)."""
    clipped = Box(max(box.x1, window.x1), max(box.y1, window.y1),
                  min(box.x2, window.x2), min(box.y2, window.y2))
    if clipped.width <= 0 or clipped.height <= 0 or box.area <= 0:
        return 0.0, clipped
    return clipped.area / box.area, clipped


def tile_record(image: ImageRecord, window: Box) -> ImageRecord:
    """The ImageRecord of one tile: id `<image id>@<x1>_<y1>`, size of the window."""
    x1, y1 = int(window.x1), int(window.y1)
    meta = dict(image.metadata)
    meta["tile"] = {"image_id": image.id, "window": window.xyxy()}
    return ImageRecord(id=f"{image.id}@{x1}_{y1}", path=image.path,
                       width=int(round(window.width)), height=int(round(window.height)),
                       channels=image.channels, metadata=meta)


def tile_labels(labels: ImageLabels, window: Box, min_visible: float) -> ImageLabels:
    """One image's labels inside `window`, in tile coordinates (origin = window corner).

    An object is kept when its share inside the window is >= min_visible (oriented boxes:
    polygon area share); its box is clipped to the window. Ignore regions that reach into the
    window are clipped and kept whatever their share (ignoring too much is harmless; losing
    an ignore region turns a DontCare object into a false positive). Clicks outside the
    window are dropped.
    """
    if not 0 < min_visible <= 1:
        raise ValueError(f"min_visible must be in (0, 1], got {min_visible} "
                         "(fix tiling.min_visible in params.yaml)")
    dx, dy = -window.x1, -window.y1
    out = ImageLabels(tile_record(labels.image, window))
    for ann in labels.annotations:
        share, box = _clip_box(ann.box, window)
        obox = ann.obox
        if obox is not None:
            share, obox = _clip_obox(obox, window)
        if share + _EPS < min_visible or box.area <= 0:
            continue
        out.annotations.append(replace(ann, box=_shift_box(box, dx, dy),
                                       obox=_shift_obox(obox, dx, dy)))
    for region in labels.ignore:
        share, box = _clip_box(region.box, window)
        if share <= 0:
            continue
        obox = region.obox
        if obox is not None:
            obox_share, obox = _clip_obox(obox, window)
            if obox_share <= 0:
                continue
        out.ignore.append(IgnoreRegion(_shift_box(box, dx, dy), _shift_obox(obox, dx, dy),
                                       region.category))
    out.clicks = shift_clicks(labels.clicks, window)
    return out


def tile_label_set(labels: LabelSet, size: int, stride: int, min_visible: float,
                   keep_empty: bool = True) -> LabelSet:
    """Every window of every image as its own ImageLabels (training or evaluating on tiles).

    keep_empty=False drops tiles with no objects (background-only tiles; usually wanted in
    moderation only, so it is the caller's choice).
    """
    out = replace(labels, images=[])
    for item in labels.images:
        # outlines of all objects once, so each window only looks at the objects near it
        outlines = np.array([(a.obox.bounding_box() if a.obox is not None else a.box).xyxy()
                             for a in item.annotations], dtype=np.float64).reshape(-1, 4)
        for window in tile_windows(item.image.width, item.image.height, size, stride):
            near = np.nonzero(boxes_touch(outlines, np.array(window.xyxy())))[0]
            nearby = replace(item, annotations=[item.annotations[i] for i in near])
            tile = tile_labels(nearby, window, min_visible)
            if keep_empty or tile.annotations:
                out.images.append(tile)
    return out


def crop(image: np.ndarray, window: Box) -> np.ndarray:
    """The pixels of `window` from an array shaped (..., H, W) (e.g. (3, H, W) float32)."""
    x1, y1, x2, y2 = (int(round(v)) for v in window.xyxy())
    return image[..., y1:y2, x1:x2]


# --- merging tile predictions -----------------------------------------------------------

def _score(ann: Annotation) -> float:
    return 1.0 if ann.score is None else float(ann.score)


def _touches_inner_border(outline: Box, window: Box, extent: Box, tol: float) -> bool:
    """Does the box reach a window edge that lies inside the image (where a tile cut it)?"""
    return ((window.x1 > extent.x1 and outline.x1 <= window.x1 + tol) or
            (window.y1 > extent.y1 and outline.y1 <= window.y1 + tol) or
            (window.x2 < extent.x2 and outline.x2 >= window.x2 - tol) or
            (window.y2 < extent.y2 and outline.y2 >= window.y2 - tol))


def _inside_shares(cut: Sequence[Annotation], whole: Sequence[Annotation],
                   oriented: bool) -> np.ndarray:
    """(len(cut), len(whole)): share of each cut prediction's area inside each whole one."""
    if oriented:
        return polygon_share_inside([a.obox for a in cut], [a.obox for a in whole])
    return share_inside([a.box.xyxy() for a in cut], [a.box.xyxy() for a in whole])


def merge_predictions(per_tile: Sequence[tuple[Box, Sequence[Annotation]]],
                      iou: float = 0.5, cut_inside: float | None = 0.8,
                      border_px: float = 1.0) -> list[Annotation]:
    """Tile predictions -> image predictions, duplicates from overlapping tiles removed.

    per_tile: (window, predictions in that tile's coordinates) pairs. Predictions are shifted
    by the window's corner, then, per class:
    1. truncated copies go: a prediction that reaches (within border_px) a tile edge lying
       inside the image is a likely copy of an object that tile cut; it is dropped when at
       least `cut_inside` of its area lies inside a prediction no tile cut, whatever the
       scores. Plain NMS cannot do this: a copy cut in half has IoU 0.5 with the whole
       object (a smaller part even less), and a copy scoring higher would suppress the whole
       object instead. Objects larger than the tile overlap are cut in every tile and are
       left to NMS. cut_inside=None skips this step;
    2. greedy NMS: on oriented-box polygons when every prediction of that class has an
       oriented box, else on axis-aligned boxes (a prediction without a score counts as 1).
    Returns the kept predictions, by class then score.
    """
    windows = [w for w, _ in per_tile]
    if not windows:
        return []
    extent = Box(min(w.x1 for w in windows), min(w.y1 for w in windows),
                 max(w.x2 for w in windows), max(w.y2 for w in windows))
    by_class: dict[str, list[tuple[Annotation, bool]]] = defaultdict(list)
    for window, predictions in per_tile:
        for ann in predictions:
            moved = replace(ann, box=_shift_box(ann.box, window.x1, window.y1),
                            obox=_shift_obox(ann.obox, window.x1, window.y1))
            outline = moved.obox.bounding_box() if moved.obox is not None else moved.box
            by_class[ann.category].append(
                (moved, _touches_inner_border(outline, window, extent, border_px)))
    merged: list[Annotation] = []
    for category in sorted(by_class):
        entries = by_class[category]
        oriented = all(a.obox is not None for a, _ in entries)
        anns = [a for a, cut in entries if not cut]
        cut = [a for a, is_cut in entries if is_cut]
        if cut and anns and cut_inside is not None:
            copies = _inside_shares(cut, anns, oriented).max(axis=1) >= cut_inside
            cut = [a for a, copy in zip(cut, copies) if not copy]
        anns += cut
        scores = np.array([_score(a) for a in anns], dtype=np.float64)
        if oriented:
            keep = nms_polygons([a.obox for a in anns], scores, iou)
        else:
            keep = nms([a.box.xyxy() for a in anns], scores, iou)
        merged.extend(anns[i] for i in keep)
    return merged


def shift_clicks(clicks: Sequence[Click], window: Box) -> list[Click]:
    """Image-coordinate clicks inside `window` (border included: a click exactly on the
    image's right or bottom edge still reaches the last tile), in the window's coordinates."""
    return [replace(c, x=c.x - window.x1, y=c.y - window.y1) for c in clicks
            if window.x1 <= c.x <= window.x2 and window.y1 <= c.y <= window.y2]
