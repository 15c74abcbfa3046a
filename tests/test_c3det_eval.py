"""Evaluation: mAP of hand-made prediction sets with known values, ignore rule, sizes."""
import math

import numpy as np
import torch

from c3det.config import EvalParams
from c3det.evaluate import coco_map, drop_ignored, map_vs_clicks, plot_curves, size_labels
from tinyloop.annotations import Annotation, Box, IgnoreRegion, ImageLabels, ImageRecord, LabelSet

CLASSES = ["Person", "Car"]


def _gt(boxes, labels, ignore=()):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "ignore": torch.tensor(ignore, dtype=torch.float32).reshape(-1, 4)}


def _pred(boxes, labels, scores):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "scores": torch.tensor(scores, dtype=torch.float32)}


GTS = [_gt([[10, 10, 20, 20], [50, 50, 80, 80]], [1, 2]),
       _gt([[100, 100, 110, 110], [5, 5, 45, 45]], [1, 2])]


def test_perfect_predictions_give_100():
    preds = [_pred(g["boxes"].tolist(), g["labels"].tolist(), [0.9, 0.8]) for g in GTS]
    r = coco_map(GTS, preds, CLASSES)
    assert math.isclose(r["map"], 100.0)
    assert r["per_class"] == {"Person": 100.0, "Car": 100.0}


def test_half_the_objects_found_gives_half_recall_ap():
    # Person: one of two found (AP = 50: precision 1 up to recall 0.5, 101-point interp.)
    # Car: both found -> 100; mAP = 75
    preds = [_pred([[10, 10, 20, 20], [50, 50, 80, 80]], [1, 2], [0.9, 0.8]),
             _pred([[5, 5, 45, 45]], [2], [0.7])]
    r = coco_map(GTS, preds, CLASSES)
    # 101-point interpolation: recall points 0.00..0.50 (51 of 101) have precision 1
    assert math.isclose(r["per_class"]["Person"], 100 * 51 / 101, rel_tol=1e-6)
    assert math.isclose(r["per_class"]["Car"], 100.0)
    assert math.isclose(r["map"], (100 * 51 / 101 + 100) / 2, rel_tol=1e-6)


def test_false_positive_ranked_first_halves_precision():
    # one image, one Person; a higher-scored wrong box first -> precision 1/2 at recall 1
    gts = [_gt([[10, 10, 20, 20]], [1])]
    preds = [_pred([[60, 60, 70, 70], [10, 10, 20, 20]], [1, 1], [0.9, 0.5])]
    r = coco_map(gts, preds, CLASSES)
    assert math.isclose(r["per_class"]["Person"], 50.0, rel_tol=1e-6)
    assert r["per_class"]["Car"] is None  # no ground truth: left out of the mean
    assert math.isclose(r["map"], 50.0, rel_tol=1e-6)


def test_detection_inside_ignore_region_is_not_a_false_positive():
    gts = [_gt([[10, 10, 20, 20]], [1], ignore=[[50, 50, 100, 100]])]
    fp_in_ignore = [_pred([[60, 60, 70, 70], [10, 10, 20, 20]], [1, 1], [0.9, 0.5])]
    assert math.isclose(coco_map(gts, fp_in_ignore, CLASSES)["map"], 100.0)
    # only 40% inside the ignore region: kept, and a false positive
    half_out = [_pred([[30, 60, 55, 70], [10, 10, 20, 20]], [1, 1], [0.9, 0.5])]
    assert math.isclose(coco_map(gts, half_out, CLASSES)["map"], 50.0, rel_tol=1e-6)
    keep = drop_ignored(torch.tensor([[60., 60, 70, 70], [30, 60, 55, 70]]),
                        torch.tensor([[50., 50, 100, 100]]), 0.5)
    assert keep.tolist() == [False, True]


def test_ap_by_object_size_buckets():
    # a 10 px object (< 12) found, a 25 px object (20-32) missed
    gts = [_gt([[0, 0, 10, 10], [100, 100, 125, 125]], [1, 1])]
    preds = [_pred([[0, 0, 10, 10]], [1], [0.9])]
    r = coco_map(gts, preds, CLASSES)
    assert size_labels([12, 20, 32]) == ["<12", "12-20", "20-32", ">32"]
    assert math.isclose(r["by_size"]["<12"], 100.0)
    assert r["by_size"]["20-32"] == 0.0
    assert r["by_size"]["12-20"] is None and r["by_size"][">32"] is None


