"""The ultralytics YOLO backend (c3det/yolo/): export, offline training, the predictor
interface, params, and loop iterations with `c3det.detector: yolo`.

Tiny on purpose (64-96 px synthetic images, imgsz 64, 1-2 epochs): the models detect
nothing useful, so prediction tests lower the score threshold to 0 to get boxes to look at.
"""
from __future__ import annotations

import dataclasses
import json
import socket

import numpy as np
import pytest
import yaml
from PIL import Image

from c3det.config import C3DetParams, EvalParams, YoloParams
from tinyloop.annotations import Click
from tinyloop.config import TilingParams
from tinyloop.params import ParamsError, build
from tinyloop.synthetic import make_synthetic

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(oriented: bool = False, **yolo) -> C3DetParams:
    model = "yolov8n-obb-p2.yaml" if oriented else "yolov8n-p2.yaml"
    y = YoloParams(**{"model": model, "oriented": oriented, "imgsz": 64, "epochs": 1,
                      "batch": 2, "workers": 0, "warmup_epochs": 0.0, **yolo})
    return C3DetParams(detector="yolo", yolo=y)


@pytest.fixture(scope="module")
def network_calls():
    """Every attempt to reach the network while this module's fixtures and tests run (each
    is refused; ultralytics swallows some errors, so attempts are counted, not just
    raised)."""
    calls = []
    real = socket.socket.connect, socket.getaddrinfo, socket.create_connection

    def refuse(*args, **kwargs):
        calls.append(args[:2])
        raise OSError("network refused by the test")
    socket.socket.connect = socket.getaddrinfo = socket.create_connection = refuse
    yield calls
    socket.socket.connect, socket.getaddrinfo, socket.create_connection = real


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo-data")
    labels, _ = make_synthetic(6, size=(96, 80), objects_per_image=(2, 4),
                               object_size=(10, 16), seed=5, out_dir=root / "axis",
                               ignore_per_image=1)
    oriented, _ = make_synthetic(6, size=(96, 80), objects_per_image=(2, 4),
                                 object_size=(10, 16), seed=6, out_dir=root / "obb",
                                 oriented=True)
    return {"root": root, "labels": labels, "oriented": oriented}


@pytest.fixture(scope="module")
def models(data, network_calls, tmp_path_factory):
    """One axis-aligned and one OBB model, 1 epoch each, trained with the network refused."""
    from c3det.yolo.train import train
    out = tmp_path_factory.mktemp("yolo-models")
    detect = train(data["labels"], data["root"] / "axis", tiny(), out / "detect",
                   progress=False)
    obb = train(data["oriented"], data["root"] / "obb", tiny(oriented=True), out / "obb",
                progress=False)
    return {"detect": detect, "obb": obb, "out": out}


def low_threshold(predictor):
    """Let an untrained model's boxes through (its scores are ~0.003)."""
    predictor.params = dataclasses.replace(predictor.params, score_thresh=0.0)
    return predictor


# --- export ---------------------------------------------------------------------------------

def test_export_writes_ultralytics_layout_with_masks_and_native_size_tiles(data, tmp_path):
    from c3det.yolo.dataset import export_dataset
    labels = data["labels"]
    path = export_dataset(labels, data["root"] / "axis", tmp_path / "ds", imgsz=64,
                          tiling=TilingParams(size=1024, stride=512))
    doc = yaml.safe_load(path.read_text())
    assert doc["names"] == dict(enumerate(labels.categories))
    # 96x80 > imgsz 64: every image is cut into 64 px tiles at stride 32 (tiling's half)
    images = sorted((tmp_path / "ds/images/train").iterdir())
    assert len(images) == 6 * 4 and all("@" in p.stem for p in images)
    assert {Image.open(p).size for p in images} == {(64, 64)}
    lines = [ln.split() for p in (tmp_path / "ds/labels/train").glob("*.txt")
             for ln in p.read_text().splitlines()]
    assert lines and all(len(t) == 5 and 0 <= int(t[0]) < 4 for t in lines)
    assert all(0 <= float(v) <= 1 for t in lines for v in t[1:])
    # ignore regions are no class: they are painted over with the tile's mean grey
    from tinyloop.tiling import tile_windows
    item = labels.images[0]
    r = item.ignore[0].box
    window = next(w for w in tile_windows(96, 80, 64, 32) if w.x1 <= r.x1 and w.y1 <= r.y1
                  and r.x2 <= w.x2 and r.y2 <= w.y2)
    tile = tmp_path / "ds/tiles" / f"{item.id}@{int(window.x1)}_{int(window.y1)}.png"
    inner = np.asarray(Image.open(tile))[int(r.y1 - window.y1) + 1:int(r.y2 - window.y1) - 1,
                                         int(r.x1 - window.x1) + 1:int(r.x2 - window.x1) - 1]
    assert inner.size and inner.min() == inner.max()


