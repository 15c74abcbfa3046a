"""Train the one-stage interactive detector (c3det.yolo.interactive) on a LabelSet.

    result = train_interactive(labels, image_root, "runs/yolo-c3det", params,
                               cfg="yolov8n-p2.yaml", init_from="plain/best.pt")
    python -m c3det.yolo.train_interactive --labels labels.json --images ROOT --out DIR

Data, clicks and schedule are the two-stage trainer's (c3det.train), taken from the c3det
params (`params.train`): random crops of `crop_size` px at `scales`, flips, object-holding
crops (c3det.data.DetectionDataset), and per sample K = min(U{0..max_clicks}, #objects)
clicks at ground-truth centres, none for a `zero_click_share` of samples (c3det.clicks,
C3Det sec. 3.4); epochs, batch size, warm-up, lr steps, weight decay, gradient clip, seed,
workers, and the precision (c3det.train.autocast_dtype: float16 + GradScaler on CUDA,
bfloat16 on a CPU with native bf16, else float32). The optimisation follows ultralytics'
trainer where it has its own convention:

- loss = (sum of the per-image loss components) x images in the batch, as ultralytics'
  criterion returns it (its gradient clip at 10 and SGD lr 0.01 assume that scale);
- AdamW (default; lr 0.002 * 5 / (4 + C), ultralytics' `optimizer=auto` choice for short
  runs) or SGD with Nesterov momentum (lr params.train.lr); no weight decay on biases and
  norm weights;
- an EMA of the weights (ultralytics' ModelEMA: decay 0.9999 ramped over 2000 updates);
  model.pt holds the EMA, the one evaluated.

Every epoch ends with `out_dir/last.pt` (model, EMA, optimizer, scaler, epoch, step; readable
with weights_only) and `out_dir/model.pt` (c3det.yolo.interactive.save) and one JSON line in
`out_dir/metrics.jsonl`; `resume=True` continues after the last finished epoch, identically
(every random generator is re-seeded from (seed, epoch)) on CPU.

`init_from`: a plain YOLO detector (an ultralytics best.pt / last.pt, a DetectionModel
state_dict, or an interactive model.pt) whose weights start the YOLO part; with
`freeze_detector` (default params.train.freeze_detector) only the click branch trains, and
the model at 0 clicks stays exactly that detector.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from c3det.config import C3DetParams
from c3det.data import DetectionDataset, collate
from c3det.train import (EpochPermutation, autocast_dtype, class_box_sizes, dtype_name,
                         lr_factor)
from c3det.yolo import interactive as yi
from tinyloop.annotations import LabelSet
from tinyloop.atomic import write_atomic, write_text_atomic
from tinyloop.device import resolve_device

STATE, MODEL, METRICS = "last.pt", "model.pt", "metrics.jsonl"


def default_lr(optimizer: str, num_classes: int, params: C3DetParams) -> float:
    """AdamW: ultralytics' fit for short runs (optimizer=auto); SGD: params.train.lr."""
    return round(0.002 * 5 / (4 + num_classes), 6) if optimizer == "adamw" else params.train.lr