def test_coco_ap_averages_iou_thresholds_from_050_to_095():
    # a 20 px box shifted by 2 px: IoU 18*20 / (2*400 - 360) = 0.818, so it counts at the 7
    # thresholds 0.50 .. 0.80 of the 10 and AP@[.5:.95] is 70, while AP@0.5 is 100
    gts = [_gt([[0, 0, 20, 20]], [1])]
    preds = [_pred([[2, 0, 22, 20]], [1], [0.9])]
    r = coco_map(gts, preds, CLASSES)
    assert math.isclose(r["map"], 100.0)
    assert math.isclose(r["ap"], 70.0, abs_tol=1e-6)
    assert math.isclose(r["ap_by_size"]["20-32"], 70.0, abs_tol=1e-6)


def test_no_detections_scores_zero():
    r = coco_map(GTS, [_pred([], [], []), _pred([], [], [])], CLASSES)
    assert r["map"] == 0.0


class ClickOracle:
    """Predicts exactly the clicked objects: mAP must grow with the number of clicks."""

    def __init__(self, labels: LabelSet):
        self.gts = {}
        for im in labels.images:
            for a in im.annotations:
                self.gts[(round(a.box.center[0], 3), round(a.box.center[1], 3))] = a

    def __call__(self, images, clicks):
        out = []
        for c in clicks:
            boxes, labels = [], []
            for x, y, k in c.tolist():
                boxes.append(self.gts[(round(x, 3), round(y, 3))].box.xyxy())
                labels.append(int(k) + 1)
            out.append(_pred(boxes, labels, [1.0] * len(boxes)))
        return out


def test_map_vs_clicks_with_a_click_oracle(tmp_path):
    from PIL import Image
    images = []
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / f"{i}.png")
        anns = []
        for j in range(4):
            x, y = rng.uniform(0, 50, 2)
            anns.append(Annotation(CLASSES[j % 2], Box(x, y, x + 8 + j, y + 8)))
        images.append(ImageLabels(ImageRecord(str(i), f"{i}.png", 64, 64), anns,
                                  ignore=[IgnoreRegion(Box(0, 0, 1, 1))] if i == 0 else []))
    labels = LabelSet(CLASSES, images)
    p = EvalParams(max_clicks=5, sessions=3, click_steps=[0, 1, 2, 4, 5])
    r = map_vs_clicks(ClickOracle(labels), labels, tmp_path, p, progress=False)
    assert r["steps"] == [0, 1, 2, 4, 5]
    assert r["map_mean"][0] == 0.0
    assert all(b > a for a, b in zip(r["map_mean"][:4], r["map_mean"][1:4]))
    assert math.isclose(r["map_mean"][3], 100.0) and math.isclose(r["map_mean"][4], 100.0)
    assert len(r["map_sessions"]) == 3
    # an image's full click set and the 0-click set are computed once
    assert r["forward_passes"] < 3 * 3 * 5
    png = plot_curves([r], tmp_path / "curve.png")
    assert png.stat().st_size > 1000


def test_shared_image_features_give_the_same_detections_as_full_forwards():
    from c3det.baselines import Passthrough
    from c3det.config import C3DetParams
    from c3det.evaluate import predict_click_sets
    from c3det.model import build_model
    torch.manual_seed(0)
    image = torch.rand(3, 64, 96)
    sets = [torch.zeros((0, 3)), torch.tensor([[10., 20, 0]]),
            torch.tensor([[10., 20, 0], [50, 30, 1]])]
    p = C3DetParams(score_thresh=0.0)
    for model in (build_model("c3det", 2, p), Passthrough(build_model("plain", 2, p))):
        model.eval()
        fast = predict_click_sets(model, image, sets, torch.device("cpu"), batch_size=2)
        with torch.no_grad():
            slow = [model([image], [c])[0] for c in sets]
        for a, b in zip(fast, slow):
            assert len(a["boxes"]) == len(b["boxes"]) > 0
            assert torch.allclose(a["boxes"], b["boxes"], atol=1e-3)
            assert torch.allclose(a["scores"], b["scores"], atol=1e-4)
            assert torch.equal(a["labels"], b["labels"])
