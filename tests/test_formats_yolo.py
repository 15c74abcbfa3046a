"""YOLO txt: hand-written fixtures parse (boxes, OBB, scores, errors); export writes the
ultralytics layout that ultralytics itself accepts."""
import pytest
import yaml

from tinyloop.annotations import (Annotation, Box, IgnoreRegion, ImageLabels, ImageRecord,
                                  LabelSet, OrientedBox)
from tinyloop.formats import FormatError
from tinyloop.formats.yolo import (export_yolo, export_yolo_dataset, read_yolo,
                                   read_yolo_names)
from tinyloop.ingest import import_dataset
from tests.fixtures_formats import FIXTURES, tiny_voc_params, write_image

NAMES = ["Person", "Car", "DontCare"]


def test_fixture_parses_to_pixels():
    assert read_yolo_names(FIXTURES / "yolo") == NAMES
    lf = read_yolo(FIXTURES / "yolo/img1.txt", NAMES, 200, 160)
    person, car, dontcare, obb, scored = lf.annotations
    assert person.category == "Person" and person.box == Box(90, 64, 110, 96)
    assert car.box == Box(45, 15, 55, 25)
    assert dontcare.category == "DontCare"
    assert obb.box == pytest.approx(Box(20, 16, 60, 32)) and obb.obox is not None
    assert {round(obb.obox.w, 6), round(obb.obox.h, 6)} == {40, 16}
    assert scored.provenance.source == "model" and scored.provenance.score == 0.87


def test_bad_lines_name_file_line_and_fix():
    with pytest.raises(FormatError, match=r"bad_line\.txt: line 1: 4 values"):
        read_yolo(FIXTURES / "yolo/bad_line.txt", NAMES, 10, 10)
    with pytest.raises(FormatError, match=r"line 1: class index 5 but only 3 .*classes\.txt"):
        read_yolo(FIXTURES / "yolo/bad_class.txt", NAMES, 10, 10)


def test_names_from_data_yaml(tmp_path):
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"names": {0: "a", 1: "b"}}))
    assert read_yolo_names(tmp_path / "missing", tmp_path) == ["a", "b"]
    assert read_yolo_names(tmp_path / "missing") is None


def _labels():
    rec = ImageRecord("im1", "images/im1.png", 200, 100, 1, {"split": "val"})
    item = ImageLabels(rec, [Annotation("Car", Box(10, 20, 30, 30)),
                             Annotation("Person", Box(50, 50, 60, 80),
                                        OrientedBox(55, 65, 10, 30, 0.3))],
                       [IgnoreRegion(Box(0, 0, 5, 5))])
    rec2 = ImageRecord("im2", "images/im2.png", 200, 100, 1, {"split": "train"})
    return LabelSet(["Person", "Car"], [item, ImageLabels(rec2, [])])


def test_export_then_ingest_keeps_boxes_and_ignore_regions(tmp_path):
    labels = _labels()
    for rec in labels.images:
        write_image(tmp_path / rec.image.path, size=(200, 100))
    export_yolo(labels, tmp_path / "labels")
    assert (tmp_path / "labels/classes.txt").read_text().split() == ["Person", "Car",
                                                                     "DontCare"]
    back, report = import_dataset(tmp_path, tiny_voc_params(format="yolo"), progress=False)
    assert report.ok, report.summary()
    got = back.by_id()["im1"]
    assert [a.category for a in got.annotations] == ["Car", "Person"]
    for a, b in zip(labels.images[0].annotations, got.annotations):
        assert b.box.xyxy() == pytest.approx(a.box.xyxy(), abs=1e-3)
    assert got.ignore[0].box.xyxy() == pytest.approx([0, 0, 5, 5], abs=1e-3)


def test_yolo_dataset_layout_for_ultralytics(tmp_path, monkeypatch):
    from PIL import Image
    monkeypatch.setattr(Image, "open", Image.open)  # ultralytics patches it; undo afterwards
    labels = _labels()
    for rec in labels.images:
        write_image(tmp_path / "src" / rec.image.path, size=(200, 100))
    data_yaml = export_yolo_dataset(labels, tmp_path / "src", tmp_path / "yolo")
    data = yaml.safe_load(data_yaml.read_text())
    assert data["names"] == {0: "Person", 1: "Car"} and data["val"] == "images/val"
    out = tmp_path / "yolo"
    # ignore regions: not a class in YOLO; masked in a real copy of the image instead
    assert (out / "labels/val/im1.txt").read_text().count("\n") == 2
    assert not (out / "images/val/im1.png").is_symlink()
    assert (out / "images/train/im2.png").is_symlink()
    with Image.open(out / "images/val/im1.png") as im:
        assert im.getpixel((2, 2)) == 128       # mean grey of a flat 128 image
    # ultralytics' own label check accepts the files
    from ultralytics.data.utils import verify_image_label
    res = verify_image_label((str(out / "images/val/im1.png"), str(out / "labels/val/im1.txt"),
                              "", False, 2, 0, 3, False))
    nm, nf, ne, nc, msg = res[-5:]
    assert (nf, nc) == (1, 0), msg
    assert res[1].shape == (2, 5)


def test_yolo_dataset_layout_imports_back_with_splits(tmp_path):
    labels = _labels()
    for rec in labels.images:
        write_image(tmp_path / "src" / rec.image.path, size=(200, 100))
    export_yolo_dataset(labels, tmp_path / "src", tmp_path / "yolo", copy=True)
    back, report = import_dataset(tmp_path / "yolo", tiny_voc_params(format="yolo"),
                                  progress=False)
    assert report.ok, report.summary()
    got = back.by_id()
    assert got["im1"].image.metadata["split"] == "val"
    assert got["im2"].image.metadata["split"] == "train"
    assert got["im1"].image.path == "images/val/im1.png"
    for a, b in zip(labels.images[0].annotations, got["im1"].annotations, strict=True):
        assert b.box.xyxy() == pytest.approx(a.box.xyxy(), abs=1e-3)
    assert not got["im1"].ignore      # masked in the image, not a label, in this layout
