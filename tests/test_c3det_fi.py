"""CFINet's Feature Imitation head (c3det/feature_imitation.py): the exemplar ring buffer, the
supervised-contrastive loss and instance quality against hand-computed values, and the head
inside plain / c3det Faster R-CNN models on tiny CPU inputs."""
import dataclasses
import math

import pytest
import torch
from torchvision.models.detection.faster_rcnn import TwoMLPHead

from c3det import checkpoint
from c3det.config import C3DetParams, FIParams
from c3det.feature_imitation import (ExemplarQueue, FIRoIHeads, ReweightedBoxHead,
                                     instance_quality, supervised_contrastive)
from c3det.model import build_model
from c3det.uel import ClickRoIHeads
from tests.test_c3det_model import CLASSES
from tests.test_c3det_train import _params as _train_params
from tests.test_c3det_train import synthetic  # noqa: F401 (fixture)
from tests.fixtures_c3det import (FAST, assert_same_outputs, tiny_inputs,  # noqa: F401
                                  two_threads)

FI_ON = FIParams(enabled=True)


def P(**kw) -> C3DetParams:
    return C3DetParams(**{**FAST, **kw})


# --- exemplar queue ---------------------------------------------------------------------------

def _rows(*values):
    return torch.tensor([[float(v)] * 2 for v in values])      # (N, 2), row i = (v_i, v_i)


def test_queue_is_a_per_class_ring_buffer_that_overwrites_its_oldest_entries():
    q = ExemplarQueue(num_classes=2, size=3, dim=2)
    assert q.get(1).shape == (0, 2) and not q.full(1)
    q.push(_rows(1, 2), torch.tensor([1, 1]))
    assert torch.equal(q.get(1), _rows(1, 2)) and not q.full(1)
    q.push(_rows(3, 4, 5), torch.tensor([1, 1, 1]))          # 5 pushed into 3 slots
    assert q.full(1)
    assert torch.equal(q.get(1), _rows(3, 4, 5))              # oldest first, 1 and 2 gone
    q.push(_rows(6), torch.tensor([1]))
    assert torch.equal(q.get(1), _rows(4, 5, 6))
    q.push(_rows(7, 8, 9, 10), torch.tensor([1, 1, 1, 1]))    # more than the size in one push
    assert torch.equal(q.get(1), _rows(8, 9, 10))
    assert q.get(2).shape == (0, 2) and not q.full(2)        # the other class never moved


def test_queue_keeps_classes_apart_in_a_mixed_push():
    q = ExemplarQueue(num_classes=3, size=2, dim=2)
    q.push(_rows(1, 2, 3, 4, 5), torch.tensor([2, 1, 2, 2, 3]))
    assert torch.equal(q.get(1), _rows(2))
    assert torch.equal(q.get(2), _rows(3, 4)) and q.full(2)  # 1, 3, 4 in order: 1 overwritten
    assert torch.equal(q.get(3), _rows(5))
    bank, labels = q.bank()
    assert torch.equal(labels, torch.tensor([1, 2, 2, 3]))
    assert torch.equal(bank, _rows(2, 3, 4, 5))
    with pytest.raises(ValueError, match="1..3"):
        q.push(_rows(1), torch.tensor([0]))                   # background is never stored


def test_queue_moves_with_the_module_and_is_saved_in_the_state_dict():
    q = ExemplarQueue(2, 4, 3)
    q.push(_rows(1, 2, 3)[:, :1].expand(-1, 3), torch.tensor([2, 2, 1]))
    assert set(q.state_dict()) == {"slots", "next", "count"}
    r = ExemplarQueue(2, 4, 3)
    r.load_state_dict(q.state_dict())
    assert torch.equal(r.get(2), q.get(2)) and torch.equal(r.get(1), q.get(1))
    assert q.to(torch.float64).slots.dtype == torch.float64


# --- supervised-contrastive loss (eq. 5) ------------------------------------------------------