def test_oriented_export_writes_yolo_obb_corner_lines(data, tmp_path):
    from c3det.yolo.dataset import export_dataset
    export_dataset(data["oriented"], data["root"] / "obb", tmp_path / "ds", imgsz=96,
                   oriented=True)
    files = sorted((tmp_path / "ds/labels/train").glob("*.txt"))
    assert len(files) == 6          # 96x80 fits imgsz 96: whole images, no tiles
    first = data["oriented"].images[0]
    got = [ln.split() for ln in (tmp_path / "ds/labels/train" / f"{first.id}.txt")
           .read_text().splitlines()]
    assert len(got) == len(first.annotations) and all(len(t) == 9 for t in got)
    corners = np.array(first.annotations[0].obox.corners()) / [96, 80]
    assert np.allclose(np.array(got[0][1:], float).reshape(4, 2), corners, atol=1e-5)


# --- training -------------------------------------------------------------------------------

def test_training_is_offline_and_leaves_one_model_file(models, network_calls):
    from c3det.yolo.models import is_yolo_checkpoint
    assert network_calls == []
    for name, r in (("detect", models["detect"]), ("obb", models["obb"])):
        out = models["out"] / name
        assert r["model"] == str(out / "model.pt") and is_yolo_checkpoint(out / "model.pt")
        assert r["device"] == "cpu" and r["amp"] is False and not r["resumed"]
        assert len(r["epochs"]) == 1 and "train/box_loss" in r["epochs"][0]
        assert not (out / "yolo/weights").exists()   # resume state gone once finished
        assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
        args = yaml.safe_load((out / "yolo/args.yaml").read_text())
        assert args["plots"] is False and args["seed"] == 0 and args["deterministic"]


def test_a_time_budget_ends_training_early_and_polars_is_not_needed(data, tmp_path,
                                                                     monkeypatch):
    """`time_h` stops a 1000-epoch run once the (1 s) budget is spent, and training never
    imports polars (ultralytics reads results.csv with it; a lent GPU box lacks it)."""
    import sys
    from c3det.yolo.train import train
    monkeypatch.setitem(sys.modules, "polars", None)    # `import polars` now raises
    r = train(data["labels"], data["root"] / "axis", tiny(epochs=1000, time_h=1 / 3600),
              tmp_path / "m", progress=False)
    assert 1 <= len(r["epochs"]) < 1000
    assert (tmp_path / "m/model.pt").exists()


def test_lite0_backbone_levels_are_efficientnet_lites_pyramid():
    """The ImageNet Lite0 under the YOLO neck computes EfficientNetLite.pyramid exactly,
    given [input, stride 2, 4, 8, 16, 32] by ultralytics' TorchVision layer (split)."""
    import torch
    from c3det.yolo.lite_backbone import LiteStages
    from c3det.efficientnet_lite import IMAGENET_MEAN, IMAGENET_STD, efficientnet_lite
    stages = LiteStages("efficientnet_lite0", "imagenet").eval()
    reference = efficientnet_lite("efficientnet_lite0", "imagenet").eval()
    pixels = torch.rand(1, 3, 64, 96)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        want = reference.pyramid((pixels - mean) / std)
        got, x = [], pixels
        for level in stages.features:
            x = level(x)
            got.append(x)
    assert [tuple(g.shape[1:]) for g in got[1:]] == [(24, 16, 24), (40, 8, 12), (112, 4, 6),
                                                    (320, 2, 3)]
    for g, w in zip(got[1:], want):
        torch.testing.assert_close(g, w)


