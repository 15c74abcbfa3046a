"""Train an ultralytics YOLO model from its yaml on a LabelSet, offline.

    result = train(labels, image_root, params, out_dir)    # params: C3DetParams (.yolo)
    predictor = YoloPredictor(result["model"])             # c3det.yolo.predict

What happens:
- the labels are exported as an ultralytics dataset (c3det.yolo.dataset: YOLO / YOLO-OBB
  lines, ignore regions masked, images larger than imgsz cut into native-size tiles) into
  `data_dir` (default out_dir/data; the loop keeps it outside models/, which DVC versions);
- the model is built from `c3det.yolo.model` (c3det.yolo.models) and trained by
  ultralytics' own DetectionTrainer / OBBTrainer, with a fixed seed, `plots=False`, no
  early stopping, no ultralytics validation unless `c3det.yolo.val`, and nothing that
  reaches the network (c3det.yolo.offline: fonts, AMP check, hub, integrations);
- CUDA + AMP when present: the device is chosen here (`device: auto`), AMP is `amp` on a
  CUDA device (ultralytics' AMP check would download yolo26n.pt; offline.py replaces it);
- progress: one bar over the epochs with the losses (ultralytics' own bars are silenced
  with its logging, YOLO_VERBOSE=0);
- `init_from`: a previous YOLO model.pt whose matching weights start this one (warm start).

Files in out_dir:
    model.pt      the final weights (ultralytics' EMA, fp16, no optimizer; what
                  `ultralytics.YOLO(path)` loads) plus a "tinyloop" entry: classes,
                  per-class median box size, the c3det params, version. Written last and
                  atomically: it exists only once training finished.
    yolo/         ultralytics' run directory: args.yaml, results.csv; weights/last.pt
                  (optimizer state, saved every epoch) while training, deleted at the end
    metrics.jsonl one line per epoch (losses, lr, seconds), from results.csv

Resume: a run killed mid-training continues from yolo/weights/last.pt with ultralytics'
`resume` (after the last finished epoch; not bit-exact: the data order's random state is
not in the checkpoint). A last.pt that cannot be read (killed while writing it: ultralytics
writes it in place) restarts the run from scratch.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import shutil
import time
from pathlib import Path

from c3det.config import C3DetParams
from c3det.yolo.models import ModelSpec, find_model, is_yolo_checkpoint
from tinyloop.annotations import LabelSet
from tinyloop.atomic import write_bytes_atomic, write_text_atomic
from tinyloop.config import TilingParams
from tinyloop.device import resolve_device

log = logging.getLogger(__name__)

MODEL = "model.pt"
RUN = "yolo"            # ultralytics' run directory under out_dir
METRICS = "metrics.jsonl"
FORMAT = "tinyloop-yolo/1"


def ultralytics_device(spec: str) -> str:
    """c3det.yolo.device -> ultralytics' device string ("cpu", "0", "mps")."""
    device = resolve_device(spec, "c3det.yolo.device")
    return str(device.index or 0) if device.type == "cuda" else device.type


def train(labels: LabelSet, image_root: str | Path, params: C3DetParams | None,
          out_dir: str | Path, *, init_from: str | Path | None = None,
          epochs: int | None = None, batch: int | None = None,
          tiling: TilingParams | None = None, data_dir: str | Path | None = None,
          model_base: str | Path | None = None, version: str | None = None,
          progress: bool = True) -> dict:
    """Train (or resume, or find finished) the YOLO model of `params.yolo` on `labels`.

    epochs / batch override params.yolo's (the loop's warm-start schedule and OOM retry);
    model_base: the directory a relative `yolo.model` path is taken from. Returns {"model":
    path of model.pt, "epochs": per-epoch rows, "device", "amp", "resumed", "seconds"}.
    """
    p = params or C3DetParams()
    y = dataclasses.replace(p.yolo, epochs=epochs or p.yolo.epochs, batch=batch or p.yolo.batch)
    out_dir = Path(out_dir)
    run_dir, final = out_dir / RUN, out_dir / MODEL
    if final.exists():   # written last: this model is finished
        _drop_weights(run_dir)
        return _summary(out_dir, resumed=False, seconds=0.0, finished_before=True)
    spec = find_model(y.model, model_base)
    if spec.oriented != y.oriented:
        raise ValueError(f"c3det.yolo.model {y.model} is a {spec.task} model but "
                         f"oriented is {y.oriented}: {_mismatch_fix(spec)}")
    if init_from is not None and not is_yolo_checkpoint(init_from):
        raise ValueError(f"{init_from}: not a YOLO checkpoint; a YOLO model can only start "
                         "from another YOLO model's weights")
    from c3det.yolo.dataset import export_dataset
    data = export_dataset(labels, image_root, data_dir or out_dir / "data", y.imgsz,
                          y.oriented, tiling)
    device = ultralytics_device(y.device)
    t0 = time.perf_counter()
    trainer, resumed = _trainer(spec, y, data, run_dir, device, init_from, progress)
    if trainer is not None:
        trainer.train()
    _finish(run_dir, out_dir, labels, p, spec, version or out_dir.name)
    return _summary(out_dir, resumed=resumed, seconds=time.perf_counter() - t0,
                    device=device, amp=_amp(y.amp, device))


