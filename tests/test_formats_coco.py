"""COCO: broken entries are reported and skipped; the FiftyOne export is read by FiftyOne's
own COCODetectionDatasetImporter (no database needed to iterate an importer)."""
import json

import pytest

from tinyloop.annotations import (Annotation, Box, IgnoreRegion, ImageLabels, ImageRecord,
                                  LabelSet, Provenance)
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