def test_supervised_contrastive_matches_a_hand_computation():
    s = 1 / math.sqrt(2)
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    anchor_labels = torch.tensor([1, 2])
    bank = torch.tensor([[1.0, 0.0], [s, s], [0.0, 1.0]])
    bank_labels = torch.tensor([1, 1, 0])                     # two class-1 exemplars, background
    tau = 0.5
    # anchor 0: dots with the bank 1, s, 0; positives the first two
    log_z = math.log(math.exp(1 / tau) + math.exp(s / tau) + math.exp(0))
    l0 = -((1 / tau - log_z) + (s / tau - log_z)) / 2
    # anchor 1 (class 2) has no exemplar of its class: it does not count
    loss = supervised_contrastive(anchors, anchor_labels, bank, bank_labels, tau)
    assert loss.item() == pytest.approx(l0, rel=1e-6)
    # with a class-2 exemplar it counts: dots 0, s, 1, 0 with the one positive the 4th row
    bank2 = torch.cat([bank, torch.tensor([[0.0, 1.0]])])
    labels2 = torch.cat([bank_labels, torch.tensor([2])])
    log_z0 = math.log(math.exp(1 / tau) + math.exp(s / tau) + 2 * math.exp(0))
    l0 = -((1 / tau - log_z0) + (s / tau - log_z0)) / 2
    log_z1 = math.log(1 + math.exp(s / tau) + 2 * math.exp(1 / tau))
    l1 = -(1 / tau - log_z1)
    loss = supervised_contrastive(anchors, anchor_labels, bank2, labels2, tau)
    assert loss.item() == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_supervised_contrastive_is_zero_and_differentiable_without_positives():
    anchors = torch.randn(3, 4, requires_grad=True)
    loss = supervised_contrastive(anchors, torch.tensor([1, 1, 2]), torch.zeros(0, 4),
                                  torch.zeros(0, dtype=torch.long), 0.6)
    assert loss.item() == 0
    loss.backward()
    assert torch.all(anchors.grad == 0)


# --- instance quality (eq. 3) -----------------------------------------------------------------

def test_instance_quality_averages_score_times_iou_over_proposals_predicting_the_class():
    # 2 objects (classes 1 and 2), 5 proposals; columns: background, class 1, class 2
    probs = torch.tensor([[0.1, 0.8, 0.1],    # object 0, predicts 1: 0.8 * 0.9
                          [0.2, 0.6, 0.2],    # object 0, predicts 1: 0.6 * 0.5
                          [0.7, 0.2, 0.1],    # object 0, predicts background: not in S'
                          [0.1, 0.2, 0.7],    # object 1, predicts 2: 0.7 * 0.8
                          [0.1, 0.9, 0.0]])   # not assigned (-1): ignored
    ious = torch.tensor([0.9, 0.5, 1.0, 0.8, 1.0])
    assigned = torch.tensor([0, 0, 0, 1, -1])
    iq, count = instance_quality(probs, ious, assigned, torch.tensor([1, 2]))
    assert count.tolist() == [2, 1]
    assert iq.tolist() == pytest.approx([(0.8 * 0.9 + 0.6 * 0.5) / 2, 0.7 * 0.8])
    # an object no proposal predicts correctly has IQ 0 and count 0
    iq, count = instance_quality(probs[2:3], ious[2:3], torch.tensor([0]), torch.tensor([1]))
    assert iq.tolist() == [0.0] and count.tolist() == [0]


# --- in the detector --------------------------------------------------------------------------

