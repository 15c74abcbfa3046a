"""Inputs from real datasets that must neither crash nor mislead (issue #31): a file name
that is not UTF-8, a folder without images, COCO entries that must be found again in the
JSON, darknet split lists among YOLO labels, lossless masked exports, and `init --source`
writing the params a VOC / YOLO / COCO layout needs."""
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from flows.cli import main
from flows.project.init import detected_data_keys, write_params
from flows.project.params import load_params
from tinyloop.cocofile import read_labels
from tinyloop.ingest import DatasetError, import_dataset, write_pool
from tests.fixtures_formats import tiny_voc_params, voc_object, write_image, write_voc

LATIN1_STEM = os.fsdecode(b"MOS75\xe9")     # what Python makes of a Latin-1 file name


def _cli(tmp_path, *args):
    return main(["--params", str(tmp_path / "none.yaml"), *args])


# --- a file name that is not UTF-8 -------------------------------------------------------

@pytest.fixture
def latin1_dataset(tmp_path):
    src = tmp_path / "src"
    write_image(src / "images/ok.png")
    write_voc(src / "labels/ok.xml", "ok.png", [voc_object("Car", 1, 1, 10, 10)])
    try:
        write_image(src / "images" / f"{LATIN1_STEM}.png")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    write_voc(src / "labels" / f"{LATIN1_STEM}.xml", "x.png", [voc_object("Car", 1, 1, 9, 9)])
    return src


def test_a_non_utf8_file_name_is_a_problem_naming_the_escaped_file(latin1_dataset, tmp_path):
    labels, report = import_dataset(latin1_dataset, tiny_voc_params(), progress=False)
    assert [i.id for i in labels] == ["ok"]
    named = {p.file: p for p in report.problems}
    assert set(named) == {"images/MOS75\\xe9.png", "labels/MOS75\\xe9.xml"}
    image = named["images/MOS75\\xe9.png"]
    assert image.kind == "file name" and "not valid UTF-8" in image.message
    assert "MOS75é.png" in image.fix and "convmv" in image.fix
    # every writer survives it: manifest, ground truth and the report
    out = tmp_path / "pool"
    write_pool(labels, report, out / "m.json", out / "gt.json", out / "report.json")
    assert json.loads((out / "report.json").read_text())["problems"][0]["file"]
    assert len(read_labels(out / "m.json")) == 1


def test_ingest_and_convert_with_a_non_utf8_name_write_the_report_and_the_rest(
        latin1_dataset, tmp_path, capsys):
    proj = tmp_path / "proj"
    ingest = ["ingest", "-C", str(proj), "--source", str(latin1_dataset), "--no-progress"]
    assert _cli(tmp_path, *ingest) == 1            # strict: problems stop the import ...
    report = json.loads((proj / "data/pool/import_report.json").read_text())
    assert len(report["problems"]) == 2            # ... but the report is written
    assert _cli(tmp_path, *ingest, "--keep-going") == 0
    assert [i.id for i in read_labels(proj / "data/pool/manifest.json")] == ["ok"]
    assert _cli(tmp_path, "convert", str(latin1_dataset), str(tmp_path / "coco"), "--from",
                "voc", "--to", "coco", "--keep-going") == 0
    assert len(read_labels(tmp_path / "coco/labels.json")) == 1
    assert "MOS75\\xe9.png" in capsys.readouterr().out


# --- a folder without images -------------------------------------------------------------

def test_a_folder_without_images_stops_ingest_and_convert_naming_folder_format_layout(
        tmp_path, capsys):
    src = tmp_path / "empty"
    (src / "images").mkdir(parents=True)
    assert _cli(tmp_path, "ingest", "-C", str(tmp_path / "p"), "--source", str(src),
                "--no-progress") == 1
    err = capsys.readouterr().err
    assert str(src) in err and "format voc" in err and "under images/" in err
    assert not (tmp_path / "p/data/pool/manifest.json").exists()
    assert _cli(tmp_path, "convert", str(src), str(tmp_path / "out"), "--from", "yolo",
                "--to", "coco") == 1
    assert "no images to import: format yolo" in capsys.readouterr().err


def test_a_voc_layout_under_other_folder_names_gets_the_params_that_import_it(tmp_path):
    src = tmp_path / "VOC2007"
    write_image(src / "JPEGImages/a.jpg", mode="RGB")
    write_voc(src / "Annotations/a.xml", "a.jpg", [voc_object("Car", 1, 1, 9, 9)])
    with pytest.raises(DatasetError, match="images directory not found.*looks like a voc "
                       "dataset.*data.images_dir: JPEGImages, data.labels: Annotations"):
        import_dataset(src, tiny_voc_params(), progress=False)


