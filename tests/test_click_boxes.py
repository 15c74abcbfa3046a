"""Boxes from clicks (#30, "Click, don't draw"): each class-labelled point becomes the
documented `click_box` box - the model's candidate, else the class's size prior, else a box
from the image - on small made-up images; boxes already there are never touched; the App's
operator does it on a real dataset (MongoDB)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from c3det.click_to_box import explain_clicks
from c3det.image_click_box import ImageClickBoxer
from flows.annotate.click_boxes import boxes_from_clicks
from tinyloop.annotations import Annotation, Box, Click, Provenance

CLASSES = ["Person", "Car"]
H, W = 80, 120


class ExplainingPredictor:
    """A ClickPredictor whose network found nothing but two Car candidates: the clicks go
    through c3det.click_to_box as a real C3Det model's do."""
    classes, min_score = CLASSES, 0.0
    # (M, C, 4) class boxes of each proposal, (M,) objectness
    candidates = torch.tensor([[[0, 0, 1, 1], [40, 30, 60, 50]],    # centred on (50, 40)
                               [[0, 0, 1, 1], [46, 30, 66, 50]]],   # centre 6 px right, 0.9
                              dtype=torch.float32)
    objectness = torch.tensor([0.6, 0.9])
    class_sizes = [(6.0, 14.0), (20.0, 10.0)]   # median training boxes: Person, Car

    def predict(self, image, clicks=()):
        none = torch.zeros((0, 4))
        detection = {"boxes": none, "labels": torch.zeros(0, dtype=torch.long),
                     "scores": torch.zeros(0), "candidate_boxes": self.candidates,
                     "candidate_objectness": self.objectness}
        k = torch.tensor([[c.x, c.y, CLASSES.index(c.category)] for c in clicks])
        out = explain_clicks(detection, k, (H, W), class_sizes=self.class_sizes)
        return [Annotation(CLASSES[int(label) - 1], Box(*box), provenance=Provenance(
                    "click_refined" if refined else "model", "iter-001", float(score)))
                for box, label, score, refined in zip(out["boxes"].tolist(),
                                                      out["labels"].tolist(),
                                                      out["scores"].tolist(),
                                                      out["refined"].tolist())]


def no_image_boxer():
    raise AssertionError("the model explained every point: the image must not be read")


@pytest.fixture
def flat_image(tmp_path):
    path = tmp_path / "flat.png"
    Image.fromarray(np.full((H, W), 128, np.uint8)).save(path)
    return path


@pytest.fixture
def blob_image(tmp_path):
    """A dark noisy background with one bright 10 x 16 px object at (90, 20)-(100, 36)."""
    rng = np.random.default_rng(0)
    pixels = rng.normal(50, 2, (H, W)).clip(0, 255)
    pixels[20:36, 90:100] = 230
    path = tmp_path / "blob.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def test_model_candidate_best_by_centre_score_times_objectness(flat_image):
    made = boxes_from_clicks(flat_image, [Click(50, 40, "Car")], [], ExplainingPredictor(),
                             no_image_boxer)
    # same size: centre score 1.0 x objectness 0.6 beats exp(-36 / 32) = 0.32 x 0.9
    assert [(a.category, a.box) for a in made] == [("Car", Box(40, 30, 60, 50))]
    assert made[0].provenance == Provenance("click_box", "iter-001")


def test_no_candidate_gives_the_class_size_prior_centred_on_the_click(flat_image):
    made = boxes_from_clicks(flat_image, [Click(20, 60, "Person")], [], ExplainingPredictor(),
                             no_image_boxer)  # the candidates are Cars far away
    assert made[0].box == Box(17, 53, 23, 67)  # Person's typical 6 x 14 around (20, 60)
    assert made[0].provenance.source == "click_box"


def test_no_model_gives_the_box_of_the_object_in_the_image(blob_image):
    made = boxes_from_clicks(blob_image, [Click(96, 27, "Person")], [], None)
    assert made[0].box.iou(Box(90, 20, 100, 36)) >= 0.9
    assert made[0].provenance == Provenance("click_box")


def test_a_model_that_explains_nothing_leaves_the_click_to_the_image(blob_image):
    class RelabelOnly:  # a YOLO model's clicks only relabel its boxes; it found nothing here
        def predict(self, image, clicks=()):
            return []
    made = boxes_from_clicks(blob_image, [Click(95, 28, "Person")], [], RelabelOnly())
    assert made[0].box.iou(Box(90, 20, 100, 36)) >= 0.9


def test_no_contrast_and_no_model_gives_the_class_size_of_the_labelled_boxes(flat_image):
    boxer = ImageClickBoxer()
    boxer.prior.add("Car", 20, 10)
    made = boxes_from_clicks(flat_image, [Click(50, 40, "Car")], [], None, lambda: boxer)
    assert made[0].box.xyxy() == pytest.approx([40, 35, 60, 45])


