"""YOLO txt: hand-written fixtures parse (boxes, OBB, scores); a bad line costs one object;
class names are found where datasets keep them; YOLO-OBB export reads back; export writes
the ultralytics layout that ultralytics itself accepts."""
import re

import pytest
import yaml

from tinyloop.annotations import (Annotation, Box, IgnoreRegion, ImageLabels, ImageRecord,
                                  LabelSet, OrientedBox)
from tinyloop.formats import FormatError
from tinyloop.formats.export import export_labels
from tinyloop.formats.registry import writer_names
from tinyloop.formats.yolo import (export_yolo, export_yolo_dataset, find_yolo_names,
                                   read_yolo, read_yolo_names)
from tinyloop.ingest import import_dataset
from tests.fixtures_formats import FIXTURES, tiny_voc_params, write_image

NAMES = ["Person", "Car", "DontCare"]


def _flat(points):
    return [v for point in points for v in point]


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
    lf = read_yolo(FIXTURES / "yolo/bad_line.txt", NAMES, 10, 10)
    (e,) = lf.problems
    assert not lf.annotations and str(e).startswith(str(FIXTURES / "yolo/bad_line.txt"))
    assert e.message.startswith("line 1: 4 values") and e.fix
    (e,) = read_yolo(FIXTURES / "yolo/bad_class.txt", NAMES, 10, 10).problems
    assert re.match(r"line 1: class index 5 but only 3 ", e.message)
    assert "classes.txt" in e.fix


def test_one_bad_line_costs_one_object(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("0 0.5 0.5 0.1 0.1\n"
                 "1 0.5 0.5 0.1\n"                          # a value short
                 "1 0.5 half 0.1 0.1\n"                     # not a number
                 "7 0.5 0.5 0.1 0.1\n"                      # class index out of range
                 "1 0.1 0.1 0.2 0.2 0.3 0.3 0.4 0.4\n"      # OBB corners on one line
                 "1 0.25 0.25 0.1 0.1\n")
    lf = read_yolo(p, NAMES, 100, 100)
    assert [a.category for a in lf.annotations] == ["Person", "Car"]
    assert [e.message.split(":")[0] for e in lf.problems] == \
        ["line 2", "line 3", "line 4", "line 5"]
    assert "collinear" in lf.problems[3].message
    assert all(e.file == str(p) and e.fix for e in lf.problems)


def test_unreadable_file_still_raises(tmp_path):
    with pytest.raises(FormatError, match="cannot read label file"):
        read_yolo(tmp_path / "missing.txt", NAMES, 10, 10)


def test_obb_line_keeps_its_corner_points():
    obb = read_yolo(FIXTURES / "yolo/img1.txt", NAMES, 200, 160).annotations[3]
    assert _flat(obb.polygon) == pytest.approx([20, 16, 60, 16, 60, 32, 20, 32])


def test_names_from_data_yaml(tmp_path):
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"names": {0: "a", 1: "b"}}))
    assert read_yolo_names(tmp_path / "missing", tmp_path) == ["a", "b"]
    assert read_yolo_names(tmp_path / "missing") is None


def test_ultralytics_yaml_mapping_with_path_and_splits(tmp_path):
    root = tmp_path / "ds"
    for d in ("images/train", "images/val", "labels/train"):
        (root / d).mkdir(parents=True)
    (tmp_path / "coco8.yaml").write_text("path: ds\ntrain: images/train\n"
                                         "val: [images/val, images/train]\n"
                                         "names:\n  0: person\n  1: bicycle\n  3: bus\n")
    found = find_yolo_names(root / "labels/train", tmp_path)
    assert found.names == ["person", "bicycle", "2", "bus"]     # a gap keeps the indices
    assert found.source == tmp_path / "coco8.yaml"
    assert found.split_dirs == {"train": [root / "images/train"],
                                "val": [root / "images/val", root / "images/train"]}


def test_ultralytics_yaml_list_without_path_and_absolute_path(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "dataset.yaml").write_text("train: images/train\nnames: [car, truck]\n")
    found = find_yolo_names(tmp_path / "labels", tmp_path)
    assert found.names == ["car", "truck"] and found.source == tmp_path / "dataset.yaml"
    assert found.split_dirs == {"train": [tmp_path / "images/train"]}
    (tmp_path / "elsewhere/v").mkdir(parents=True)
    (tmp_path / "dataset.yaml").write_text(f"path: {tmp_path / 'elsewhere'}\n"
                                           "val: v\nnames: [car]\n")
    assert find_yolo_names(tmp_path).split_dirs == {"val": [tmp_path / "elsewhere/v"]}


