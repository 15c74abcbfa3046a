"""The bundled HIT-UAV sample (data/sample/hit-uav): imports cleanly, is what it claims, keeps its
attribution, and is what scripts/make_sample.py makes from the full dataset."""
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from tinyloop.config import DataParams
from tinyloop.ingest import import_dataset

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "hit-uav"
HITUAV = Path(os.environ.get("TINYLOOP_HITUAV", REPO.parent / "shared" / "datasets" / "hit-uav"))
CLASSES = ["Person", "Car", "Bicycle", "OtherVehicle"]


def _xml_names(folder: Path) -> Counter:
    counts: Counter = Counter()
    for path in folder.glob("*.xml"):
        counts.update(obj.findtext("name") for obj in ET.parse(path).getroot().iter("object"))
    return counts


@pytest.fixture(scope="module")
def imported():
    return import_dataset(SAMPLE, DataParams(), progress=False)


def test_sample_imports_with_no_problems(imported):
    labels, report = imported
    assert report.problems == [], report.summary()
    assert len(labels) == 60


def test_sample_has_both_splits_as_listed(imported):
    labels, _ = imported
    lists = {split: (SAMPLE / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
             for split in ("train", "val")}
    assert len(lists["train"]) == 48 and len(lists["val"]) == 12
    assert not set(lists["train"]) & set(lists["val"])
    by_split = {split: sorted(im.id for im in labels if im.image.metadata["split"] == split)
                for split in ("train", "val")}
    assert by_split == {split: sorted(ids) for split, ids in lists.items()}
    # covers day and night, and several altitudes and camera angles
    meta = [im.image.metadata for im in labels]
    assert {m["night"] for m in meta} == {0, 1}
    assert len({m["altitude_m"] for m in meta}) >= 5
    assert len({m["camera_angle_deg"] for m in meta}) >= 5


def test_sample_class_counts_match_its_own_xml(imported):
    labels, _ = imported
    voc = _xml_names(SAMPLE / "labels")
    rotated = _xml_names(SAMPLE / "labels_rotated")
    assert voc == rotated
    assert labels.class_counts() == {c: voc[c] for c in CLASSES}
    assert all(voc[c] > 0 for c in CLASSES)                 # OtherVehicle included
    ignore = sum(len(im.ignore) for im in labels)
    assert ignore == voc["DontCare"] > 0
    assert all(r.category == "DontCare" for im in labels for r in im.ignore)
    # every object carries its oriented box from labels_rotated
    assert all(a.obox is not None for im in labels for a in im.annotations)
    # the README states the same counts
    readme = (SAMPLE / "README.md").read_text()
    for name in CLASSES + ["DontCare"]:
        assert re.search(rf"\b{name} {voc[name]}\b", readme), name


def test_sample_keeps_attribution_and_licence():
    readme = (SAMPLE / "README.md").read_text()
    flat = " ".join(readme.split())
    for must in ('Suo et al., "HIT-UAV: A high-altitude infrared thermal dataset for Unmanned '
                 'Aerial Vehicle-based object detection", Scientific Data 10, 227 (2023), '
                 "doi:10.1038/s41597-023-02066-6", "CC BY 4.0"):
        assert must in flat, must
    source_readme = HITUAV / "README.md"
    if source_readme.is_file():       # the attribution block is copied verbatim
        block = re.search(r"Source: Suo et al\..*?\(see LICENSE\)\.", source_readme.read_text(),
                          re.S).group(0)
        assert block in readme
    licence = (SAMPLE / "LICENSE").read_text()
    assert licence.startswith("Attribution 4.0 International")
    size = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert size < 6_000_000


def test_sample_files_are_copies_of_the_source():
    if not (HITUAV / "images").is_dir():
        pytest.skip(f"full HIT-UAV not found at {HITUAV} (set TINYLOOP_HITUAV)")
    for sub in ("images", "labels", "labels_rotated"):
        for path in sorted((SAMPLE / sub).iterdir())[:60:7]:
            assert path.read_bytes() == (HITUAV / sub / path.name).read_bytes(), path
    for split in ("train", "val"):
        source_ids = set((HITUAV / "ImageSets" / "Main" / f"{split}.txt").read_text().split())
        ids = (SAMPLE / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        assert set(ids) <= source_ids, split


def test_make_sample_is_deterministic(tmp_path):
    if not (HITUAV / "images").is_dir():
        pytest.skip(f"full HIT-UAV not found at {HITUAV} (set TINYLOOP_HITUAV)")
    out = tmp_path / "again"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_sample.py"),
                    "--source", str(HITUAV), "--out", str(out)], check=True,
                   capture_output=True)
    for rel in ("ImageSets/Main/train.txt", "ImageSets/Main/val.txt", "README.md"):
        assert (out / rel).read_text() == (SAMPLE / rel).read_text(), rel
