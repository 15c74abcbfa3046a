"""Shared pieces of the c3det model tests: a fast architecture, tiny inputs, two threads."""
from __future__ import annotations

import numpy as np
import pytest
import torch

# few proposals and RoIs keep these CPU tests fast; the architecture is the default one
FAST = dict(rpn_proposals_train=200, rpn_proposals_test=100, roi_batch_size=64)


@pytest.fixture(autouse=True)
def two_threads():
    """At most two torch threads (tiny inputs: more only fight the machine's other jobs)."""
    old = torch.get_num_threads()
    torch.set_num_threads(min(2, old))
    yield
    torch.set_num_threads(old)


def tiny_inputs():
    """Two small images, clicks on the first, targets with 'clicked' flags (3 classes)."""
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=g), torch.rand(3, 48, 64, generator=g)]
    clicks = [torch.tensor([[20., 22., 0], [40., 40., 2]]), torch.zeros(0, 3)]
    targets = [{"boxes": torch.tensor([[15., 17., 25., 27.], [35., 35., 46., 46.]]),
                "labels": torch.tensor([1, 3]), "clicked": torch.tensor([True, True])},
               {"boxes": torch.tensor([[5., 5., 14., 14.]]), "labels": torch.tensor([2]),
                "clicked": torch.tensor([False])}]
    return images, clicks, targets


def assert_detections_valid(model, images, clicks, num_classes: int) -> None:
    """In eval mode, with and without clicks: one result per image, well-formed boxes inside
    the image, labels in 1..num_classes."""
    model.eval()
    with torch.no_grad():
        for c in (clicks, None):
            out = model(images, c)
            assert len(out) == len(images)
            for d, im in zip(out, images):
                assert d["boxes"].shape[1] == 4 and len(d["boxes"]) == len(d["scores"])
                if len(d["labels"]):
                    assert 1 <= d["labels"].min() and d["labels"].max() <= num_classes
                    assert d["boxes"][:, 2].max() <= im.shape[-1] + 1e-3


def assert_same_predictions(a, b) -> None:
    """Two lists of predicted annotations equal up to float rounding (a cached or sliced path
    vs the full computation), in any order: an untrained model's scores tie to ~1e-6, and
    which of two tied boxes comes first follows the CPU's rounding."""
    def key(x):
        return (x.category, x.provenance.source, *np.round(x.box.xyxy(), 2))
    a, b = sorted(a, key=key), sorted(b, key=key)
    assert [(x.category, x.provenance.source) for x in a] == \
        [(x.category, x.provenance.source) for x in b]
    assert np.allclose(np.reshape([x.box.xyxy() for x in a], (-1, 4)),
                       np.reshape([x.box.xyxy() for x in b], (-1, 4)), atol=1e-3)
    assert np.allclose([x.score for x in a], [x.score for x in b], atol=1e-4)


def assert_same_outputs(ref: dict, got: dict) -> None:
    """Two detector output dicts equal up to float rounding: boxes to 1e-3 px (float32 box
    decoding rounds to ~2e-4 px on some CPUs), scores and the rest to 1e-4. The detections
    (boxes, labels, scores) are compared in a canonical order, since tied scores may come out
    in either order; the per-proposal candidate tensors in theirs."""
    assert ref.keys() == got.keys()
    ref, got = _canonical_detections(ref), _canonical_detections(got)
    for key in ref:
        atol = 1e-3 if "boxes" in key else 1e-4
        assert torch.allclose(ref[key].float(), got[key].float(), atol=atol), key


def _canonical_detections(out: dict) -> dict:
    """out with its boxes, labels and scores sorted by label, then box (rounded to 0.01 px)."""
    boxes = out["boxes"].detach().numpy().round(2)
    order = np.lexsort([*boxes.T[::-1], out["labels"].numpy()])
    order = torch.from_numpy(order)
    return {k: v[order] if k in ("boxes", "labels", "scores") else v for k, v in out.items()}