def test_lite0_yaml_builds_a_yolo_model_with_the_imagenet_weights():
    from c3det.yolo.models import find_model
    from c3det.yolo.offline import ultralytics
    from c3det.efficientnet_lite import efficientnet_lite
    ultralytics()
    from ultralytics.nn.tasks import DetectionModel
    spec = find_model("yolov8n-lite0-p2.yaml")
    model = DetectionModel(spec.arg, nc=3, verbose=False)
    stem = model.model[0].m[0].conv.weight                 # TorchVision layer -> Stem
    imagenet = efficientnet_lite("efficientnet_lite0", "imagenet")._conv_stem.weight
    assert spec.task == "detect" and model.stride.tolist() == [4.0, 8.0, 16.0, 32.0]
    assert stem.shape == imagenet.shape and bool((stem == imagenet).all())
    assert find_model("yolov8n-lite0-obb-p2.yaml").task == "obb"


def test_lite0_yolo_trains_offline_and_predicts(data, network_calls, tmp_path):
    from c3det.yolo.predict import YoloPredictor
    from c3det.yolo.train import train
    params = tiny(model="yolov8n-lite0-p2.yaml")
    r = train(data["labels"], data["root"] / "axis", params, tmp_path / "lite", progress=False)
    pred = low_threshold(YoloPredictor(r["model"]))
    image = data["labels"].images[0].image
    assert pred.predict(str(data["root"] / "axis" / image.path), []) and network_calls == []


def test_a_c3det_checkpoint_is_not_a_yolo_one(tmp_path):
    import torch
    from c3det.yolo.models import is_yolo_checkpoint
    torch.save({"format": "tinyloop-c3det/1", "state_dict": {"w": torch.zeros(2)}},
               tmp_path / "model.pt")
    assert not is_yolo_checkpoint(tmp_path / "model.pt")
    assert not is_yolo_checkpoint(tmp_path / "missing.pt")


def test_finished_model_is_returned_not_retrained(models, data):
    from c3det.yolo.train import train
    again = train(data["labels"], data["root"] / "axis", tiny(), models["out"] / "detect",
                  progress=False)
    assert again["finished_before"] and again["epochs"] == models["detect"]["epochs"]


def test_a_killed_run_resumes_after_its_last_epoch(data, tmp_path, monkeypatch,
                                                   network_calls):
    import c3det.yolo.train as yt
    real = yt.trainer_class

    def killed_after_first_save(task):
        class Killed(real(task)):
            def save_model(self):
                super().save_model()
                raise KeyboardInterrupt("kill -9 stand-in")
        return Killed
    params = tiny(epochs=2)
    monkeypatch.setattr(yt, "trainer_class", killed_after_first_save)
    with pytest.raises(KeyboardInterrupt):
        yt.train(data["labels"], data["root"] / "axis", params, tmp_path / "m", progress=False)
    assert (tmp_path / "m/yolo/weights/last.pt").exists()
    assert not (tmp_path / "m/model.pt").exists()
    monkeypatch.setattr(yt, "trainer_class", real)
    r = yt.train(data["labels"], data["root"] / "axis", params, tmp_path / "m", progress=False)
    assert r["resumed"] and [row["epoch"] for row in r["epochs"]] == [1.0, 2.0]
    assert (tmp_path / "m/model.pt").exists() and network_calls == []


def test_warm_start_needs_a_yolo_model(data, tmp_path):
    from c3det.yolo.train import train
    (tmp_path / "other.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a YOLO checkpoint"):
        train(data["labels"], data["root"] / "axis", tiny(), tmp_path / "m",
              init_from=tmp_path / "other.pt", progress=False)


# --- prediction -----------------------------------------------------------------------------

def test_predictions_are_annotations_with_scores_and_provenance(models, data):
    from c3det.yolo.predict import YoloPredictor
    pred = low_threshold(YoloPredictor(models["detect"]["model"]))
    assert pred.classes == data["labels"].categories and not pred.oriented
    image = str(data["root"] / "axis" / data["labels"].images[0].image.path)
    anns = pred.predict(image, [])
    assert anns and all(a.provenance.source == "model" and 0 <= a.score <= 1 for a in anns)
    assert all(a.provenance.model_version == "detect" and a.obox is None for a in anns)
    assert all(0 <= a.box.x1 < a.box.x2 <= 96 and 0 <= a.box.y1 < a.box.y2 <= 80
               for a in anns)
    pred.min_score = 0.5          # an untrained model: nothing that high
    assert pred.predict(image, []) == []