def test_roboflow_yaml_with_parent_relative_splits(tmp_path):
    (tmp_path / "train/images").mkdir(parents=True)
    (tmp_path / "valid/images").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\n"
                                        "test: ../test/images\nnc: 2\nnames: ['a', 'b']\n")
    found = find_yolo_names(tmp_path / "train/labels", tmp_path)
    assert found.names == ["a", "b"]
    assert found.split_dirs["train"] == [tmp_path / "train/images"]
    assert found.split_dirs["val"] == [tmp_path / "valid/images"]
    assert found.split_dirs["test"] == [tmp_path / "../test/images"]   # absent: as written


def test_stale_yaml_path_falls_back_to_the_yaml_folder(tmp_path):
    (tmp_path / "images/train").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("path: /content/datasets/gone\n"
                                        "train: images/train\nnames: [a]\n")
    assert find_yolo_names(tmp_path).split_dirs == {"train": [tmp_path / "images/train"]}


def test_darknet_names_and_none(tmp_path):
    (tmp_path / "labels").mkdir()
    assert find_yolo_names(tmp_path / "labels", tmp_path) is None
    (tmp_path / "params.yaml").write_text("data:\n  classes: [x]\n")   # no names: skipped
    assert find_yolo_names(tmp_path / "labels", tmp_path) is None
    (tmp_path / "obj.names").write_text("person\n\ncar\n")
    found = find_yolo_names(tmp_path / "labels", tmp_path)
    assert (found.names, found.source, found.split_dirs) == \
        (["person", "car"], tmp_path / "obj.names", {})


def test_classes_txt_wins_and_inner_directories_first(tmp_path):
    (tmp_path / "labels/train").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text("names: [from_yaml]\n")
    (tmp_path / "labels/classes.txt").write_text("from_labels\n")
    (tmp_path / "classes.txt").write_text("from_root\n")
    found = find_yolo_names(tmp_path / "labels/train", tmp_path)
    assert found.names == ["from_labels"] and found.source == tmp_path / "labels/classes.txt"
    assert read_yolo_names(tmp_path / "labels/train", tmp_path) == ["from_labels"]


def test_search_stays_inside_the_dataset_root(tmp_path):
    (tmp_path / "classes.txt").write_text("outside\n")      # above the root: not looked at
    (tmp_path / "ds/labels").mkdir(parents=True)
    assert find_yolo_names(tmp_path / "ds/labels", tmp_path / "ds") is None


def _labels():
    rec = ImageRecord("im1", "images/im1.png", 200, 100, 1, {"split": "val"})
    item = ImageLabels(rec, [Annotation("Car", Box(10, 20, 30, 30)),
                             Annotation("Person", Box(50, 50, 60, 80),
                                        OrientedBox(55, 65, 10, 30, 0.3))],
                       [IgnoreRegion(Box(0, 0, 5, 5))])
    rec2 = ImageRecord("im2", "images/im2.png", 200, 100, 1, {"split": "train"})
    return LabelSet(["Person", "Car"], [item, ImageLabels(rec2, [])])


def test_yolo_obb_export_reads_back_the_same_oriented_boxes(tmp_path):
    labels = _labels()
    out = export_labels(labels, "yolo-obb", tmp_path / "obb")
    assert "yolo-obb" in writer_names()
    names = (out / "classes.txt").read_text().split()
    assert names == ["Person", "Car", "DontCare"]
    lines = (out / "im1.txt").read_text().splitlines()
    assert [len(line.split()) for line in lines] == [9, 9, 9]
    back = read_yolo(out / "im1.txt", names, 200, 100)
    assert not back.problems
    for a, b in zip(labels.images[0].annotations, back.annotations[:2], strict=True):
        assert b.category == a.category
        assert _flat(b.polygon) == pytest.approx(_flat(a.outline()), abs=1e-3)
        outline = a.obox.bounding_box() if a.obox else a.box   # YOLO-OBB keeps no other box
        assert b.box.xyxy() == pytest.approx(outline.xyxy(), abs=1e-3)
    got, want = back.annotations[1].obox, labels.images[0].annotations[1].obox
    assert got.polygon().symmetric_difference(want.polygon()).area < 1e-2
    assert back.annotations[2].category == "DontCare"


def test_yolo_obb_export_writes_the_source_polygon(tmp_path):
    """A quadrilateral read from YOLO-OBB is written back as read, not as its rectangle."""
    src = tmp_path / "src.txt"
    src.write_text("1 0.100000 0.100000 0.300000 0.120000 0.280000 0.200000 "
                   "0.090000 0.190000\n")
    lf = read_yolo(src, NAMES, 200, 100)
    rec = ImageRecord("q", "q.png", 200, 100)
    export_yolo(LabelSet(["Person", "Car"], [ImageLabels(rec, lf.annotations)]),
                tmp_path / "out", oriented=True)
    assert (tmp_path / "out/q.txt").read_text() == src.read_text()


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
