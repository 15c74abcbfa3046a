"""Tiling: the window grid, labels cut by tile borders, merging tile predictions back."""
import math
from dataclasses import replace

import numpy as np
import pytest
from shapely.geometry import box as shapely_box

from tinyloop.annotations import (Annotation, Box, Click, IgnoreRegion, ImageLabels,
                                  ImageRecord, LabelSet, OrientedBox, Provenance)
from tinyloop.boxes import iou_matrix, nms
from tinyloop.tiling import (crop, merge_predictions, tile_label_set, tile_labels,
                             tile_windows)


def _image(w=200, h=100, anns=(), ignore=(), clicks=()):
    return ImageLabels(ImageRecord("img", "images/img.jpg", w, h, 1), list(anns),
                       list(ignore), list(clicks))


def _pred(cat, box, score, obox=None):
    return Annotation(cat, box, obox, Provenance("model", "m1", score))


@pytest.mark.parametrize("w,h,size,stride", [(640, 512, 256, 200), (1000, 300, 256, 256),
                                              (257, 256, 256, 128), (4000, 3000, 1024, 512),
                                              (800, 800, 800, 650)])
def test_windows_cover_every_pixel_and_stay_inside(w, h, size, stride):
    windows = tile_windows(w, h, size, stride)
    covered = np.zeros((h, w), dtype=bool)
    for win in windows:
        assert 0 <= win.x1 < win.x2 <= w and 0 <= win.y1 < win.y2 <= h
        assert win.width == min(size, w) and win.height == min(size, h)
        covered[int(win.y1):int(win.y2), int(win.x1):int(win.x2)] = True
    assert covered.all()
    # the last window of a row/column is flush with the border
    assert max(win.x2 for win in windows) == w and max(win.y2 for win in windows) == h
    assert len({tuple(win.xyxy()) for win in windows}) == len(windows)


def test_window_offsets_follow_stride():
    xs = sorted({win.x1 for win in tile_windows(1000, 100, 400, 300)})
    assert xs == [0, 300, 600]           # 600 + 400 = 1000 exactly: no extra window
    xs = sorted({win.x1 for win in tile_windows(1100, 100, 400, 300)})
    assert xs == [0, 300, 600, 700]      # last one moved back to end at 1100


def test_small_image_is_one_window():
    assert tile_windows(300, 200, 1024, 512) == [Box(0, 0, 300, 200)]


def test_bad_tiling_params_are_named():
    with pytest.raises(ValueError, match="stride"):
        tile_windows(100, 100, 64, 128)
    with pytest.raises(ValueError, match="min_visible"):
        tile_labels(_image(), Box(0, 0, 50, 50), 0)


@pytest.mark.parametrize("inside,min_visible,kept", [(0.6, 0.5, True), (0.5, 0.5, True),
                                                     (0.4, 0.5, False), (0.5, 0.51, False),
                                                     (1.0, 1.0, True), (0.9, 1.0, False)])
def test_object_cut_by_border_kept_around_threshold(inside, min_visible, kept):
    # window [0, 100) x [0, 100); a 20x10 box straddling x = 100 with `inside` of it inside
    x1 = 100 - 20 * inside
    item = _image(anns=[Annotation("Car", Box(x1, 40, x1 + 20, 50))])
    tile = tile_labels(item, Box(0, 0, 100, 100), min_visible)
    assert len(tile.annotations) == int(kept)
    if kept:
        assert tile.annotations[0].box == Box(x1, 40, min(x1 + 20, 100), 50)


