"""Sliced interactive inference (c3det.predict): clicks are local to the tiles holding them
(heatmaps, click-to-box), C3 templates are global (a click's template, taken on its home
tile, is correlated with every other tile). Tiny CPU models, random weights."""
import numpy as np
import pytest
import torch

from c3det.c3 import c3_correlate, c3_maps, c3_templates
from c3det.config import C3DetParams
from c3det.heatmaps import pooled_click_maps
from c3det.model import build_model
from c3det.predict import Predictor, home_tile
from tinyloop.annotations import Box, Click
from tinyloop.config import TilingParams
from tests.fixtures_c3det import assert_same_predictions, two_threads  # noqa: F401

CLASSES = ["a", "b", "c"]
FAST = dict(rpn_proposals_train=200, rpn_proposals_test=100, roi_batch_size=64,
            lf_backbone="light", lf_channels=16, weights="none")
# a 64 x 160 image in 64 px tiles every 48 px: windows x 0-64, 48-112, 96-160
TILES = TilingParams(size=64, stride=48)


def _model(kind="c3det", seed=0):
    """A click branch that matters: fusion convs are zero at init, randomise them."""
    torch.manual_seed(seed)
    model = build_model(kind, len(CLASSES), C3DetParams(**FAST)).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for conv in model.fusion.mix:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.05)
    return model


def _image(h=64, w=160, seed=0):
    return np.random.default_rng(seed).random((3, h, w), dtype=np.float32)


def test_c3_maps_is_templates_then_correlation():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(1, 8, 6, 7, generator=g)
    clicks = torch.tensor([[3.0, 4.0, 0], [20.0, 9.0, 2], [11.0, 17.0, 0]])
    t = c3_templates(f, [clicks], 4.0, 3.0)
    assert t.shape == (3, 8)
    for normalize in (True, False):
        assert torch.equal(c3_maps(f, [clicks], 3, 4.0, 3.0, normalize),
                           c3_correlate(f, t, clicks[:, 2], 3, normalize))
    # a batch: each click with its own image, or (template_images=None) with every image
    fb = torch.randn(2, 8, 6, 7, generator=g)
    per_image = [clicks[:2], clicks[2:]]
    tb = c3_templates(fb, per_image, 4.0, 3.0)
    assert torch.allclose(tb[2], c3_templates(fb[1:], [clicks[2:]], 4.0, 3.0)[0])
    assert torch.equal(c3_maps(fb, per_image, 3, 4.0, 3.0),
                       c3_correlate(fb, tb, clicks[:, 2], 3, True, torch.tensor([0, 0, 1])))
    everywhere = c3_correlate(fb, tb, clicks[:, 2], 3)
    for i in range(2):
        assert torch.allclose(everywhere[i], c3_correlate(fb[i:i + 1], tb, clicks[:, 2], 3)[0])
    assert c3_correlate(f, t[:0], clicks[:0, 2], 3).abs().sum() == 0


def test_an_image_that_fits_one_tile_is_predicted_as_before():
    model = _model()
    image = _image(64, 80)
    clicks = [Click(20, 22, "a"), Click(50, 40, "c")]
    raw = Predictor(model, CLASSES, guarantee_clicks=False)
    session = raw.session(image)
    assert len(session.tiles) == 1
    (inputs,) = session.tile_inputs(clicks)
    assert inputs.external is None and inputs.clicks == clicks
    with torch.no_grad():
        full = model([torch.from_numpy(image)], [raw.click_tensor(clicks)])[0]
    for got in (raw.predict(image, clicks), session.set_clicks(clicks),
                Predictor(model, CLASSES, guarantee_clicks=False,
                          tiling=TilingParams(size=80, stride=40)).predict(image, clicks)):
        assert len(got) == len(full["boxes"]) > 0
        assert np.allclose([a.box.xyxy() for a in got], full["boxes"].numpy(), atol=1e-3)
        assert np.allclose([a.score for a in got], full["scores"].numpy(), atol=1e-4)
    with_guarantee = Predictor(model, CLASSES)
    assert_same_predictions(with_guarantee.predict(image, clicks),
                 with_guarantee.session(image).set_clicks(clicks))


