"""Polygon geometry of tinyloop.boxes (oriented boxes) on hand-made shapes with known areas."""
import math

import numpy as np
import pytest
from shapely.geometry import Polygon, box as shapely_box

from tinyloop.annotations import Box, OrientedBox
from tinyloop.boxes import (as_polygons, iou_matrix, nms, nms_polygons, oriented_corners,
                            polygon_iou_matrix, polygon_share_inside,
                            polygons_in_ignore_regions)

SQUARE = OrientedBox(0, 0, 2, 2, 0.0)                 # side 2 around the origin, area 4
DIAMOND = OrientedBox(0, 0, 2, 2, math.pi / 4)        # the same square turned by 45 degrees


def test_square_against_itself_turned_45_degrees():
    """The overlap is a regular octagon: the square less four corner triangles with legs
    2 - sqrt(2), so inter = 4 - 2 (2 - sqrt 2)^2 = 8 sqrt 2 - 8, union = 8 - inter and
    IoU = (sqrt 2 - 1) / (2 - sqrt 2) = 1 / sqrt 2."""
    iou = polygon_iou_matrix([SQUARE], [DIAMOND])
    assert iou.shape == (1, 1)
    assert iou[0, 0] == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    # the axis-aligned outline of the diamond is larger: box IoU is 4 / 8
    assert iou_matrix([SQUARE.bounding_box().xyxy()],
                      [DIAMOND.bounding_box().xyxy()])[0, 0] == pytest.approx(0.5)


def test_identical_disjoint_and_contained():
    big = OrientedBox(10, 10, 4, 4, 0.3)
    small = OrientedBox(10, 10, 2, 2, 1.1)             # turned, still inside big (radius 1.41)
    far = OrientedBox(30, 10, 4, 4, 0.3)
    iou = polygon_iou_matrix([big, small], [big, small, far])
    assert iou == pytest.approx(np.array([[1.0, 0.25, 0.0], [0.25, 1.0, 0.0]]), abs=1e-12)


def test_polygons_whose_outlines_touch_but_shapes_do_not():
    """Two thin boxes along the diagonal, 8 px apart side by side: their axis-aligned
    outlines overlap by half, the boxes themselves not at all."""
    a, b = _parallel_diagonal_pair(gap=8.0)
    assert polygon_iou_matrix([a], [b])[0, 0] == 0.0
    assert a.bounding_box().iou(b.bounding_box()) > 0.5


def test_mixed_inputs_and_empty_sides():
    polys = as_polygons([SQUARE, Box(-1, -1, 1, 1), shapely_box(-1, -1, 1, 1)])
    assert all(p.equals(SQUARE.polygon()) for p in polys)
    assert polygon_iou_matrix([], [SQUARE]).shape == (0, 1)
    assert polygon_iou_matrix([SQUARE], []).shape == (1, 0)
    flat = Box(3, 3, 3, 9)                             # no area: IoU 0 even with itself
    assert polygon_iou_matrix([flat], [flat])[0, 0] == 0.0


def test_vectorised_corners_are_the_oriented_box_corners():
    boxes = [OrientedBox(12.5, -3, 7, 2.5, a) for a in (-2.0, 0.0, 0.4, math.pi / 2)]
    corners = oriented_corners([b.as_list() for b in boxes])
    assert corners.shape == (4, 4, 2)
    assert corners.tolist() == [[list(c) for c in b.corners()] for b in boxes]


def test_prefiltered_matrix_equals_brute_force_on_many_boxes():
    rng = np.random.default_rng(0)
    boxes = [OrientedBox(*rng.uniform(0, 300, 2), *rng.uniform(4, 40, 2),
                         rng.uniform(-math.pi, math.pi)) for _ in range(300)]
    fast = polygon_iou_matrix(boxes[:150], boxes[150:])
    polys = [b.polygon() for b in boxes]
    slow = np.array([[p.intersection(q).area / p.union(q).area for q in polys[150:]]
                     for p in polys[:150]])
    assert fast == pytest.approx(slow, abs=1e-9)
    assert 0 < (fast > 0).sum() < fast.size / 10       # most pairs were skipped as far apart


def test_share_inside_and_ignore_rule_on_polygons():
    region = OrientedBox(0, 0, 10, 10, 0.0)
    inside = OrientedBox(0, 0, 4, 1, 0.7)
    half_out = OrientedBox(5, 0, 4, 4, 0.0)                  # exactly half inside
    mostly_out = OrientedBox(6, 0, 4, 4, 0.0)                # a quarter inside
    shares = polygon_share_inside([inside, half_out, mostly_out], [region])
    assert shares[:, 0] == pytest.approx([1.0, 0.5, 0.25])
    assert polygons_in_ignore_regions([inside, half_out, mostly_out],
                                      [region]).tolist() == [True, True, False]
    assert polygons_in_ignore_regions([inside], []).tolist() == [False]


def _parallel_diagonal_pair(gap: float, length=40.0, width=6.0):
    """Two length x width boxes at 45 degrees, centres `gap` px apart across their width."""
    angle = math.pi / 4
    nx, ny = -math.sin(angle), math.cos(angle)         # the boxes' short axis
    return (OrientedBox(50, 50, length, width, angle),
            OrientedBox(50 + gap * nx, 50 + gap * ny, length, width, angle))


def test_polygon_nms_keeps_neighbours_that_box_nms_would_merge():
    a, b = _parallel_diagonal_pair(gap=8.0)                         # side by side, 2 px apart
    dup = OrientedBox(a.cx + 1, a.cy, a.w, a.h, a.angle + math.radians(2))  # a, nudged
    boxes, scores = [a, b, dup], [0.9, 0.8, 0.95]
    assert polygon_iou_matrix([dup], [a])[0, 0] > 0.5
    assert nms_polygons(boxes, scores, 0.3).tolist() == [2, 1]     # dup beats a; b stays
    outlines = [o.bounding_box().xyxy() for o in boxes]
    assert nms(outlines, scores, 0.3).tolist() == [2]               # box NMS loses b as well


def test_polygon_nms_ties_threshold_classes_and_empty():
    whole = OrientedBox(0, 0, 20, 10, 0.5)
    half = OrientedBox(-5 * math.cos(0.5), -5 * math.sin(0.5), 10, 10, 0.5)  # IoU 0.5
    assert polygon_iou_matrix([whole], [half])[0, 0] == pytest.approx(0.5)
    assert nms_polygons([half, whole], [0.7, 0.7], 0.5).tolist() == [1, 0]  # at threshold
    assert nms_polygons([half, whole], [0.7, 0.7], 0.4).tolist() == [1]     # larger wins tie
    assert nms_polygons([whole] * 3, [0.3] * 3, 0.5).tolist() == [0]        # lower index
    assert nms_polygons([half, whole], [0.7, 0.7], 0.4, classes=[0, 1]).tolist() == [1, 0]
    assert nms_polygons([], [], 0.5).tolist() == []
    assert nms_polygons([Polygon([(0, 0), (4, 0), (4, 4)])], [0.1], 0.5).tolist() == [0]
