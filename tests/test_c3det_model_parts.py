"""c3det building blocks with hand-computed values: heatmaps, C3, UEL selection, click-to-box,
Passthrough relabelling, aligned RoIAlign. No network is built here; fast."""
import math

import pytest
import torch
from torchvision.ops import roi_align

from c3det.c3 import c3_maps
from c3det.click_to_box import centre_score, explain_clicks, relabel_by_clicks, size_score
from c3det.heatmaps import class_heatmaps, pooled_click_maps
from c3det.model import AlignedRoIAlign
from c3det.uel import uel_selection


def test_class_heatmaps_take_the_max_per_class_and_leave_unclicked_classes_zero():
    clicks = torch.tensor([[2.5, 2.5, 0], [4.5, 2.5, 0], [7.5, 7.5, 2]])
    h = class_heatmaps(clicks, num_classes=3, height=10, width=10, sigma=1.0)
    assert h.shape == (3, 10, 10)
    assert torch.all(h[1] == 0)
    assert h[0, 2, 2] == pytest.approx(1.0) and h[0, 2, 4] == pytest.approx(1.0)
    # pixel (row 2, col 3) is 1 px from both class-0 clicks: max, not sum, of two Gaussians
    assert h[0, 2, 3] == pytest.approx(math.exp(-0.5))
    assert h[2, 7, 7] == pytest.approx(1.0) and h[2, 2, 2] < 1e-6
    assert class_heatmaps(torch.zeros(0, 3), 2, 4, 4, 1.0).abs().sum() == 0


@pytest.mark.parametrize("stride", [1, 4, 8, 16, 32, 64])
def test_pooled_click_maps_never_vanish_on_coarse_levels(stride):
    # a 3 px Gaussian near a cell corner: a nearest-neighbour resize can miss it entirely
    clicks = torch.tensor([[63.9, 0.2, 0], [5.0, 70.0, 1]])
    u = pooled_click_maps(clicks, 128 // stride, 128 // stride, stride, sigma=3.0)
    assert torch.allclose(u.flatten(1).sum(1), torch.ones(2))
    assert (u >= 0).all()


def test_pooled_click_map_splits_a_click_on_a_cell_border_evenly():
    u = pooled_click_maps(torch.tensor([[8.0, 4.0, 0]]), 2, 2, stride=8, sigma=2.0)
    assert u[0, 0, 0] == pytest.approx(u[0, 0, 1].item())
    assert u[0, 0, 0] == pytest.approx(0.5 * (1 - 0.0455) / (1 - 0.0455 / 2), abs=1e-3)


def _hand_features():
    ch0 = torch.tensor([[1., 2., 3.], [4., 5., 6.]])
    ch1 = torch.tensor([[0., 1., 0.], [1., 0., 1.]])
    return torch.stack([ch0, ch1])[None], ch0, ch1  # (1, D=2, h=2, w=3)


def test_c3_template_and_correlation_match_hand_computation():
    f, ch0, ch1 = _hand_features()
    # sigma tiny: U_k is one-hot at the clicked cell, so T_k = F[:, row, col] (eq. 1)
    clicks = torch.tensor([[1.5, 0.5, 0],    # cell (0, 1): T = (2, 1) -> M = 2 ch0 + ch1
                           [0.5, 1.5, 0],    # cell (1, 0): T = (4, 1) -> M = 4 ch0 + ch1
                           [2.5, 0.5, 2]])   # cell (0, 2): T = (3, 0) -> M = 3 ch0
    out = c3_maps(f, [clicks], num_classes=3, stride=1.0, sigma=0.01, normalize=False)
    m1, m2 = 2 * ch0 + ch1, 4 * ch0 + ch1
    assert torch.allclose(out[0, 0], torch.maximum(m1, m2))          # eq. 3: class-wise max
    assert torch.allclose(out[0, 0], torch.tensor([[4., 9., 12.], [17., 20., 25.]]))
    assert torch.all(out[0, 1] == 0)                                  # nobody clicked class 1
    assert torch.allclose(out[0, 2], 3 * ch0)
    halved = c3_maps(f, [clicks], 3, 1.0, 0.01, normalize=True)
    assert torch.allclose(halved, out / 2)                            # divided by D = 2


def test_c3_template_of_a_click_between_two_cells_averages_them():
    f, ch0, ch1 = _hand_features()
    # x = 1.0 is the border of cells 0 and 1: U = 1/2, 1/2 -> T = ((1+2)/2, (0+1)/2)
    out = c3_maps(f, [torch.tensor([[1.0, 0.5, 0]])], 1, 1.0, sigma=0.01, normalize=False)
    assert torch.allclose(out[0, 0], 1.5 * ch0 + 0.5 * ch1, atol=1e-4)


def test_c3_keeps_clicks_with_their_own_image_in_a_batch():
    f, ch0, ch1 = _hand_features()
    batch = torch.cat([f, 10 * f])
    out = c3_maps(batch, [torch.zeros(0, 3), torch.tensor([[1.5, 0.5, 1]])], 2, 1.0, 0.01,
                  normalize=False)
    assert torch.all(out[0] == 0) and torch.all(out[1, 0] == 0)
    assert torch.allclose(out[1, 1], 100 * (2 * ch0 + ch1))


def test_uel_selects_positive_rois_touching_a_clicked_box():
    gt = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.], [40., 40., 50., 50.]])
    gt_labels = torch.tensor([1, 2, 3])
    clicked = torch.tensor([True, True, False])
    rois = torch.tensor([[2., 2., 9., 9.],      # positive, inside clicked box 0 -> class 1
                         [2., 2., 9., 9.],      # background RoI: never
                         [41., 41., 49., 49.],  # positive but its object was not clicked
                         [8., 8., 22., 22.],    # touches boxes 0 (IoU .02) and 1 (IoU .02)
                         [9., 9., 28., 28.],    # IoU 1/361 with box 0, 64/361 with box 1 -> 2
                         [60., 60., 70., 70.]])  # touches nothing clicked
    roi_labels = torch.tensor([1, 0, 3, 1, 2, 3])
    selected, target = uel_selection(rois, roi_labels, gt, gt_labels, clicked)
    assert selected.tolist() == [True, False, False, True, True, False]
    assert target[0] == 1 and target[4] == 2
    none, _ = uel_selection(rois, roi_labels, gt, gt_labels, torch.zeros(3, dtype=torch.bool))
    assert not none.any()


