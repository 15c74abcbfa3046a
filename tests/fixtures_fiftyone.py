"""A tiny project on real HIT-UAV images for the FiftyOne tests: one batch of three images
with model pre-annotations, ground truth, clicks and an order. Import explicitly."""
from __future__ import annotations

import contextlib
import math
import uuid
from pathlib import Path

from flows.project.layout import ProjectLayout
from tinyloop.annotations import (Annotation, Box, ImageLabels, ImageRecord, LabelSet,
                                  OrientedBox, Provenance)
from tinyloop.atomic import write_json_atomic
from tinyloop.cocofile import write_labels

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "hit-uav"
CLASSES = ["Person", "Car", "Bicycle", "OtherVehicle"]


def model(score: float, version: str = "iter-000") -> Provenance:
    return Provenance("model", version, score)


def make_project(root: Path, n_images: int = 3) -> tuple[Path, LabelSet]:
    """Writes data/pool/ground_truth.json, data/order.json and batch 1's preannotations
    and clicks under `root`; returns (images_dir, preannotations)."""
    names = sorted(p.name for p in (SAMPLE / "images").glob("*.jpg"))[:n_images]
    images, gts = [], []
    for i, name in enumerate(names):
        rec = ImageRecord(Path(name).stem, f"images/{name}", 640, 512, 1,
                          {"split": "train"})
        pre = [Annotation("Car", Box(100.5, 50.25, 130.75, 70.0), None, model(0.9), id=f"a{i}0"),
               Annotation("Person", Box(300, 200, 310, 222), None, model(0.6), id=f"a{i}1"),
               Annotation("Car", Box(400, 400, 440, 420),
                          OrientedBox(420, 410, 40, 20, 0.1), model(0.3), id=f"a{i}2")]
        images.append(ImageLabels(rec, pre))
        gts.append(ImageLabels(rec, [Annotation("Car", Box(101, 50, 131, 70)),
                                     Annotation("Bicycle", Box(500, 100, 512, 118))]))
    layout = ProjectLayout(root)
    pre = LabelSet(CLASSES, images, {"batch": 1})
    write_labels(pre, layout.preannotations(1))
    write_labels(LabelSet(CLASSES, gts), layout.ground_truth)
    write_json_atomic(layout.order, {im.id: {"position": k, "batch": 1}
                                     for k, im in enumerate(images)})
    write_json_atomic(layout.clicks(1), {"batch": 1, "categories": CLASSES, "clicks": {
        images[0].id: [{"x": 120.0, "y": 60.0, "category": "Car", "round": 1,
                        "source": "human"}]}})
    return SAMPLE, pre


# real HIT-UAV images whose roLabelImg labels (labels_rotated/) hold turned objects
ORIENTED_IMAGES = ("0_120_40_0_05359", "0_70_70_0_02011", "0_130_80_0_05688")


def make_oriented_project(root: Path) -> tuple[Path, LabelSet]:
    """Like `make_project`, on ORIENTED_IMAGES with their real HIT-UAV labels (every object
    with its oriented box from labels_rotated/): the labels as ground truth and, with model
    provenance and ids, as batch 1's pre-annotations. Returns (images_dir, preannotations)."""
    from dataclasses import replace
    from tinyloop.config import DataParams
    from tinyloop.ingest import import_dataset
    labels, report = import_dataset(SAMPLE, DataParams(), progress=False)
    assert report.ok, report.summary()
    truth = labels.subset(ORIENTED_IMAGES)
    pre = replace(truth, images=[ImageLabels(im.image, [
        replace(a, provenance=model(0.8), id=f"o{i}{k}") for k, a in enumerate(im.annotations)],
        list(im.ignore)) for i, im in enumerate(truth)], info={"batch": 1})
    layout = ProjectLayout(root)
    write_labels(pre, layout.preannotations(1))
    write_labels(truth, layout.ground_truth)
    write_json_atomic(layout.order, {im.id: {"position": k, "batch": 1}
                                     for k, im in enumerate(pre)})
    return SAMPLE, pre


def same_rectangle(a: OrientedBox, b: OrientedBox, tol: float = 1e-6) -> bool:
    """Same four corners (a rectangle has 4 ways to name its sides and angle)."""
    return all(min(math.dist(p, q) for q in b.corners()) <= tol for p in a.corners())


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def priorities(pre: LabelSet) -> dict[str, float]:
    return {im.id: float(k) for k, im in enumerate(pre)}  # last image first



@contextlib.contextmanager
def synced_batch(root: Path, prefix: str):
    """Batch 1 of a `make_project` project synced into a fresh FiftyOne dataset:
    (root, pre-annotations, dataset, dataset name); the dataset is deleted afterwards."""
    from flows.annotate import fiftyone_sync as fsync
    images_dir, pre = make_project(root)
    name = unique_name(prefix)
    ds = fsync.sync_batch(root, 1, name, images_dir)
    try:
        yield root, pre, ds, name
    finally:
        ds.delete()
