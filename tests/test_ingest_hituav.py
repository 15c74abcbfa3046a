"""Importing the real HIT-UAV subset: exact README counts with VOC and with roLabelImg
labels, metadata from file names, splits, and a VOC -> COCO -> YOLO -> COCO round trip."""
import collections

import pytest

from tinyloop.cocofile import from_coco, read_labels, to_coco
from tinyloop.config import DataParams
from tinyloop.formats.yolo import export_yolo
from tinyloop.ingest import import_dataset, write_pool
from tests.fixtures_formats import hituav_root

README_COUNTS = {"Person": 6863, "Car": 4302, "Bicycle": 3777, "OtherVehicle": 80}
README_DONTCARE = 104


@pytest.fixture(scope="module")
def voc_import():
    return import_dataset(hituav_root(), DataParams(), progress=False)


def _ignore_count(labels):
    return sum(len(im.ignore) for im in labels)


def test_voc_import_matches_readme_counts(voc_import):
    labels, report = voc_import
    assert report.ok, report.summary()
    assert len(labels) == report.images == 1490
    assert labels.class_counts() == README_COUNTS
    assert _ignore_count(labels) == README_DONTCARE
    assert {r.category for im in labels for r in im.ignore} == {"DontCare"}
    # every VOC object got its oriented box from labels_rotated/
    assert report.oriented == sum(README_COUNTS.values())


def test_rolabelimg_import_matches_readme_counts():
    params = DataParams(format="rolabelimg", labels="labels_rotated", verify_images="header")
    labels, report = import_dataset(hituav_root(), params, progress=False)
    assert report.ok, report.summary()
    assert len(labels) == 1490
    assert labels.class_counts() == README_COUNTS
    assert _ignore_count(labels) == README_DONTCARE
    assert all(a.obox is not None for im in labels for a in im.annotations)


def test_metadata_and_splits(voc_import):
    labels, _ = voc_import
    im = labels.by_id()["0_100_30_0_03281"].image
    assert (im.path, im.width, im.height, im.channels) == \
        ("images/0_100_30_0_03281.jpg", 640, 512, 1)
    assert im.metadata == {"split": "train", "night": 0, "altitude_m": 100,
                           "camera_angle_deg": 30, "frame": 3281, "flight": "0_100_30_0"}
    splits = collections.Counter(i.image.metadata["split"] for i in labels)
    assert splits == {"train": 1200, "val": 290}
    assert {i.image.metadata["night"] for i in labels} == {0, 1}


def test_merged_oriented_boxes_agree_with_voc_boxes(voc_import):
    labels, _ = voc_import
    ious = [a.box.iou(a.obox.bounding_box()) for im in labels for a in im.annotations]
    assert min(ious) > 0.7


def test_write_pool_manifest_and_ground_truth(voc_import, tmp_path):
    labels, report = voc_import
    small = labels.subset([im.id for im in labels.images[:20]])
    files = write_pool(small, report, tmp_path / "pool/manifest.json",
                       tmp_path / "pool/ground_truth.json", tmp_path / "pool/report.json")
    assert len(files) == 3
    manifest = read_labels(tmp_path / "pool/manifest.json")
    assert [im.image for im in manifest] == [im.image for im in small]
    assert all(not im.annotations and not im.ignore for im in manifest)
    gt = read_labels(tmp_path / "pool/ground_truth.json")
    assert gt.images == small.images


def test_voc_coco_yolo_coco_round_trip_keeps_every_box(voc_import, tmp_path):
    labels, _ = voc_import
    coco = from_coco(to_coco(labels))                     # VOC -> COCO
    export_yolo(coco, tmp_path / "labels")                # COCO -> YOLO
    (tmp_path / "images").symlink_to(hituav_root() / "images")
    params = DataParams(format="yolo", oriented_labels=None, split_dir=None,
                        verify_images="header")
    back, report = import_dataset(tmp_path, params, progress=False)  # YOLO -> ...
    assert report.ok, report.summary()
    back = from_coco(to_coco(back))                       # ... -> COCO
    assert back.class_counts() == README_COUNTS
    before, after = labels.by_id(), back.by_id()
    assert set(before) == set(after)
    worst = 0.0
    for image_id, item in before.items():
        other = after[image_id]
        assert [a.category for a in other.annotations] == [a.category for a in item.annotations]
        pairs = list(zip(item.annotations, other.annotations)) + \
            list(zip(item.ignore, other.ignore))
        assert len(other.ignore) == len(item.ignore)
        for a, b in pairs:
            worst = max(worst, max(abs(u - v) for u, v in zip(a.box.xyxy(), b.box.xyxy())))
    # 6 decimals of a normalised coordinate: <= 0.5e-6 * 640 px per value, both ends
    assert worst < 1e-3
