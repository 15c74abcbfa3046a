"""mAP@0.5 against the number of clicks, as in the C3Det paper (Sec. 4.1).

For each of `sessions` independent sessions every test image gets a random order of its
clickable ground-truth objects (c3det.clicks.click_order). After k clicks an image has
clicked the first k objects of its order (at their box centres, with their classes; an
image with fewer objects keeps all of them clicked), the model predicts every image again
and mAP@`iou` is computed over the whole test set. Mean and std over sessions per k.

Scoring uses pycocotools' COCOeval (101-point interpolated AP at one IoU threshold, at most
`max_detections` per image), with its area ranges replaced by the tiny-object size buckets
sqrt(w*h) < 12, 12-20, 20-32, > 32 px. mAP = mean AP over classes that have ground truth.

Ignore regions: a detection whose area lies for at least `ignore_overlap` (default 0.5)
inside one ignore region is dropped before scoring: it counts neither as a true nor as a
false positive. Ground truth objects are kept as labelled.

Predictions for an (image, clicked objects) pair are computed once and reused: the 0-click
prediction is shared by all sessions, and an image whose objects are all clicked stops
changing.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from c3det.clicks import click_order, clicks_for
from c3det.config import EvalParams
from c3det.data import DetectionDataset
from tinyloop.annotations import LabelSet
from tinyloop.boxes import in_ignore_regions
from tinyloop.progress import bar as progress_bar

Predictions = list[dict]  # per image {"boxes": (D,4), "labels": (D,) 1..C, "scores": (D,)}


def size_labels(edges: list[float]) -> list[str]:
    """['<12', '12-20', '20-32', '>32'] for edges [12, 20, 32]."""
    e = [f"{x:g}" for x in edges]
    return [f"<{e[0]}"] + [f"{a}-{b}" for a, b in zip(e, e[1:])] + [f">{e[-1]}"]


def drop_ignored(boxes: torch.Tensor, ignore: torch.Tensor, overlap: float) -> torch.Tensor:
    """(D,) bool: detections to keep (not in an ignore box by tinyloop.boxes' rule: less
    than `overlap` of their area inside each)."""
    inside = in_ignore_regions(boxes.detach().cpu().double().numpy(),
                               ignore.detach().cpu().double().numpy(), overlap)
    return torch.from_numpy(~inside)


COCO_IOUS = np.linspace(0.5, 0.95, 10)  # COCO's AP averages over these IoU thresholds


def coco_map(gts: list[dict], preds: Predictions, categories: list[str],
             params: EvalParams | None = None) -> dict:
    """mAP, per-class AP and AP by size of `preds` against `gts` (both per image), at IoU
    params.iou; "ap" and "ap_by_size" are the same at COCO's IoU 0.50:0.05:0.95 (averaged).

    gts[i] = {"boxes": (N,4), "labels": (N,) 1..C, "ignore": (M,4)}. Values in percent.
    Classes without ground truth are left out of the mean (and reported as None).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    p = params or EvalParams()
    buckets = size_labels(p.size_buckets)
    edges = [0.0] + [e * e for e in p.size_buckets] + [1e10]
    images, anns, dets = [], [], []
    for i, (gt, pr) in enumerate(zip(gts, preds)):
        images.append({"id": i})
        for b, c in zip(gt["boxes"].tolist(), gt["labels"].tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c),
                         "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
        keep = drop_ignored(pr["boxes"], gt.get("ignore", torch.zeros((0, 4))),
                            p.ignore_overlap)
        order = torch.argsort(pr["scores"][keep], descending=True)[:p.max_detections]
        for b, c, s in zip(pr["boxes"][keep][order].tolist(),
                           pr["labels"][keep][order].tolist(),
                           pr["scores"][keep][order].tolist()):
            dets.append({"image_id": i, "category_id": int(c), "score": float(s),
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    ncls = len(categories)
    empty = {"map": 0.0, "per_class": {c: None for c in categories},
             "by_size": {b: None for b in buckets}, "ap": 0.0,
             "ap_by_size": {b: None for b in buckets}}
    present = sorted({a["category_id"] for a in anns})
    for c in present:
        empty["per_class"][categories[c - 1]] = 0.0
    if not anns:
        return empty
    if not dets:
        empty["by_size"] = empty["ap_by_size"] = {b: 0.0 for b in buckets}
        return empty
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns,
                        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(categories)]}
        coco.createIndex()
        res = coco.loadRes(dets)
        ev = COCOeval(coco, res, "bbox")
        ev.params.iouThrs = np.array([p.iou, *COCO_IOUS])
        ev.params.maxDets = [p.max_detections]
        ev.params.areaRng = [[0.0, 1e10]] + [[a, b] for a, b in zip(edges, edges[1:])]
        ev.params.areaRngLbl = ["all"] + buckets
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"]  # (T=1+10, R=101, K=ncls, A=1+buckets, M=1)

    def ap(t: int | slice, k: int, a: int) -> float | None:
        """AP of class k in area range a, at IoU threshold(s) t (mean over thresholds)."""
        x = prec[t, :, k, a, 0]
        x = x[x > -1]
        return float(x.mean() * 100) if x.size else None

    def class_mean(t: int | slice, a: int) -> float | None:
        vals = [v for v in (ap(t, k, a) for k in range(ncls)) if v is not None]
        return float(np.mean(vals)) if vals else None

    coco = slice(1, None)
    per_class = {categories[k]: ap(0, k, 0) for k in range(ncls)}
    return {"map": class_mean(0, 0) or 0.0, "per_class": per_class,
            "by_size": {b: class_mean(0, j + 1) for j, b in enumerate(buckets)},
            "ap": class_mean(coco, 0) or 0.0,
            "ap_by_size": {b: class_mean(coco, j + 1) for j, b in enumerate(buckets)}}