def test_a_click_in_one_tile_reaches_the_c3_maps_of_a_tile_without_it():
    model = _model()
    pred = Predictor(model, CLASSES, tiling=TILES)
    session = pred.session(_image())
    a, b = session.tiles[0], session.tiles[2]             # x 0-64 and x 96-160
    click = Click(10, 12, "b")
    inputs = session.tile_inputs([click])
    assert inputs[0].clicks == [click] and inputs[0].external is None
    assert inputs[2].clicks == [] and inputs[2].external is not None
    external = inputs[2].external
    fusion = model.fusion
    with torch.no_grad():
        batch_a = model.prepare([a.image])
        feats_a = model.image_features(batch_a)
        batch_b = model.prepare([b.image])
        feats_b = model.image_features(batch_b)
        c3_b, _ = fusion.click_parts(feats_b, [torch.zeros(0, 3)], batch_b.padded_size,
                                     [external])
    for name, fa in feats_a.items():
        # eq. (1) by hand on tile A: T = sum_xy F_A(:, x, y) U(x, y)
        h, w = fa.shape[-2:]
        u = pooled_click_maps(torch.tensor([[10.0, 12.0]]), h, w,
                              batch_a.padded_size[0] / h, fusion.c3_sigma)[0]
        t = (fa[0] * u).sum((1, 2))
        assert torch.allclose(external[name][0][0], t, atol=1e-5)
        assert external[name][1].tolist() == [1]
        # eqs. (2)-(3) by hand on tile B: class "b" is T . F_B / D, the others stay 0
        fb = feats_b[name][0]
        expected = (t[:, None, None] * fb).sum(0) / fb.shape[0]
        assert torch.allclose(c3_b[name][0, 1], expected, atol=1e-5)
        assert c3_b[name][0, 1].abs().max() > 0
        assert c3_b[name][0, [0, 2]].abs().sum() == 0
    # without the click tile B has no click input at all; with it, its fused features and
    # its detections change
    assert session.tile_inputs([])[2].external is None
    with torch.no_grad():
        plain = model.fuse(feats_b, model.with_clicks(batch_b, [torch.zeros(0, 3)]))
        fused = model.fuse(feats_b, model.with_clicks(batch_b, [torch.zeros(0, 3)]), [external])
    assert all(torch.equal(plain[k], feats_b[k]) for k in feats_b)
    assert not torch.allclose(fused["0"], plain["0"])
    no_click = pred.run_tile(b, torch.zeros(0, 3), False)
    far_click = pred.run_tile(b, torch.zeros(0, 3), False, external)
    assert not torch.allclose(no_click["candidate_objectness"], far_click["candidate_objectness"])


def test_a_click_in_an_overlap_is_local_to_both_tiles_and_global_to_the_third():
    model = _model()
    pred = Predictor(model, CLASSES, tiling=TILES)
    image = _image()
    session = pred.session(image)
    windows = [t.window for t in session.tiles]
    assert [w.x1 for w in windows] == [0, 48, 96]
    click = Click(58, 20, "a")                 # x 48-64: tiles 0 and 1
    inputs = session.tile_inputs([click])
    assert inputs[0].clicks == [Click(58, 20, "a")] and inputs[0].external is None
    assert inputs[1].clicks == [Click(10, 20, "a")] and inputs[1].external is None
    assert inputs[2].clicks == []
    # its template comes from tile 1, where it lies 10 px from a cut (6 px in tile 0)
    assert home_tile(58, 20, windows, 160, 64) == 1
    assert home_tile(54, 20, windows, 160, 64) == 0
    assert home_tile(60, 63, windows, 160, 64) == 1      # the image border is no cut
    by_hand = pred.tile_templates(session.tiles[1], Click(10, 20, "a"))
    assert all(torch.allclose(inputs[2].external[k][0], by_hand[k][0]) for k in by_hand)
    # every tile holding the click gets it as a local click (heatmaps, click-to-box) when run
    runs = {}
    original = pred.run_tile

    def recording(tile, clicks, *rest):
        runs[tile.window.x1] = clicks
        return original(tile, clicks, *rest)
    pred.run_tile = recording
    got = session.set_clicks([click])
    assert runs[0].tolist() == [[58.0, 20.0, 0.0]] and runs[48].tolist() == [[10.0, 20.0, 0.0]]
    assert runs[96].shape == (0, 3)
    assert any(a.category == "a" and a.box.contains(58, 20) for a in got)


def test_sliced_session_equals_one_shot_predict_and_late_fusion_stays_local():
    model = _model()
    pred = Predictor(model, CLASSES, tiling=TILES)
    image = _image(seed=3)
    session = pred.session(image)
    clicks = [Click(10, 12, "b"), Click(150, 40, "c"), Click(58, 20, "b")]
    for n in range(1, 4):    # cached features + LinearClickHeads vs a full uncached pass
        assert_same_predictions(session.add_click(clicks[n - 1]), pred.predict(image, clicks[:n]))
    # a new click re-runs every tile of a C3 model (its template reaches them all)
    runs = []
    original = pred.run_tile
    pred.run_tile = lambda tile, *a: runs.append(tile.window.x1) or original(tile, *a)
    session.add_click(Click(100, 30, "a"))
    assert sorted(runs) == [0, 48, 96]
    lf = Predictor(_model("late_fusion"), CLASSES, tiling=TILES).session(image)
    assert all(i.external is None for i in lf.tile_inputs(clicks))
    assert lf.tile_inputs(clicks)[1].clicks == [Click(10, 20, "b")]