def test_labels_shift_into_tile_coordinates():
    item = _image(anns=[Annotation("Person", Box(110, 20, 120, 40)),
                        Annotation("Car", Box(10, 10, 30, 20))],
                  ignore=[IgnoreRegion(Box(90, 0, 130, 10))],
                  clicks=[Click(115, 30, "Person", 2), Click(20, 15, "Car")])
    tile = tile_labels(item, Box(100, 0, 200, 100), 0.5)
    assert [a.box for a in tile.annotations] == [Box(10, 20, 20, 40)]
    assert [r.box for r in tile.ignore] == [Box(0, 0, 30, 10)]   # clipped, kept
    assert tile.clicks == [Click(15, 30, "Person", 2)]
    assert (tile.image.width, tile.image.height) == (100, 100)
    assert tile.image.id == "img@100_0"
    assert tile.image.metadata["tile"] == {"image_id": "img", "window": [100, 0, 200, 100]}
    assert tile.image.path == item.image.path


def test_oriented_box_uses_polygon_area():
    # a 20x20 square turned 45 degrees (a diamond, half-diagonal r) whose tip pokes r/2 into
    # the window: its axis-aligned box is 25% inside, the diamond itself only 12.5%
    r = 10 * math.sqrt(2)
    obox = OrientedBox(100 + r / 2, 50, 20, 20, math.pi / 4)
    ann = _oriented_car(obox)
    assert tile_labels(_image(anns=[ann]), Box(0, 0, 100, 100), 0.2).annotations == []
    assert len(tile_labels(_image(anns=[ann]), Box(0, 0, 100, 100), 0.1).annotations) == 1


def test_cut_oriented_box_keeps_angle_and_covers_inside_part():
    obox = OrientedBox(100, 50, 40, 10, 0.2)       # long axis crosses the border x = 100
    tile = tile_labels(_image(anns=[_oriented_car(obox)]), Box(0, 0, 100, 100), 0.4)
    cut = tile.annotations[0].obox
    assert cut.angle == obox.angle and cut.h == pytest.approx(10)
    assert cut.w == pytest.approx(20 + 5 * math.tan(0.2))
    inside = obox.polygon().intersection(shapely_box(0, 0, 100, 100))
    assert inside.difference(cut.polygon()).area == pytest.approx(0, abs=1e-6)
    assert tile.annotations[0].box.x2 == 100                     # axis box clipped too
    whole = tile_labels(_image(anns=[_oriented_car(OrientedBox(50, 50, 20, 10, 0.3))]),
                        Box(0, 0, 100, 100), 0.5)
    assert whole.annotations[0].obox == OrientedBox(50, 50, 20, 10, 0.3)   # untouched


def _oriented_car(obox):
    return Annotation("Car", obox.bounding_box(), obox)


def test_duplicate_from_overlapping_tiles_merges_to_one():
    windows = tile_windows(300, 100, 200, 100)       # x in [0, 200) and [100, 300)
    assert [w.x1 for w in windows] == [0, 100]
    # one object at image x 140..160 seen by both tiles, plus one object each tile alone sees
    per_tile = [(windows[0], [_pred("Car", Box(140, 40, 160, 60), 0.9),
                              _pred("Car", Box(10, 10, 20, 20), 0.8)]),
                (windows[1], [_pred("Car", Box(41, 41, 61, 61), 0.7),
                              _pred("Person", Box(40, 40, 60, 60), 0.6),
                              _pred("Car", Box(180, 10, 190, 20), 0.5)])]
    merged = merge_predictions(per_tile, iou=0.5)
    cars = sorted((a.box.xyxy(), a.score) for a in merged if a.category == "Car")
    assert cars == [([10, 10, 20, 20], 0.8), ([140, 40, 160, 60], 0.9),
                    ([280, 10, 290, 20], 0.5)]
    # NMS is class-wise: the Person box on the same spot survives
    assert [a.box for a in merged if a.category == "Person"] == [Box(140, 40, 160, 60)]
    assert all(a.provenance.model_version == "m1" for a in merged)