def _mismatch_fix(spec: ModelSpec) -> str:
    return ("set c3det.yolo.oriented: true" if spec.oriented else
            "use an OBB yaml (e.g. yolov8n-obb-p2.yaml) or oriented: false")


def _amp(amp: bool, device: str) -> bool:
    return bool(amp) and device not in ("cpu", "mps")


def train_args(spec: ModelSpec, y, data: Path, run_dir: Path, device: str,
               init_from: str | Path | None) -> dict:
    """ultralytics' train arguments for one run (everything fixed here, nothing left to its
    defaults that would reach the network or the screen)."""
    return dict(
        model=spec.arg, task=spec.task, data=str(data), epochs=y.epochs, imgsz=y.imgsz,
        time=y.time_h or None, batch=y.batch, optimizer=y.optimizer, lr0=y.lr0, lrf=y.lrf,
        momentum=y.momentum,
        weight_decay=y.weight_decay, warmup_epochs=y.warmup_epochs, mosaic=y.mosaic,
        close_mosaic=y.close_mosaic, scale=y.scale, fliplr=y.fliplr, flipud=y.flipud,
        amp=_amp(y.amp, device), device=device, workers=y.workers, val=y.val, seed=y.seed,
        deterministic=y.deterministic, pretrained=str(init_from) if init_from else False,
        project=str(run_dir.parent.resolve()), name=run_dir.name, exist_ok=True,
        plots=False, patience=0, save=True, save_period=-1, cache=False, verbose=False)


def _trainer(spec: ModelSpec, y, data: Path, run_dir: Path, device: str,
             init_from, progress: bool):
    """(trainer, resumed): a trainer resuming yolo/weights/last.pt when it holds an
    unfinished run, a fresh one otherwise; (None, True) when last.pt is already finished."""
    args = train_args(spec, y, data, run_dir, device, init_from)
    last = run_dir / "weights" / "last.pt"
    if last.exists():
        epoch = _saved_epoch(last)
        if epoch == -1:          # finished (ultralytics strips the optimizer at the end)
            return None, True
        if epoch is not None and epoch + 1 == y.epochs:   # killed before that strip
            from ultralytics.utils.torch_utils import strip_optimizer
            strip_optimizer(last)
            return None, True
        if epoch is not None and epoch + 1 < y.epochs:
            allowed = ("batch", "device", "workers", "val", "plots", "save_dir")
            resume = {k: args[k] for k in allowed if k in args}
            try:
                return _make(spec, {**resume, "resume": str(last), "data": str(data)},
                             progress), True
            except Exception as e:  # noqa: BLE001 - any unreadable state: start over
                log.warning("cannot resume %s (%s): training from scratch", last, e)
        else:
            log.warning("%s cannot be resumed (epoch %s of %d): training from scratch",
                        last, epoch, y.epochs)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return _make(spec, args, progress), False


def _saved_epoch(last: Path) -> int | None:
    """The epoch ultralytics saved in last.pt (-1: finished), None when unreadable."""
    from ultralytics.utils.patches import torch_load
    try:
        return int(torch_load(last, map_location="cpu").get("epoch", -2))
    except Exception:  # noqa: BLE001 - truncated by a kill: not resumable
        return None


def _make(spec: ModelSpec, overrides: dict, progress: bool):
    from c3det.yolo.offline import ultralytics
    ultralytics()
    trainer = trainer_class(spec.task)(overrides=overrides)
    if progress:
        EpochBar().attach(trainer)
    return trainer