def test_click_inside_a_detection_of_its_class_adds_nothing():
    det = {"boxes": torch.tensor([[10., 10., 20., 20.]]), "labels": torch.tensor([2]),
           "scores": torch.tensor([0.4])}
    out = explain_clicks(det, torch.tensor([[15., 15., 1]]), (100, 100))
    assert len(out["boxes"]) == 1 and out["refined"].tolist() == [True]


def test_unexplained_click_takes_best_candidate_by_centre_score_times_objectness():
    click = torch.tensor([[50., 50., 0]])
    # another class's detection on the same object: replaced; class 0 candidates:
    cands = torch.tensor([[[44., 44., 56., 56.]],   # centred, objectness 0.6 -> 0.6
                          [[46., 46., 60., 60.]],   # centre 3 px off in x and y, 0.9
                          [[70., 70., 80., 80.]]])  # does not contain the click, 1.0
    det = {"boxes": torch.tensor([[45., 45., 57., 57.], [0., 0., 5., 5.]]),
           "labels": torch.tensor([2, 2]), "scores": torch.tensor([0.8, 0.7]),
           "candidate_boxes": cands, "candidate_objectness": torch.tensor([0.6, 0.9, 1.0])}
    sigma = 4.0
    expected_off = math.exp(-(3 ** 2 + 3 ** 2) / (2 * sigma ** 2)) * 0.9   # 0.513 < 0.6
    assert expected_off < 0.6
    out = explain_clicks(det, click, (100, 100), sigma=sigma)
    assert out["boxes"][-1].tolist() == [44., 44., 56., 56.] and out["labels"][-1] == 1
    assert out["labels"].tolist() == [2, 1]   # the class-2 box on the same object is gone
    assert out["refined"].tolist() == [False, True] and out["scores"][-1] == 1.0
    # with a larger sigma the off-centre but confident candidate wins
    out = explain_clicks(det, click, (100, 100), sigma=20.0)
    assert out["boxes"][-1].tolist() == [46., 46., 60., 60.]
    assert torch.allclose(centre_score(cands[:2, 0], click[0, :2], sigma),
                          torch.tensor([1.0, math.exp(-18 / 32)]))


def test_click_without_candidates_gets_a_default_box_clipped_to_the_image():
    det = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
           "scores": torch.zeros(0)}
    out = explain_clicks(det, torch.tensor([[2., 50., 1], [60., 40., 0]]), (64, 64),
                         default_size=12.0)
    assert out["boxes"].tolist() == [[0., 44., 8., 56.], [54., 34., 64., 46.]]
    assert out["labels"].tolist() == [2, 1]


