"""Pascal VOC and roLabelImg XML: real HIT-UAV files parse; write-then-read is exact."""
import math

import pytest

from tinyloop.annotations import (Annotation, Box, IgnoreRegion, ImageLabels, ImageRecord,
                                  LabelSet, OrientedBox)
from tinyloop.formats import FormatError
from tinyloop.formats.rolabelimg import export_rolabelimg, read_rolabelimg
from tinyloop.formats.voc import export_voc, read_voc
from tests.fixtures_formats import hituav_root

STEM = "0_100_30_0_03281"


def test_hituav_voc_and_rolabelimg_files():
    root = hituav_root()
    voc = read_voc(root / f"labels/{STEM}.xml")
    assert voc.image_ref == f"{STEM}.jpg" and (voc.width, voc.height) == (640, 512)
    assert len(voc.annotations) == 13
    assert voc.annotations[0].category == "Car" and voc.annotations[0].box == Box(29, 114, 63, 146)
    rot = read_rolabelimg(root / f"labels_rotated/{STEM}.xml")
    car = rot.annotations[0]
    assert car.obox == OrientedBox(46.7844, 130.1887, 29.2965, 18.02, 2.524211)
    assert car.box == car.obox.bounding_box()
    assert car.box.iou(voc.annotations[0].box) > 0.7


def _labels():
    rec = ImageRecord("a", "images/sub/a.jpg", 100, 80, 1)
    return LabelSet(["Person", "Car"], [ImageLabels(rec, [
        Annotation("Car", Box(1, 2, 30.5, 40), OrientedBox(15.75, 21, 29.5, 38, 0.25)),
        Annotation("Person", Box(50, 50, 60, 70), difficult=True)],
        [IgnoreRegion(Box(70, 0, 90, 10), OrientedBox(80, 5, 20, 10, 0.0))])])


def test_voc_roundtrip(tmp_path):
    labels = _labels()
    (path,) = export_voc(labels, tmp_path)
    back = read_voc(path)
    assert back.image_ref == "a.jpg" and (back.width, back.height) == (100, 80)
    got = [(a.category, a.box, a.difficult) for a in back.annotations]
    assert got == [("Car", Box(1, 2, 30.5, 40), False), ("Person", Box(50, 50, 60, 70), True),
                   ("DontCare", Box(70, 0, 90, 10), False)]


def test_rolabelimg_roundtrip_keeps_oriented_boxes_exactly(tmp_path):
    labels = _labels()
    (path,) = export_rolabelimg(labels, tmp_path)
    assert "<robndbox>" in path.read_text() and "<bndbox>" in path.read_text()
    back = read_rolabelimg(path)
    car, person, dontcare = back.annotations
    assert car.obox == OrientedBox(15.75, 21, 29.5, 38, 0.25)
    assert person.obox is None and person.box == Box(50, 50, 60, 70) and person.difficult
    assert dontcare.obox == OrientedBox(80, 5, 20, 10, 0.0)


def test_negative_angles_are_folded_into_0_pi(tmp_path):
    rec = ImageRecord("b", "b.jpg", 100, 100)
    ob = OrientedBox(50, 50, 20, 10, -0.5)
    export_rolabelimg(LabelSet(["Car"], [ImageLabels(rec, [Annotation("Car", ob.bounding_box(), ob)])]),
                      tmp_path)
    back = read_rolabelimg(tmp_path / "b.xml").annotations[0].obox
    assert back.angle == pytest.approx(math.pi - 0.5)
    assert back.polygon().symmetric_difference(ob.polygon()).area < 1e-9


def test_bad_xml_names_file_object_and_fix(tmp_path):
    p = tmp_path / "broken.xml"
    p.write_text("<annotation><object>")
    with pytest.raises(FormatError, match=r"broken\.xml: not valid XML.*re-export"):
        read_voc(p)
    p.write_text("<annotation><object><name>Car</name><bndbox><xmin>a</xmin><ymin>1</ymin>"
                 "<xmax>2</xmax><ymax>3</ymax></bndbox></object></annotation>")
    with pytest.raises(FormatError, match=r"object 1: <xmin> is 'a', not a number"):
        read_voc(p)
    p.write_text("<annotation><object><name>Car</name></object></annotation>")
    with pytest.raises(FormatError, match="neither <bndbox> nor <robndbox>"):
        read_voc(p)