def test_polygon_nms_on_rotated_boxes():
    a = OrientedBox(50, 50, 40, 10, math.radians(30))
    b = OrientedBox(51, 50, 40, 10, math.radians(33))   # nearly the same box
    c = OrientedBox(50, 50, 40, 10, math.radians(120))  # crosses a: small polygon overlap
    preds = [_pred("Car", o.bounding_box(), s, o) for o, s in ((a, 0.9), (b, 0.8), (c, 0.7))]
    merged = merge_predictions([(Box(0, 0, 100, 100), preds)], iou=0.5)
    assert [m.obox for m in merged] == [a, c]
    # their axis-aligned boxes overlap a lot, so box NMS would have wrongly merged a and c
    assert a.bounding_box().iou(c.bounding_box()) > 0.5
    assert a.polygon().intersection(c.polygon()).area / a.polygon().union(c.polygon()).area \
        < 0.5


def test_oriented_duplicates_across_two_tiles_merge_by_polygon_nms():
    """Two thin diagonal objects side by side (2 px apart) in the overlap of two tiles, each
    seen by both tiles (angles and scores differ a little): one copy of each comes back.
    Their axis-aligned outlines overlap by half, so box NMS would have lost one object."""
    import tinyloop.boxes
    import tinyloop.tiling
    assert tinyloop.tiling.nms_polygons is tinyloop.boxes.nms_polygons   # one implementation
    windows = tile_windows(300, 100, 200, 100)       # x in [0, 200) and [100, 300)
    d = 8 / math.sqrt(2)                             # 8 px across the 45 degree axis
    first = OrientedBox(150, 50, 40, 6, math.pi / 4)
    second = OrientedBox(150 - d, 50 + d, 40, 6, math.pi / 4)
    assert first.bounding_box().iou(second.bounding_box()) > 0.5
    assert first.polygon().intersection(second.polygon()).area == 0

    def seen(obox, window, score, turn=0.0):         # a tile's prediction, tile coordinates
        local = OrientedBox(obox.cx - window.x1, obox.cy - window.y1, obox.w, obox.h,
                            obox.angle + turn)
        return _pred("Car", local.bounding_box(), score, local)

    per_tile = [(windows[0], [seen(first, windows[0], 0.9), seen(second, windows[0], 0.6)]),
                (windows[1], [seen(first, windows[1], 0.8, 0.03),
                              seen(second, windows[1], 0.7, -0.03)])]
    merged = merge_predictions(per_tile, iou=0.5)
    assert [(m.score, m.obox) for m in merged] == [
        (0.9, first), (0.7, replace(second, angle=second.angle - 0.03))]
    box_only = [(w, [replace(a, obox=None) for a in preds]) for w, preds in per_tile]
    assert len(merge_predictions(box_only, iou=0.5)) == 1   # what axis-aligned NMS does


def test_merge_shifts_oriented_boxes():
    o = OrientedBox(10, 20, 8, 4, 0.5)
    merged = merge_predictions([(Box(100, 200, 300, 400), [_pred("Car", o.bounding_box(),
                                                                 0.5, o)])])
    assert merged[0].obox == OrientedBox(110, 220, 8, 4, 0.5)


def test_nms_boxes_keeps_best_first():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], dtype=float)
    assert nms(boxes, np.array([0.5, 0.9, 0.1]), 0.5).tolist() == [1, 2]


def test_nms_ties_threshold_classes_and_empty_boxes():
    """The cases where a library NMS may differ from the greedy rule: equal scores (the
    larger box first, then the lower index), IoU exactly at the threshold (kept), classes
    apart, boxes without area (never suppress or get suppressed)."""
    cut, whole = [0, 0, 10, 10], [0, 0, 20, 10]           # IoU 0.5
    assert nms([cut, whole], [0.7, 0.7], 0.5).tolist() == [1, 0]   # at the threshold: kept
    assert nms([cut, whole], [0.7, 0.7], 0.4).tolist() == [1]      # the whole one wins the tie
    assert nms([whole, whole, whole], [0.3] * 3, 0.5).tolist() == [0]
    assert nms([cut, whole], [0.7, 0.7], 0.4, classes=[0, 1]).tolist() == [1, 0]
    flat = [5, 5, 5, 8]
    assert nms([flat, flat, whole], [0.9, 0.8, 0.1], 0.0).tolist() == [0, 1, 2]
    assert nms(np.zeros((0, 4)), [], 0.5).tolist() == []


