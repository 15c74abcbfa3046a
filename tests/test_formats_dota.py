"""DOTA labelTxt: a hand-written fixture parses; a bad line costs one object; export gives
back the very lines read (directly and through a tinyloop labels file)."""
import json
import math
from dataclasses import replace

import pytest

from tinyloop.annotations import Box, IgnoreRegion, ImageLabels, ImageRecord, LabelSet
from tinyloop.cocofile import read_labels, write_labels
from tinyloop.formats import FormatError
from tinyloop.formats.dota import dota_lines, export_dota, read_dota
from tinyloop.formats.export import export_labels
from tinyloop.ingest import import_dataset
from tests.fixtures_formats import FIXTURES, tiny_voc_params, write_image


def test_fixture_parses_header_polygons_and_difficult():
    lf = read_dota(FIXTURES / "dota/P0001.txt")
    assert lf.metadata == {"imagesource": "GoogleEarth", "gsd": pytest.approx(0.146343590398)}
    names = [a.category for a in lf.annotations]
    assert names == ["small-vehicle", "plane", "DontCare", "ship"]
    car, plane, _, ship = lf.annotations
    assert car.box.xyxy() == [100, 100, 140, 120] and not car.difficult
    assert {round(car.obox.w), round(car.obox.h)} == {40, 20}
    assert plane.difficult and not ship.difficult          # missing flag -> 0
    # a diamond: the rotated rectangle is turned by 45 degrees, its bounding box is the hull
    assert plane.box.xyxy() == [170.5, 50, 230.5, 110]
    assert math.isclose(abs(math.cos(2 * plane.obox.angle)), 0, abs_tol=1e-9)
    assert plane.obox.polygon().area == pytest.approx(30 * math.sqrt(2) * 30 * math.sqrt(2))


def test_export_reads_back_same_polygons(tmp_path):
    lf = read_dota(FIXTURES / "dota/P0001.txt")
    rec = ImageRecord("P0001", "images/P0001.png", 400, 400, metadata=lf.metadata)
    labels = LabelSet(["small-vehicle", "plane", "ship", "DontCare"],
                      [ImageLabels(rec, lf.annotations)])
    export_dota(labels, tmp_path)
    back = read_dota(tmp_path / "P0001.txt")
    assert back.metadata == lf.metadata
    for a, b in zip(lf.annotations, back.annotations):
        assert a.category == b.category and a.difficult == b.difficult
        assert a.obox.polygon().symmetric_difference(b.obox.polygon()).area < 1e-6


