"""DOTA labelTxt: a hand-written fixture parses; export + import keeps every polygon."""
import math

import pytest

from tinyloop.annotations import ImageLabels, ImageRecord, LabelSet
from tinyloop.formats import FormatError
from tinyloop.formats.dota import dota_lines, export_dota, read_dota
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


def test_bad_lines_name_file_and_line(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("1 2 3 4 5 6 7 8\n")
    with pytest.raises(FormatError, match=r"x\.txt: line 1: 8 fields"):
        read_dota(p)
    p.write_text("1 2 3 4 5 6 7 eight car 0\n")
    with pytest.raises(FormatError, match="line 1: coordinates .* not numbers"):
        read_dota(p)


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
