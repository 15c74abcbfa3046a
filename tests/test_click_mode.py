"""Click, don't draw (#30): a centre click becomes a box from the image alone
(c3det.image_click_box), and the simulator's click mode ends at the ground truth and charges
the stated costs."""
from __future__ import annotations

import numpy as np
import pytest

from c3det.image_click_box import ClickBoxParams, ImageClickBoxer, SizePrior
from flows.accounting.simulator import CentreClicker, simulate_batch
from flows.accounting.workload import batch_workload
from flows.annotate.file_store import FileStore
from flows.project.config import SimulatorParams, WorkloadParams
from tinyloop.annotations import Annotation, Box, ImageLabels, ImageRecord, LabelSet
from tinyloop.boxes import iou_matrix

CLASSES = ["Person", "Car"]


def blob_image(boxes, size=(120, 160), bright=True, rng_seed=0):
    """A dark (or bright) noisy background with a rectangle of the other polarity per box."""
    rng = np.random.default_rng(rng_seed)
    img = rng.normal(0.2 if bright else 0.8, 0.01, size).astype(np.float32)
    for x1, y1, x2, y2 in boxes:
        img[y1:y2, x1:x2] = 0.9 if bright else 0.1
    return img


def iou(a, b) -> float:
    return float(iou_matrix([list(a)], [list(b)])[0, 0])


@pytest.mark.parametrize("bright", [True, False])
def test_a_click_on_a_blob_gives_the_blob_box(bright):
    blob = (60, 40, 74, 62)  # 14 x 22 px
    img = blob_image([blob], bright=bright)
    boxer = ImageClickBoxer()
    boxer.prior.add("Person", 12, 18)  # a typical size near, not equal to, the blob's
    box = boxer.box(img, 68.5, 52.0, "Person")  # 1.5 px right, 1 px below the centre
    assert iou(box, blob) >= 0.9


def test_no_contrast_gives_the_class_size_centred_on_the_click():
    img = np.full((100, 100), 0.5, dtype=np.float32)
    boxer = ImageClickBoxer()
    boxer.prior.add("Car", 20, 10)
    assert boxer.box(img, 50, 40, "Car") == pytest.approx((40, 35, 60, 45))
    # a class with no box yet: the median of every class's; nothing at all: default_size
    assert boxer.box(img, 50, 40, "Person") == pytest.approx((40, 35, 60, 45))
    fresh = ImageClickBoxer(ClickBoxParams(default_size=16))
    assert fresh.box(img, 50, 40, "Car") == pytest.approx((42, 32, 58, 48))


def test_the_box_stays_inside_the_image():
    img = np.full((50, 50), 0.5, dtype=np.float32)
    boxer = ImageClickBoxer()
    boxer.prior.add("Car", 20, 20)
    x1, y1, x2, y2 = boxer.box(img, 2, 48, "Car")
    assert (x1, y2) == (0, 50) and x2 == pytest.approx(12) and y1 == pytest.approx(38)


def test_size_prior_is_the_median_of_the_class():
    prior = SizePrior(default_size=16)
    for w, h in [(10, 20), (12, 22), (50, 60)]:
        prior.add("Person", w, h)
    assert prior.of("Person") == (12, 22)


def test_the_learned_ranker_takes_over_and_still_finds_blobs():
    p = ClickBoxParams(ranker_min_boxes=8, ranker_clicks_per_box=2)
    boxer = ImageClickBoxer(p)
    rng = np.random.default_rng(1)
    for k in range(10):  # blobs of varied size teach the ranker
        w, h = rng.integers(8, 24, 2)
        blob = (50, 40, 50 + int(w), 40 + int(h))
        boxer.learn(blob_image([blob], rng_seed=k), "Person", blob)
    blob = (70, 30, 86, 48)
    box = boxer.box(blob_image([blob], rng_seed=99), 78, 39, "Person")
    assert boxer.ranker.model is not None
    assert iou(box, blob) >= 0.7


def test_click_box_params_are_checked():
    assert ClickBoxParams().check() is None
    assert "levels" in ClickBoxParams(levels=[1.5]).check()
    assert "window_min" in ClickBoxParams(window_min=50, window_max=20).check()
    assert "accept_iou" in SimulatorParams(accept_iou=0).check()


# --- the simulator's click mode ----------------------------------------------------------------

BLOBS = [(20, 20, 34, 40), (80, 60, 96, 78), (120, 10, 150, 30)]


