"""Inference with a YOLO model.pt behind c3det.predict.Predictor's interface.

    predictor = YoloPredictor("models/iter-002/model.pt")
    annotations = predictor.predict("img.jpg", [Click(120, 80, "Car")])

- The detector does not see clicks: they act after detection as in the Passthrough baseline
  (c3det.baselines): a box a click falls in takes the click's class (c3det.click_to_box.
  relabel_by_clicks), and a click no box of its class covers gets one (explain_clicks: the
  class's median training box size centred on the click, `default_box_size` for a class
  without boxes; a YOLO head has no per-class candidates to pick from). Such boxes have
  provenance `click_refined` and score 1.0, the rest `model`, with the model's score.
- A click outside the image or of a class the model does not know is refused (ClickError).
- Model boxes below `min_score` are not shown (click-refined ones always are: c3det.
  threshold.shown); by default the threshold.json beside the checkpoint (c3det.threshold.
  min_score_of), else 0. `scored(image, clicks)` gives every box before that cut.
- Objects are seen at their native size: an image up to `tiling.size` px is predicted whole,
  at the training size `imgsz` or, when larger, its own size (rounded up to the stride);
  a larger image is cut into tiling.size tiles (tinyloop.tiling.tile_windows) merged by
  tinyloop.tiling.merge_predictions (truncated copies dropped, class-wise NMS; polygon NMS
  for oriented boxes).
- OBB models give every annotation its oriented box (`obox`) and its bounding box (`box`).
- An image given by path keeps its detections until another image is asked for, so a
  session of clicks on one image runs the network once.

`YoloEvalModel(predictor)` is the callable c3det.evaluate.map_vs_clicks scores (one
detection pass per image, clicks relabel, like a passthrough ClickDetector).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from c3det.click_to_box import explain_clicks, relabel_by_clicks
from c3det.config import C3DetParams
from c3det.predict import ClickError, as_image_array
from c3det.threshold import min_score_of, shown
from tinyloop.annotations import Annotation, Box, Click, OrientedBox, Provenance
from tinyloop.config import TilingParams

TILE_BATCH = 8   # tiles per forward pass


def check_clicks(clicks: Sequence[Click], classes: Sequence[str], width: int,
                 height: int) -> None:
    """c3det.predict.Predictor's rules: a known class, a point inside the image."""
    for c in clicks:
        if c.category not in classes:
            raise ClickError(f"click at ({c.x:g}, {c.y:g}): unknown class {c.category!r}; "
                             f"this model knows {', '.join(classes)}")
        if not (0 <= c.x <= width and 0 <= c.y <= height):
            raise ClickError(f"click at ({c.x:g}, {c.y:g}) lies outside the "
                             f"{width}x{height} image; click inside it")


def to_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """(3, H, W) float RGB in [0, 1] -> (H, W, 3) uint8 BGR, what ultralytics reads with
    cv2.imread in training."""
    hwc = np.clip(image.transpose(1, 2, 0)[..., ::-1] * 255.0 + 0.5, 0, 255)
    return np.ascontiguousarray(hwc.astype(np.uint8))