def make_optimizer(model: torch.nn.Module, name: str, lr: float, params: C3DetParams):
    """AdamW or SGD over the trainable parameters; weight decay on conv / linear weights only."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": params.train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(params.train.momentum, 0.999))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=params.train.momentum, nesterov=True)
    raise ValueError(f"optimizer {name!r}: use adamw or sgd")


def freeze_detector(model: yi.InteractiveYOLO) -> None:
    """Only the click branch trains (see c3det.train._freeze_detector)."""
    if model.fusion is None:
        raise ValueError("freeze_detector: this model has no click branch to train")
    for p in model.yolo.parameters():
        p.requires_grad_(False)


def set_train_mode(model: yi.InteractiveYOLO, frozen: bool) -> None:
    """model.train(); a frozen detector keeps its BatchNorm statistics too."""
    model.train()
    if frozen:
        for m in model.yolo.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def train_interactive(labels: LabelSet, image_root: str | Path, out_dir: str | Path,
                      params: C3DetParams | None = None, *, cfg: str = "yolov8n-p2.yaml",
                      optimizer: str = "adamw", lr: float | None = None, ema: bool = True,
                      init_from: str | Path | None = None, freeze: bool | None = None,
                      resume: bool = True, stop_after_epoch: int | None = None,
                      progress: bool = True, device: str | torch.device | None = None,
                      **spec) -> dict:
    """Train an InteractiveYOLO on `labels` (images under `image_root`); see the module doc.
    `spec`: YoloClickSpec fields (lf_backbone, lf_channels, use_lf, use_c3, uel_weight, ...).
    Returns {"epochs": [per-epoch metrics], "model": path of model.pt, "kind"}."""
    p = params or C3DetParams()
    tp = p.train
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    amp_dtype = autocast_dtype(tp, device)
    frozen = tp.freeze_detector if freeze is None else freeze
    if tp.max_images is not None:
        labels = LabelSet(labels.categories, labels.images[:tp.max_images], labels.info)
    if not labels.images:
        raise ValueError("train_interactive: the label set has no images")

    torch.manual_seed(tp.seed)
    model = yi.build_interactive_yolo(len(labels.categories), cfg, p, **spec)
    state_path = out / STATE
    state = torch.load(state_path, map_location="cpu", weights_only=True) \
        if resume and state_path.exists() else None
    if state is None and init_from is not None:
        yi.load_detector_weights(model, init_from)
    model.to(device)
    model.yolo.args.epochs = tp.epochs   # E2ELoss's one-to-many decay reads it
    if frozen:
        freeze_detector(model)
    lr = lr or default_lr(optimizer, len(labels.categories), p)
    opt = make_optimizer(model, optimizer, lr, p)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    averaged = _make_ema(model) if ema else None

    start_epoch, step, history = 0, 0, []
    if state is not None:
        if state["spec"] != _spec_dict(model):
            raise ValueError(f"{state_path}: trained with another model spec; use another "
                             "out_dir or resume=False")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if averaged is not None and "ema" in state:
            averaged.ema.load_state_dict(state["ema"])
            averaged.updates = state["ema_updates"]
        start_epoch, step = state["epoch"] + 1, state["step"]
        history = _read_metrics(out / METRICS, start_epoch)
    elif (out / METRICS).exists():
        (out / METRICS).unlink()

    dataset = DetectionDataset(labels, image_root, tp)
    sampler = EpochPermutation(len(dataset), tp.seed)
    loader = DataLoader(dataset, batch_size=tp.batch_size, sampler=sampler,
                        num_workers=tp.num_workers, collate_fn=collate)
    box_sizes = class_box_sizes(labels)
    for epoch in range(start_epoch, tp.epochs):
        torch.manual_seed(tp.seed * 100_003 + epoch)
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        set_train_mode(model, frozen)
        sums, n_steps, n_images, n_clicks, t0 = {}, 0, 0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"yolo c3det epoch {epoch + 1}/{tp.epochs} "
                                f"({device.type}, {dtype_name(amp_dtype)})",
                   disable=not progress, leave=False, mininterval=5)
        for images, targets in bar:
            for g in opt.param_groups:
                g["lr"] = lr * lr_factor(step, epoch, tp.warmup_iters, tp.lr_steps, tp.lr_gamma)
            values = _step(model, opt, scaler, images, targets, device, amp_dtype,
                           tp.grad_clip)
            if averaged is not None:
                averaged.update(model)
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            n_steps, step = n_steps + 1, step + 1
            n_images += len(images)
            n_clicks += sum(len(t["clicks"]) for t in targets)
            bar.set_postfix(loss=f"{values['loss']:.3f}")
        model.epoch_done()
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch, **{k: v / max(n_steps, 1) for k, v in sums.items()},
               "lr": opt.param_groups[0]["lr"], "images": n_images,
               "clicks_per_image": n_clicks / max(n_images, 1), "seconds": seconds,
               "images_per_s": n_images / max(seconds, 1e-9),
               "amp_dtype": dtype_name(amp_dtype)}
        history.append(row)
        _save_epoch(out, model, averaged, opt, scaler, epoch, step, labels, p, box_sizes, row)
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    return {"epochs": history, "model": str(out / MODEL), "kind": yi.KIND}


def _step(model, opt, scaler, images, targets, device, amp_dtype: torch.dtype | None,
          clip: float) -> dict:
    """One optimiser step; returns {"loss": total, component: value} as floats."""
    images = [im.to(device, non_blocking=True) for im in images]
    clicks = [t["clicks"].to(device) for t in targets]
    tgts = [{k: t[k].to(device) for k in ("boxes", "labels", "clicked")} for t in targets]
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        losses = model(images, clicks, tgts)
    # ultralytics' scale: per-image losses summed, times the batch size
    loss = sum(losses.values()) * len(images)
    values = torch.stack([loss.detach().float()] +
                         [v.detach().float() for v in losses.values()]).tolist()
    if not math.isfinite(values[0]):
        raise FloatingPointError(f"loss is {values[0]}: lower the learning rate or raise "
                                 "train.warmup_iters")
    opt.zero_grad(set_to_none=True)
    if loss.requires_grad:     # a frozen detector and a click-free batch: nothing to learn
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_([q for g in opt.param_groups for q in g["params"]], clip)
        scaler.step(opt)
        scaler.update()
    return dict(zip(["loss", *losses], values))


def _make_ema(model):
    from ultralytics.utils.torch_utils import ModelEMA   # imported offline by interactive
    return ModelEMA(model)


def _spec_dict(model: yi.InteractiveYOLO) -> dict:
    import dataclasses
    return dataclasses.asdict(model.spec)


def _save_epoch(out: Path, model, averaged, opt, scaler, epoch: int, step: int,
                labels: LabelSet, params: C3DetParams, box_sizes, row: dict) -> None:
    """last.pt (exact resume), model.pt (the EMA when there is one), a metrics line."""
    import dataclasses
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
             "scaler": scaler.state_dict(), "epoch": epoch, "step": step,
             "spec": _spec_dict(model), "kind": yi.KIND}
    if averaged is not None:
        state["ema"], state["ema_updates"] = averaged.ema.state_dict(), averaged.updates
    write_atomic(out / STATE, lambda f: torch.save(state, f))
    final = averaged.ema if averaged is not None else model
    yi.save(out / MODEL, final, {"classes": list(labels.categories), "epoch": epoch,
                                 "params": dataclasses.asdict(params),
                                 "class_box_sizes": box_sizes})
    with open(out / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _read_metrics(path: Path, below_epoch: int) -> list[dict]:
    """The resumed run's logged epochs before `below_epoch` (later lines are dropped)."""
    if not path.exists():
        return []
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r["epoch"] < below_epoch]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def main(argv: list[str] | None = None) -> None:
    from c3det.config import TrainParams
    from tinyloop.cocofile import read_labels
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", required=True, help="tinyloop labels file (COCO JSON)")
    ap.add_argument("--images", required=True, help="image root the labels' paths are under")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cfg", default="yolov8n-p2.yaml")
    ap.add_argument("--init", default=None, help="plain YOLO weights for the detector part")
    ap.add_argument("--freeze", action="store_true", help="train only the click branch")
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    ap.add_argument("--lr", type=float, default=None)
    a = ap.parse_args(argv)
    params = C3DetParams(train=TrainParams(epochs=a.epochs, batch_size=a.batch,
                                           crop_size=a.crop))
    r = train_interactive(read_labels(a.labels), a.images, a.out, params, cfg=a.cfg,
                          optimizer=a.optimizer, lr=a.lr, init_from=a.init, freeze=a.freeze)
    print(json.dumps(r["epochs"][-1]))


if __name__ == "__main__":
    main()
