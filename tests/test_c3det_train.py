"""Training: a short run learns, writes its log and checkpoints, resumes exactly, runs as DDP."""
import json

import pytest
import torch

from c3det import checkpoint
from c3det.config import C3DetParams, EvalParams, TrainParams
from c3det.data import DetectionDataset
from c3det.train import autocast_dtype, lr_factor, native_cpu_bf16, train
from tinyloop.synthetic import make_synthetic


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    labels, _ = make_synthetic(4, size=(64, 64), objects_per_image=(2, 4), object_size=(6, 12),
                               seed=0, out_dir=root)
    return labels, root


def _params(epochs: int, **kw) -> C3DetParams:
    return C3DetParams(roi_batch_size=64, train=TrainParams(epochs=epochs, batch_size=2, crop_size=64,
                                         warmup_iters=2, lr_steps=[2], seed=3, **kw))


def test_lr_schedule_warms_up_then_steps_down():
    assert lr_factor(0, 0, 10, [2, 3], 0.1) == pytest.approx(0.001)
    assert lr_factor(5, 0, 10, [2, 3], 0.1) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_factor(10, 1, 10, [2, 3], 0.1) == 1.0
    assert lr_factor(50, 2, 10, [2, 3], 0.1) == pytest.approx(0.1)
    assert lr_factor(50, 3, 10, [2, 3], 0.1) == pytest.approx(0.01)


def test_training_crops_keep_boxes_inside_and_are_reproducible(synthetic):
    labels, root = synthetic
    tp = TrainParams(crop_size=40, scales=[0.75, 1.5], max_clicks=20, zero_click_share=0.0)
    ds = DetectionDataset(labels, root, tp)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            img, t = ds[i]
            assert img.shape == (3, 40, 40)
            b = t["boxes"]
            assert (b[:, :2] >= 0).all() and (b[:, 2:] <= 40).all()
            assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
            assert len(t["clicks"]) == int(t["clicked"].sum()) <= len(b)
            img2, t2 = ds[i]
            assert torch.equal(img, img2) and torch.equal(t["clicks"], t2["clicks"])


def test_object_crops_hold_a_whole_object_and_random_crops_spread_out():
    import numpy as np
    from c3det.data import crop_origin
    boxes = torch.tensor([[600.0, 480.0, 615.0, 500.0], [10.0, 20.0, 22.0, 31.0]])
    rng = np.random.default_rng(0)
    for _ in range(200):
        x0, y0 = crop_origin(boxes, 640, 512, 192, 1.0, rng)
        assert 0 <= x0 <= 640 - 192 and 0 <= y0 <= 512 - 192
        held = [(x0 <= b[0] and b[2] <= x0 + 192 and y0 <= b[1] and b[3] <= y0 + 192)
                for b in boxes.tolist()]
        assert any(held)
    # share 0: uniform over the image, so most windows miss both corner objects
    misses = sum(not any(x0 <= b[0] and b[2] <= x0 + 192 and y0 <= b[1] and b[3] <= y0 + 192
                         for b in boxes.tolist())
                 for x0, y0 in (crop_origin(boxes, 640, 512, 192, 0.0, rng) for _ in range(200)))
    assert misses > 150
    # a crop larger than the image starts at 0
    assert crop_origin(boxes, 100, 80, 192, 1.0, rng) == (0, 0)


def test_short_run_lowers_the_loss_and_checkpoints_every_epoch(synthetic, tmp_path):
    labels, root = synthetic
    r = train(labels, root, _params(3, lr=0.01), tmp_path, kind="c3det", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    assert {"loss", "images_per_s", "lr", "loss_classifier"} <= set(rows[0])
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]
    for row in rows:  # the logged total is the sum of the logged parts, each under its name
        parts = sum(v for k, v in row.items() if k.startswith("loss_"))
        assert row["loss"] == pytest.approx(parts, rel=1e-5)
        assert 0 <= row["data_wait_s"] < row["seconds"]
    model, meta = checkpoint.load(tmp_path / "model.pt")
    assert meta["kind"] == "c3det" and meta["classes"] == labels.categories
    assert meta["epoch"] == 2 and r["epochs"] == rows