class YoloPredictor:
    def __init__(self, checkpoint: str | Path, classes: Sequence[str] | None = None,
                 device: str | torch.device | None = None, tiling: TilingParams | None = None,
                 model_version: str | None = None, min_score: float | None = None,
                 guarantee_clicks: bool = True, params: C3DetParams | None = None):
        from tinyloop.device import resolve_device
        from c3det.yolo.offline import ultralytics
        self.model = ultralytics().YOLO(str(checkpoint), task=None)
        meta = dict(getattr(self.model, "ckpt", None) or {}).get("tinyloop") or {}
        names = self.model.names
        own = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
        self.classes = list(classes) if classes is not None else list(meta.get("classes", own))
        if self.classes != own:
            raise ValueError(f"{checkpoint}: the model was trained on classes {own}, not "
                             f"{self.classes}")
        self.params = params or _stored_params(meta)
        self.oriented = self.model.task == "obb"
        self.device = resolve_device(device)
        self.tiling = tiling or TilingParams()
        self.model_version = model_version or str(meta.get("version") or
                                                  Path(checkpoint).parent.name)
        self.min_score = min_score_of(checkpoint, min_score) or 0.0
        self.guarantee_clicks = guarantee_clicks
        self.class_sizes = meta.get("class_box_sizes")
        self.stride = int(max(self.model.model.stride.tolist()))
        self._cached: tuple | None = None   # (key, detections) of the last image by path

    # --- public API (c3det.predict.Predictor's) ---
    def predict(self, image, clicks: Sequence[Click] = ()) -> list[Annotation]:
        """The annotations to show for `image` after `clicks` (from `min_score`)."""
        return shown(self.scored(image, clicks), self.min_score)

    def scored(self, image, clicks: Sequence[Click] = ()) -> list[Annotation]:
        """Every box for `image` after `clicks`, before the min_score cut."""
        array = self._array(image)
        height, width = array.shape[-2:]
        check_clicks(clicks, self.classes, width, height)
        detections = self._detections_of(image, array)
        det = self.apply_clicks(detections, clicks, (height, width))
        return self.annotations(det)

    def detect(self, image) -> list[Annotation]:
        """Every detection (score >= c3det.score_thresh) in image px, no clicks, no min_score."""
        return self._detections_of(image, self._array(image))

    # --- detection ---
    def _array(self, image) -> np.ndarray:
        if isinstance(image, (str, Path)) and self._cached and self._cached[0] == \
                _key(image):
            return self._cached[2]
        return as_image_array(image)

    def _detections_of(self, image, array: np.ndarray) -> list[Annotation]:
        key = _key(image) if isinstance(image, (str, Path)) else None
        if key is not None and self._cached and self._cached[0] == key:
            return self._cached[1]
        detections = self.run(array)
        if key is not None:
            self._cached = (key, detections, array)
        return detections

    def imgsz_for(self, width: int, height: int) -> int:
        """The network input size that keeps the image at its native scale (or scales it
        up to the training size, as training did)."""
        native = math.ceil(max(width, height) / self.stride) * self.stride
        return max(self.params.yolo.imgsz, native)

    @torch.no_grad()
    def run(self, array: np.ndarray) -> list[Annotation]:
        """Detections of a (3, H, W) image: whole or tiled by self.tiling, merged."""
        from tinyloop.tiling import crop, merge_predictions, tile_windows
        height, width = array.shape[-2:]
        if max(width, height) <= self.tiling.size:
            return self._forward([array])[0]
        windows = tile_windows(width, height, self.tiling.size, self.tiling.stride)
        per_tile = []
        for j in range(0, len(windows), TILE_BATCH):
            chunk = windows[j:j + TILE_BATCH]
            per_tile += zip(chunk, self._forward([crop(array, w) for w in chunk]))
        return merge_predictions(per_tile, self.tiling.nms_iou,
                                 cut_inside=self.tiling.cut_inside)

    def _forward(self, arrays: list[np.ndarray]) -> list[list[Annotation]]:
        """One ultralytics predict call on same-size images -> annotations per image."""
        height, width = arrays[0].shape[-2:]
        p = self.params
        cuda = self.device.type == "cuda"
        results = self.model.predict(
            [to_bgr_uint8(a) for a in arrays], imgsz=self.imgsz_for(width, height),
            conf=p.score_thresh, iou=p.nms_iou, max_det=p.detections_per_img,
            device=str(self.device.index or 0) if cuda else str(self.device), half=cuda,
            verbose=False, save=False)
        return [self._annotations_of(r) for r in results]

    def _annotations_of(self, result) -> list[Annotation]:
        version = self.model_version
        if self.oriented:   # ultralytics' angle turns x towards y (clockwise on screen), ours too
            obb, (height, width) = result.obb, result.orig_shape
            rows = zip(obb.xywhr.tolist(), obb.cls.tolist(), obb.conf.tolist())
            out = []
            for (cx, cy, w, h, r), c, s in rows:
                obox = OrientedBox(cx, cy, w, h, r)
                box = obox.bounding_box().clip(width, height)   # as axis-aligned outputs
                if box.area > 0:
                    out.append(Annotation(self.classes[int(c)], box, obox,
                                          Provenance("model", version, float(s))))
            return out
        boxes = result.boxes
        return [Annotation(self.classes[int(c)], Box(*b), provenance=Provenance(
            "model", version, float(s))) for b, c, s in
            zip(boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist())]

    # --- clicks ---
    def click_tensor(self, clicks: Sequence[Click]) -> Tensor:
        rows = [[c.x, c.y, self.classes.index(c.category)] for c in clicks]
        return torch.tensor(rows, dtype=torch.float32).reshape(-1, 3)

    def apply_clicks(self, detections: list[Annotation], clicks: Sequence[Click],
                     image_size: tuple[int, int]) -> dict:
        """Passthrough's click stage on image-level detections: relabel the boxes clicks
        fall in, then (guarantee_clicks) a box of its class for every click.
        Returns {"boxes", "labels" 1..C, "scores", "refined", "obox" (D, 5) or None}."""
        det = as_tensors(detections, self.classes, self.oriented)
        if not clicks:
            return det
        t = self.click_tensor(clicks)
        out = relabel_by_clicks(det, t)
        if self.guarantee_clicks:
            p = self.params
            out = explain_clicks(out, t, image_size, p.click_box_sigma, p.default_box_size,
                                 class_sizes=self.class_sizes, size_sigma=p.click_box_size_sigma)
        out.setdefault("refined", torch.zeros(len(out["boxes"]), dtype=torch.bool))
        out["obox"] = _carry_oboxes(det, out) if det["obox"] is not None else None
        return out

    def annotations(self, det: dict) -> list[Annotation]:
        """Every detection of `det` as an annotation (the min_score cut comes later)."""
        refined = det.get("refined")
        if refined is None:
            refined = torch.zeros(len(det["boxes"]), dtype=torch.bool)
        oboxes = det.get("obox")
        out = []
        for j, (box, label, score, ref) in enumerate(zip(
                det["boxes"].tolist(), det["labels"].tolist(), det["scores"].tolist(),
                refined.tolist())):
            obox = OrientedBox(*oboxes[j].tolist()) if oboxes is not None else None
            out.append(Annotation(self.classes[label - 1], Box(*box), obox, Provenance(
                "click_refined" if ref else "model", self.model_version, float(score))))
        return out