def test_clicks_relabel_boxes_and_add_one_where_no_box_is(models, data):
    from c3det.yolo.predict import YoloPredictor
    pred = low_threshold(YoloPredictor(models["detect"]["model"]))
    image = str(data["root"] / "axis" / data["labels"].images[0].image.path)
    before = pred.predict(image, [])
    inside = max(before, key=lambda a: a.score)
    x, y = inside.box.center
    after = pred.predict(image, [Click(x, y, "ring")])
    hit = [a for a in after if a.box == inside.box]
    assert hit and all(a.category == "ring" for a in hit)    # relabelled, not moved
    assert any(a.provenance.source == "click_refined" for a in hit)
    # no box of any class at a corner once only high scores show: a click box appears,
    # the class's median training size around the click
    pred.min_score = 0.99
    pred.params = dataclasses.replace(pred.params, score_thresh=0.99)
    pred._cached = None
    added = pred.predict(image, [Click(30, 30, "disc")])
    assert len(added) == 1 and added[0].provenance.source == "click_refined"
    w, h = pred.class_sizes[0]
    assert added[0].box.center == pytest.approx((30, 30))
    assert (added[0].box.width, added[0].box.height) == pytest.approx((w, h))


def test_bad_clicks_are_refused(models, data):
    from c3det.predict import ClickError
    from c3det.yolo.predict import YoloPredictor
    pred = YoloPredictor(models["detect"]["model"])
    image = str(data["root"] / "axis" / data["labels"].images[0].image.path)
    with pytest.raises(ClickError, match="outside the 96x80 image"):
        pred.predict(image, [Click(97, 5, "disc")])
    with pytest.raises(ClickError, match="unknown class 'cat'"):
        pred.predict(image, [Click(5, 5, "cat")])


def test_obb_predictions_carry_oriented_boxes(models, data):
    from c3det.yolo.predict import YoloPredictor
    pred = low_threshold(YoloPredictor(models["obb"]["model"]))
    assert pred.oriented
    image = str(data["root"] / "obb" / data["oriented"].images[0].image.path)
    anns = pred.predict(image, [])
    assert anns and all(a.obox is not None for a in anns)
    for a in anns:   # the box is the oriented box's outline, clipped to the image
        assert a.box.xyxy() == pytest.approx(a.obox.bounding_box().clip(96, 80).xyxy(),
                                             abs=1e-3)
    pred.params = dataclasses.replace(pred.params, score_thresh=0.99)
    pred._cached = None
    added = pred.predict(image, [Click(40, 40, "ring")])
    assert len(added) == 1 and added[0].obox is not None and added[0].obox.angle == 0


def test_large_images_are_predicted_in_merged_tiles(models, data):
    from c3det.yolo.predict import YoloPredictor
    whole = low_threshold(YoloPredictor(models["detect"]["model"]))
    tiled = low_threshold(YoloPredictor(models["detect"]["model"],
                                        tiling=TilingParams(size=64, stride=32)))
    image = str(data["root"] / "axis" / data["labels"].images[1].image.path)
    calls = []
    real = tiled._forward
    tiled._forward = lambda arrays: (calls.append(len(arrays)), real(arrays))[1]
    anns = tiled.predict(image, [])
    assert calls == [4]           # 2 x 2 tiles of 64 px, one batch
    assert anns and all(0 <= a.box.x1 and a.box.x2 <= 96 and a.box.y2 <= 80 for a in anns)
    assert whole.imgsz_for(96, 80) == 96 and whole.imgsz_for(40, 30) == 64


def test_map_vs_clicks_scores_a_yolo_model(models, data):
    from c3det.evaluate import map_vs_clicks
    from c3det.yolo.predict import YoloEvalModel, YoloPredictor
    model = YoloEvalModel(low_threshold(YoloPredictor(models["detect"]["model"])))
    curve = map_vs_clicks(model, data["labels"], data["root"] / "axis",
                          EvalParams(click_steps=[0, 2], sessions=1), progress=False)
    assert curve["steps"] == [0, 2] and len(curve["map_mean"]) == 2
    assert all(0 <= m <= 100 for m in curve["map_mean"])
    assert curve["forward_passes"] == 2 * len(data["labels"])


