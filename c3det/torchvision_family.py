"""The torchvision detector family (c3det.detectors): Faster R-CNN and RetinaNet of every
click kind (plain, early / late fusion, c3det), trained by c3det.train, saved by
c3det.checkpoint, predicted by c3det.predict.Predictor.

Its recipe "detector_first" trains the plain detector, then only the click branch on top
of it (c3det.train.freeze_detector), so 0 clicks is exactly that detector.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from c3det.detectors import DetectorFamily, checkpoint_mentions, register

DETECTOR_DIR = "detector"   # detector_first: the plain detector, under the model's folder


class TorchvisionFamily(DetectorFamily):
    name = "torchvision"
    detectors = ("faster_rcnn", "retinanet")

    def owns_checkpoint(self, path):
        from c3det.checkpoint import FORMAT
        return checkpoint_mentions(path, FORMAT.encode())

    def batch_size(self, params):
        return params.train.batch_size

    def with_batch_size(self, params, size):
        return replace(params, train=replace(params.train, batch_size=size))

    def with_epochs(self, params, epochs, *, compress_schedule=False):
        t = params.train
        if not compress_schedule:
            return replace(params, train=replace(t, epochs=epochs))
        # the lr steps scaled by the same factor: the schedule's shape, compressed
        scale = epochs / t.epochs
        steps = sorted({max(1, round(s * scale)) for s in t.lr_steps if s < t.epochs})
        return replace(params, train=replace(t, epochs=epochs,
                                             lr_steps=[s for s in steps if s < epochs]))

    def model_name(self, params, kind):
        return kind

    def train(self, labels, image_root, params, out_dir, *, kind="c3det", init_from=None,
              resume=True, progress=True, tiling=None, recipe="end_to_end",
              detector_dir=None, detector_init=None, scratch_dir=None, version=None,
              model_base=None, click_epochs=None):
        from c3det.train import train
        if recipe == "end_to_end" or kind == "plain":
            return train(labels, image_root, params, out_dir, resume=resume, kind=kind,
                         progress=progress, init_from=init_from)
        detector_dir = Path(detector_dir or Path(out_dir) / DETECTOR_DIR)
        train(labels, image_root, params, detector_dir, resume=resume, kind="plain",
              progress=progress, init_from=detector_init)
        # the click branch starts from init_from; the detector is the one just trained
        frozen = replace(params, train=replace(params.train, freeze_detector=True))
        if click_epochs is not None and click_epochs != params.train.epochs:
            frozen = self.with_epochs(frozen, click_epochs, compress_schedule=True)
        init = [w for w in (init_from, detector_dir / "model.pt") if w is not None]
        return train(labels, image_root, frozen, out_dir, resume=resume, kind=kind,
                     progress=progress, init_from=init)

    def predictor(self, path, classes=None, *, min_score, tiling=None, device=None):
        from c3det.predict import Predictor
        return Predictor(path, classes, device=device, tiling=tiling, min_score=min_score)

    def eval_model(self, path, classes=None, *, tiling=None, passthrough=False):
        from c3det.baselines import Passthrough
        from c3det.checkpoint import CheckpointError, load
        from tinyloop.device import resolve_device
        model, meta = load(path, map_location=resolve_device())
        if classes is not None and list(meta["classes"]) != list(classes):
            raise CheckpointError(f"{path}: the model was trained on classes "
                                  f"{meta['classes']}, not {list(classes)}")
        return (Passthrough(model) if passthrough else model).eval(), meta


register(TorchvisionFamily())