def test_iou_matrix_matches_the_pairwise_box_iou():
    a = [Box(0, 0, 10, 10), Box(5, 5, 15, 25), Box(3, 3, 3, 9)]
    b = [Box(1, 1, 9, 12), Box(20, 20, 30, 30), Box(3, 3, 3, 9)]
    m = iou_matrix([x.xyxy() for x in a], [y.xyxy() for y in b])
    assert m.tolist() == [[x.iou(y) for y in b] for x in a]   # exactly, zero-area included
    assert iou_matrix([], [[0, 0, 1, 1]]).shape == (0, 1)


def test_tile_then_merge_round_trip_on_label_set():
    anns = [Annotation("Car", Box(x, y, x + 12, y + 12), provenance=Provenance("model",
                                                                              score=0.9))
            for x, y in [(5, 5), (95, 40), (190, 180), (290, 90)]]
    labels = LabelSet(["Car"], [_image(320, 200, anns)])
    tiles = tile_label_set(labels, 128, 96, 0.5, keep_empty=False)
    assert all(t.annotations for t in tiles)
    per_tile = [(Box(*t.image.metadata["tile"]["window"]), t.annotations) for t in tiles]
    merged = merge_predictions(per_tile, iou=0.3)
    # every object comes back once (a cut-off duplicate overlaps its whole self by >= 0.5)
    assert sorted(a.box.xyxy() for a in merged) == sorted(a.box.xyxy() for a in anns)


def test_crop_takes_window_pixels():
    image = np.arange(3 * 10 * 20, dtype=np.float32).reshape(3, 10, 20)
    part = crop(image, Box(5, 2, 15, 8))
    assert part.shape == (3, 6, 10)
    assert part[0, 0, 0] == image[0, 2, 5]


@pytest.mark.parametrize("oriented", [False, True])
def test_tile_and_merge_back_real_hituav_sample(oriented):
    """Cut the bundled HIT-UAV sample into 256 px tiles every 192 px and merge the tiles'
    labels back as if they were predictions: every object that fits in the tile overlap
    (< 64 px) is fully inside some tile, so each must come back exactly once, unclipped."""
    from pathlib import Path

    from tinyloop.config import DataParams
    from tinyloop.ingest import import_dataset
    root = Path(__file__).resolve().parents[1] / "data" / "sample" / "hit-uav"
    labels, report = import_dataset(root, DataParams(verify_images="header"), progress=False)
    assert report.problems == []

    def fits(a):
        outline = a.obox.bounding_box() if a.obox is not None else a.box
        return max(outline.width, outline.height) < 64

    def crowded(a, im):   # NMS rightly merges same-class objects that overlap a lot
        return any(b is not a and b.category == a.category and a.box.iou(b.box) > 0.3
                   for b in im.annotations)

    labels = LabelSet(labels.categories, [
        ImageLabels(im.image, [a if oriented else Annotation(a.category, a.box)
                               for a in im.annotations if fits(a) and not crowded(a, im)],
                    im.ignore)
        for im in labels])
    tiles = tile_label_set(labels, 256, 192, 0.6)
    assert len(tiles) == 9 * len(labels)          # 640x512: x at 0, 192, 384; y at 0, 192, 256
    per_image: dict[str, list] = {}
    for t in tiles:
        per_image.setdefault(t.image.metadata["tile"]["image_id"], []).append(
            (Box(*t.image.metadata["tile"]["window"]), t.annotations))
    objects = 0
    for im in labels:
        merged = merge_predictions(per_image[im.id], iou=0.5)
        key = (lambda a: (a.category, tuple(round(v, 6) for v in a.obox.as_list()))) \
            if oriented else (lambda a: (a.category, tuple(a.box.xyxy())))
        assert sorted(map(key, merged)) == sorted(map(key, im.annotations)), im.id
        objects += len(im.annotations)
    assert objects > 400