def test_class_size_prior_picks_the_typical_candidate_and_sizes_the_fallback():
    click = torch.tensor([[50., 50., 0]])
    # both candidates centred on the click; the huge one has more objectness
    cands = torch.tensor([[[18., 18., 82., 82.]],    # 64 px, objectness 0.9
                          [[44., 42., 56., 58.]]])   # 12 x 16 px, objectness 0.5
    det = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
           "scores": torch.zeros(0), "candidate_boxes": cands,
           "candidate_objectness": torch.tensor([0.9, 0.5])}
    no_prior = explain_clicks(det, click, (100, 100))
    assert no_prior["boxes"][-1].tolist() == [18., 18., 82., 82.]
    sized = explain_clicks(det, click, (100, 100), class_sizes=[[12.0, 16.0]], size_sigma=0.5)
    assert sized["boxes"][-1].tolist() == [44., 42., 56., 58.]
    assert size_score(cands[:, 0], (12.0, 16.0), 0.5)[1] == pytest.approx(1.0)
    # no candidate: a box of the class's median size (the other class has no prior)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
             "scores": torch.zeros(0)}
    out = explain_clicks(empty, torch.tensor([[50., 50., 0], [20., 20., 1]]), (100, 100),
                         default_size=10.0, class_sizes=[[30.0, 20.0], None])
    assert out["boxes"].tolist() == [[35., 40., 65., 60.], [15., 15., 25., 25.]]


def test_training_labels_give_each_class_its_median_box_size():
    from c3det.train import class_box_sizes
    from tinyloop.annotations import Annotation, Box, ImageLabels, ImageRecord, LabelSet
    anns = [Annotation("car", Box(0, 0, 40, 20)), Annotation("car", Box(0, 0, 50, 30)),
            Annotation("car", Box(0, 0, 60, 90)), Annotation("person", Box(5, 5, 15, 25))]
    labels = LabelSet(["car", "person", "bike"],
                      [ImageLabels(ImageRecord("a", "a.png", 100, 100), anns)])
    assert class_box_sizes(labels) == [[50.0, 30.0], [10.0, 20.0], None]


def test_every_click_ends_covered_by_a_box_of_its_class():
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(30, 2, generator=g) * 90
    boxes = torch.cat([boxes, boxes + 3 + torch.rand(30, 2, generator=g) * 15], 1)
    det = {"boxes": boxes, "labels": torch.randint(1, 4, (30,), generator=g),
           "scores": torch.rand(30, generator=g),
           "candidate_boxes": boxes[:, None].expand(-1, 3, 4),
           "candidate_objectness": torch.rand(30, generator=g)}
    clicks = torch.cat([torch.rand(15, 2, generator=g) * 100,
                        torch.randint(0, 3, (15, 1), generator=g).float()], 1)
    out = explain_clicks(det, clicks, (100, 100))
    for x, y, c in clicks.tolist():
        b, l = out["boxes"], out["labels"]
        inside = (b[:, 0] <= x) & (x <= b[:, 2]) & (b[:, 1] <= y) & (y <= b[:, 3])
        assert (inside & (l == int(c) + 1)).any(), (x, y, c)


def test_passthrough_relabels_the_boxes_a_click_falls_in():
    det = {"boxes": torch.tensor([[0., 0., 10., 10.], [5., 5., 20., 20.], [30., 30., 40., 40.]]),
           "labels": torch.tensor([1, 1, 1]), "scores": torch.tensor([0.9, 0.8, 0.7])}
    out = relabel_by_clicks(det, torch.tensor([[7., 7., 2], [15., 15., 1]]))
    assert out["labels"].tolist() == [3, 2, 1]   # box 1 holds both clicks: the last one wins


def test_roi_pool_is_aligned_roi_align():
    feats = {k: torch.rand(1, 4, 64 // s, 64 // s) for k, s in zip("0123", (4, 8, 16, 32))}
    pool = AlignedRoIAlign(list("0123"), 7, 2)
    boxes = [torch.tensor([[10., 12., 18., 20.]])]
    out = pool(feats, boxes, [(64, 64)])
    ref = roi_align(feats["0"], [boxes[0]], 7, 0.25, 2, aligned=True)
    assert torch.allclose(out, ref)
    assert not torch.allclose(out, roi_align(feats["0"], [boxes[0]], 7, 0.25, 2, aligned=False))