def test_resume_after_an_interruption_equals_an_uninterrupted_run(synthetic, tmp_path):
    labels, root = synthetic
    p = _params(2, max_images=2)  # one step per epoch keeps the test short
    full = train(labels, root, p, tmp_path / "full", kind="c3det", progress=False)
    first = train(labels, root, p, tmp_path / "cut", kind="c3det", progress=False,
                  stop_after_epoch=0)
    assert [e["epoch"] for e in first["epochs"]] == [0]
    resumed = train(labels, root, p, tmp_path / "cut", kind="c3det", progress=False)
    assert [e["epoch"] for e in resumed["epochs"]] == [0, 1]
    a = torch.load(tmp_path / "full/last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut/last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1 and a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert resumed["epochs"][1]["loss"] == pytest.approx(full["epochs"][1]["loss"], abs=1e-6)


def test_amp_dtype_picks_the_training_precision_and_keeps_weights_float32(synthetic, tmp_path):
    cpu = torch.device("cpu")
    assert autocast_dtype(TrainParams(amp=False), cpu) is None
    assert autocast_dtype(TrainParams(amp_dtype="bfloat16"), cpu) == torch.bfloat16
    # auto: bfloat16 only where the CPU has it natively (emulated bf16 is slower than fp32)
    assert autocast_dtype(TrainParams(), cpu) == (torch.bfloat16 if native_cpu_bf16() else None)
    assert autocast_dtype(TrainParams(), torch.device("cuda")) == torch.float16
    with pytest.raises(ValueError, match="amp_dtype float16 needs a CUDA device"):
        autocast_dtype(TrainParams(amp_dtype="float16"), cpu)
    assert "amp_dtype ('half') must be" in TrainParams(amp_dtype="half").check()

    labels, root = synthetic
    r = train(labels, root, _params(2, amp_dtype="bfloat16", max_images=2), tmp_path,
              kind="c3det", progress=False)
    assert [e["amp_dtype"] for e in r["epochs"]] == ["bfloat16", "bfloat16"]
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in r["epochs"])
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    floats = [v for v in state["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float32 for v in floats)
    fp32 = train(labels, root, _params(1, amp=False, max_images=2), tmp_path / "fp32",
                 kind="c3det", progress=False)
    assert fp32["epochs"][0]["amp_dtype"] == "float32"


def test_ddp_world_size_one_on_cpu_with_gloo(synthetic, tmp_path, monkeypatch):
    import socket
    import torch.distributed as dist
    labels, root = synthetic
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(k, v)
    try:
        r = train(labels, root, _params(1), tmp_path, kind="plain", progress=False)
        assert dist.is_initialized() and dist.get_backend() == "gloo"
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    assert r["epochs"][0]["images"] == len(labels)
    assert (tmp_path / "model.pt").exists()


def test_a_new_run_starts_from_a_model_checkpoint_of_another(synthetic, tmp_path):
    """The loop's warm start: model n begins with model n-1's weights (model.pt)."""
    from c3det.model import build_model
    from c3det.train import load_matching
    labels, root = synthetic
    train(labels, root, _params(1, max_images=2), tmp_path / "a", kind="plain", progress=False)
    previous, _ = checkpoint.load(tmp_path / "a/model.pt")
    fresh = build_model("c3det", len(labels.categories), _params(1))
    names = load_matching(fresh, tmp_path / "a/model.pt")
    trained = "detector.backbone.body._blocks.1._depthwise_conv.weight"
    assert trained in names
    assert not any(n.startswith("fusion.") for n in names)  # the plain model has none
    assert torch.equal(fresh.state_dict()[trained], previous.state_dict()[trained])


def test_freezing_the_detector_keeps_zero_clicks_exactly_the_plain_model(synthetic, tmp_path):
    labels, root = synthetic
    train(labels, root, _params(1, max_images=2), tmp_path / "plain", kind="plain",
          progress=False)
    # click-free samples included: with nothing to learn they must not break the step
    p = _params(1, max_images=4, freeze_detector=True, zero_click_share=0.5)
    train(labels, root, p, tmp_path / "c3", kind="c3det", progress=False,
          init_from=tmp_path / "plain/model.pt")
    plain, _ = checkpoint.load(tmp_path / "plain/model.pt")
    c3, _ = checkpoint.load(tmp_path / "c3/model.pt")
    mine, theirs = c3.state_dict(), plain.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in theirs.items())  # BN statistics included
    assert any(v.abs().sum() > 0 for k, v in mine.items() if k.startswith("fusion.mix"))
    with pytest.raises(ValueError, match="no click branch"):
        train(labels, root, p, tmp_path / "ef", kind="early_fusion", progress=False)


def test_resuming_another_kind_is_refused(synthetic, tmp_path):
    labels, root = synthetic
    p = _params(1, max_images=2)
    train(labels, root, p, tmp_path, kind="plain", progress=False)
    with pytest.raises(ValueError, match="plain"):
        train(labels, root, _params(2, max_images=2), tmp_path, kind="c3det", progress=False)


def _clicks_vs_no_clicks(tmp_path, epochs: int, clicks: int, **model) -> list[float]:
    """Train C3Det briefly on synthetic shapes; mAP at 0 and `clicks` clicks per image on
    8 held-out images (the raw model: no click-to-box guarantee, so any gain is learned)."""
    from c3det.evaluate import map_vs_clicks
    labels, _ = make_synthetic(40, size=(128, 128), objects_per_image=(4, 10),
                               object_size=(8, 16), seed=1, out_dir=tmp_path / "data")
    train_set = labels.subset([im.id for im in labels.images[:32]])
    test_set = labels.subset([im.id for im in labels.images[32:]])
    p = C3DetParams(**model, train=TrainParams(epochs=epochs, batch_size=4, crop_size=128,
                                               warmup_iters=20, lr_steps=[epochs - 2], seed=0))
    train(train_set, tmp_path / "data", p, tmp_path / "run", kind="c3det", progress=False)
    net, _ = checkpoint.load(tmp_path / "run/model.pt")
    r = map_vs_clicks(net, test_set, tmp_path / "data",
                      EvalParams(click_steps=[0, clicks], sessions=2), progress=False)
    return r["map_mean"]


@pytest.mark.benchmark
@pytest.mark.timeout(3600)
def test_clicks_raise_map_after_training_on_synthetic_data(tmp_path):
    """The reference LF branch (ResNet-18 + FPN), 12 epochs: 5 clicks beat 0 by > 5 mAP
    (passed in 5 min 41 s on the quiet 2-core dev box, 2026-11-29). Shorter runs are not
    robust: 6 epochs with the light LF branch gave +4.6 on one torch thread and +0.2 on
    two, so the default suite has no such test (training cost is why it is a benchmark)."""
    at0, at5 = _clicks_vs_no_clicks(tmp_path, 12, 5)
    assert at5 > at0 + 5, (at0, at5)