def _fill_queue(model, per_class=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = model.num_classes
    v = torch.nn.functional.normalize(torch.randn(n * per_class, FI_ON.embedding_dim,
                                                  generator=g), dim=1)
    model.detector.roi_heads.fi.queue.push(v, torch.arange(1, n + 1).repeat_interleave(per_class))


@pytest.mark.parametrize("kind", ["plain", "c3det"])
def test_fi_trains_with_a_finite_loss_and_leaves_inference_to_the_reweighting(kind):
    torch.manual_seed(0)
    model = build_model(kind, len(CLASSES), P(fi=FI_ON))
    heads = model.detector.roi_heads
    assert isinstance(heads, FIRoIHeads) and isinstance(heads.box_head, ReweightedBoxHead)
    _fill_queue(model)
    images, clicks, targets = tiny_inputs()
    model.train()
    losses = model(images, clicks, targets)
    assert "loss_fi" in losses and all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_fi"] > 0                       # fresh model: every object low quality
    assert ("loss_uel" in losses) == (kind == "c3det")  # FI composes with UEL
    sum(losses.values()).backward()
    for p in (*heads.fi.embed.parameters(), *heads.box_head.reweight.parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0

    before = [b.clone() for b in heads.fi.queue.buffers()]

    def forbidden(*a, **k):
        raise AssertionError("inference must not compute FI embeddings or touch the queue")

    heads.fi.embed.forward = forbidden
    heads.fi.queue.push = forbidden
    model.eval()
    with torch.no_grad():
        out = model(images, clicks)
    assert len(out) == 2 and all(d["boxes"].shape[1] == 4 for d in out)
    assert all(torch.equal(a, b) for a, b in zip(before, heads.fi.queue.buffers()))


def test_fi_handles_an_image_without_objects():
    torch.manual_seed(0)
    model = build_model("c3det", len(CLASSES), P(fi=FI_ON)).train()
    _fill_queue(model)
    images, clicks, targets = tiny_inputs()
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
                  "clicked": torch.zeros(0, dtype=torch.bool)}
    losses = model(images, [clicks[0], torch.zeros(0, 3)], targets)
    assert torch.isfinite(losses["loss_fi"]) and losses["loss_fi"] > 0
    empty = [{k: v[:0] for k, v in t.items()} for t in targets]
    assert model(images, None, empty)["loss_fi"] == 0


def _around(box):
    """The 8 boxes shifted by one pixel from `box` (IoU >= 0.68 with a 10 px box)."""
    shifts = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)]
    return box + torch.tensor([[dx, dy, dx, dy] for dx, dy in shifts], dtype=torch.float)


@pytest.mark.parametrize("min_proposals, pushed", [(8, 1), (9, 0)])
def test_high_quality_objects_push_their_embeddings_into_the_queue(min_proposals, pushed):
    torch.manual_seed(0)
    fi = FIParams(enabled=True, quality_threshold=0.0, min_proposals=min_proposals)
    model = build_model("plain", len(CLASSES), P(fi=fi)).train()
    heads = model.detector.roi_heads
    with torch.no_grad():   # every RoI predicts class 1 with probability ~1
        heads.box_predictor.cls_score.weight.zero_()
        heads.box_predictor.cls_score.bias.copy_(torch.tensor([0.0, 10.0, 0.0, 0.0]))
    images, clicks, targets = tiny_inputs()
    batch = model.prepare(images, clicks, targets)
    features = model.fuse(model.image_features(batch), batch)
    # 8 proposals on the class-1 object of image 0, 8 on the class-2 object of image 1 (which
    # predict class 1, so they do not count); torchvision adds the ground-truth boxes
    proposals = [_around(targets[0]["boxes"][0]), _around(targets[1]["boxes"][0])]
    sizes = batch.images.image_sizes
    _, losses = heads(features, proposals, sizes, batch.targets)
    q = heads.fi.queue
    assert (len(q.get(1)), len(q.get(2)), len(q.get(3))) == (pushed, 0, 0)
    assert losses["loss_fi"] == 0          # the queue was empty while the loss was computed
    if pushed:
        assert q.get(1).norm().item() == pytest.approx(1.0, abs=1e-5)
        _, losses = heads(features, proposals, sizes, batch.targets)
        assert len(q.get(1)) == 2
        assert torch.isfinite(losses["loss_fi"])


