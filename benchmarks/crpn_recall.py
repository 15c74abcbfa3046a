"""Proposal recall of CFINet's Coarse-to-fine RPN vs torchvision's RPN on HIT-UAV (issue #14).

Two plain Faster R-CNN runs with the same short schedule, seed and crops (the ImageNet
EfficientNet-Lite0 FPN, `c3det.*` defaults otherwise): one with torchvision's RPN, one with
`c3det.crpn.enabled`. After training, each RPN's top `--proposals` (300, CFINet's Table 4)
proposals on whole val images: recall = share of ground-truth boxes some proposal covers at
IoU >= 0.5 (and 0.7), overall and by object size sqrt(w*h) (< 12, 12-20, 20-32, > 32 px).
For the CRPN also where its recall goes (`crpn_stages`: objects some anchor / stage-1 box /
stage-2 box covers at all, the mean IoU of the stage-1 positives' boxes) and the stage-1 loss
per positive anchor by epoch (the logged loss is a sum over positives, whose number moves with
the crops), so a stage-1 regression that diverges (issue #14) shows in the JSON.

    .venv/bin/python benchmarks/crpn_recall.py                 # both RPNs, then the JSON
    .venv/bin/python benchmarks/crpn_recall.py --only crpn     # one run (keeps the other rows)
    .venv/bin/python benchmarks/crpn_recall.py --reuse         # score finished runs again
    .venv/bin/python benchmarks/crpn_recall.py --only crpn --set stage2_pos_iou=0.5  # a knob

The JSON's "crpn before fix (2425407)" row is this run with c3det/crpn.py of that commit
(loaded in its place by a one-off script), same schedule.

Writes benchmarks/results/crpn_recall.json, one row per run and schedule (a run replaces the
row of the same run and schedule); `TINYLOOP_MACHINE` names the machine. The default
schedule is the CFINet ablation's reduced CPU one (benchmarks/c3det_cfinet_ablation.py: 100
train images, 4 epochs of 192 px crops, batch 4 = 100 steps, lr x 0.1 for the last epoch;
48 val images): about 12 min on one thread of the 2-core dev box.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torchvision.ops import box_iou

REPO = Path(__file__).resolve().parents[1]

from c3det.config import C3DetParams, CRPNParams, TrainParams  # noqa: E402
from common import DATA, load_hituav, schedule_args, schedule_train, split  # noqa: E402

WORK = REPO / "data/benchmarks/crpn_recall"
RESULT = REPO / "benchmarks/results/crpn_recall.json"
MACHINE = os.environ.get("TINYLOOP_MACHINE", "2-core CPU, 24 GiB, no GPU (dev box)")
BUCKETS = {"<12": (0, 12), "12-20": (12, 20), "20-32": (20, 32), ">32": (32, 1e9)}
IOUS = (0.5, 0.7)


def params(a, crpn: bool) -> C3DetParams:
    tp = schedule_train(a)
    knobs = {k: type(getattr(CRPNParams, k))(v) for k, v in (kv.split("=") for kv in a.set)}
    return C3DetParams(roi_batch_size=a.roi_batch, rpn_proposals_test=a.proposals, train=tp,
                       crpn=CRPNParams(enabled=crpn, **knobs))


@torch.no_grad()
def proposal_hits(model, dataset, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per ground-truth box of every image: (best IoU with the top-k proposals (G,),
    size sqrt(w*h) px (G,))."""
    model.eval()
    best, sizes = [], []
    for i in range(len(dataset)):
        image, target = dataset[i]
        batch = model.prepare([image])
        proposals, _ = model.detector.rpn(batch.images, model.image_features(batch))
        gt = target["boxes"]
        if not len(gt):
            continue
        p = proposals[0][:k]
        best.append(box_iou(gt, p).max(1).values if len(p) else gt.new_zeros(len(gt)))
        sizes.append(((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])).sqrt())
    return torch.cat(best), torch.cat(sizes)


def recall_table(best: torch.Tensor, sizes: torch.Tensor) -> dict:
    """Recall (%) at each IoU of IOUS, overall and per size bucket (None: no object)."""
    out = {}
    for iou in IOUS:
        hit = best >= iou
        row = {"all": round(100 * hit.float().mean().item(), 1)}
        for name, (lo, hi) in BUCKETS.items():
            m = (sizes >= lo) & (sizes < hi)
            row[name] = round(100 * hit[m].float().mean().item(), 1) if m.any() else None
        out[f"iou{iou}"] = row
    return out