def test_existing_and_human_boxes_are_never_touched_and_explain_their_points(flat_image):
    human = Annotation("Car", Box(5, 5, 25, 25), provenance=Provenance("human"), id="h1")
    edited = Annotation("Person", Box(70, 50, 80, 70), provenance=Provenance(
        "model", "iter-001", 0.7, edited=True), id="e1")
    existing = [human, edited]
    before = copy.deepcopy(existing)
    points = [Click(15, 15, "Car"),      # inside the human Car: that object has its box
              Click(75, 60, "Person"),   # inside the edited Person: likewise
              Click(15, 16, "Person"),   # inside the Car box but another class: a new box
              Click(50, 40, "Car"),      # a new Car ...
              Click(52, 41, "Car")]      # ... clicked twice: still one box
    made = boxes_from_clicks(flat_image, points, existing, ExplainingPredictor(),
                             no_image_boxer)
    assert existing == before
    assert [(a.category, a.box) for a in made] == [("Person", Box(12, 9, 18, 23)),
                                                  ("Car", Box(40, 30, 60, 50))]
    assert all(a.provenance.source == "click_box" for a in made)


# --- the App's operator, on a real dataset ---------------------------------------------------

@pytest.mark.mongo
def test_boxes_from_clicks_operator_adds_boxes_and_keeps_every_box(tmp_path, mongo_uri,
                                                                   monkeypatch):
    """The plugin's adapter: the current model (faked at c3det.predict.Predictor) boxes the
    points of the selected sample; the annotator's edited box and the model's untouched
    boxes stay as they are; the pull writes the new box as `click_box`."""
    import importlib.util
    import types

    import fiftyone as fo
    import c3det.predict
    from flows.annotate import fiftyone_sync as fsync
    from flows.annotate.app import PLUGIN_SRC
    from tests.fixtures_fiftyone import synced_batch
    from tinyloop.cocofile import read_labels

    class FakePredictor:  # finds a Bicycle where the annotator points
        def __init__(self, checkpoint, classes, tiling=None, min_score=None, device=None):
            pass

        def predict(self, image, clicks):
            return [Annotation("Bicycle", Box(500, 100, 512, 118), provenance=Provenance(
                "click_refined", "iter-001", 1.0))]

    monkeypatch.setattr(c3det.predict, "Predictor", FakePredictor)
    with synced_batch(tmp_path, "click-boxes") as (root, pre, ds, name):
        (root / "params.yaml").write_text("flows:\n  min_score: 0.3\n")
        (root / "models/iter-001").mkdir(parents=True)
        (root / "models/iter-001/model.pt").write_bytes(b"")
        (root / "models/iter-001/train.json").write_text("{}")
        image = pre.images[0].id
        sample = [s for s in ds if s["image_id"] == image][0]
        sample["corrections"].detections[0].label = "Person"   # the annotator's edit
        sample["box_clicks"] = fo.Detections(detections=[
            fo.Detection(label="Bicycle", bounding_box=[505 / 640, 108 / 512, 0.004, 0.004]),
            fo.Detection(label="Person", bounding_box=[115 / 640, 58 / 512, 0.004, 0.004])])
        sample.save()
        before = [d.to_dict() for d in sample["corrections"].detections]
        spec = importlib.util.spec_from_file_location("tinyloop_plugin",
                                                      PLUGIN_SRC / "__init__.py")
        plugin = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(plugin)
        triggered = []
        ctx = types.SimpleNamespace(dataset=ds, view=ds.view(), selected=[sample.id],
                                    current_sample=None, params={},
                                    trigger=lambda name, params=None: triggered.append(name))
        counts = plugin.BoxesFromClicks().execute(ctx)
        assert counts == {"samples": 1, "points": 2, "boxes": 1}  # Person: in its box
        assert triggered == ["reload_samples"]
        sample.reload()
        dets = sample["corrections"].detections
        assert [d.to_dict() for d in dets[:3]] == before         # every box as it was
        assert dets[3].label == "Bicycle" and dets[3]["source"] == "click_box"
        assert len(sample["box_clicks"].detections) == 0
        pulled = fsync.pull_batch(root, 1, name).labels.by_id()[image].annotations
        written = read_labels(root / "data/batches/001/labels.json").by_id()[image]
        assert written.annotations == pulled
        made = pulled[3]
        assert made.box == Box(500, 100, 512, 118)
        assert made.provenance == Provenance("click_box", "iter-001")
        assert pulled[0].category == "Person" and pulled[0].provenance.edited


@pytest.mark.mongo
def test_a_point_left_unboxed_stops_the_pull(tmp_path, mongo_uri):
    import fiftyone as fo
    from flows.annotate import fiftyone_sync as fsync
    from tests.fixtures_fiftyone import synced_batch
    with synced_batch(tmp_path, "click-left") as (root, pre, ds, name):
        sample = ds.first()
        sample["box_clicks"] = fo.Detections(detections=[
            fo.Detection(label="Car", bounding_box=[0.5, 0.5, 0.004, 0.004])])
        sample.save()
        with pytest.raises(fsync.PullError, match="Boxes from clicks"):
            fsync.pull_batch(root, 1, name)
