"""COCO: broken entries are reported and skipped; a file without 'annotations' is an error
and unknown keys are reported with a did-you-mean; the FiftyOne export is read by FiftyOne's
own COCODetectionDatasetImporter (no database needed to iterate an importer)."""
import json

import pytest

from tinyloop.annotations import (Annotation, Box, IgnoreRegion, ImageLabels, ImageRecord,
                                  LabelSet, Provenance)
from tinyloop.formats import FormatError
from tinyloop.formats.coco import export_coco, export_fiftyone_coco, read_coco
from tests.fixtures_formats import write_image


def _doc():
    return {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48},
                       {"id": 2, "file_name": "b.png", "width": 64, "height": 48},
                       {"id": 2, "file_name": "c.png", "width": 64, "height": 48},
                       {"id": 3, "file_name": "d.png"}],
            "categories": [{"id": 1, "name": "Person"}, {"id": 2, "name": "Car"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 2, 10, 5]},
                {"id": 2, "image_id": 9, "category_id": 1, "bbox": [1, 2, 3, 4]},
                {"id": 3, "image_id": 1, "category_id": 7, "bbox": [1, 2, 3, 4]},
                {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3]},
                {"id": 5, "image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4]}]}


def test_broken_entries_reported_rest_read(tmp_path):
    p = tmp_path / "labels.json"
    p.write_text(json.dumps(_doc()))
    cats, files, problems = read_coco(p)
    assert cats == ["Person", "Car"]
    assert [f.image_ref for f in files] == ["a.png"]
    assert files[0].annotations == [Annotation("Car", Box(1, 2, 11, 7))]
    text = "\n".join(str(e) for e in problems)
    assert "duplicate image id 2 used by 'b.png', 'c.png'" in text
    assert "give every image its own id" in text
    assert "lacks ['width', 'height']" in text
    assert "annotation 2 refers to image_id 9" in text
    assert "annotation 3 has unknown category_id 7" in text
    assert "annotation 4 has bbox [1, 2, 3]" in text
    assert len(problems) == 5


def _labels():
    rec = ImageRecord("a", "images/a.png", 64, 48, 1, {"split": "val"})
    return LabelSet(["Person", "Car"], [ImageLabels(rec, [
        Annotation("Car", Box(1, 2, 11, 7)),
        Annotation("Person", Box(20, 20, 25, 30), provenance=Provenance("model", "m1", 0.75))],
        [IgnoreRegion(Box(40, 0, 60, 10))])])


def test_tinyloop_coco_export_reads_back_losslessly(tmp_path):
    labels = _labels()
    export_coco(labels, tmp_path / "l.json")
    _, (lf,), problems = read_coco(tmp_path / "l.json")
    assert not problems and lf.image_id == "a" and lf.metadata == {"split": "val"}
    assert lf.annotations == labels.images[0].annotations and lf.ignore == labels.images[0].ignore


def test_fiftyone_importer_reads_the_export(tmp_path):
    fouc = pytest.importorskip("fiftyone.utils.coco")
    labels = _labels()
    write_image(tmp_path / "images/a.png", size=(64, 48))
    path = export_fiftyone_coco(labels, tmp_path / "fo.json")
    doc = json.loads(path.read_text())
    assert all("tinyloop" not in a for a in doc["annotations"])
    importer = fouc.COCODetectionDatasetImporter(data_path=str(tmp_path),
                                                 labels_path=str(path))
    with importer:
        samples = list(importer)
    assert len(samples) == 1
    image_path, metadata, label = samples[0]
    assert image_path.endswith("images/a.png") and metadata.width == 64
    dets = label.detections if hasattr(label, "detections") else label["detections"].detections
    assert [d.label for d in dets] == ["Car", "Person", "DontCare"]
    assert dets[0].bounding_box == pytest.approx([1 / 64, 2 / 48, 10 / 64, 5 / 48])
    assert dets[1].confidence == 0.75
    assert dets[2].iscrowd == 1


def test_synthetic_dataset_imports_as_coco_without_problems(tmp_path):
    from tinyloop.config import DataParams
    from tinyloop.ingest import import_dataset
    from tinyloop.synthetic import make_synthetic
    made, _ = make_synthetic(3, size=(96, 64), classes=["a", "b"], seed=1, out_dir=tmp_path,
                             ignore_per_image=1)
    params = DataParams(format="coco", labels="labels.json", classes=["a", "b"],
                        oriented_labels=None, split_dir=None)
    labels, report = import_dataset(tmp_path, params, progress=False)
    assert report.ok, report.summary()
    assert [im.image for im in labels] == [im.image for im in made]
    assert labels.class_counts() == made.class_counts()
    assert [len(im.ignore) for im in labels] == [len(im.ignore) for im in made]


def _write(tmp_path, doc):
    p = tmp_path / "labels.json"
    p.write_text(json.dumps(doc))
    return p


IMAGE = {"id": 1, "file_name": "a.png", "width": 64, "height": 48}
CATS = [{"id": 1, "name": "Person"}]


def test_coco_without_annotations_is_an_error(tmp_path):
    p = _write(tmp_path, {"images": [IMAGE], "categories": CATS})
    with pytest.raises(FormatError, match=r"labels\.json: not a COCO detection file: no "
                                          r"'annotations' list; .*\"annotations\": \[\]"):
        read_coco(p)


def test_annotations_typo_is_an_error_with_did_you_mean(tmp_path):
    p = _write(tmp_path, {"images": [IMAGE], "categories": CATS, "annotation": []})
    with pytest.raises(FormatError) as err:
        read_coco(p)
    assert err.value.message == ("not a COCO detection file: no 'annotations' list (found "
                                 "unknown key 'annotation': did you mean 'annotations'?)")
    assert err.value.fix == "rename the key"


def test_empty_annotations_is_an_unlabeled_set(tmp_path):
    cats, files, problems = read_coco(_write(tmp_path, {"images": [IMAGE], "categories": CATS,
                                                        "annotations": []}))
    assert cats == ["Person"] and not problems
    assert [f.image_ref for f in files] == ["a.png"] and not files[0].annotations


def test_images_with_filename_are_reported_with_did_you_mean(tmp_path):
    images = [{"id": i, "filename": f"{i}.png", "width": 64, "height": 48} for i in (1, 2)]
    _, files, problems = read_coco(_write(tmp_path, {"images": images, "categories": CATS,
                                                     "annotations": []}))
    assert not files and len(problems) == 2        # one per image left out, no key report
    assert all("lacks ['file_name'] (it has 'filename': did you mean 'file_name'?)"
               in e.message for e in problems)
    assert problems[0].fix == "rename the key"


def test_unknown_keys_are_one_problem_each_with_a_count(tmp_path):
    images = [dict(IMAGE, license=1, coco_url="u", flickr_url="f", date_captured="d",
                   tinyloop_note="x", extra={"name": "a"})]
    anns = [{"id": i, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5],
             "segmentation": [], "area": 25, "iscrowd": 0, "attributes": {}, "catgory": 1}
            for i in (1, 2, 3)]
    anns.append({"id": 4, "image_id": 1, "category_id": 1, "box": [1, 1, 5, 5]})
    doc = {"type": "instances", "licence": [], "images": images, "categories": CATS,
           "annotations": anns}
    _, (lf,), problems = read_coco(_write(tmp_path, doc))
    assert len(lf.annotations) == 3
    messages = sorted(e.message for e in problems)
    assert messages == sorted([
        "image 'a.png', annotation 4 has bbox None; expected [x, y, width, height] (it has "
        "'box': did you mean 'bbox'?); left out",
        "unknown key 'catgory' on 3 annotation entries: did you mean 'category_id'?; its "
        "values were not read",
        "unknown key 'extra' on 1 image entry; its values were not read",
        "unknown key 'licence' on the top level: did you mean 'licenses'?; its values were "
        "not read"])
    by_key = {e.message.split("'")[1]: e.fix for e in problems}
    assert by_key["catgory"] == "rename it to 'category_id'"
    assert "another tool" in by_key["extra"]


def test_tinyloop_labels_file_has_no_unknown_keys(tmp_path):
    labels = _labels()
    labels.images[0].annotations.append(Annotation(
        "Car", Box(30, 30, 40, 36), polygon=((30, 30), (40, 30), (40, 36), (30, 36))))
    export_coco(labels, tmp_path / "l.json")
    _, (lf,), problems = read_coco(tmp_path / "l.json")
    assert not problems
    assert lf.annotations[-1].polygon == ((30, 30), (40, 30), (40, 36), (30, 36))