def test_no_readable_image_writes_no_pool_even_with_keep_going(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "images/x.png").write_bytes(b"not an image")
    proj = tmp_path / "proj"
    assert _cli(tmp_path, "ingest", "-C", str(proj), "--source", str(src), "--no-progress",
                "--keep-going") == 1
    assert "no image of" in capsys.readouterr().err
    assert (proj / "data/pool/import_report.json").exists()
    assert not (proj / "data/pool/manifest.json").exists()


# --- COCO problems name the image file and the annotation id -----------------------------

def test_coco_problems_name_image_file_annotation_id_and_the_bbox_as_written(tmp_path):
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "images" / name)
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                      {"id": 2, "file_name": "b.png", "width": 64, "height": 48}],
           "categories": [{"id": 1, "name": "Car"}, {"id": 2, "name": "Truck"}],
           "annotations": [
               {"id": 7, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 5]},
               {"id": 8, "image_id": 2, "category_id": 1, "bbox": [10, 10, -3, 5]},
               {"id": 9, "image_id": 2, "category_id": 1, "bbox": [10, 10, 3, 5]},
               {"id": 10, "image_id": 2, "category_id": 1, "bbox": [100, 100, 3, 5]},
               {"id": 11, "image_id": 2, "category_id": 1, "bbox": [60, 40, 10, 10]},
               {"id": 12, "image_id": 2, "category_id": 2, "bbox": [1, 1, 3, 3]}]}
    (tmp_path / "labels.json").write_text(json.dumps(doc))
    labels, report = import_dataset(tmp_path, tiny_voc_params(format="coco",
                                                              labels="labels.json"),
                                    progress=False)
    text = "\n".join(p.message for p in report.problems + report.clipped)
    for expected in (
            "image 'a.png', annotation 7 has bbox [10, 10, 0, 5] (x, y, width, height)",
            "image 'b.png', annotation 8 has bbox [10, 10, -3, 5] (x, y, width, height)",
            "image 'b.png', annotation 10 (Car): bbox [100, 100, 3, 5] lies outside the "
            "64x48 image",
            "image 'b.png', annotation 11 (Car): bbox [60, 40, 10, 10] overhangs",
            "unknown class 'Truck' (1 object(s): image 'b.png', annotation 12 (Truck): "
            "bbox [1, 1, 3, 3])"):
        assert expected in text
    assert "object " not in text                  # no position-only names for COCO
    assert len(labels.by_id()["b"].annotations) == 2


# --- darknet split lists among YOLO labels -----------------------------------------------

def test_darknet_split_lists_are_splits_not_label_files_without_images(tmp_path):
    for name in "abc":
        write_image(tmp_path / f"data/{name}.jpg", size=(100, 50), mode="RGB")
        (tmp_path / f"data/{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data/train.txt").write_text("data/a.jpg\n/elsewhere/darknet/data/b.jpg\n")
    (tmp_path / "data/test.txt").write_text("c.jpg\n")           # relative to the list
    (tmp_path / "data/notes.txt").write_text("exported on Monday\n")
    (tmp_path / "obj.names").write_text("Car\n")
    params = tiny_voc_params(format="yolo", images_dir="data", labels="data", classes=["Car"])
    labels, report = import_dataset(tmp_path, params, progress=False)
    assert report.problems == [], report.summary()
    assert {i.id: i.image.metadata.get("split") for i in labels} == \
        {"a": "train", "b": "train", "c": "test"}
    assert any("notes.txt" in n and "not a label file" in n for n in report.notes)


def test_a_split_list_naming_a_missing_image_never_advises_deleting_it(tmp_path):
    write_image(tmp_path / "data/a.jpg", size=(100, 50), mode="RGB")
    (tmp_path / "data/a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data/valid.txt").write_text("data/a.jpg\ndata/gone.jpg\n")
    (tmp_path / "classes.txt").write_text("Car\n")
    params = tiny_voc_params(format="yolo", images_dir="data", labels="data", classes=["Car"])
    labels, report = import_dataset(tmp_path, params, progress=False)
    (problem,) = report.problems
    assert problem.file == "data/valid.txt" and "data/gone.jpg" in problem.message
    assert "delete" not in problem.fix and "keep it" in problem.fix
    assert labels.images[0].image.metadata["split"] == "val"


# --- yolo-dataset export: no needless re-encoding ----------------------------------------

def test_yolo_dataset_copies_plain_images_byte_for_byte_and_masks_losslessly(tmp_path):
    import numpy as np
    from tinyloop.annotations import Box, IgnoreRegion
    from tinyloop.formats.yolo import export_yolo_dataset
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for name in ("plain", "masked"):
        (src / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            src / f"images/{name}.jpg", quality=95)
        write_voc(src / f"labels/{name}.xml", f"{name}.jpg", [voc_object("Car", 1, 1, 9, 9)])
    labels, _ = import_dataset(src, tiny_voc_params(), progress=False)
    labels.by_id()["masked"].ignore.append(IgnoreRegion(Box(30, 20, 40, 30)))
    export_yolo_dataset(labels, src, tmp_path / "out", copy=True)
    out = tmp_path / "out/images/train"
    assert (out / "plain.jpg").read_bytes() == (src / "images/plain.jpg").read_bytes()
    assert not (out / "masked.jpg").exists()
    with Image.open(out / "masked.png") as got, Image.open(src / "images/masked.jpg") as was:
        got, was = np.asarray(got), np.asarray(was)
    assert (got[:20] == was[:20]).all()           # away from the mask: the same pixels
    assert len(np.unique(got[21:29, 31:39].reshape(-1, 3), axis=0)) == 1   # mean grey


