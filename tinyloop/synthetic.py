"""Deterministic synthetic images of tiny multi-class objects on textured backgrounds.

For fast tests and smoke runs of the whole loop: a detector learns these in minutes on a CPU,
and every label is exact. `make_synthetic(...)` returns a LabelSet and the pixels; with
`out_dir` it also writes `out_dir/images/syn_NNNNN.png` (8-bit grayscale) and
`out_dir/labels.json` (tinyloop's COCO file), which `tinyloop.ingest.import_dataset` reads
with `format: coco, labels: labels.json`.

How an image is made (all from `numpy.random.default_rng([seed, image_index])`, so image i
is the same whatever n_images is, and the same on every machine):
- background: smoothed noise, the sum of three octaves of random grids upsampled bilinearly
  (coarse blotches + medium texture + fine grain), mean grey in [0.3, 0.6];
- objects: each class has its own shape, drawn so it fills its box edge to edge (the label is
  the exact extent): disc, square, cross, ring, triangle, diamond, then the same six dark
  instead of bright for classes 7-12 (more classes than that are refused). Width and height
  each lie in `object_size` (inclusive, integer px), aspect within 3:4..4:3; objects
  never overlap each other or an ignore region and lie wholly inside the image;
- oriented=True: each object is drawn in a box turned by a random angle in [0, pi) and
  labelled with that OrientedBox (box = its axis-aligned bounding box); a turned square
  can then look like a diamond, so the angle is part of what a model must learn;
- ignore regions (optional, `ignore_per_image`): a striped patch of clutter, labelled as an
  IgnoreRegion "DontCare", the way HIT-UAV marks areas nobody could label;
- finally mild pixel noise, then quantisation to 8 bits (so the returned pixels are exactly
  what loading the written PNG gives).

Returned pixels follow `tinyloop.images.load_image`: float32 (3, H, W) in [0, 1].
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from tinyloop.annotations import (Annotation, Box, IgnoreRegion, ImageLabels, ImageRecord,
                                  LabelSet, OrientedBox)
from tinyloop.images import to_chw_float

SHAPES = ("disc", "square", "cross", "ring", "triangle", "diamond")
DEFAULT_CLASSES = ("disc", "square", "cross", "ring")
BRIGHT, DARK = 0.35, -0.28   # object intensity relative to the local background
_PLACEMENT_TRIES = 50        # per object, before giving up on a crowded image


def _shape_test(shape: str, uu: np.ndarray, vv: np.ndarray, w: float, h: float) -> np.ndarray:
    """Which points (uu, vv), in [-1, 1] box coordinates, lie in `shape`."""
    r = np.hypot(uu, vv)
    if shape == "disc":
        return r <= 1.0
    if shape == "square":
        return (np.abs(uu) <= 1.0) & (np.abs(vv) <= 1.0)
    if shape == "cross":
        return ((np.abs(uu) <= 0.34) | (np.abs(vv) <= 0.34)) & \
            (np.abs(uu) <= 1.0) & (np.abs(vv) <= 1.0)
    if shape == "ring":
        return (r <= 1.0) & (r >= 0.55)
    if shape == "triangle":   # apex up (towards -v)
        return (np.abs(uu) <= (vv + 1) / 2 + 1 / w) & (np.abs(vv) <= 1.0)
    if shape == "diamond":
        return np.abs(uu) + np.abs(vv) <= 1.0 + 1 / min(w, h)
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def shape_mask(shape: str, w: int, h: int) -> np.ndarray:
    """(h, w) bool mask of `shape` filling a w x h box edge to edge."""
    # pixel centres in [-1, 1] box coordinates
    u = (np.arange(w) + 0.5) / w * 2 - 1
    v = (np.arange(h) + 0.5) / h * 2 - 1
    m = np.broadcast_to(_shape_test(shape, u[None, :], v[:, None], w, h), (h, w)).copy()
    # the mask must reach every edge of the box, or the label would be loose (a disc's
    # edge pixels have their centres just outside the unit circle)
    for edge, middle in ((np.s_[:, 0], np.s_[h // 2, 0]), (np.s_[:, -1], np.s_[h // 2, -1]),
                         (np.s_[0, :], np.s_[0, w // 2]), (np.s_[-1, :], np.s_[-1, w // 2])):
        if not m[edge].any():
            m[middle] = True
    return m


def rotated_extent(w: float, h: float, angle: float) -> tuple[int, int]:
    """Whole-pixel (width, height) of the axis-aligned patch holding a rotated w x h box."""
    c, s = abs(math.cos(angle)), abs(math.sin(angle))
    return math.ceil(w * c + h * s - 1e-9), math.ceil(w * s + h * c - 1e-9)


def rotated_shape_mask(shape: str, w: int, h: int, angle: float) -> np.ndarray:
    """(H, W) bool mask of `shape` drawn in a w x h box turned by `angle` (radians,
    clockwise on screen, as OrientedBox), centred in its rotated_extent patch."""
    pw, ph = rotated_extent(w, h, angle)
    dx = (np.arange(pw) + 0.5 - pw / 2)[None, :]
    dy = (np.arange(ph) + 0.5 - ph / 2)[:, None]
    c, s = math.cos(angle), math.sin(angle)
    uu = (dx * c + dy * s) / (w / 2)        # inverse of OrientedBox.corners' rotation
    vv = (-dx * s + dy * c) / (h / 2)
    return _shape_test(shape, uu, vv, w, h)


def class_style(index: int) -> tuple[str, float]:
    """(shape, contrast) of class `index`: six shapes bright, then the same six dark."""
    if index >= 2 * len(SHAPES):
        raise ValueError(f"make_synthetic draws at most {2 * len(SHAPES)} distinguishable "
                         f"classes; got {index + 1}")
    return SHAPES[index % len(SHAPES)], (BRIGHT if index < len(SHAPES) else DARK)


def _upsample(grid: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(grid.astype(np.float32), mode="F")
                      .resize((width, height), Image.BILINEAR))


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    img = np.full((height, width), rng.uniform(0.3, 0.6), dtype=np.float32)
    for cell, amplitude in ((64, 0.12), (16, 0.06), (4, 0.03)):
        grid = rng.normal(0, amplitude, (max(height // cell, 1) + 2, max(width // cell, 1) + 2))
        img += _upsample(grid, width, height)
    return img


def _overlaps(box: Box, taken: list[Box], gap: float = 1.0) -> bool:
    return any(box.x1 < t.x2 + gap and t.x1 < box.x2 + gap and
               box.y1 < t.y2 + gap and t.y1 < box.y2 + gap for t in taken)


def _place(rng, w: int, h: int, width: int, height: int, taken: list[Box]) -> Box | None:
    for _ in range(_PLACEMENT_TRIES):
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        box = Box(x, y, x + w, y + h)
        if not _overlaps(box, taken):
            return box
    return None


def _draw_ignore(rng, img: np.ndarray, width: int, height: int,
                 taken: list[Box]) -> IgnoreRegion | None:
    w = int(rng.integers(max(width // 8, 8), max(width // 4, 9)))
    h = int(rng.integers(max(height // 8, 8), max(height // 4, 9)))
    if w > width or h > height:
        return None
    box = _place(rng, w, h, width, height, taken)
    if box is None:
        return None
    x1, y1, x2, y2 = (int(v) for v in box.xyxy())
    stripes = (np.add.outer(np.arange(y2 - y1), np.arange(x2 - x1)) // 3) % 2
    img[y1:y2, x1:x2] += (stripes * 0.2 - 0.1 + rng.normal(0, 0.05, stripes.shape))
    taken.append(box)
    return IgnoreRegion(box, category="DontCare")


def synthetic_image(index: int, seed: int, size: tuple[int, int], classes: Sequence[str],
                    objects_per_image: tuple[int, int], object_size: tuple[int, int],
                    ignore_per_image: int = 0,
                    oriented: bool = False) -> tuple[ImageLabels, np.ndarray]:
    """One image: (its labels, uint8 pixels (H, W)). See the module docstring."""
    width, height = size
    rng = np.random.default_rng([seed, index])
    img = _background(rng, width, height)
    taken: list[Box] = []
    image_id = f"syn_{index:05d}"
    item = ImageLabels(ImageRecord(image_id, f"images/{image_id}.png", width, height, 1,
                                   {"frame": index, "synthetic_seed": seed}))
    for _ in range(ignore_per_image):
        region = _draw_ignore(rng, img, width, height, taken)
        if region is not None:
            item.ignore.append(region)
    lo, hi = object_size
    for _ in range(int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))):
        k = int(rng.integers(len(classes)))
        w = int(rng.integers(lo, hi + 1))   # aspect kept within 3:4..4:3 so shapes stay legible
        h = int(np.clip(round(w * rng.uniform(0.75, 4 / 3)), lo, hi))
        angle = float(rng.uniform(0, math.pi)) if oriented else 0.0
        pw, ph = rotated_extent(w, h, angle) if oriented else (w, h)
        box = _place(rng, pw, ph, width, height, taken)
        if box is None:
            continue          # image too crowded for another object: fewer objects, no error
        taken.append(box)
        shape, contrast = class_style(k)
        x1, y1 = int(box.x1), int(box.y1)
        patch = img[y1:y1 + ph, x1:x1 + pw]
        mask = rotated_shape_mask(shape, w, h, angle) if oriented else shape_mask(shape, w, h)
        patch[mask] += contrast * rng.uniform(0.85, 1.15)
        if oriented:
            obox = OrientedBox(x1 + pw / 2, y1 + ph / 2, float(w), float(h), angle)
            item.annotations.append(Annotation(classes[k], obox.bounding_box(), obox))
        else:
            item.annotations.append(Annotation(classes[k], box))
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(0.015)
    return item, (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _check(n_images, size, classes, objects_per_image, object_size, oriented) -> None:
    width, height = size
    lo, hi = object_size
    if oriented and math.ceil(hi * math.sqrt(2)) > min(width, height):
        raise ValueError(f"object_size {object_size}: a rotated {hi} px box needs "
                         f"{math.ceil(hi * math.sqrt(2))} px; the image's shorter side is "
                         f"{min(width, height)}")
    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    if not classes:
        raise ValueError("classes: at least one class name is needed")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must be distinct, got {list(classes)}")
    class_style(len(classes) - 1)
    if not 1 <= lo <= hi or hi > min(width, height):
        raise ValueError(f"object_size {object_size} must satisfy 1 <= lo <= hi <= "
                         f"the image's shorter side ({min(width, height)})")
    if not 0 <= objects_per_image[0] <= objects_per_image[1]:
        raise ValueError(f"objects_per_image {objects_per_image} must satisfy 0 <= lo <= hi")


def make_synthetic(n_images: int, size: tuple[int, int] = (256, 256),
                   classes: Sequence[str] = DEFAULT_CLASSES,
                   objects_per_image: tuple[int, int] = (5, 15),
                   object_size: tuple[int, int] = (10, 30), seed: int = 0,
                   out_dir: str | os.PathLike | None = None,
                   ignore_per_image: int = 0,
                   oriented: bool = False) -> tuple[LabelSet, list[np.ndarray]]:
    """n_images synthetic images -> (LabelSet, pixels as float32 (3, H, W) in [0, 1]).

    size is (width, height); object_size bounds each object's width and height (of its
    oriented box when oriented=True). With out_dir: PNGs in out_dir/images/ and
    out_dir/labels.json. An image too crowded for all its objects gets fewer (never
    overlapping ones).
    """
    classes = list(classes)
    _check(n_images, size, classes, objects_per_image, object_size, oriented)
    labels = LabelSet(classes, info={"description": "tinyloop synthetic data",
                                     "seed": seed})
    pixels: list[np.ndarray] = []
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        (out / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        item, gray = synthetic_image(i, seed, size, classes, objects_per_image, object_size,
                                     ignore_per_image, oriented)
        labels.images.append(item)
        if out is not None:
            Image.fromarray(gray, mode="L").save(out / item.image.path, compress_level=1)
        pixels.append(to_chw_float(Image.fromarray(gray, mode="L")))
    if out is not None:
        from tinyloop.cocofile import write_labels
        write_labels(labels, out / "labels.json")
    return labels, pixels