def trainer_class(task: str):
    """ultralytics' trainer for `task` ("detect" | "obb"), with validation off unless asked."""
    from c3det.yolo.offline import ultralytics
    ultralytics()
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.models.yolo.obb import OBBTrainer
    base = OBBTrainer if task == "obb" else DetectionTrainer

    class Trainer(base):
        """`val: false` means no validation pass at all: ultralytics validates the final
        epoch and best.pt even then (twice the training images on a CPU for a number the
        loop does not use: it evaluates on its held-out split)."""

        def validate(self):
            if self.args.val:
                return super().validate()
            fitness = -float(self.loss.detach().sum().cpu()) if self.loss is not None else 0.0
            return dict(self.metrics or {}), fitness

        def final_eval(self):
            if not self.args.val:
                self.best.unlink(missing_ok=True)  # no best.pt: final_eval only strips last.pt
            return super().final_eval()

        def read_results_csv(self):
            """results.csv as {column: [values]} for the checkpoint, without polars (what
            ultralytics reads it with): one heavy dependency less on a lent GPU box."""
            rows = epoch_rows(self.save_dir)
            return {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}

    Trainer.__name__ = Trainer.__qualname__ = f"Tinyloop{base.__name__}"
    return Trainer


class EpochBar:
    """A bar over the epochs with the mean losses (tinyloop.progress: a terminal bar or
    plain lines; ultralytics' bars are silenced)."""

    def attach(self, trainer) -> None:
        trainer.add_callback("on_train_start", self.start)
        trainer.add_callback("on_train_epoch_end", self.epoch_end)
        trainer.add_callback("on_train_end", self.end)
        self.bar = None

    def start(self, trainer) -> None:
        from tinyloop.progress import bar
        self.bar = bar(total=trainer.epochs, initial=trainer.start_epoch, unit="epoch",
                       desc=f"train yolo {trainer.args.task} ({trainer.device})")

    def epoch_end(self, trainer) -> None:
        if self.bar is None or trainer.tloss is None:
            return
        losses = trainer.label_loss_items(trainer.tloss, prefix="train")
        self.bar.set_postfix_str(", ".join(
            f"{k.removeprefix('train/').removesuffix('_loss')} {v:.3f}"
            for k, v in losses.items()), refresh=False)
        self.bar.update(1)

    def end(self, trainer) -> None:
        if self.bar is not None:
            self.bar.close()


def _finish(run_dir: Path, out_dir: Path, labels: LabelSet, params: C3DetParams,
            spec: ModelSpec, version: str) -> None:
    """out_dir/model.pt from the finished last.pt plus tinyloop's meta; metrics.jsonl."""
    import torch
    from c3det.train import class_box_sizes
    from ultralytics.utils.patches import torch_load
    last = run_dir / "weights" / "last.pt"
    ckpt = torch_load(last, map_location="cpu")
    ckpt["tinyloop"] = {
        "format": FORMAT, "classes": list(labels.categories), "task": spec.task,
        "model_yaml": spec.name, "version": version,
        "class_box_sizes": class_box_sizes(labels),
        "params": dataclasses.asdict(params)}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    write_text_atomic(out_dir / METRICS, "".join(json.dumps(r) + "\n"
                                                 for r in epoch_rows(run_dir)))
    write_bytes_atomic(out_dir / MODEL, buf.getvalue())
    _drop_weights(run_dir)


def _drop_weights(run_dir: Path) -> None:
    """Resume state and ultralytics' copies of the weights: model.pt holds what is kept."""
    shutil.rmtree(run_dir / "weights", ignore_errors=True)


def epoch_rows(run_dir: Path) -> list[dict]:
    """results.csv of an ultralytics run as one dict per epoch (numbers as floats)."""
    path = run_dir / "results.csv"
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{k.strip(): _number(v) for k, v in r.items()} for r in rows]


def _number(v: str):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def _summary(out_dir: Path, resumed: bool, seconds: float, finished_before: bool = False,
             device: str | None = None, amp: bool | None = None) -> dict:
    return {"model": str(out_dir / MODEL), "epochs": epoch_rows(out_dir / RUN),
            "resumed": resumed, "seconds": seconds, "finished_before": finished_before,
            "device": device, "amp": amp}