# --- init --source writes the params a layout needs --------------------------------------

def _voc(root):
    write_image(root / "JPEGImages/a.jpg", mode="RGB")
    write_voc(root / "Annotations/a.xml", "a.jpg", [voc_object("dog", 1, 1, 9, 9),
                                                    voc_object("DontCare", 20, 20, 30, 30)])
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/train.txt").write_text("a\n")


def _yolo_with_yaml(root):
    for split, name in (("train", "a"), ("val", "b")):
        write_image(root / f"images/{split}/{name}.jpg", size=(100, 50), mode="RGB")
        (root / f"labels/{split}").mkdir(parents=True)
        (root / f"labels/{split}/{name}.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\n"
                                    "names: [car, person]\n")


def _coco(root):
    write_image(root / "train2017/a.png")
    (root / "annotations").mkdir()
    (root / "annotations/instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
        "categories": [{"id": 3, "name": "boat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]}]}))


def _hituav_like(root):
    """HIT-UAV's layout: labels/ (VOC) beside labels_rotated/ (roLabelImg), where an image
    without any rotated object has an oriented file holding only plain VOC boxes."""
    for name in ("a", "b"):
        write_image(root / f"images/{name}.jpg", mode="RGB")
        write_voc(root / f"labels/{name}.xml", f"{name}.jpg", [voc_object("Car", 1, 1, 9, 9)])
    write_voc(root / "labels_rotated/a.xml", "a.jpg", [
        "<object><name>Car</name><difficult>0</difficult><robndbox><cx>5</cx><cy>5</cy>"
        "<w>8</w><h>8</h><angle>0.1</angle></robndbox></object>"])
    write_voc(root / "labels_rotated/b.xml", "b.jpg", [voc_object("Car", 1, 1, 9, 9)])


@pytest.mark.parametrize("make, expected", [
    (_voc, {"format": "voc", "images_dir": "JPEGImages", "labels": "Annotations",
            "split_dir": "ImageSets/Main", "classes": ["dog"]}),
    (_hituav_like, {"format": "voc", "images_dir": "images", "labels": "labels",
                    "oriented_labels": "labels_rotated"}),
    (_yolo_with_yaml, {"format": "yolo", "images_dir": "images", "labels": "labels",
                       "classes": ["car", "person"]}),
    (_coco, {"format": "coco", "images_dir": "train2017",
             "labels": "annotations/instances.json", "classes": ["boat"]})])
def test_init_source_writes_params_that_ingest_accepts_without_edits(tmp_path, make,
                                                                     expected):
    make(tmp_path / "src")
    said = []
    write_params(tmp_path / "params.yaml", str(tmp_path / "src"),
                 detected_data_keys(tmp_path / "src", said.append))
    data = load_params(tmp_path / "params.yaml").data
    assert {k: getattr(data, k) for k in expected} == expected
    assert said[0].startswith(f"detected a {expected['format']} dataset")
    labels, report = import_dataset(data.source, data, progress=False)
    assert report.problems == [] and report.images == len(labels) > 0, report.summary()
    assert report.annotations > 0


def test_init_cli_says_what_it_detected(tmp_path, capsys):
    _voc(tmp_path / "src")
    assert main(["init", str(tmp_path / "proj"), "--source", str(tmp_path / "src")]) == 0
    out = capsys.readouterr().out
    assert "detected a voc dataset: 1 images in JPEGImages/" in out
    assert "images_dir: JPEGImages, labels: Annotations" in out
    assert main(["data", "import", "-C", str(tmp_path / "proj"), "--no-progress"]) == 0
    assert (tmp_path / "proj/data/pool/manifest.json").exists()


def test_a_split_list_that_is_not_utf8_is_a_problem_not_a_crash(tmp_path):
    write_image(tmp_path / "images/a.png")
    write_voc(tmp_path / "labels/a.xml", "a.png", [voc_object("Car", 1, 1, 9, 9)])
    (tmp_path / "ImageSets/Main").mkdir(parents=True)
    (tmp_path / "ImageSets/Main/train.txt").write_bytes(b"a\nMOS75\xe9\n")
    labels, report = import_dataset(tmp_path, tiny_voc_params(split_dir="ImageSets/Main"),
                                    progress=False)
    (problem,) = report.problems
    assert problem.file == "ImageSets/Main/train.txt" and "not UTF-8" in problem.message
    assert [i.id for i in labels] == ["a"]