def click_truth():
    record = ImageRecord("b", "b.png", 160, 120)
    anns = [Annotation("Person", Box(*BLOBS[0])), Annotation("Person", Box(*BLOBS[1])),
            Annotation("Car", Box(*BLOBS[2]))]
    return LabelSet(CLASSES, [ImageLabels(record, anns)])


def simulate(tmp_path, missing: str, accept_iou: float = 0.5, image=None):
    truth = click_truth()
    store = FileStore(tmp_path)
    store.open_batch(1, LabelSet(CLASSES, [ImageLabels(truth.images[0].image)]))
    boxer = ImageClickBoxer()
    boxer.prior.add("Person", 14, 19)
    boxer.prior.add("Car", 28, 20)
    img = blob_image(BLOBS) if image is None else image
    clicker = CentreClicker(lambda image_id: img, boxer)
    params = SimulatorParams(rounds=0, missing=missing, accept_iou=accept_iou, seed=3)
    simulate_batch(store, 1, truth, lambda i, c: [], params, progress=False, clicker=clicker)
    return truth, store.pull(1), boxer


@pytest.mark.parametrize("missing", ["draw", "click"])
def test_click_mode_ends_at_the_ground_truth(tmp_path, missing):
    truth, final, _ = simulate(tmp_path, missing)
    got = sorted((a.category, a.box.xyxy()) for a in final.images[0].annotations)
    assert got == sorted((a.category, a.box.xyxy()) for a in truth.images[0].annotations)
    sources = {a.provenance.source for a in final.images[0].annotations}
    assert sources == ({"simulated"} if missing == "draw" else {"click_box"})


def test_click_mode_charges_click_plus_verification_and_a_move_when_wrong(tmp_path):
    cost = WorkloadParams()
    clicked = cost.centre_click_seconds + cost.box_verify_seconds
    # blobs in the image: every produced box is right
    _, final, boxer = simulate(tmp_path / "blobs", "click")
    w = batch_workload(None, final, cost, first_batch=True)
    assert (w["drawn"], w["click_accepted"], w["click_fixed"]) == (0, 3, 0)
    assert w["seconds"] == pytest.approx(3 * clicked)
    assert w["click_accepted_seconds"] == pytest.approx(3 * clicked)
    assert w["manual_seconds"] == pytest.approx(3 * cost.box_seconds)
    assert boxer.prior.sizes["Person"][-2:] == [(14, 20), (16, 18)]  # it learned the boxes
    # a blank image and an IoU no typical-size box reaches: every box is moved
    _, final, _ = simulate(tmp_path / "blank", "click", accept_iou=0.99,
                           image=np.zeros((120, 160), np.float32))
    w = batch_workload(None, final, cost, first_batch=True)
    assert (w["drawn"], w["click_accepted"], w["click_fixed"]) == (0, 0, 3)
    assert w["seconds"] == pytest.approx(3 * (clicked + cost.move_seconds))


def test_a_click_mode_batch_also_states_what_drawing_would_have_cost(tmp_path):
    """One click-mode run prices both modes: the drawn alternative is the same annotation
    with every centre-clicked box drawn instead (the draw run's seconds)."""
    cost = WorkloadParams()
    _, clicked, _ = simulate(tmp_path / "click", "click")
    _, drawn, _ = simulate(tmp_path / "draw", "draw")
    w_click = batch_workload(None, clicked, cost, first_batch=True)
    w_draw = batch_workload(None, drawn, cost, first_batch=True)
    assert w_click["seconds_if_drawn"] == pytest.approx(w_draw["seconds"]) == 21.0
    assert w_click["seconds"] < w_click["seconds_if_drawn"]
    assert w_click["reduction_seconds_if_drawn_pct"] == 0.0  # batch 1 drawn = by hand
    assert w_draw["seconds_if_drawn"] == w_draw["seconds"]


def test_draw_mode_costs_what_it_did(tmp_path):
    _, final, _ = simulate(tmp_path, "draw")
    w = batch_workload(None, final, WorkloadParams(), first_batch=True)
    assert (w["drawn"], w["click_accepted"], w["click_fixed"]) == (3, 0, 0)
    assert w["seconds"] == w["WT"] == pytest.approx(3 * 7.0)


def test_click_mode_without_images_is_refused(tmp_path):
    truth = click_truth()
    store = FileStore(tmp_path)
    store.open_batch(1, LabelSet(CLASSES, [ImageLabels(truth.images[0].image)]))
    with pytest.raises(ValueError, match="missing is click"):
        simulate_batch(store, 1, truth, lambda i, c: [], SimulatorParams(missing="click"),
                       progress=False)