def test_the_detector_interface_serves_a_yolo_model(models, data, tmp_path):
    """c3det.detectors: the file says its family; the predictor applies the model's
    threshold.json, an explicit min_score wins; eval_model is what map_vs_clicks scores."""
    import shutil
    from c3det import detectors
    from c3det.threshold import write_threshold
    from c3det.yolo.predict import YoloEvalModel, YoloPredictor
    path = tmp_path / "iter-001" / "model.pt"   # the fixture's folder keeps no threshold
    path.parent.mkdir()
    shutil.copy(models["detect"]["model"], path)
    assert detectors.family_of_checkpoint(path).name == "yolo"
    image = str(data["root"] / "axis" / data["labels"].images[0].image.path)
    every = low_threshold(detectors.predictor(path)).predict(image)
    served = detectors.predictor(path)
    assert isinstance(served, YoloPredictor) and isinstance(served, detectors.ClickPredictor)
    scores = sorted(a.score for a in every)
    t = scores[len(scores) // 2]
    assert scores[0] < t
    write_threshold(path, {"min_score": t})
    chosen = low_threshold(detectors.predictor(path, data["labels"].categories))
    assert chosen.min_score == t
    assert chosen.predict(image) == [a for a in every if a.score >= t]
    assert chosen.scored(image) == every
    explicit = low_threshold(detectors.predictor(path, min_score=0.0))
    assert explicit.min_score == 0.0 and explicit.predict(image) == every
    model, meta = detectors.eval_model(path, passthrough=True)   # a passthrough already
    assert isinstance(model, YoloEvalModel) and meta == {
        "kind": "yolo", "classes": data["labels"].categories}


# --- params ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, message", [
    ({"yolo": {"oriented": True}}, "oriented is true but yolov8n-p2.yaml has an axis-aligned"),
    ({"yolo": {"model": "yolo11n-obb.yaml"}}, "has an oriented (OBB) head: set oriented"),
    ({"yolo": {"model": "yolov8n-p3.yaml"}}, "unknown model yaml 'yolov8n-p3.yaml'"),
    ({"yolo": {"model": "yolov8n.pt"}}, "is not a model yaml"),
    ({"yolo": {"model": "yolov8-p2.yaml"}}, "name a scale, e.g. yolov8n-p2.yaml"),
    ({"yolo": {"model": "yolov8n-seg.yaml"}}, "no detection head"),
    ({"yolo": {"imgsz": 100}}, "multiple of 32"),
    ({"yolo": {"device": "gpu"}}, "auto, cpu, mps, cuda or cuda:N"),
    ({"yolo": {"time_h": -0.5}}, "time_h (-0.5) must be >= 0 hours"),
    ({"yolo": {"epoch": 3}}, "unknown key (did you mean 'epochs'?)"),
    ({"detector": "yolov8"}, "one of 'faster_rcnn', 'retinanet' or 'yolo'"),
    ({"detector": "yolo", "fi": {"enabled": True}}, "fi.enabled needs detector: faster_rcnn"),
])
def test_bad_yolo_params_are_named(raw, message):
    with pytest.raises(ParamsError) as e:
        build(C3DetParams, raw, "c3det")
    assert message in str(e.value)


def test_good_yolo_params():
    p = build(C3DetParams, {"detector": "yolo", "yolo": {
        "model": "yolov8s-obb-p2.yaml", "oriented": True, "imgsz": 1024, "device": "cuda:1"}},
        "c3det")
    assert p.detector == "yolo" and p.yolo.imgsz == 1024
    from c3det.yolo.models import find_model
    spec = find_model("yolov8s-obb-p2.yaml")
    assert spec.task == "obb" and spec.scale == "s" and spec.arg.endswith("yolov8s-obb-p2.yaml")


# --- the loop -------------------------------------------------------------------------------