def test_bad_lines_cost_their_object_only(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("1 2 3 4 5 6 7 8\n"                       # a field short
                 "0 0 10 0 10 5 0 5 car 0\n"
                 "1 2 3 4 5 6 7 eight car 0\n"             # not a number
                 "0 0 5 5 10 10 15 15 car 0\n"             # collinear: no area
                 "3 3 3 3 3 3 3 3 car 0\n")                # one repeated point
    lf = read_dota(p)
    assert [a.box.xyxy() for a in lf.annotations] == [[0, 0, 10, 5]]
    assert all(e.file == str(p) and e.fix for e in lf.problems)
    messages = [e.message for e in lf.problems]
    assert messages[0].startswith("line 1: 8 fields")
    assert messages[1].startswith("line 3: coordinates or difficult flag are not numbers")
    assert messages[2] == ("line 4: the 4 points are collinear or repeated (zero area); "
                           "left out")
    assert messages[3].startswith("line 5: the 4 points are collinear")
    assert len(messages) == 4


def test_unreadable_file_still_raises(tmp_path):
    with pytest.raises(FormatError, match="cannot read label file"):
        read_dota(tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(FormatError, match="cannot read label file"):
        read_dota(tmp_path / "bin.txt")


EXACT = ("imagesource:GoogleEarth\n"
         "gsd:0.146343590398\n"
         "2753 2408 2861 2385 2888 2468 2805 2502 plane 0\n"      # a quadrilateral
         "100.5 100.25 140 100 140 120 100 120 small-vehicle 1\n"  # not quite a rectangle
         "200 50 230 80 200 110 170 80 ship 0\n"
         "10 10 20 10 20 20 10 20 DontCare 0\n")


def _exact_labels(tmp_path):
    """The EXACT file as ingest would hold it: DontCare as an ignore region."""
    (tmp_path / "P1.txt").write_text(EXACT)
    lf = read_dota(tmp_path / "P1.txt")
    assert not lf.problems
    *objects, dontcare = lf.annotations
    region = IgnoreRegion(dontcare.box, dontcare.obox, dontcare.category, dontcare.polygon)
    rec = ImageRecord("P1", "images/P1.png", 4000, 4000, metadata=lf.metadata)
    return LabelSet(["plane", "small-vehicle", "ship"], [ImageLabels(rec, objects, [region])])


def test_dota_to_dota_gives_back_the_same_lines(tmp_path):
    labels = _exact_labels(tmp_path)
    export_dota(labels, tmp_path / "out")
    assert (tmp_path / "out/P1.txt").read_text() == EXACT


def test_dota_through_a_labels_file_gives_back_the_same_lines(tmp_path):
    labels = _exact_labels(tmp_path)
    write_labels(labels, tmp_path / "labels.json")
    doc = json.loads((tmp_path / "labels.json").read_text())
    assert doc["annotations"][0]["segmentation"] == [[2753, 2408, 2861, 2385, 2888, 2468,
                                                      2805, 2502]]
    assert "segmentation" in doc["ignore_regions"][0]
    export_labels(read_labels(tmp_path / "labels.json"), "dota", tmp_path / "out")
    assert (tmp_path / "out/P1.txt").read_text() == EXACT


def test_moved_box_writes_its_own_corners_not_the_stale_polygon(tmp_path):
    """replace(ann, box=..., obox=...) (tiling, corrections) keeps the old polygon field;
    writers must not trust it then."""
    labels = _exact_labels(tmp_path)
    item = labels.images[0]
    plane = item.annotations[0]
    o = plane.obox
    moved = replace(plane, box=Box(plane.box.x1 - 7, plane.box.y1, plane.box.x2 - 7,
                                   plane.box.y2), obox=replace(o, cx=o.cx - 7))
    item.annotations[0] = moved
    first = dota_lines(item).splitlines()[2].split()
    coords = [float(v) for v in first[:8]]
    assert coords[0::2] == pytest.approx([x for x, _ in moved.obox.corners()], abs=1e-9)
    assert "2753" not in first
    write_labels(labels, tmp_path / "l.json")
    doc = json.loads((tmp_path / "l.json").read_text())
    assert "segmentation" not in doc["annotations"][0]     # the stale polygon is dropped
    assert "segmentation" in doc["annotations"][1]


def test_gsd_header_with_space_and_integer_value(tmp_path):
    p = tmp_path / "h.txt"
    p.write_text("gsd: 1\nimagesource:null\n0 0 10 0 10 5 0 5 car 0\n")
    lf = read_dota(p)
    assert lf.metadata == {"gsd": 1.0, "imagesource": None} and len(lf.annotations) == 1
    rec = ImageRecord("h", "h.png", 20, 20, metadata=lf.metadata)
    assert dota_lines(ImageLabels(rec, lf.annotations)).splitlines()[:2] == \
        ["imagesource:null", "gsd:1"]


def test_class_with_space_cannot_be_exported():
    rec = ImageRecord("a", "a.png", 10, 10)
    from tinyloop.annotations import Annotation, Box
    item = ImageLabels(rec, [Annotation("small car", Box(1, 1, 3, 3))])
    with pytest.raises(FormatError, match="whitespace"):
        dota_lines(item)


def test_ingest_dota_dataset_turns_dontcare_into_ignore_region(tmp_path):
    write_image(tmp_path / "images/P0001.png", size=(400, 400))
    (tmp_path / "labelTxt").mkdir()
    (tmp_path / "labelTxt/P0001.txt").write_text((FIXTURES / "dota/P0001.txt").read_text())
    params = tiny_voc_params(format="dota", labels="labelTxt",
                             classes=["small-vehicle", "plane", "ship"])
    labels, report = import_dataset(tmp_path, params, progress=False)
    assert report.ok, report.summary()
    item = labels.images[0]
    assert [a.category for a in item.annotations] == ["small-vehicle", "plane", "ship"]
    assert [r.category for r in item.ignore] == ["DontCare"] and item.ignore[0].obox
    assert item.image.metadata["gsd"] == pytest.approx(0.146343590398)
