"""One model policy: the score threshold chosen for a model travels with its checkpoint
(threshold.json beside it), so the Predictor, pre-annotation, the simulated annotator and
the FiftyOne App's "Refine with clicks" show the same boxes."""
from __future__ import annotations

import importlib.util
import json
import types

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from c3det import checkpoint
from c3det.config import C3DetParams
from c3det.model import build_model
from c3det.predict import Predictor
from flows import iteration_steps, model_policy
from flows.project.project import Project
from flows.project.layout import ProjectLayout
from tinyloop.annotations import Click, ImageLabels, ImageRecord, LabelSet
from tinyloop.cocofile import write_labels

CLASSES = ["Person", "Car", "Bicycle", "OtherVehicle"]   # params.yaml's default classes
# an untrained tiny detector that keeps every box (scores spread around 1/5)
FAST = dict(rpn_proposals_train=200, rpn_proposals_test=100, roi_batch_size=64,
            score_thresh=0.0)
RECORD = ImageRecord("a", "images/a.png", 80, 64)


def _boxes(anns) -> list[tuple]:
    return [(a.category, tuple(a.box.xyxy()), a.score, a.provenance.source) for a in anns]


@pytest.fixture
def project(tmp_path):
    """params.yaml (flows.min_score auto), one image, model 1 trained (untrained weights,
    marked finished)."""
    old = torch.get_num_threads()
    torch.set_num_threads(min(2, old))
    torch.manual_seed(0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"data": {"source": "src"}, "flows": {"min_score": "auto"}}))
    (tmp_path / "src" / "images").mkdir(parents=True)
    pixels = np.random.default_rng(0).random((64, 80, 3)) * 255
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "src" / RECORD.path)
    layout = ProjectLayout(tmp_path)
    model = build_model("c3det", len(CLASSES), C3DetParams(**FAST)).eval()
    checkpoint.save(layout.model(1), model, {"kind": "c3det", "classes": CLASSES})
    (layout.model_dir(1) / "train.json").write_text("{}")
    yield Project.open(tmp_path)
    torch.set_num_threads(old)


def _choose_threshold(p) -> tuple[float, list]:
    """Write a threshold for model 1 that hides about half of its boxes; returns it and
    every box the model finds."""
    every = Predictor(p.layout.model(1)).predict(str(p.source / RECORD.path))
    scores = sorted(a.score for a in every)
    t = scores[len(scores) // 2]
    assert scores[0] < t
    p.layout.threshold(1).write_text(json.dumps({"min_score": t}))
    return t, every


def test_a_checkpoint_brings_its_threshold_and_an_explicit_min_score_wins(project):
    path, image = project.layout.model(1), str(project.source / RECORD.path)
    t, every = _choose_threshold(project)
    assert checkpoint.load(path)[1]["min_score"] == t
    shown = Predictor(path).predict(image)
    assert _boxes(shown) == _boxes([a for a in every if a.score >= t])
    assert 0 < len(shown) < len(every)
    assert _boxes(Predictor(path, min_score=0.0).predict(image)) == _boxes(every)
    model, _ = checkpoint.load(path)   # a model object has no threshold file
    assert _boxes(Predictor(model, CLASSES).predict(image)) == _boxes(every)


def _load_plugin():
    from flows.annotate.app import PLUGIN_SRC
    spec = importlib.util.spec_from_file_location("tinyloop_plugin", PLUGIN_SRC / "__init__.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    return plugin


def test_app_plugin_preannotation_and_simulator_show_the_same_boxes(project, monkeypatch):
    from flows.annotate import fiftyone_refine as frefine
    t, every = _choose_threshold(project)
    image = str(project.source / RECORD.path)
    click = Click(40, 30, "Car")
    model = model_policy.model_for_batch(project, 2)
    pre = iteration_steps.shown(project, model, iteration_steps.predict_images(project, model,
                                                           [ImageLabels(RECORD)]))[0].annotations
    write_labels(LabelSet(CLASSES, [ImageLabels(RECORD, pre)]),
                 project.layout.preannotations(2))
    simulated = iteration_steps._predictor_fn(project, 2)("a", [click])

    seen = {}

    def refine_samples(ds, sample_ids, predict):  # the plugin's predictor, without MongoDB
        seen["shown"], seen["clicked"] = predict(image, []), predict(image, [click])
        return {"samples": len(sample_ids), "replaced": 0, "kept": 0}
    monkeypatch.setattr(frefine, "refine_samples", refine_samples)
    ctx = types.SimpleNamespace(
        dataset=types.SimpleNamespace(info={"project_root": str(project.layout.root),
                                            "classes": CLASSES}),
        selected=["sample-a"], current_sample=None, params={},
        trigger=lambda name, params=None: None)
    assert _load_plugin().RefineWithClicks().execute(ctx)["samples"] == 1

    assert _boxes(seen["shown"]) == _boxes(pre) == _boxes([a for a in every if a.score >= t])
    assert 0 < len(pre) < len(every)
    assert _boxes(seen["clicked"]) == _boxes(simulated)
    assert any(a.provenance.source == "click_refined" for a in simulated)


def test_the_current_model_is_the_newest_finished_one(tmp_path):
    layout = ProjectLayout(tmp_path)
    with pytest.raises(FileNotFoundError, match="no trained model"):
        model_policy.current_model(layout)
    for n in (1, 2, 10):
        layout.model_dir(n).mkdir(parents=True)
    for n in (1, 2):
        (layout.model_dir(n) / "train.json").write_text("{}")
    assert model_policy.current_model(layout) == layout.model(2)   # 10 is still training