@torch.no_grad()
def predict_click_sets(model: Callable, image: torch.Tensor, click_sets: list[torch.Tensor],
                       device: torch.device, batch_size: int = 4) -> Predictions:
    """Predictions for one image under several click sets, sharing the click-free work.

    - A ClickDetector whose detections do not depend on the clicks (plain, passthrough:
      `clicks_change_detections` False): it detects once, each click set is its `relabel`.
    - A ClickDetector whose backbone does not see clicks (`caches_image_features`):
      backbone + FPN run once, fusion + heads once per click set (as an interactive session).
    - Anything else callable as model(images, clicks): full forward passes in batches.
    """
    image = image.to(device)
    keep = ("boxes", "labels", "scores")
    if not getattr(model, "clicks_change_detections", True):
        base = model([image])[0]
        out = [model.relabel(base, c.to(device).reshape(-1, 3)) for c in click_sets]
    elif getattr(model, "caches_image_features", False):
        feats = model.image_features(model.prepare([image], [click_sets[0].to(device)]))
        out = []
        for j in range(0, len(click_sets), batch_size):
            chunk = [c.to(device) for c in click_sets[j:j + batch_size]]
            batch = model.prepare([image] * len(chunk), chunk)
            f = type(feats)((k, v.expand(len(chunk), -1, -1, -1)) for k, v in feats.items())
            out += model.heads(model.fuse(f, batch), batch)
    else:
        out = []
        for j in range(0, len(click_sets), batch_size):
            chunk = [c.to(device) for c in click_sets[j:j + batch_size]]
            out += model([image] * len(chunk), chunk)
    return [{k: o[k].detach().cpu() for k in keep} for o in out]


