"""Bad input: each kind of problem is reported with the file at fault and a fix, the bad
image or object is left out, and the import goes on with everything else."""
import json

import pytest
from PIL import Image

from tinyloop.ingest import DatasetError, escapes_root, import_dataset
from tests.fixtures_formats import tiny_voc_params, voc_object, write_image, write_voc

GOOD = voc_object("Person", 10, 10, 20, 30)


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """A VOC dataset with one of every problem next to good images."""
    root = tmp_path_factory.mktemp("messy")
    img, lab = root / "images", root / "labels"
    for name in ("good", "outside", "overhang", "zero", "unknown", "escape", "absolute",
                 "dup"):
        write_image(img / f"{name}.png")
    write_voc(lab / "good.xml", "good.png", [GOOD, voc_object("DontCare", 0, 0, 5, 5)])
    write_voc(lab / "outside.xml", "outside.png", [GOOD, voc_object("Car", 70, 10, 90, 20)])
    write_voc(lab / "overhang.xml", "overhang.png", [GOOD, voc_object("Car", 50, 10, 65, 20)])
    write_voc(lab / "zero.xml", "zero.png", [GOOD, voc_object("Car", 30, 10, 30, 20)])
    write_voc(lab / "unknown.xml", "unknown.png", [GOOD, voc_object("Truck", 1, 1, 9, 9),
                                                   voc_object("Truck", 2, 2, 9, 9)])
    write_voc(lab / "escape.xml", "../../etc/escape.png", [GOOD])
    write_voc(lab / "absolute.xml", "/tmp/absolute.png", [GOOD])
    write_voc(lab / "ghost.xml", "ghost.png", [GOOD])               # no such image
    write_image(img / "sub/dup.jpg")                                 # same id as dup.png
    write_voc(lab / "dup.xml", "dup.png", [GOOD])
    (lab / "garbled.xml").write_text("<annotation><object>")
    full = write_image(img / "cut.jpg", size=(64, 64))
    Image.effect_noise((64, 64), 60).convert("L").save(full, quality=95)
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 2])
    write_voc(lab / "cut.xml", "cut.jpg", [GOOD])
    (img / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    labels, report = import_dataset(root, tiny_voc_params(), progress=False)
    return labels, report, "\n".join(str(p) for p in report.problems)


def _problems_for(report, name):
    return [p for p in report.problems if p.file.endswith(name)]


def test_import_goes_on_and_keeps_the_good_parts(messy):
    labels, report, _ = messy
    ids = {im.id for im in labels}
    assert {"good", "outside", "zero", "unknown", "escape", "absolute", "dup"} <= ids
    assert "cut" not in ids and "corrupt" not in ids
    good = labels.by_id()["good"]
    assert len(good.annotations) == 1 and good.ignore[0].category == "DontCare"
    # every good object in a file with a bad one is kept
    for name in ("outside", "zero", "unknown"):
        assert [a.category for a in labels.by_id()[name].annotations] == ["Person"]
    assert [a.category for a in labels.by_id()["overhang"].annotations] == ["Person", "Car"]
    assert "problem(s)" in report.summary() and not report.ok
    assert all(p.fix for p in report.problems)


def test_truncated_image(messy):
    (p,) = _problems_for(messy[1], "cut.jpg")
    assert "truncated" in p.message and "left out" in p.message


def test_corrupt_image(messy):
    (p,) = _problems_for(messy[1], "corrupt.png")
    assert "not a readable image" in p.message


def test_missing_image_file(messy):
    (p,) = _problems_for(messy[1], "ghost.xml")
    assert p.message.startswith("missing image file: no image images/ghost.png")
    assert "add the image" in p.fix


def test_box_outside_image(messy):
    (p,) = _problems_for(messy[1], "outside.xml")
    assert "object 2 (Car)" in p.message and "lies outside the 64x48 image" in p.message
    assert p.kind == "box"


def test_box_overhanging_by_one_pixel_is_clipped_and_reported(messy):
    labels, report, _ = messy
    assert not _problems_for(report, "overhang.xml")
    car = labels.by_id()["overhang"].annotations[1]
    assert car.box.xyxy() == [50.0, 10.0, 64.0, 20.0]
    (c,) = [c for c in report.clipped if c.file.endswith("overhang.xml")]
    assert "object 2 (Car)" in c.message and "overhangs the 64x48 image by 1 px" in c.message
    assert "1 box(es) overhang their image: clipped" in report.summary()


def test_strict_mode_drops_an_overhang_beyond_the_tolerance(tmp_path):
    write_image(tmp_path / "images/a.png")
    write_voc(tmp_path / "labels/a.xml", "a.png", [GOOD, voc_object("Car", 50, 10, 66, 20),
                                                  voc_object("Car", 50, 10, 64.5, 20)])
    labels, report = import_dataset(tmp_path, tiny_voc_params(clip_boxes=False),
                                    progress=False)
    (p,) = report.problems
    assert "object 2 (Car)" in p.message and "outside the 64x48 image" in p.message
    assert [a.box.x2 for a in labels.images[0].annotations] == [20.0, 64.0]


def test_summary_counts_problems_by_kind(messy):
    summary = messy[1].summary()
    assert "2 box" in summary and "1 class" in summary and "2 path" in summary


def test_zero_area_box(messy):
    (p,) = _problems_for(messy[1], "zero.xml")
    assert "object 2 (Car)" in p.message and "zero or negative area" in p.message


def test_unknown_class_reported_once_per_file(messy):
    (p,) = _problems_for(messy[1], "unknown.xml")
    assert "unknown class 'Truck' (2 object(s))" in p.message
    assert "data.classes" in p.fix and "Person, Car" in p.fix


def test_duplicate_image_id(messy):
    (p,) = _problems_for(messy[1], "sub/dup.jpg")
    assert "duplicate image id 'dup': images/dup.png" in p.message and "rename" in p.fix


@pytest.mark.parametrize("name,ref", [("escape.xml", "../../etc/escape.png"),
                                      ("absolute.xml", "/tmp/absolute.png")])
def test_label_path_escaping_root(messy, name, ref):
    (p,) = _problems_for(messy[1], name)
    assert f"image path {ref!r} escapes the dataset root" in p.message
    assert "no absolute paths" in p.fix
    # the image itself is imported, unlabeled: the bad label file was not trusted
    assert not messy[0].by_id()[name[:-4]].annotations


def test_unparsable_label_file(messy):
    (p,) = _problems_for(messy[1], "garbled.xml")
    assert "not valid XML" in p.message


def test_escapes_root_rules():
    assert escapes_root("../x.jpg") and escapes_root("a/../../x.jpg")
    assert escapes_root("/abs/x.jpg") and escapes_root("C:\\data\\x.jpg")
    assert escapes_root("..\\x.jpg")
    assert not escapes_root("x.jpg") and not escapes_root("a/../x.jpg")
    assert not escapes_root("./sub/x.jpg")


def test_coco_file_name_escaping_missing_and_duplicates(tmp_path):
    write_image(tmp_path / "images/a.png")
    write_image(tmp_path / "images/b.png")
    doc = {"images": [{"id": 1, "file_name": "images/a.png", "width": 64, "height": 48},
                      {"id": 2, "file_name": "../outside.png", "width": 64, "height": 48},
                      {"id": 3, "file_name": "gone.png", "width": 64, "height": 48},
                      {"id": 4, "file_name": "b.png", "width": 64, "height": 48},
                      {"id": 5, "file_name": "images/b.png", "width": 64, "height": 48}],
           "categories": [{"id": 1, "name": "Person"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
                           {"id": 2, "image_id": 4, "category_id": 1, "bbox": [0, 0, 0, 5]}]}
    (tmp_path / "labels.json").write_text(json.dumps(doc))
    labels, report = import_dataset(tmp_path, tiny_voc_params(format="coco",
                                                              labels="labels.json"),
                                    progress=False)
    text = "\n".join(str(p) for p in report.problems)
    assert "image file_name '../outside.png' escapes the dataset root" in text
    assert "missing image file 'gone.png'" in text
    assert "duplicate image id 'b'" in text
    assert "image 'b.png', annotation 2 has bbox [0, 0, 0, 5] (x, y, width, height): " \
        "width and height must be > 0" in text
    assert len(report.problems) == 4
    assert sorted(im.id for im in labels) == ["a", "b"]
    assert labels.by_id()["b"].image.path == "images/b.png"  # resolved under images_dir
    assert len(labels.by_id()["a"].annotations) == 1


def test_split_list_naming_missing_images(tmp_path):
    write_image(tmp_path / "images/a.png")
    (tmp_path / "ImageSets/Main").mkdir(parents=True)
    (tmp_path / "ImageSets/Main/train.txt").write_text("a\nnope\n")
    labels, report = import_dataset(tmp_path, tiny_voc_params(split_dir="ImageSets/Main"),
                                    progress=False)
    (p,) = report.problems
    assert p.file.endswith("train.txt") and "have no image: nope" in p.message
    assert labels.images[0].image.metadata["split"] == "train"
    assert any("no labels directory" in n for n in report.notes) and not report.has_labels


def test_size_mismatch_between_label_and_image(tmp_path):
    write_image(tmp_path / "images/a.png", size=(64, 48))
    write_voc(tmp_path / "labels/a.xml", "a.png", [GOOD], size=(48, 64))
    _, report = import_dataset(tmp_path, tiny_voc_params(), progress=False)
    (p,) = report.problems
    assert "declares image size 48x64 but images/a.png is 64x48" in p.message


def test_missing_root_raises_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="dataset directory not found; set data.source"):
        import_dataset(tmp_path / "nope", tiny_voc_params())
    with pytest.raises(DatasetError, match="images directory not found"):
        import_dataset(tmp_path, tiny_voc_params())


def test_coco_file_that_is_not_coco_is_a_dataset_error(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps(
        {"images": [], "categories": [{"name": "Person"}], "annotations": []}))
    with pytest.raises(DatasetError, match=r"labels\.json: not a readable COCO file"):
        import_dataset(tmp_path, tiny_voc_params(format="coco", labels="labels.json"))
    (tmp_path / "labels.json").write_text(json.dumps(
        {"images": [], "categories": [], "annotation": []}))
    with pytest.raises(DatasetError, match="no 'annotations' list.*did you mean 'annotations'"):
        import_dataset(tmp_path, tiny_voc_params(format="coco", labels="labels.json"))
    (tmp_path / "labels.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"labels\.json: not valid JSON"):
        import_dataset(tmp_path, tiny_voc_params(format="coco", labels="labels.json"))
