"""Synthetic tiny-object data: deterministic, exact labels, distinguishable classes, importable."""
import numpy as np
import pytest

from tinyloop.config import DataParams
from tinyloop.synthetic import SHAPES, class_style, make_synthetic, shape_mask


def test_same_seed_same_pixels_and_labels_different_seed_differs():
    a_labels, a_pixels = make_synthetic(4, size=(96, 64), seed=7)
    b_labels, b_pixels = make_synthetic(4, size=(96, 64), seed=7)
    c_labels, c_pixels = make_synthetic(4, size=(96, 64), seed=8)
    assert a_labels == b_labels
    assert all(np.array_equal(x, y) for x, y in zip(a_pixels, b_pixels))
    assert a_labels.images != c_labels.images
    assert not any(np.array_equal(x, y) for x, y in zip(a_pixels, c_pixels))
    # image i does not depend on how many images were asked for
    prefix_labels, prefix_pixels = make_synthetic(2, size=(96, 64), seed=7)
    assert prefix_labels.images == a_labels.images[:2]
    assert np.array_equal(prefix_pixels[1], a_pixels[1])


def test_pixels_format_counts_and_sizes():
    labels, pixels = make_synthetic(12, size=(128, 96), classes=["a", "b", "c"],
                                    objects_per_image=(3, 6), object_size=(8, 14), seed=1)
    assert labels.categories == ["a", "b", "c"] and len(labels) == len(pixels) == 12
    for item, px in zip(labels, pixels):
        assert px.shape == (3, 96, 128) and px.dtype == np.float32
        assert 0 <= px.min() and px.max() <= 1
        assert (item.image.width, item.image.height) == (128, 96)
        assert 3 <= len(item.annotations) <= 6
        for ann in item.annotations:
            assert 8 <= ann.box.width <= 14 and 8 <= ann.box.height <= 14
            assert ann.box.problem(128, 96, tolerance=0) is None
        for i, a in enumerate(item.annotations):      # objects never overlap
            assert all(a.box.iou(b.box) == 0 for b in item.annotations[i + 1:])
    assert set(labels.class_counts()) == {"a", "b", "c"}
    assert all(n > 0 for n in labels.class_counts().values())


def test_objects_are_visible_where_labelled_and_classes_differ():
    classes = [f"k{i}" for i in range(8)]                 # 6 bright shapes + 2 dark ones
    labels, pixels = make_synthetic(20, size=(128, 128), classes=classes,
                                    objects_per_image=(6, 10), object_size=(16, 24), seed=3)
    contrast = {c: [] for c in classes}
    for item, px in zip(labels, pixels):
        gray = px[0]
        for ann in item.annotations:
            x1, y1, x2, y2 = (int(v) for v in ann.box.xyxy())
            shape, sign = class_style(classes.index(ann.category))
            inside = gray[y1:y2, x1:x2][shape_mask(shape, x2 - x1, y2 - y1)]
            around = np.zeros(gray.shape, dtype=bool)       # a 3 px strip around the box
            around[max(y1 - 3, 0):y2 + 3, max(x1 - 3, 0):x2 + 3] = True
            around[y1:y2, x1:x2] = False
            contrast[ann.category].append(np.sign(sign) *
                                          (inside.mean() - np.median(gray[around])))
    for c in classes:
        assert np.median(contrast[c]) > 0.15, c       # each object stands out locally
    # the masks of the classes are pairwise different shapes
    masks = {s: shape_mask(s, 20, 20) for s in SHAPES}
    for i, s in enumerate(SHAPES):
        for t in SHAPES[i + 1:]:
            assert (masks[s] != masks[t]).mean() > 0.05, (s, t)
    assert class_style(0)[1] > 0 > class_style(len(SHAPES))[1]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("w,h", [(10, 10), (11, 8), (30, 23)])
def test_shape_fills_its_box_edge_to_edge(shape, w, h):
    m = shape_mask(shape, w, h)
    assert m.shape == (h, w)
    assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="object_size"):
        make_synthetic(1, size=(32, 32), object_size=(10, 40))
    with pytest.raises(ValueError, match="at most 12"):
        make_synthetic(1, classes=[str(i) for i in range(13)])
    with pytest.raises(ValueError, match="distinct"):
        make_synthetic(1, classes=["a", "a"])