def test_two_loop_iterations_with_detector_yolo(tmp_path, monkeypatch, network_calls):
    """prepare, then batches 1-2: model 1 from the yaml, model 2 warm-started from it,
    both evaluated on the held-out images, batch 2 pre-annotated by model 1."""
    import c3det.yolo.train as yt
    from c3det.yolo.models import is_yolo_checkpoint
    from flows import iteration_steps, model_policy, prepare_steps
    from flows.project.project import Project
    from c3det.yolo.predict import YoloPredictor
    from tests.fixtures_flows import make_project
    root = make_project(tmp_path, **{
        "c3det.detector": "yolo", "c3det.yolo.imgsz": 96, "c3det.yolo.epochs": 1,
        "c3det.yolo.batch": 2, "c3det.yolo.workers": 0, "c3det.yolo.warmup_epochs": 0.0,
        "flows.eval_fraction": 0.25, "flows.versioning": False, "flows.min_score": 0.0})
    p = Project.open(root)
    for step in (prepare_steps.ingest, prepare_steps.features, prepare_steps.order):
        step(p)
    starts = []
    real = yt.train
    monkeypatch.setattr(yt, "train", lambda *a, **kw: (starts.append(kw["init_from"]),
                                                        real(*a, **kw))[1])
    store = iteration_steps.open_store(p)
    for n in (1, 2):
        iteration_steps.preannotate(p, n)
        iteration_steps.simulate_annotation(p, store, n)
        iteration_steps.pull(p, store, n)
        summary = iteration_steps.train(p, n)
        metrics = iteration_steps.evaluate(p, n)
        assert summary["detector"] == "yolo" and is_yolo_checkpoint(p.layout.model(n))
        assert metrics["eval_images"] > 0 and 0 <= metrics["map50"] <= 100
    assert starts == [None, p.layout.model(1)]
    assert isinstance(model_policy.predictor(p, p.layout.model(2)), YoloPredictor)
    pre = json.loads(p.layout.preannotations(2).read_text())
    assert pre["info"]["model"] == "models/iter-001/model.pt"
    assert not (p.layout.state / "yolo-data").exists() or \
        not any((p.layout.state / "yolo-data").iterdir())
    assert network_calls == []


def test_ultralytics_rotation_is_orientedbox_rotation():
    """YoloPredictor copies ultralytics' xywhr into OrientedBox as is: same corners."""
    import torch
    from c3det.yolo.offline import ultralytics
    from tinyloop.annotations import OrientedBox
    ultralytics()
    from ultralytics.utils.ops import xywhr2xyxyxyxy
    theirs = xywhr2xyxyxyxy(torch.tensor([[50.0, 40.0, 30.0, 10.0, 0.5]]))[0].tolist()
    ours = OrientedBox(50, 40, 30, 10, 0.5).corners()
    assert sorted(map(tuple, np.round(theirs, 3))) == sorted(map(tuple, np.round(ours, 3)))


def test_model_cli_trains_and_evaluates_a_yolo_model(data, tmp_path, network_calls):
    from flows.commands.base import CliProject
    from flows.commands.model import cmd_model_evaluate, cmd_model_train
    from flows.project.init import set_params
    from tinyloop.cocofile import write_labels
    params = tmp_path / "params.yaml"
    params.write_text("c3det:\n  detector: yolo\n")
    set_params(params, {"c3det.yolo.imgsz": 96, "c3det.yolo.batch": 2,
                        "c3det.yolo.workers": 0, "c3det.eval.click_steps": [0],
                        "c3det.eval.sessions": 1})
    write_labels(data["labels"], tmp_path / "labels.json")
    project = CliProject(tmp_path, params)
    common = dict(labels=str(tmp_path / "labels.json"), images=str(data["root"] / "axis"),
                  split=None)
    train = dict(common, out=str(tmp_path / "m"), kind="c3det", epochs=1, init=None,
                 no_resume=False)
    assert cmd_model_train(type("Args", (), train), project) == 0
    assert (tmp_path / "m/model.pt").exists()
    ev = dict(common, model=[str(tmp_path / "m/model.pt")], passthrough=[], max_images=2,
              out=str(tmp_path / "ev"))
    assert cmd_model_evaluate(type("Args", (), ev), project) == 0
    got = json.loads((tmp_path / "ev.json").read_text())["models"][0]
    assert got["name"] == "yolo (m)" and got["steps"] == [0]
    assert network_calls == []


def test_ultralytics_leaves_the_torch_thread_count_alone(models, data):
    import torch
    from c3det.yolo.predict import YoloPredictor
    before = torch.get_num_threads()
    torch.set_num_threads(3)   # ultralytics' select_device would set min(8, CPUs - 1)
    try:
        pred = YoloPredictor(models["detect"]["model"])
        pred.predict(str(data["root"] / "axis" / data["labels"].images[0].image.path), [])
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