def map_vs_clicks(model: Callable, labels: LabelSet, image_root: str | Path,
                  params: EvalParams | None = None, name: str = "model",
                  progress: bool = True) -> dict:
    """The mAP-vs-clicks curve of `model` (callable as model(images, clicks) -> predictions).

    Returns {"name", "steps", "map_mean", "map_std", "map_sessions" (sessions x steps),
    "per_class" {class: mean AP per step}, "by_size" {bucket: mean AP per step},
    "ap_mean" and "ap_by_size" (the same at COCO's IoU 0.50:0.95), "images", "objects",
    "forward_passes"}.
    """
    p = params or EvalParams()
    steps = list(p.click_steps) if p.click_steps is not None else list(range(p.max_clicks + 1))
    if isinstance(model, torch.nn.Module):
        model.eval()
        device = next(model.parameters()).device
    else:
        device = torch.device("cpu")
    data = DetectionDataset(labels, image_root)
    gts = [data._targets[i] for i in range(len(data))]
    orders = [[click_order(gt["boxes"], gt["ignore"], np.random.default_rng([p.seed, s, i]))
               for i, gt in enumerate(gts)] for s in range(p.sessions)]

    uses_clicks = getattr(model, "uses_clicks", True)  # the plain detector ignores them

    def key(s: int, i: int, k: int) -> tuple:
        return i, tuple(sorted(orders[s][i][:k].tolist())) if uses_clicks else ()

    needed = sorted({key(s, i, k) for s in range(p.sessions) for k in steps
                     for i in range(len(gts))}, key=lambda t: (t[0], len(t[1]), t[1]))
    cache: dict[tuple, dict] = {}
    bar = progress_bar(total=len(needed), desc=f"evaluate {name}", unit="prediction",
                       enabled=progress)
    for i in range(len(gts)):  # one image at a time: load it once, run all its click sets
        keys = [kk for kk in needed if kk[0] == i]
        clicks = [clicks_for(gts[i]["boxes"], gts[i]["labels"], torch.tensor(kk[1]))
                  for kk in keys]
        preds = predict_click_sets(model, data.image(i), clicks, device, p.batch_size)
        cache.update(zip(keys, preds))
        data._images.pop(i, None)
        bar.update(len(keys))
    bar.close()

    table = [[coco_map(gts, [cache[key(s, i, k)] for i in range(len(gts))],
                       labels.categories, p) for k in steps] for s in range(p.sessions)]
    maps = np.array([[r["map"] for r in row] for row in table])

    def mean_over_sessions(get) -> list[float | None]:
        out = []
        for j in range(len(steps)):
            vals = [get(table[s][j]) for s in range(p.sessions)]
            vals = [v for v in vals if v is not None]
            out.append(float(np.mean(vals)) if vals else None)
        return out

    return {
        "name": name, "steps": steps,
        "map_mean": maps.mean(axis=0).tolist(), "map_std": maps.std(axis=0).tolist(),
        "map_sessions": maps.tolist(),
        "per_class": {c: mean_over_sessions(lambda r, c=c: r["per_class"][c])
                      for c in labels.categories},
        "by_size": {b: mean_over_sessions(lambda r, b=b: r["by_size"][b])
                    for b in size_labels(p.size_buckets)},
        "ap_mean": mean_over_sessions(lambda r: r["ap"]),
        "ap_by_size": {b: mean_over_sessions(lambda r, b=b: r["ap_by_size"][b])
                       for b in size_labels(p.size_buckets)},
        "images": len(gts), "objects": int(sum(len(g["boxes"]) for g in gts)),
        "forward_passes": len(needed), "sessions": p.sessions, "iou": p.iou,
        "ignore_overlap": p.ignore_overlap,
    }


def plot_curves(results: list[dict], path: str | Path, title: str = "mAP@0.5 vs clicks") -> Path:
    """All models' mean curves (± std band) on one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for r in results:
        x, m, s = np.array(r["steps"]), np.array(r["map_mean"]), np.array(r["map_std"])
        ax.plot(x, m, marker="o", ms=3, label=r["name"])
        ax.fill_between(x, m - s, m + s, alpha=0.2)
    ax.set_xlabel("clicks per image")
    ax.set_ylabel(f"mAP@{results[0].get('iou', 0.5):g} (%)" if results else "mAP (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