def stage1_positives(labels, tp: TrainParams, p: C3DetParams) -> list[int]:
    """Stage-1 positive anchors per epoch of the training crops (the crops depend on seed,
    epoch and image only): the stage-1 loss is summed over them, so its epoch mean moves
    with their count (issue #14's 'rising' loss was partly this)."""
    from c3det.crpn import assign_stage1, level_anchors
    from c3det.data import DetectionDataset
    s = tp.crop_size
    anchors = torch.cat([level_anchors(s // st, s // st, st, size)
                         for st, size in zip((4, 8, 16, 32), p.anchor_sizes)])
    data, counts = DetectionDataset(labels, DATA, tp), []
    for epoch in range(tp.epochs):
        data.set_epoch(epoch)
        counts.append(sum(int((assign_stage1(anchors, data[i][1]["boxes"], p.crpn)[0] == 1)
                              .sum()) for i in range(len(data))))
    return counts


@torch.no_grad()
def crpn_stages(model, dataset) -> dict:
    """Where the CRPN's recall goes, on val: the share of objects some anchor / stage-1 box /
    stage-2 box (any, unscored) covers at IoU >= 0.5 (the top-k recall can only be lower),
    and the mean IoU of the stage-1 positive anchors and of their stage-1 and stage-2 boxes
    with their objects (the regression helps when it rises from the anchors' value)."""
    from c3det.crpn import assign_stage1
    rpn, covered, quality, n = model.detector.rpn, torch.zeros(3), [], 0
    for i in range(len(dataset)):
        image, target = dataset[i]
        gt = target["boxes"]
        batch = model.prepare([image])
        width = batch.images.tensors.shape[-1]
        levels = [rpn.level(x, width // x.shape[-1], size, batch.images.image_sizes)
                  for x, size in zip(model.image_features(batch).values(), rpn.anchor_sizes)]
        boxes = [torch.cat([lv.anchors for lv in levels])] + \
                [torch.cat([getattr(lv, k) for lv in levels], 1)[0] for k in ("boxes1", "boxes2")]
        n += len(gt)
        if not len(gt):
            continue
        covered += torch.tensor([(box_iou(gt, b).max(1).values >= 0.5).sum() for b in boxes])
        labels, idx = assign_stage1(boxes[0], gt, rpn.crpn)
        pos = labels == 1
        quality.append(torch.stack([box_iou(b[pos], gt[idx[pos]]).diag() for b in boxes]))
    q = torch.cat(quality, 1).mean(1)
    names = ("anchors", "stage1", "stage2")
    return {"covered_iou0.5": {k: round(100 * v.item() / n, 1) for k, v in zip(names, covered)},
            "stage1_positives_mean_iou": {k: round(v.item(), 3) for k, v in zip(names, q)}}


def run(a, crpn: bool) -> dict:
    from c3det import checkpoint
    from c3det.data import DetectionDataset
    from c3det.train import train
    labels = load_hituav(WORK)
    name = "crpn" if crpn else "rpn"
    knobs = "".join(f"_{kv}" for kv in a.set) if crpn else ""
    out = WORK / f"{name}_n{a.train_images}_e{a.epochs}_b{a.batch}_seed{a.seed}{knobs}"
    t0 = time.time()
    if a.reuse and (out / "model.pt").exists():   # score a finished run again
        r = {"model": str(out / "model.pt"), "epochs": [
            json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]}
        train_s = sum(e["seconds"] for e in r["epochs"])
    else:
        r = train(split(labels, "train", a.train_images, 0), DATA, params(a, crpn), out,
                  resume=False, kind="plain", progress=False)
        train_s = time.time() - t0
    model, _ = checkpoint.load(r["model"])
    val = DetectionDataset(split(labels, "val", a.test_images, 1), DATA)
    best, sizes = proposal_hits(model, val, a.proposals)
    loss_keys = [k for k in r["epochs"][0] if k.startswith("loss")]
    row = {"rpn": name, "recall": recall_table(best, sizes), "objects": len(best),
           "losses_by_epoch": {k: [round(e[k], 4) for e in r["epochs"]] for k in loss_keys},
           "train_s": round(train_s, 1)}
    if crpn:
        row["crpn_knobs"] = dict(kv.split("=") for kv in a.set)
        row.update(crpn_stages(model, val))
        p = params(a, crpn)
        counts = stage1_positives(split(labels, "train", a.train_images, 0), p.train, p)
        steps = -(-a.train_images // a.batch)
        row["stage1_positives_by_epoch"] = counts
        if a.train_images % a.batch == 0:   # every step has `batch` images: undo the mean
            per = [loss * steps * a.batch * p.crpn.stage2_samples / p.crpn.iou_loss_weight / c
                   for loss, c in zip(row["losses_by_epoch"]["loss_crpn_stage1"], counts)]
            row["stage1_giou_loss_per_positive_by_epoch"] = [round(v, 3) for v in per]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["rpn", "crpn"], help="run one RPN, keep the other rows")
    schedule_args(ap, epochs=4, lr_steps=[3])
    ap.add_argument("--train-images", type=int, default=100, help="HIT-UAV train images")
    ap.add_argument("--proposals", type=int, default=300, help="top-k proposals scored")
    ap.add_argument("--reuse", action="store_true", help="score finished runs, don't retrain")
    ap.add_argument("--set", nargs="*", default=[], metavar="KNOB=VALUE",
                    help="c3det.crpn knobs for the CRPN run, e.g. stage2_pos_iou=0.5")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    schedule = {k: v for k, v in vars(a).items()
                if k not in ("only", "threads", "reuse", "set")}
    steps = -(-a.train_images // a.batch) * a.epochs
    for crpn in (False, True):
        if a.only in (None, "crpn" if crpn else "rpn"):
            row = {"run": " ".join(["crpn", *a.set]) if crpn else "rpn", "steps": steps,
                   "schedule": schedule, **run(a, crpn)}
            print(json.dumps({k: row[k] for k in ("run", "recall")}), flush=True)
            record(row, a.threads)


def record(row: dict, threads: int) -> None:
    """Adds or replaces the row of the same run and schedule in the JSON, read again just
    before writing so that runs finishing in parallel keep each other's rows."""
    old = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    key = lambda r: (r["run"], json.dumps(r["schedule"], sort_keys=True))  # noqa: E731
    rows = {key(r): r for r in old.get("runs", [])}
    rows[key(row)] = row
    RESULT.write_text(json.dumps({
        "benchmark": "crpn_recall", "dataset": "HIT-UAV (CC BY 4.0): train -> train, val -> test",
        "metric": f"recall (%) of ground-truth boxes by the top {row['schedule']['proposals']} "
                  "proposals", "machine": MACHINE,
        "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": threads,
        "date": time.strftime("%Y-%m-%d"),
        "runs": sorted(rows.values(), key=lambda r: (r["steps"], r["run"] != "rpn"))},
        indent=1) + "\n")


if __name__ == "__main__":
    main()