def test_written_dataset_imports_cleanly_and_matches(tmp_path):
    from tinyloop.images import load_image
    from tinyloop.ingest import import_dataset
    labels, pixels = make_synthetic(6, size=(64, 48), objects_per_image=(2, 4),
                                    object_size=(6, 12), seed=5, out_dir=tmp_path,
                                    ignore_per_image=1)
    assert sum(len(item.ignore) for item in labels) >= 1
    data = DataParams(source=str(tmp_path), format="coco", labels="labels.json",
                      oriented_labels=None, classes=list(labels.categories),
                      ignore_classes=["DontCare"], split_dir=None)
    imported, report = import_dataset(tmp_path, data, progress=False)
    assert report.problems == [], report.summary()
    got = imported.by_id()
    for item, px in zip(labels, pixels):
        assert got[item.id].annotations == item.annotations
        assert got[item.id].ignore == item.ignore
        # returned pixels are exactly what loading the written PNG gives
        assert np.array_equal(load_image(tmp_path / item.image.path), px)


def test_cli_writes_a_dataset_and_the_params_that_import_it(tmp_path, capsys):
    import yaml

    from flows.cli import main
    from tinyloop.ingest import import_dataset
    from tinyloop.params import build
    out = tmp_path / "syn"
    assert main(["synthetic", str(out), "-n", "3", "--size", "64", "48", "--classes", "a",
                 "b", "--object-size", "6", "10", "--objects", "1", "3", "--seed", "4"]) == 0
    printed = capsys.readouterr().out
    data = build(DataParams, yaml.safe_load(printed.split("params.yaml:\n")[1])["data"], "data")
    labels, report = import_dataset(data.source, data, progress=False)
    assert report.problems == [] and len(labels) == 3 and labels.categories == ["a", "b"]
    assert main(["synthetic", str(out), "--object-size", "5", "500"]) == 2
    assert "object_size" in capsys.readouterr().err


def test_classes_are_learnable_from_crops():
    """Nearest class centroid on 12x12 crops (normalised per crop) tells the classes apart:
    the shapes carry the class, not the position or the background."""
    from PIL import Image
    classes = ["disc", "square", "cross", "ring", "triangle", "diamond", "dark-disc"]
    labels, pixels = make_synthetic(40, size=(128, 128), classes=classes,
                                    objects_per_image=(6, 10), object_size=(10, 24), seed=11)
    x, y = [], []
    for item, px in zip(labels, pixels):
        for ann in item.annotations:
            x1, y1, x2, y2 = (int(v) for v in ann.box.xyxy())
            crop = Image.fromarray(px[0, y1:y2, x1:x2]).resize((12, 12), Image.BILINEAR)
            a = np.asarray(crop).ravel()
            x.append((a - a.mean()) / (a.std() + 1e-6))
            y.append(classes.index(ann.category))
    x, y = np.array(x), np.array(y)
    half = len(y) // 2
    assert set(y[:half]) == set(y[half:]) == set(range(len(classes)))
    centroids = np.stack([x[:half][y[:half] == k].mean(0) for k in range(len(classes))])
    predicted = np.argmin(((x[half:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    accuracy = (predicted == y[half:]).mean()
    assert accuracy > 0.9, accuracy          # 0.975 measured


def test_oriented_objects_are_labelled_by_their_rotated_box(tmp_path):
    from tinyloop.ingest import import_dataset
    labels, pixels = make_synthetic(6, size=(96, 96), classes=["disc", "square", "cross"],
                                    objects_per_image=(3, 5), object_size=(12, 20), seed=2,
                                    oriented=True, out_dir=tmp_path)
    angles = []
    for item, px in zip(labels, pixels):
        for ann in item.annotations:
            o = ann.obox
            assert o is not None and 12 <= o.w <= 20 and 12 <= o.h <= 20
            assert ann.box == o.bounding_box()
            assert ann.box.problem(96, 96, tolerance=0) is None
            angles.append(o.angle)
            # the object's pixels lie in its rotated box: contrast inside the polygon,
            # background in the corners of the axis-aligned box outside it
            poly = o.polygon()
            from shapely.geometry import Point
            x1, y1, x2, y2 = (int(v) for v in ann.box.xyxy())
            inside, outside = [], []
            for yy in range(y1, min(y2 + 1, 96)):
                for xx in range(x1, min(x2 + 1, 96)):
                    p = Point(xx + 0.5, yy + 0.5)
                    (inside if poly.buffer(-1).contains(p) else
                     outside if not poly.buffer(1).contains(p) else []).append(px[0, yy, xx])
            if ann.category == "square" and outside:
                assert np.mean(inside) - np.mean(outside) > 0.15
    assert np.ptp(angles) > 1.0                               # really turned, variously
    data = DataParams(source=str(tmp_path), format="coco", labels="labels.json",
                      oriented_labels=None, classes=["disc", "square", "cross"],
                      split_dir=None)
    imported, report = import_dataset(tmp_path, data, progress=False)
    assert report.problems == [], report.summary()
    assert [im.annotations for im in imported] == [im.annotations for im in labels]
    # axis-aligned output is unchanged by the option's existence
    plain, _ = make_synthetic(2, size=(96, 96), seed=2)
    assert all(a.obox is None for im in plain for a in im.annotations)
