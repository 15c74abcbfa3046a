"""flows.train_recipe detector_first: each iteration trains the plain detector, then only the
click branch on top of it, so the C3Det model at 0 clicks is exactly that detector; both
stages warm-start from the previous iteration, for flows.warm_start_epochs (real sample data)."""
from __future__ import annotations

import json

import torch

import c3det.train
from c3det import checkpoint
from c3det.predict import Predictor
from flows import iteration_steps, prepare_steps
from flows.project import batches
from flows.project.project import Project
from flows.commands.demo import SAMPLE
from flows.project.init import init_project
from tests.fixtures_flows import light_demo_params


def _boxes(predictor: Predictor, image: str) -> list[tuple]:
    return [(a.category, *a.box.xyxy(), round(a.provenance.score, 5))
            for a in predictor.predict(image, [])]


def test_detector_first_keeps_the_detector_and_warm_starts_both_stages(tmp_path, monkeypatch):
    params = light_demo_params(**{
        "flows.train_recipe": "detector_first", "flows.versioning": False,
        "c3det.train.epochs": 2, "c3det.train.lr_steps": [1], "flows.warm_start_epochs": 1,
        "flows.click_branch_share": 1.0,  # both stages on one schedule (the demo's is 1/4)
        "simulator.rounds": 0})  # no clicks: only the labels matter here
    root = init_project(tmp_path / "project", source=str(SAMPLE), params_overrides=params).root
    p = Project.open(root)
    for step in (prepare_steps.ingest, prepare_steps.features, prepare_steps.order):
        step(p)
    store = iteration_steps.open_store(p)
    calls, schedules = [], []
    real = c3det.train.train
    monkeypatch.setattr(c3det.train, "train", lambda labels, root_, params, out, **kw: (
        calls.append((out, kw["kind"], params.train.freeze_detector, kw["init_from"])),
        schedules.append((params.train.epochs, params.train.lr_steps)),
        real(labels, root_, params, out, **kw))[-1])
    for n in (1, 2):
        iteration_steps.preannotate(p, n)
        iteration_steps.simulate_annotation(p, store, n)
        iteration_steps.pull(p, store, n)
        iteration_steps.train(p, n)

    layout = p.layout
    det2, model2 = layout.detector_dir(2), layout.model_dir(2)
    assert calls[2:] == [  # iteration 2: the plain detector, then the click branch alone
        (det2, "plain", False, layout.detector(1)),
        (model2, "c3det", True, [layout.model(1), layout.detector(2)])]
    assert not any(d.joinpath("last.pt").exists() for d in (det2, model2))
    # model 1 from ImageNet: c3det.train's schedule; warm-started model 2: the shorter one
    assert schedules == [(2, [1])] * 2 + [(1, [])] * 2
    assert [json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])["epoch"]
            for d in (layout.model_dir(1), model2)] == [1, 0]

    detector, _ = checkpoint.load(layout.detector(2))
    model, meta = checkpoint.load(layout.model(2))
    assert meta["kind"] == "c3det" and meta["params"]["train"]["freeze_detector"]
    mine = model.detector.state_dict()
    for name, value in detector.detector.state_dict().items():
        assert torch.equal(mine[name], value), name
    image = str(p.source / batches.batch_records(p, 3).images[0].image.path)
    assert _boxes(Predictor(layout.model(2), p.classes), image) == \
        _boxes(Predictor(layout.detector(2), p.classes), image)


def test_the_click_branch_trains_its_share_of_the_detectors_epochs(tmp_path, monkeypatch):
    """flows.click_branch_share: on the CPU loop the click branch cost ~45 % of the
    detector's time; a share < 1 gives it fewer epochs, its lr steps compressed to fit."""
    from dataclasses import replace
    from c3det.config import C3DetParams
    from c3det.torchvision_family import TorchvisionFamily
    from flows.project.config import FlowParams
    seen = []
    monkeypatch.setattr(c3det.train, "train", lambda labels, root_, params, out, **kw: seen.append(
        (kw["kind"], params.train.epochs, params.train.lr_steps, params.train.freeze_detector)))
    p = C3DetParams()
    p = replace(p, train=replace(p.train, epochs=60, lr_steps=[50]))
    epochs = iteration_steps.click_branch_epochs(FlowParams(click_branch_share=0.25), 60)
    TorchvisionFamily().train(None, tmp_path, p, tmp_path / "m", recipe="detector_first",
                              click_epochs=epochs)
    assert seen == [("plain", 60, [50], False), ("c3det", 15, [12], True)]
    assert iteration_steps.click_branch_epochs(FlowParams(click_branch_share=0.25), 2) == 1
    assert iteration_steps.click_branch_epochs(FlowParams(), 60) is None
    assert "click_branch_share" in (FlowParams(click_branch_share=0.0).check() or "")
