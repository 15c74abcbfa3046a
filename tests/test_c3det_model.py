"""c3det networks end to end on tiny images: every kind on both detectors, guarantee (1)
(0 clicks = the plain detector), the interactive session's cache, checkpoints, the Predictor."""
import dataclasses

import numpy as np
import pytest
import torch

from c3det import checkpoint
from c3det.backbone import resnet_fpn
from c3det.config import C3DetParams, resolve_norm
from c3det.model import KINDS, build_model
from c3det.predict import ClickError, Predictor
from tinyloop.annotations import Click
from tinyloop.config import TilingParams
from tinyloop.device import DeviceError, resolve_device
from tests.fixtures_c3det import (FAST, assert_detections_valid,  # noqa: F401
                                  assert_same_outputs, assert_same_predictions,
                                  tiny_inputs, two_threads)

CLASSES = ["a", "b", "c"]


def P(**kw) -> C3DetParams:
    return C3DetParams(**{**FAST, **kw})


def _randomise_fusion(model, seed=1):
    """Trained-like click branch: fusion convs are zero at init, make them matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in model.fusion.mix:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
    return model


@pytest.mark.parametrize("detector", ["faster_rcnn", "retinanet"])
@pytest.mark.parametrize("kind", KINDS + ("passthrough",))
def test_every_kind_trains_and_predicts_with_and_without_clicks(kind, detector):
    torch.manual_seed(0)
    model = build_model(kind, len(CLASSES), P(detector=detector))
    images, clicks, targets = tiny_inputs()
    model.train()
    losses = model(images, clicks, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    if kind == "c3det" and detector == "faster_rcnn":
        assert "loss_uel" in losses and losses["loss_uel"] > 0
    else:
        assert "loss_uel" not in losses
    assert_detections_valid(model, images, clicks, len(CLASSES))


def test_architecture_follows_the_small_object_porting_notes():
    model = build_model("c3det", 3, P())
    feats = model.detector.backbone(torch.rand(1, 3, 64, 96))
    assert list(feats) == ["0", "1", "2", "3"]                     # P2..P5, no max-pool level
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    gen = model.detector.rpn.anchor_generator
    assert gen.sizes == ((8,), (16,), (32,), (64,))
    # a 640x512 frame is not resized (torchvision's default would scale it to 800x1000)
    batch = model.prepare([torch.rand(3, 512, 640)])
    assert batch.images.image_sizes == [(512, 640)]
    ef = build_model("early_fusion", 3, P())
    assert ef.detector.backbone.body._conv_stem.in_channels == 6


def test_grayscale_and_scaled_inputs():
    model = build_model("c3det", 3, P(image_scale=2.0)).eval()
    gray = torch.rand(1, 32, 48)
    with torch.no_grad():
        batch = model.prepare([gray], [torch.tensor([[10., 20., 1]])])
        assert batch.images.image_sizes == [(64, 96)]
        assert batch.clicks[0].tolist() == [[20., 40., 1.]]   # clicks follow the scaling
        out = model([gray], [torch.tensor([[10., 20., 1]])])
    if len(out[0]["boxes"]):
        assert out[0]["boxes"][:, 2].max() <= 48 + 1e-3        # back in input pixels


@pytest.mark.parametrize("detector", ["faster_rcnn", "retinanet"])
def test_zero_clicks_is_exactly_the_plain_detector(detector):
    """Guarantee (1): an image without clicks never enters the click branch."""
    torch.manual_seed(0)
    model = _randomise_fusion(build_model("c3det", 3, P(detector=detector, score_thresh=0.0)))
    model.eval()
    images, clicks, _ = tiny_inputs()
    with torch.no_grad():
        batch = model.prepare(images)
        plain = model.heads(model.image_features(batch), batch)       # no fusion at all
        interactive = model(images, [torch.zeros(0, 3), torch.zeros(0, 3)])
        clicked = model(images, clicks)
        cand = model.heads(model.image_features(batch), batch, candidates=True)[0]
    for p, i in zip(plain, interactive):
        assert torch.equal(p["boxes"], i["boxes"]) and torch.equal(p["scores"], i["scores"])
    m = len(cand["candidate_objectness"])
    assert m > 0 and cand["candidate_boxes"].shape == (m, 3, 4)
    assert (0 <= cand["candidate_objectness"]).all() and (cand["candidate_objectness"] <= 1).all()
    # the clicked image changes, the unclicked one in the same batch does not
    assert not torch.equal(clicked[0]["scores"], plain[0]["scores"])
    assert torch.allclose(clicked[1]["scores"], plain[1]["scores"], atol=1e-5)


def test_fresh_fusion_starts_as_the_plain_detector():
    torch.manual_seed(0)
    model = build_model("c3det", 3, P()).eval()
    images, clicks, _ = tiny_inputs()
    with torch.no_grad():
        a, b = model(images, clicks), model(images)
    assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(a, b))


def test_session_click_equals_a_full_forward():
    torch.manual_seed(0)
    model = _randomise_fusion(build_model("c3det", 3, P())).eval()
    image = np.random.default_rng(0).random((3, 64, 80), dtype=np.float32)
    clicks = [Click(20, 22, "a"), Click(50, 40, "c")]
    raw = Predictor(model, CLASSES, guarantee_clicks=False)
    session = raw.session(image)
    session.set_clicks([])
    calls = []
    original = model.detector.backbone.forward
    for n in (1, 2):
        model.detector.backbone.forward = lambda x: calls.append(1) or original(x)
        got = session.add_click(clicks[n - 1])
        model.detector.backbone.forward = original
        with torch.no_grad():
            full = model([torch.from_numpy(image)], [raw.click_tensor(clicks[:n])])[0]
        assert len(got) == len(full["boxes"])
        boxes = torch.tensor([a.box.xyxy() for a in got])
        assert torch.allclose(boxes, full["boxes"], atol=1e-4)
        assert torch.allclose(torch.tensor([a.score for a in got]), full["scores"], atol=1e-5)
    assert calls == []                                # backbone features came from the cache
    # with the click guarantee: session and one-shot predict agree
    full_pred = Predictor(model, CLASSES)
    s = full_pred.session(image)
    for c in clicks:
        got = s.add_click(c)
    assert_same_predictions(got, full_pred.predict(image, clicks))
    assert any(a.provenance.source == "click_refined" for a in got)


def test_linear_click_heads_equal_fusion_then_heads():
    from c3det.click_heads import LinearClickHeads
    torch.manual_seed(0)
    model = build_model("c3det", 3, P(lf_backbone="light", lf_channels=16)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for conv in model.fusion.mix:   # per-level weights and biases all non-zero
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.05)
        clicks = torch.tensor([[20., 22., 0], [50., 40., 2]])
        batch = model.prepare([torch.rand(3, 64, 96, generator=g)])
        feats = model.image_features(batch)
        fast = LinearClickHeads(model, batch, feats)
        for k in (clicks[:1], clicks):
            b = model.with_clicks(batch, [k])
            ref = model.heads(model.fuse(feats, b), b, candidates=True)[0]
            got = fast.detect(k)
            assert len(ref["scores"]) > 0
            assert_same_outputs(ref, got)


def test_tiled_session_reruns_only_tiles_whose_clicks_changed():
    torch.manual_seed(0)
    model = _randomise_fusion(build_model("late_fusion", 3, P())).eval()
    image = np.random.default_rng(1).random((3, 64, 160), dtype=np.float32)
    pred = Predictor(model, CLASSES, tiling=TilingParams(size=64, stride=48))
    session = pred.session(image)
    assert len(session.tiles) == 3
    session.set_clicks([])
    runs = []
    original = pred.run_tile
    pred.run_tile = lambda tile, *a: runs.append(tile.window.x1) or original(tile, *a)
    got = session.add_click(Click(10, 10, "b"))       # only in the first tile
    assert runs == [0]
    one_shot = Predictor(model, CLASSES, tiling=pred.tiling)
    assert_same_predictions(got, one_shot.predict(image, session.clicks))
    assert any(a.category == "b" and a.box.contains(10, 10) for a in got)


def test_predictor_refuses_bad_clicks():
    pred = Predictor(build_model("c3det", 3, P()), CLASSES)
    image = np.zeros((3, 32, 32), dtype=np.float32)
    with pytest.raises(ClickError, match="outside the 32x32 image"):
        pred.predict(image, [Click(40, 5, "a")])
    with pytest.raises(ClickError, match="unknown class 'dog'.*a, b, c"):
        pred.predict(image, [Click(4, 5, "dog")])
    session = pred.session(image)
    with pytest.raises(ClickError):
        session.add_click(Click(-1, 5, "a"))
    assert session.clicks == []


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = _randomise_fusion(build_model("c3det", 3, P(lf_channels=32))).eval()
    path = checkpoint.save(tmp_path / "iter-001" / "model.pt", model,
                           {"kind": "c3det", "classes": CLASSES, "epoch": 3},
                           extra={"optimizer": {"lr": 0.01}})
    loaded, meta = checkpoint.load(path)
    assert meta["version"] == "iter-001" and meta["epoch"] == 3 and meta["classes"] == CLASSES
    assert meta["params"]["lf_channels"] == 32
    assert checkpoint.read(path)["extra"]["optimizer"]["lr"] == 0.01
    images, clicks, _ = tiny_inputs()
    with torch.no_grad():
        a, b = model(images, clicks), loaded(images, clicks)
    assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(a, b))
    pred = Predictor(path)
    assert pred.model_version == "iter-001"
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="bad.pt"):
        checkpoint.load(tmp_path / "bad.pt")


def test_backbone_weights_from_a_file_and_a_clear_offline_message(tmp_path, monkeypatch):
    import torchvision
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    fpn = resnet_fpn("resnet18", weights=str(tmp_path / "r18.pth"))
    assert torch.equal(fpn.body.conv1.weight, ref.conv1.weight)
    with pytest.raises(FileNotFoundError, match="no such file"):
        resnet_fpn("resnet18", weights=str(tmp_path / "missing.pth"))

    def offline(*a, **k):
        raise OSError("Name or service not known")
    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__,
                        "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="offline.*'none'"):
        build_model("plain", 2, P(backbone="resnet18", weights="imagenet"))


def test_auto_values_resolve_in_one_place(monkeypatch):
    """norm auto: frozen BN over pretrained weights, trainable BN from scratch; a YOLO's
    device auto: ultralytics' "0" on CUDA, else "cpu" (both read by one resolver each)."""
    from c3det.yolo.train import ultralytics_device
    assert resolve_norm("auto", "imagenet") == "frozen_bn"
    assert resolve_norm("auto", "none") == "bn"
    assert resolve_norm("gn", "imagenet") == "gn"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert [ultralytics_device(d) for d in ("auto", "cuda", "cuda:1", "cpu")] == \
        ["0", "0", "1", "cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ultralytics_device("auto") == "cpu"


def test_inference_runs_on_cuda_when_present_and_on_the_cpu_otherwise(monkeypatch):
    # evaluation used to load checkpoints on the CPU even on a GPU box (minutes per iteration)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device() == resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device() == torch.device("cpu")
    with pytest.raises(DeviceError, match="c3det.yolo.device is 'cuda:1' but no CUDA"):
        resolve_device("cuda:1", "c3det.yolo.device")
    model = build_model("c3det", len(CLASSES), C3DetParams())
    assert Predictor(model, CLASSES).device == torch.device("cpu")


def test_passthrough_is_a_click_detector_kind_with_a_relabel_stage(tmp_path):
    """Passthrough = the plain network + relabelling by clicks, with every kind's API: the
    Predictor and checkpoints need no special case for it."""
    from c3det.baselines import Passthrough
    from c3det.model import ClickDetector
    torch.manual_seed(0)
    plain = build_model("plain", 3, P(score_thresh=0.0)).eval()
    wrapped = Passthrough(plain)
    built = build_model("passthrough", 3, P())
    assert isinstance(wrapped, ClickDetector) and wrapped.kind == built.kind == "passthrough"
    assert list(built.state_dict()) == list(plain.state_dict())       # plain's network
    assert not wrapped.clicks_change_detections and wrapped.caches_image_features
    image = np.random.default_rng(0).random((3, 64, 80), dtype=np.float32)
    base = Predictor(plain, CLASSES, guarantee_clicks=False).predict(image)
    assert base
    cx, cy = (float(np.float32(v)) for v in base[0].box.center)
    other = next(c for c in CLASSES if c != base[0].category)
    got = Predictor(wrapped, CLASSES, guarantee_clicks=False).predict(image,
                                                                      [Click(cx, cy, other)])
    assert [a.box for a in got] == [a.box for a in base]
    assert [a.category for a in got] == [other if a.box.contains(cx, cy) else a.category
                                         for a in base]
    assert got[0].category == other

    class OldPassthrough(torch.nn.Module):  # how Passthrough checkpoints were saved before
        def __init__(self, plain):
            super().__init__()
            self.plain = plain
    for name, model in (("new", wrapped), ("old", OldPassthrough(plain))):
        path = checkpoint.save(tmp_path / name / "model.pt", model,
                               {"kind": "passthrough", "classes": CLASSES,
                                "params": plain.params})
        again = Predictor(path, guarantee_clicks=False).predict(image, [Click(cx, cy, other)])
        assert_same_predictions(again, got)