def _key(path: str | Path) -> tuple:
    path = Path(path)
    try:
        return str(path.resolve()), path.stat().st_mtime_ns
    except OSError:
        return str(path), None


def _stored_params(meta: dict) -> C3DetParams:
    """The c3det params the model was trained with (its score / NMS / click knobs)."""
    from tinyloop.params import build
    return build(C3DetParams, meta["params"], "c3det") if meta.get("params") else C3DetParams()


def as_tensors(annotations: list[Annotation], classes: Sequence[str],
               oriented: bool = False) -> dict:
    """Annotations -> {"boxes" (D, 4), "labels" (D,) 1..C, "scores" (D,), "obox" (D, 5),
    None unless `oriented` (an annotation without one gets its upright box)}."""
    index = {c: i + 1 for i, c in enumerate(classes)}
    boxes = torch.tensor([a.box.xyxy() for a in annotations], dtype=torch.float32)
    return {"boxes": boxes.reshape(-1, 4),
            "labels": torch.tensor([index[a.category] for a in annotations], dtype=torch.long),
            "scores": torch.tensor([1.0 if a.score is None else a.score for a in annotations],
                                   dtype=torch.float32),
            "obox": torch.tensor([_obox(a).as_list() for a in annotations],
                                 dtype=torch.float32).reshape(-1, 5) if oriented else None}


def _obox(a: Annotation) -> OrientedBox:
    if a.obox is not None:
        return a.obox
    (cx, cy), b = a.box.center, a.box
    return OrientedBox(cx, cy, b.width, b.height, 0.0)


def _carry_oboxes(before: dict, after: dict) -> Tensor:
    """Oriented boxes for explain_clicks' output: a kept detection keeps its own (rows are
    matched by their unchanged axis-aligned box, in order); a box a click added is upright."""
    old_boxes, old_obox = before["boxes"], before["obox"]
    used = torch.zeros(len(old_boxes), dtype=torch.bool)
    rows = []
    for box in after["boxes"]:
        same = ((old_boxes == box).all(1) & ~used).nonzero()
        if len(same):
            used[same[0, 0]] = True
            rows.append(old_obox[same[0, 0]])
        else:
            x1, y1, x2, y2 = box.tolist()
            rows.append(torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 0.0]))
    return torch.stack(rows) if rows else torch.zeros((0, 5))


class YoloEvalModel:
    """A YoloPredictor as c3det.evaluate.map_vs_clicks' model: model(images) -> per image
    {"boxes", "labels" 1..C, "scores"} (every detection: no min_score, as the c3det models
    are scored); clicks do not change detections, `relabel` applies them."""

    uses_clicks = True                 # clicks relabel boxes (Passthrough)
    clicks_change_detections = False   # one forward pass per image serves every click set

    def __init__(self, predictor: YoloPredictor):
        self.predictor = predictor

    def __call__(self, images: list[Tensor], clicks=None) -> list[dict]:
        out = []
        for image in images:
            array = image.detach().cpu().numpy() if isinstance(image, Tensor) else image
            det = as_tensors(self.predictor.run(as_image_array(array)), self.predictor.classes)
            out.append({k: det[k] for k in ("boxes", "labels", "scores")})
        return out

    def relabel(self, detection: dict, clicks: Tensor) -> dict:
        return relabel_by_clicks(detection, clicks.cpu())