def test_truncated_copy_from_a_tile_edge_is_dropped():
    whole = _pred("Car", Box(90, 10, 110, 20), 0.8)
    half = _pred("Car", Box(0, 10, 10, 20), 0.9)    # tile at x=100 sees x 100..110, scores more
    per_tile = [(Box(0, 0, 200, 100), [whole]), (Box(100, 0, 300, 100), [half])]
    assert len(merge_predictions(per_tile, iou=0.5, cut_inside=None)) == 2   # IoU is 0.5
    merged = merge_predictions(per_tile, iou=0.5)
    assert [a.box for a in merged] == [Box(90, 10, 110, 20)]   # the whole one survives
    # a small object really lying inside a bigger one of the same class, far from any tile
    # edge, is not a truncated copy: both stay
    inner = _pred("Car", Box(150, 40, 160, 50), 0.9)
    outer = _pred("Car", Box(140, 30, 175, 65), 0.8)
    assert len(merge_predictions([(Box(0, 0, 200, 100), [inner, outer])], 0.5)) == 2
    # the image border is not a tile cut: an object there is kept as it is
    edge = _pred("Car", Box(0, 10, 10, 20), 0.9)
    big = _pred("Car", Box(0, 5, 16, 25), 0.8)
    assert len(merge_predictions([(Box(0, 0, 200, 100), [edge, big])], 0.5)) == 2


def test_truncated_oriented_copy_is_dropped():
    whole = OrientedBox(100, 50, 40, 10, 0.2)
    window_a, window_b = Box(0, 0, 150, 100), Box(95, 0, 245, 100)
    cut_a = tile_labels(_image(300, 100, [_oriented_car(whole)]), window_b, 0.1).annotations
    assert cut_a and cut_a[0].obox != whole
    per_tile = [(window_a, [_pred("Car", whole.bounding_box(), 0.5, whole)]),
                (window_b, [_pred("Car", a.box, 0.9, a.obox) for a in cut_a])]
    merged = merge_predictions(per_tile, 0.5)
    assert [m.obox for m in merged] == [whole]


def test_tile_label_set_equals_tile_labels_per_window():
    """tile_label_set skips objects far from a window for speed; the result must not change."""
    rng = np.random.default_rng(0)
    anns = []
    for k in range(150):
        cx, cy = rng.uniform(0, 600, 2)
        o = OrientedBox(float(cx), float(cy), *map(float, rng.uniform(6, 40, 2)),
                        float(rng.uniform(0, math.pi)))
        anns.append(Annotation("Car", o.bounding_box(), o if k % 2 else None))
    item = _image(600, 500, anns, [IgnoreRegion(Box(100, 100, 300, 140))],
                  [Click(250, 260, "Car")])
    tiles = tile_label_set(LabelSet(["Car"], [item]), 200, 150, 0.5)
    windows = tile_windows(600, 500, 200, 150)
    assert [t.image.metadata["tile"]["window"] for t in tiles] == [w.xyxy() for w in windows]
    assert tiles.images == [tile_labels(item, w, 0.5) for w in windows]
    assert sum(len(t.annotations) for t in tiles) > 150


def test_every_click_reaches_some_tile_even_on_the_image_border():
    from tinyloop.tiling import shift_clicks
    windows = tile_windows(300, 200, 128, 96)
    for x, y in [(0, 0), (300, 200), (299.5, 0), (150, 199.99), (96, 96)]:
        seen = [shift_clicks([Click(x, y, "Car")], w) for w in windows]
        assert any(seen), (x, y)
        for w, clicks in zip(windows, seen):
            for c in clicks:
                assert (c.x + w.x1, c.y + w.y1) == (x, y)
                assert 0 <= c.x <= w.width and 0 <= c.y <= w.height
