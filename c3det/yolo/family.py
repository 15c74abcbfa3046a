"""The ultralytics YOLO detector family (c3det.detectors, `c3det.detector: yolo`): trained
from its model yaml by c3det.yolo.train, predicted by c3det.yolo.predict.YoloPredictor.

One stage, and the network never sees clicks (they relabel its boxes, as the Passthrough
baseline), so a click kind and the detector_first recipe do not apply: every kind trains
the same model.
"""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from c3det.detectors import DetectorFamily, register
from c3det.yolo.models import is_yolo_checkpoint

RUN = "yolo"          # ultralytics' run directory under the model's folder (c3det.yolo.train)
MODEL = "model.pt"


class YoloFamily(DetectorFamily):
    name = "yolo"
    detectors = ("yolo",)

    def owns_checkpoint(self, path):
        return is_yolo_checkpoint(path)

    def batch_size(self, params):
        return params.yolo.batch

    def with_batch_size(self, params, size):
        return replace(params, yolo=replace(params.yolo, batch=size))

    def with_epochs(self, params, epochs, *, compress_schedule=False):
        # a linear lr decay over the epochs: nothing to compress but their number
        return replace(params, yolo=replace(params.yolo, epochs=epochs))

    def model_name(self, params, kind):
        return params.yolo.model

    def train(self, labels, image_root, params, out_dir, *, kind="c3det", init_from=None,
              resume=True, progress=True, tiling=None, recipe="end_to_end",
              detector_dir=None, detector_init=None, scratch_dir=None, version=None,
              model_base=None, click_epochs=None):
        from c3det.yolo import train as yolo_train   # looked up per call: tests replace it
        if not resume:
            shutil.rmtree(Path(out_dir) / RUN, ignore_errors=True)
            (Path(out_dir) / MODEL).unlink(missing_ok=True)
        result = yolo_train.train(labels, image_root, params, out_dir, init_from=init_from,
                                  tiling=tiling, data_dir=scratch_dir, model_base=model_base,
                                  version=version, progress=progress)
        if scratch_dir is not None:   # the exported training set is not part of the model
            shutil.rmtree(scratch_dir, ignore_errors=True)
        return result

    def predictor(self, path, classes=None, *, min_score, tiling=None, device=None):
        from c3det.yolo.predict import YoloPredictor
        return YoloPredictor(path, classes, device=device, tiling=tiling, min_score=min_score)

    def eval_model(self, path, classes=None, *, tiling=None, passthrough=False):
        # a YOLO model is a passthrough already: clicks relabel its boxes
        from c3det.yolo.predict import YoloEvalModel, YoloPredictor
        predictor = YoloPredictor(path, classes, tiling=tiling)
        return YoloEvalModel(predictor), {"kind": self.name, "classes": predictor.classes}


register(YoloFamily())
