"""Embedding store: real HIT-UAV images, incremental re-runs, bad images, NaN vectors, weights."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from features.config import FeaturesParams
from features.embed import EmbedError, embed_images, load_store, update_store
from features.extractors import WeightsError, build_extractor, resnet_trunk
from tinyloop.annotations import ImageRecord

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "hit-uav"
HITUAV = Path(os.environ.get("TINYLOOP_HITUAV",
                             Path(__file__).resolve().parents[2] / "shared/datasets/hit-uav"))
SOURCE = SAMPLE if (SAMPLE / "images").is_dir() else HITUAV
pytestmark = [pytest.mark.skipif(not (SOURCE / "images").is_dir(),
                                 reason="no HIT-UAV images"),
              pytest.mark.usefixtures("one_torch_thread", "cached_networks")]


def params(**kw) -> FeaturesParams:
    base = dict(extractor="resnet18", weights="none", image_size=32, batch_size=4,
                num_workers=0, device="cpu")
    return FeaturesParams(**{**base, **kw})


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, list[ImageRecord]]:
    """8 real HIT-UAV images copied into a private root (so tests can add broken files)."""
    root = tmp_path_factory.mktemp("pool")
    (root / "images").mkdir()
    files = sorted((SOURCE / "images").rglob("*.jpg"))[:8]
    for f in files:
        shutil.copy(f, root / "images" / f.name)
    return root, [ImageRecord(f.stem, f"images/{f.name}", 640, 512) for f in files]


def test_embeds_l2_normalised_float32_with_memory_mappable_store(images, tmp_path):
    root, recs = images
    vectors, ids, report = update_store(recs[:5], root, params(), tmp_path, progress=False)
    assert vectors.shape == (5, 512) and vectors.dtype == np.float32
    assert ids == [r.id for r in recs[:5]]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    mapped = np.load(tmp_path / "embeddings.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, vectors)
    assert json.loads((tmp_path / "ids.json").read_text())["ids"] == ids
    # different images give different vectors
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-4


def test_rerun_embeds_only_new_images(images, tmp_path, monkeypatch):
    root, recs = images
    first, _, _ = update_store(recs[:5], root, params(), tmp_path, progress=False)
    seen = []
    import features.embed as embed_mod
    real = embed_mod.embed_images
    monkeypatch.setattr(embed_mod, "embed_images",
                        lambda paths, *a, **k: (seen.extend(paths), real(paths, *a, **k))[1])
    vectors, ids, report = update_store(recs, root, params(), tmp_path, progress=False)
    assert [p.name for p in seen] == [Path(r.path).name for r in recs[5:]]
    assert report.embedded == [r.id for r in recs[5:]] and report.reused == 5
    np.testing.assert_array_equal(vectors[:5], first)
    seen.clear()
    update_store(recs, root, params(), tmp_path, progress=False)
    assert seen == []                                     # nothing new: nothing embedded
    # a different extractor setting invalidates the store: everything is embedded again
    _, _, report = update_store(recs, root, params(seed=1), tmp_path, progress=False)
    assert len(report.embedded) == len(recs) and report.reused == 0


def test_unreadable_images_are_reported_and_skipped(images, tmp_path):
    root, recs = images
    broken = root / "images" / "broken.jpg"
    broken.write_bytes((root / recs[0].path).read_bytes()[:300])   # truncated JPEG
    bad = [ImageRecord("broken", "images/broken.jpg", 640, 512),
           ImageRecord("missing", "images/missing.jpg", 640, 512)]
    vectors, ids, report = update_store(recs[:3] + bad, root, params(), tmp_path / "s",
                                        progress=False)
    assert ids == [r.id for r in recs[:3]] and vectors.shape[0] == 3
    assert {Path(p.file).name for p in report.problems} == {"broken.jpg", "missing.jpg"}
    listed = json.loads((tmp_path / "s" / "problems.json").read_text())
    assert {Path(p["file"]).name for p in listed} == {"broken.jpg", "missing.jpg"}
    assert all(p["message"] and p["fix"] for p in listed)


def test_nan_vectors_are_reported_and_skipped(images):
    root, recs = images

    class NaNForSecond(torch.nn.Module):
        dim = 4

        def forward(self, x):
            out = x.mean(dim=(2, 3)).repeat(1, 2)[:, :4] + torch.arange(4.0)
            out[1, 0] = float("nan")
            return out

    paths = [root / r.path for r in recs[:3]]
    vectors, rows, failed = embed_images(paths, params(batch_size=8), model=NaNForSecond(),
                                         progress=False)
    assert rows == [0, 2] and vectors.shape == (2, 4)
    assert failed[0][0] == 1 and "NaN" in failed[0][1]
    assert np.isfinite(vectors).all()


def test_bad_pools(images, tmp_path):
    root, recs = images
    with pytest.raises(EmbedError, match="empty"):
        update_store([], root, params(), tmp_path)
    with pytest.raises(EmbedError, match="duplicate image ids.*" + recs[0].id):
        update_store([recs[0], recs[1], recs[0]], root, params(), tmp_path)


def test_inconsistent_store_is_rebuilt(images, tmp_path):
    root, recs = images
    update_store(recs[:3], root, params(), tmp_path, progress=False)
    ids = json.loads((tmp_path / "ids.json").read_text())
    ids["ids"] = ids["ids"][:2]
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    assert load_store(tmp_path) is None
    _, got, report = update_store(recs[:3], root, params(), tmp_path, progress=False)
    assert len(report.embedded) == 3 and len(got) == 3


def test_weights_none_file_and_imagenet(tmp_path, monkeypatch):
    net, dim = resnet_trunk("resnet18", "none", seed=1)
    assert dim == 512
    torch.save(net.state_dict(), tmp_path / "w.pt")
    loaded = build_extractor("resnet18", str(tmp_path / "w.pt")).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x))
    with pytest.raises(WeightsError, match="not found"):
        build_extractor("resnet18", str(tmp_path / "nope.pt"))
    wrong = dict(net.state_dict())
    wrong["conv1.weight"] = torch.zeros(64, 1, 7, 7)      # e.g. a 1-channel network's stem
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(WeightsError, match="does not fit"):
        build_extractor("resnet18", str(tmp_path / "wrong.pt"))
    del wrong["layer1.0.conv1.weight"]
    wrong["conv1.weight"] = net.state_dict()["conv1.weight"]
    torch.save(wrong, tmp_path / "partial.pt")
    with pytest.raises(WeightsError, match="missing keys"):
        build_extractor("resnet18", str(tmp_path / "partial.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot be read"):
        build_extractor("resnet18", str(tmp_path / "junk.pt"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="cannot download"):
        build_extractor("resnet18", "imagenet")
    with pytest.raises(WeightsError, match="no trained SimNet"):
        build_extractor("simnet", simnet_checkpoint=tmp_path / "missing.pt")


def _object_crops(size: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    """Every object of the bundled sample, cut square with some context, resized to size px."""
    from torch.nn import functional as F
    from tinyloop.config import DataParams
    from tinyloop.images import load_image
    from tinyloop.ingest import import_dataset
    labels, _ = import_dataset(SAMPLE, DataParams(), progress=False)
    crops, classes = [], []
    for im in labels.images:
        image = torch.from_numpy(load_image(SAMPLE / im.image.path))
        for a in im.annotations:
            b = a.box
            cx, cy = (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2
            half = 0.75 * max(b.x2 - b.x1, b.y2 - b.y1) + 2
            x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
            x1, y1 = int(min(cx + half, im.image.width)), int(min(cy + half, im.image.height))
            crops.append(F.interpolate(image[None, :, y0:y1, x0:x1], size=(size, size),
                                       mode="bilinear", align_corners=False)[0])
            classes.append(a.category)
    return torch.stack(crops), np.array(classes)


@pytest.mark.skipif(not (SAMPLE / "images").is_dir(), reason="no bundled sample")
def test_imagenet_lite0_embeds_tiny_objects_by_class_better_than_random_init():
    """The point of the pretrained default: on the sample's 624 object crops (Person, Car,
    Bicycle, OtherVehicle), the leave-one-out nearest neighbour shares the class more often
    with ImageNet EfficientNet-Lite0 features than with either random-init network."""
    from features.extractors import preprocess
    crops, classes = _object_crops()
    accuracy = {}
    for extractor, weights in [("efficientnet_lite0", "imagenet"),
                               ("efficientnet_lite0", "none"), ("resnet18", "none")]:
        net = build_extractor(extractor, weights).eval()
        with torch.no_grad():
            e = torch.nn.functional.normalize(net(preprocess(crops, 64)), dim=1)
        sim = e @ e.T
        sim.fill_diagonal_(-2)
        accuracy[(extractor, weights)] = float((classes[sim.argmax(1).numpy()] == classes).mean())
    pretrained = accuracy.pop(("efficientnet_lite0", "imagenet"))
    assert pretrained > 0.8, accuracy
    assert pretrained > max(accuracy.values()) + 0.03, (pretrained, accuracy)
