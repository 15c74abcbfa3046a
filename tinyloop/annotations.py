"""The one annotation data model shared by c3det, features and flows.

Everything is in pixel coordinates of the original image, origin at the top-left corner of
the top-left pixel, x to the right, y down. Nothing here imports torch, FiftyOne, Prefect or
DVC: this module is the contract between the packages, and it stays light.

- `Box`           axis-aligned box (x1, y1, x2, y2), x2 > x1, y2 > y1.
- `OrientedBox`   rotated box (cx, cy, w, h, angle); angle in radians, positive angles turn
                  the box clockwise on screen (y points down), as in roLabelImg.
- `Provenance`    who made a box: a human, the model, the model refined by clicks, a simulator,
                  or an annotator's centre click turned into a box from the image
                  (`click_box`; `edited`: the produced box had to be moved).
- `Annotation`    one object: class name, box, optional oriented box, provenance, and the
                  source's own four corner points (`polygon`, DOTA / YOLO-OBB) so an export
                  to those formats writes back exactly what was read.
- `IgnoreRegion`  an area where detections count neither as true nor as false positives.
- `Click`         an annotator's class-labelled point, with the round it was made in.
- `ImageRecord`   one image file: stable string id, path relative to the dataset root, size.
- `ImageLabels`   an image with its annotations, ignore regions and clicks.
- `LabelSet`      the classes and every image's labels: what one labels file holds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Literal

Source = Literal["human", "model", "click_refined", "simulated", "click_box"]
SOURCES: tuple[str, ...] = ("human", "model", "click_refined", "simulated", "click_box")


class AnnotationError(ValueError):
    """A label that cannot be right (zero area, outside the image, unknown class...)."""


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float

    @classmethod
    def from_xywh(cls, x: float, y: float, w: float, h: float) -> "Box":
        return cls(x, y, x + w, y + h)

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x1 + self.x2) / 2, (self.y1 + self.y2) / 2

    @property
    def size(self) -> float:
        """sqrt(w*h): the object size used for the < 12 / 12-20 / 20-32 / > 32 px buckets."""
        return math.sqrt(self.area)

    def xywh(self) -> list[float]:
        return [self.x1, self.y1, self.width, self.height]

    def xyxy(self) -> list[float]:
        return [self.x1, self.y1, self.x2, self.y2]

    def contains(self, x: float, y: float) -> bool:
        return self.x1 <= x <= self.x2 and self.y1 <= y <= self.y2

    def iou(self, other: "Box") -> float:
        iw = min(self.x2, other.x2) - max(self.x1, other.x1)
        ih = min(self.y2, other.y2) - max(self.y1, other.y1)
        if iw <= 0 or ih <= 0:
            return 0.0
        inter = iw * ih
        return inter / (self.area + other.area - inter)

    def clip(self, width: float, height: float) -> "Box":
        return Box(min(max(self.x1, 0), width), min(max(self.y1, 0), height),
                   min(max(self.x2, 0), width), min(max(self.y2, 0), height))

    def problem(self, width: float, height: float, tolerance: float = 1.0) -> str | None:
        """Why this box cannot be a label on a width x height image, or None when it can.

        `tolerance` pixels of overhang are accepted (annotation tools round outwards).
        """
        defect = self.defect(width, height, tolerance)
        return f"box {self.xyxy()} {defect}" if defect else None

    def defect(self, width: float, height: float, tolerance: float = 1.0) -> str | None:
        """`problem` without the coordinates, for messages that quote the box as its
        source file writes it (COCO's [x, y, w, h])."""
        if not all(math.isfinite(v) for v in self.xyxy()):
            return "has a non-finite coordinate"
        if self.width <= 0 or self.height <= 0:
            return "has zero or negative area"
        if (self.x1 < -tolerance or self.y1 < -tolerance or self.x2 > width + tolerance
                or self.y2 > height + tolerance):
            return f"lies outside the {width:g}x{height:g} image"
        return None


@dataclass(frozen=True)
class OrientedBox:
    cx: float
    cy: float
    w: float
    h: float
    angle: float  # radians, clockwise on screen (y down), as roLabelImg writes it

    def corners(self) -> list[tuple[float, float]]:
        """The four corners, in order around the box (DOTA's x1 y1 ... x4 y4)."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        half = [(-self.w / 2, -self.h / 2), (self.w / 2, -self.h / 2),
                (self.w / 2, self.h / 2), (-self.w / 2, self.h / 2)]
        return [(self.cx + dx * c - dy * s, self.cy + dx * s + dy * c) for dx, dy in half]

    def polygon(self):
        """The box as a shapely Polygon (shapely is imported here only, on demand)."""
        from shapely.geometry import Polygon
        return Polygon(self.corners())

    def bounding_box(self) -> Box:
        xs, ys = zip(*self.corners())
        return Box(min(xs), min(ys), max(xs), max(ys))

    def as_list(self) -> list[float]:
        return [self.cx, self.cy, self.w, self.h, self.angle]

    @classmethod
    def from_corners(cls, pts: list[tuple[float, float]]) -> "OrientedBox":
        """The minimum-area rotated rectangle around four points (DOTA polygons).

        Raises AnnotationError when the points enclose no area (collinear or repeated):
        shapely then returns a line or a point, which has no rectangle.
        """
        from shapely.geometry import MultiPoint
        rect = MultiPoint(pts).minimum_rotated_rectangle
        if rect.geom_type != "Polygon" or rect.area <= 0:
            raise AnnotationError(f"the {len(pts)} points are collinear or repeated "
                                  "(zero area)")
        (x0, y0), (x1, y1), (x2, y2) = list(rect.exterior.coords)[:3]
        w, h = math.hypot(x1 - x0, y1 - y0), math.hypot(x2 - x1, y2 - y1)
        return cls(rect.centroid.x, rect.centroid.y, w, h, math.atan2(y1 - y0, x1 - x0))


@dataclass(frozen=True)
class Provenance:
    source: Source = "human"
    model_version: str | None = None
    score: float | None = None
    edited: bool = False  # a human touched a model-made box: never overwrite it again

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source}
        if self.model_version is not None:
            out["model_version"] = self.model_version
        if self.score is not None:
            out["score"] = self.score
        if self.edited:
            out["edited"] = True
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> "Provenance":
        d = d or {}
        if d.get("source", "human") not in SOURCES:
            raise AnnotationError(f"unknown provenance source {d.get('source')!r}; "
                                  f"expected one of {', '.join(SOURCES)}")
        return cls(d.get("source", "human"), d.get("model_version"), d.get("score"),
                   bool(d.get("edited", False)))


HUMAN = Provenance("human")

Corners = tuple[tuple[float, float], ...]  # a source polygon's points, as written

# How far (pixels) a source polygon may stray from its boxes and still count as theirs:
# far above float noise from shapely, far below any real edit or tile shift.
POLYGON_TOLERANCE = 1e-3


def polygon_fits(polygon: Corners, box: Box, obox: OrientedBox | None,
                 tolerance: float = POLYGON_TOLERANCE) -> bool:
    """Whether `polygon` still describes the object whose boxes are `box` / `obox`.

    `replace(ann, box=..., obox=...)` (tiling, clipping, simulated corrections) carries the
    polygon along unchanged, so writers check it first. With an oriented box, the polygon
    must lie inside it and touch all four sides (a minimum-area rectangle touches its
    points on every side); without one, its bounding box must be `box`.
    """
    if obox is None:
        xs, ys = zip(*polygon)
        return all(abs(a - b) <= tolerance for a, b in
                   zip((min(xs), min(ys), max(xs), max(ys)), box.xyxy()))
    c, s = math.cos(obox.angle), math.sin(obox.angle)
    local = [((x - obox.cx) * c + (y - obox.cy) * s, -(x - obox.cx) * s + (y - obox.cy) * c)
             for x, y in polygon]          # points in the box's own frame, centre at 0
    hw, hh = obox.w / 2, obox.h / 2
    if any(abs(u) > hw + tolerance or abs(v) > hh + tolerance for u, v in local):
        return False
    gaps = (min(hw - u for u, _ in local), min(hw + u for u, _ in local),
            min(hh - v for _, v in local), min(hh + v for _, v in local))
    return all(gap <= tolerance for gap in gaps)   # some point on each of the 4 sides


def outline(box: Box, obox: OrientedBox | None,
            polygon: Corners | None) -> list[tuple[float, float]]:
    """Four corner points to write: the source polygon while it fits, else the oriented
    box's corners, else the axis-aligned box's corners (clockwise on screen)."""
    if polygon is not None and polygon_fits(polygon, box, obox):
        return list(polygon)
    if obox is not None:
        return obox.corners()
    return [(box.x1, box.y1), (box.x2, box.y1), (box.x2, box.y2), (box.x1, box.y2)]


@dataclass(frozen=True)
class Annotation:
    category: str
    box: Box
    obox: OrientedBox | None = None
    provenance: Provenance = HUMAN
    difficult: bool = False
    id: str | None = None  # stable across pulls: lets diffs follow one box through edits
    # the source's four corners (DOTA, YOLO-OBB), pixels, as written; not part of equality
    # (it restates obox, and code that rebuilds annotations without it must still compare
    # equal); kept by writers only while it fits box / obox (see `polygon_fits`)
    polygon: Corners | None = field(default=None, compare=False)

    @property
    def score(self) -> float | None:
        return self.provenance.score

    def outline(self) -> list[tuple[float, float]]:
        return outline(self.box, self.obox, self.polygon)


@dataclass(frozen=True)
class IgnoreRegion:
    box: Box
    obox: OrientedBox | None = None
    category: str = "DontCare"  # the name it had in the source labels
    polygon: Corners | None = field(default=None, compare=False)  # as on Annotation

    def outline(self) -> list[tuple[float, float]]:
        return outline(self.box, self.obox, self.polygon)


@dataclass(frozen=True)
class Click:
    x: float
    y: float
    category: str
    round: int = 1
    source: Source = "human"


@dataclass(frozen=True)
class ImageRecord:
    id: str                 # stable, unique within a project (HIT-UAV: the file stem)
    path: str               # relative to the dataset root, '/'-separated
    width: int
    height: int
    channels: int = 3
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class ImageLabels:
    image: ImageRecord
    annotations: list[Annotation] = field(default_factory=list)
    ignore: list[IgnoreRegion] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.image.id


@dataclass
class LabelSet:
    """Classes plus labels per image; the in-memory form of one COCO-style labels file."""
    categories: list[str]
    images: list[ImageLabels] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[ImageLabels]:
        return iter(self.images)

    def __len__(self) -> int:
        return len(self.images)

    def by_id(self) -> dict[str, ImageLabels]:
        return {im.id: im for im in self.images}

    def category_index(self, name: str) -> int:
        """0-based index of a class; raises a clear error for an unknown class."""
        try:
            return self.categories.index(name)
        except ValueError:
            raise AnnotationError(f"unknown class {name!r}; known classes: "
                                  f"{', '.join(self.categories)}") from None

    def class_counts(self) -> dict[str, int]:
        counts = {c: 0 for c in self.categories}
        for im in self.images:
            for a in im.annotations:
                counts[a.category] = counts.get(a.category, 0) + 1
        return counts

    def subset(self, ids: list[str] | set[str]) -> "LabelSet":
        keep = set(ids)
        return replace(self, images=[im for im in self.images if im.id in keep])