def test_fi_disabled_is_exactly_the_old_model_and_checkpoints_keep_the_queue(tmp_path):
    off = build_model("c3det", len(CLASSES), P())
    assert type(off.detector.roi_heads) is ClickRoIHeads
    assert type(off.detector.roi_heads.box_head) is TwoMLPHead
    assert not any("fi." in k or "reweight" in k for k in off.state_dict())
    on = build_model("c3det", len(CLASSES), P(fi=FI_ON))
    keys = set(on.state_dict())
    assert any(".fi.queue." in k for k in keys)
    assert any("box_head.reweight" in k for k in keys) and any(".fi.embed." in k for k in keys)
    assert {k.replace("box_head.head.", "box_head.") for k in keys
            if "box_head.reweight" not in k and ".fi." not in k} == set(off.state_dict())
    _fill_queue(on)
    path = checkpoint.save(tmp_path / "model.pt", on.eval(), {"kind": "c3det",
                                                              "classes": CLASSES})
    loaded, meta = checkpoint.load(path)
    assert meta["params"]["fi"]["enabled"] and isinstance(loaded.detector.roi_heads, FIRoIHeads)
    assert torch.equal(loaded.detector.roi_heads.fi.queue.get(1),
                       on.detector.roi_heads.fi.queue.get(1))
    images, clicks, _ = tiny_inputs()
    with torch.no_grad():
        a, b = on(images, clicks), loaded(images, clicks)
    assert all(torch.allclose(x["scores"], y["scores"]) for x, y in zip(a, b))


def test_fi_needs_faster_rcnn():
    assert "fi.enabled needs detector" in C3DetParams(detector="retinanet", fi=FI_ON).check()
    assert FIParams(temperature=0).check() and FIParams(quality_threshold=1.5).check()
    assert FIParams().check() is None


def test_the_one_click_fast_path_applies_the_reweighting_too():
    """c3det.click_heads calls roi_heads.box_head directly: the re-weighting lives inside it."""
    from c3det.click_heads import LinearClickHeads
    torch.manual_seed(0)
    model = build_model("c3det", 3, P(lf_backbone="light", lf_channels=16, fi=FI_ON)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for conv in model.fusion.mix:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
        clicks = torch.tensor([[20., 22., 0], [50., 40., 2]])
        batch = model.prepare([torch.rand(3, 64, 96, generator=g)])
        feats = model.image_features(batch)
        b = model.with_clicks(batch, [clicks])
        ref = model.heads(model.fuse(feats, b), b, candidates=True)[0]
        got = LinearClickHeads(model, batch, feats).detect(clicks)
    assert len(ref["scores"]) > 0
    assert_same_outputs(ref, got)


def test_training_with_fi_logs_loss_fi_and_resumes_exactly(synthetic, tmp_path):
    from c3det.train import train
    labels, root = synthetic
    p = dataclasses.replace(_train_params(2, max_images=2),
                            fi=FIParams(enabled=True, quality_threshold=0.0, min_proposals=1))
    full = train(labels, root, p, tmp_path / "full", kind="plain", progress=False)
    assert all("loss_fi" in e and math.isfinite(e["loss_fi"]) for e in full["epochs"])
    train(labels, root, p, tmp_path / "cut", kind="plain", progress=False, stop_after_epoch=0)
    resumed = train(labels, root, p, tmp_path / "cut", kind="plain", progress=False)
    a = torch.load(tmp_path / "full/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut/last.pt", weights_only=True)["model"]
    assert a["detector.roi_heads.fi.queue.count"].sum() > 0   # exemplars were pushed
    for k in a:                                         # the queue included
        assert torch.equal(a[k], b[k]), k
    assert resumed["epochs"][1]["loss"] == pytest.approx(full["epochs"][1]["loss"], abs=1e-6)
