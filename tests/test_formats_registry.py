"""The formats registry: every format is reachable by name, and a new one-file-per-image
format is added through the registry alone (no edit of ingest, export or the CLI)."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinyloop.annotations import Annotation, Box
from tinyloop.config import DataParams
from tinyloop.formats import LabelFile
from tinyloop.formats import registry
from tinyloop.formats.export import export_labels
from tinyloop.formats.registry import LabelReader, LabelWriter, written_to
from tinyloop.ingest import import_dataset


def test_every_shipped_format_is_registered():
    assert registry.reader_names() == ("voc", "rolabelimg", "yolo", "dota", "coco")
    assert registry.writer_names() == ("voc", "rolabelimg", "yolo", "yolo-obb",
                                       "yolo-dataset", "dota", "coco", "fiftyone-coco")
    with pytest.raises(ValueError, match="unknown export format 'pascal'"):
        registry.writer("pascal")


# --- a format of our own: `class,x1,y1,x2,y2` lines, one .csv file per image -------------
def read_csv_labels(path: Path) -> LabelFile:
    lines = [line.split(",") for line in path.read_text().splitlines() if line.strip()]
    return LabelFile(source=path, annotations=[
        Annotation(name, Box(*map(float, xyxy))) for name, *xyxy in lines])


def write_csv_labels(labels, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in labels.images:
        rows = [f"{a.category},{a.box.x1:g},{a.box.y1:g},{a.box.x2:g},{a.box.y2:g}"
                for a in item.annotations]
        (out_dir / f"{item.image.id}.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def csv_format(monkeypatch):
    """Registers `csv` for this test only: the registry's two calls are all it takes."""
    monkeypatch.setattr(registry.READERS, "_entries", dict(registry.READERS.entries()))
    monkeypatch.setattr(registry.WRITERS, "_entries", dict(registry.WRITERS.entries()))
    registry.register_reader(LabelReader("csv", ".csv", read=read_csv_labels))
    registry.register_writer(LabelWriter("csv", written_to(write_csv_labels)))


def test_a_new_format_through_the_registry_alone(tmp_path, csv_format):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(root / "images/a.png")
    (root / "labels/a.csv").write_text("Car,1,2,11,12\nPerson,20,20,30,35\n")
    data = DataParams(source=str(root), format="csv", classes=["Person", "Car"],
                      ignore_classes=[], oriented_labels=None, split_dir=None)
    labels, report = import_dataset(root, data, progress=False, workers=1)
    assert "csv" in registry.reader_names() and report.images == 1
    (item,) = labels.images
    assert [(a.category, a.box) for a in item.annotations] == [
        ("Car", Box(1, 2, 11, 12)), ("Person", Box(20, 20, 30, 35))]
    out = export_labels(labels, "csv", tmp_path / "out")
    assert (out / "a.csv").read_text() == (root / "labels/a.csv").read_text()
