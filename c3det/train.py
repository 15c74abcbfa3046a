"""Train a detector of `c3det.model.build_model` on a LabelSet, with synthetic clicks.

    metrics = train(labels, image_root, params, out_dir)          # one process, CPU or GPU
    torchrun --nproc_per_node 4 -m c3det.train ...                 # DDP, one GPU per process

Schedule (the paper's, see TrainParams): SGD lr 0.01, momentum 0.9, weight decay 1e-4, linear
warm-up over `warmup_iters` steps, lr x `lr_gamma` at each epoch of `lr_steps`. Mixed
precision (`autocast_dtype`): float16 + GradScaler on CUDA, bfloat16 on a CPU with native
bfloat16, float32 elsewhere. Under torchrun the process group is
initialised (nccl on GPU, gloo on CPU) and a DistributedSampler splits the images.

Every epoch ends with `out_dir/last.pt` (model, optimizer, scaler, epoch; plain tensors and
numbers, so `torch.load(weights_only=True)` reads it), the model checkpoint `out_dir/model.pt`
(`c3det.checkpoint`, what Predictor loads) and one JSON line in `out_dir/metrics.jsonl`.
A run started again with `resume=True` continues after the last finished epoch; since every
epoch re-seeds all random generators from (seed, epoch), the resumed run computes exactly
what an uninterrupted run would (on CPU; cuDNN kernels need not be deterministic).

Ignore regions are not used by the loss (torchvision heads have no ignore label); they only
keep clicks away (c3det.clicks) and are honoured at evaluation.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from c3det import checkpoint
from c3det.config import C3DetParams, TrainParams
from c3det.data import DetectionDataset, collate
from tinyloop.annotations import LabelSet
from tinyloop.atomic import write_atomic, write_text_atomic
from tinyloop.device import has_cuda
from tinyloop.progress import bar as progress_bar

STATE = "last.pt"
MODEL = "model.pt"
METRICS = "metrics.jsonl"


class EpochPermutation(Sampler):
    """A random order of all indices that depends only on (seed, epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def lr_factor(step: int, epoch: int, warmup_iters: int, lr_steps: list[int],
              gamma: float) -> float:
    """Linear warm-up from 1/1000 over `warmup_iters` steps, then step decay by epoch."""
    warm = 1.0 if step >= warmup_iters else 0.001 + (1 - 0.001) * step / warmup_iters
    return warm * gamma ** sum(epoch >= s for s in lr_steps)


def _distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if has_cuda() else "gloo"
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def _device(rank: int) -> torch.device:
    if has_cuda():
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def native_cpu_bf16() -> bool:
    """True when this CPU computes bfloat16 natively (AMX or AVX512-BF16), where oneDNN's
    bfloat16 kernels beat float32; elsewhere bfloat16 is emulated and slower."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # an older torch without the probes
        return False


def autocast_dtype(tp: TrainParams, device: torch.device) -> torch.dtype | None:
    """The dtype of training's forward pass under autocast, or None for plain float32
    (`c3det.train.amp` / `amp_dtype`). Weights, optimizer state and prediction stay float32:
    in bfloat16 a box corner near x = 600 px would be rounded to 4 px."""
    if not tp.amp:
        return None
    if tp.amp_dtype == "float16" and device.type != "cuda":
        raise ValueError("c3det.train.amp_dtype float16 needs a CUDA device; on a CPU use "
                         "bfloat16, auto or amp: false")
    if tp.amp_dtype != "auto":
        return getattr(torch, tp.amp_dtype)
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if native_cpu_bf16() else None


def dtype_name(dtype: torch.dtype | None) -> str:
    """"bfloat16", "float16", or "float32" for no autocast (logged with each epoch)."""
    return str(dtype or torch.float32).removeprefix("torch.")


def train(labels: LabelSet, image_root: str | Path, params: C3DetParams,
          out_dir: str | Path, resume: bool = True, kind: str = "c3det",
          stop_after_epoch: int | None = None, progress: bool = True,
          init_from: str | Path | list[str | Path] | None = None) -> dict:
    """Train `kind` ("plain", "early_fusion", "late_fusion", "c3det") on `labels`.

    `init_from`: a `last.pt` or `model.pt` of another run (e.g. the plain detector, or the
    loop's previous iteration) whose weights start this one wherever names and shapes match,
    or a list of them, loaded in order (a later file's weights win); a fresh run only,
    resuming ignores it.

    `stop_after_epoch` ends the run after that epoch (0-based) as if it had been killed
    (tests of resume use it). Returns {"epochs": [per-epoch metrics], "model": path}.
    """
    from c3det.model import build_model

    tp = params.train
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = _distributed()
    device = _device(rank)
    amp_dtype = autocast_dtype(tp, device)
    precision = dtype_name(amp_dtype)
    if tp.max_images is not None:
        labels = LabelSet(labels.categories, labels.images[:tp.max_images], labels.info)
    if not labels.images:
        raise ValueError("train: the label set has no images; label a batch first")

    torch.manual_seed(tp.seed)
    model = build_model(kind, len(labels.categories), params).to(device)
    if tp.freeze_detector:
        _freeze_detector(model, kind)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": tp.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=tp.lr, momentum=tp.momentum)
    # float16 needs loss scaling against underflow; bfloat16 has float32's exponent range
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    start_epoch, step, history = 0, 0, []
    box_sizes = class_box_sizes(labels)  # the click-to-box size prior, saved with each model
    state_path = out / STATE
    if resume and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=True)
        if state.get("kind") != kind:
            raise ValueError(f"{state_path}: holds a {state.get('kind')!r} model, not {kind!r};"
                             " use another out_dir or resume=False")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        history = _read_metrics(out / METRICS, start_epoch)
    else:
        if rank == 0 and (out / METRICS).exists():
            (out / METRICS).unlink()
        for path in [init_from] if isinstance(init_from, (str, Path)) else init_from or []:
            load_matching(model, path)

    ddp_model = model
    if world > 1:
        # find_unused_parameters: a batch without clicks skips the click branch (that is
        # how 0 clicks stays exactly the plain detector), so its weights get no gradient
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    dataset = DetectionDataset(labels, image_root, tp)
    sampler = (DistributedSampler(dataset, world, rank, shuffle=True, seed=tp.seed)
               if world > 1 else EpochPermutation(len(dataset), tp.seed))
    loader = DataLoader(dataset, batch_size=tp.batch_size, sampler=sampler,
                        num_workers=tp.num_workers, collate_fn=collate,
                        persistent_workers=False)

    # one bar over every step of the run: its rate and ETA cover the whole training
    per_epoch = len(loader)
    bar = progress_bar(total=tp.epochs * per_epoch, initial=start_epoch * per_epoch,
                       desc=f"train {kind} ({device.type}, {precision})", unit="step",
                       enabled=progress and rank == 0)
    for epoch in range(start_epoch, tp.epochs):
        torch.manual_seed(tp.seed * 100_003 + epoch)  # RoI samplers etc.: same on resume
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        model.train()
        if tp.freeze_detector:  # frozen BatchNorm statistics too, not only the weights
            for m in model.detector.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        sums: dict[str, float] = {}
        n_images, n_steps, t0 = 0, 0, time.perf_counter()
        data_wait, fetched = 0.0, t0
        for images, targets in loader:
            data_wait += time.perf_counter() - fetched
            for g in optimizer.param_groups:
                g["lr"] = tp.lr * lr_factor(step, epoch, tp.warmup_iters, tp.lr_steps,
                                            tp.lr_gamma)
            images = [im.to(device, non_blocking=True) for im in images]
            clicks = [t["clicks"].to(device) for t in targets]
            tgts = [{k: t[k].to(device) for k in ("boxes", "labels", "clicked")}
                    for t in targets]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                losses = ddp_model(images, clicks, tgts)
            loss = sum(losses.values())
            if tp.freeze_detector and not loss.requires_grad:
                # a click-free batch teaches a frozen detector nothing; keep the graph (and
                # every DDP rank's backward) anyway
                loss = loss + 0.0 * sum(p.sum() for p in decay + no_decay)
            # one device->host copy per step for the log (each .item() is a CUDA sync)
            values = torch.stack([loss.detach().float()] +
                                 [v.detach().float() for v in losses.values()]).tolist()
            if not math.isfinite(values[0]):
                raise FloatingPointError(
                    f"{kind} epoch {epoch + 1} step {step}: loss is {values[0]}; lower "
                    "c3det.train.lr or raise warmup_iters in params.yaml")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tp.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            for k, v in zip(["loss", *losses], values):
                sums[k] = sums.get(k, 0.0) + v
            n_images += len(images)
            n_steps += 1
            step += 1
            bar.set_postfix_str(f"epoch {epoch + 1}/{tp.epochs}, loss {values[0]:.3f}",
                                refresh=False)
            bar.update(1)
            fetched = time.perf_counter()
        seconds = time.perf_counter() - t0
        row = {"epoch": epoch, **{k: v / max(n_steps, 1) for k, v in sums.items()},
               "lr": optimizer.param_groups[0]["lr"], "images": n_images * world,
               "seconds": seconds, "images_per_s": n_images * world / max(seconds, 1e-9),
               # time spent waiting for the DataLoader: a large share says raise num_workers
               "data_wait_s": data_wait,
               "amp_dtype": precision}
        history.append(row)
        if rank == 0:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scaler": scaler.state_dict(), "epoch": epoch, "step": step, "kind": kind}
            write_atomic(state_path, lambda f: torch.save(state, f))
            meta = {"kind": kind, "classes": list(labels.categories), "epoch": epoch,
                    "params": _plain(params), "class_box_sizes": box_sizes}
            checkpoint.save(out / MODEL, model, meta)
            with open(out / METRICS, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        if world > 1:
            dist.barrier()
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    bar.close()
    return {"epochs": history, "model": str(out / MODEL), "kind": kind}


def _freeze_detector(model: torch.nn.Module, kind: str) -> None:
    """Train only the click branch: the image detector (backbone, FPN, RPN, RoI heads) keeps
    the weights it starts with (`init_from` a plain detector), so 0 clicks stays exactly that
    detector - guarantee (1) by construction rather than by the zero-click share."""
    if getattr(model, "fusion", None) is None:
        raise ValueError(f"train.freeze_detector: a {kind!r} model has no click branch to "
                         "train on its own; use it with late_fusion or c3det")
    for p in model.detector.parameters():
        p.requires_grad_(False)


def class_box_sizes(labels: LabelSet) -> list[list[float] | None]:
    """Median (width, height) px of each class's boxes in the training labels (None for a
    class with none): the size prior of the click-to-box guarantee (c3det.click_to_box)."""
    sizes: dict[str, list[tuple[float, float]]] = {c: [] for c in labels.categories}
    for im in labels:
        for a in im.annotations:
            if a.category in sizes:
                sizes[a.category].append((a.box.x2 - a.box.x1, a.box.y2 - a.box.y1))
    return [[float(v) for v in np.median(np.array(sizes[c]), axis=0)] if sizes[c] else None
            for c in labels.categories]


def load_matching(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Copy the weights of a training state (`last.pt`) or a model checkpoint (`model.pt`)
    into `model` where name and shape match; returns the names copied."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    theirs = blob.get("model") or blob.get("state_dict") or {}
    mine = model.state_dict()
    take = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
    if not take:
        raise ValueError(f"{path}: no weight matches this model; is it a c3det training state?")
    model.load_state_dict(take, strict=False)
    return sorted(take)


def _read_metrics(path: Path, below_epoch: int) -> list[dict]:
    """Per-epoch rows already logged by the run being resumed (later ones are dropped)."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["epoch"] < below_epoch]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _plain(params) -> dict:
    import dataclasses
    return dataclasses.asdict(params)
