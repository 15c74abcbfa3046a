"""Inference: a trained detector + an image + class-labelled clicks -> annotations.

    predictor = Predictor("models/iter-002/model.pt")          # or Predictor(model, classes)
    annotations = predictor.predict("img.jpg", [Click(120, 80, "Car")])
    session = predictor.session("img.jpg")                     # one image, clicks one by one
    annotations = session.add_click(Click(120, 80, "Car"))     # re-runs only the click part

- Every click ends with a box of its class covering it (c3det.click_to_box); such boxes have
  provenance `click_refined`, the rest `model`; all carry the model version and score.
- Model boxes scoring below `min_score` are not shown (click-refined ones always are). By
  default a checkpoint's chosen threshold applies (threshold.json beside it, see
  c3det.threshold; 0 when none was chosen, and for a model object); an explicit
  `min_score` wins.
- A click outside the image or of a class the model does not know is refused (ClickError).
- Images larger than the tile size (tinyloop TilingParams, default 1024) are predicted tile by
  tile (tinyloop.tiling) and merged by class-wise NMS; each tile sees only its own clicks, so
  the C3 global context reaches across one tile, not the whole image.
- `InteractiveSession` caches each tile's backbone + FPN features once; a new click re-runs
  only heatmaps, Late Fusion, C3, fusion and the heads, and only for tiles whose clicks changed
  (Early Fusion feeds clicks into the backbone, so there the whole tile is re-run). For Faster
  R-CNN LF / C3Det models the fusion's image terms, the RPN conv of them and their RoI pooling
  are cached too (c3det.click_heads: exact, by linearity), so a click mostly costs the click
  channels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from c3det.click_heads import LinearClickHeads, supports
from c3det.checkpoint import best_device
from c3det.click_to_box import explain_clicks
from c3det.model import Batch, ClickDetector
from tinyloop.annotations import Annotation, Box, Click, Provenance
from tinyloop.config import TilingParams


class ClickError(ValueError):
    """A click the model cannot use (outside the image, unknown class)."""


def as_image_array(image) -> np.ndarray:
    """A path, an (H, W) / (3, H, W) / (H, W, 3) array or tensor -> (3, H, W) float32 [0, 1]."""
    if isinstance(image, (str, Path)):
        from tinyloop.images import load_image
        return load_image(image)
    arr = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"expected an image (H, W) or (3, H, W), got shape {arr.shape}")
    if arr.shape[0] not in (1, 3) and arr.shape[-1] in (1, 3):
        arr = arr.transpose(2, 0, 1)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, 0)
    return np.ascontiguousarray(arr, dtype=np.float32)


@dataclass
class _Tile:
    window: Box
    image: Tensor                        # (3, h, w) on the model's device
    batch: Batch | None = None           # prepared once (cached sessions)
    features: dict | None = None         # backbone + FPN, cached when clicks don't enter it
    fast: LinearClickHeads | None = None  # cached image terms of fusion + heads
    clicks_key: tuple | None = None      # the clicks the cached predictions were made with
    predictions: list[Annotation] = field(default_factory=list)


class Predictor:
    def __init__(self, checkpoint_or_model: str | Path | nn.Module,
                 classes: Sequence[str] | None = None, device: str | torch.device | None = None,
                 tiling: TilingParams | None = None, model_version: str | None = None,
                 min_score: float | None = None, guarantee_clicks: bool = True,
                 fast_clicks: bool = True):
        if isinstance(checkpoint_or_model, (str, Path)):
            from c3det.checkpoint import load
            model, meta = load(checkpoint_or_model)
            classes = list(classes or meta["classes"])
            if list(meta["classes"]) != classes:
                raise ValueError(f"{checkpoint_or_model}: the model was trained on classes "
                                 f"{meta['classes']}, not {classes}")
            model_version = model_version or str(meta.get("version"))
            if min_score is None:
                min_score = meta.get("min_score")
        else:
            model = checkpoint_or_model
            if classes is None:
                raise ValueError("Predictor(model, classes): give the class names")
        self.classes = list(classes)
        if len(self.classes) != model.num_classes:
            raise ValueError(f"{len(self.classes)} class names for a {model.num_classes}-class model")
        self.device = torch.device(device) if device else best_device()
        self.model: ClickDetector = model.to(self.device).eval()
        self.tiling = tiling or TilingParams()
        self.model_version = model_version or "unversioned"
        self.min_score = min_score or 0.0
        self.guarantee_clicks = guarantee_clicks
        self.class_sizes = getattr(model, "class_box_sizes", None)
        # sessions re-run a click through c3det.click_heads (same results, less work)
        self.fast_clicks = fast_clicks and supports(model)

    # --- public API ---
    def predict(self, image, clicks: Sequence[Click] = ()) -> list[Annotation]:
        return self.session(image, cache=False).set_clicks(clicks)

    def session(self, image, cache: bool = True) -> "InteractiveSession":
        return InteractiveSession(self, as_image_array(image), cache)

    # --- internals ---
    def check_clicks(self, clicks: Sequence[Click], width: int, height: int) -> None:
        for c in clicks:
            if c.category not in self.classes:
                raise ClickError(f"click at ({c.x:g}, {c.y:g}): unknown class {c.category!r}; "
                                 f"this model knows {', '.join(self.classes)}")
            if not (0 <= c.x <= width and 0 <= c.y <= height):
                raise ClickError(f"click at ({c.x:g}, {c.y:g}) lies outside the "
                                 f"{width}x{height} image; click inside it")

    def click_tensor(self, clicks: Sequence[Click]) -> Tensor:
        rows = [[c.x, c.y, self.classes.index(c.category)] for c in clicks]
        return torch.tensor(rows, dtype=torch.float32, device=self.device).reshape(-1, 3)

    @torch.no_grad()
    def run_tile(self, tile: _Tile, clicks: Tensor, cache: bool) -> dict[str, Tensor]:
        """Detections of one tile (tile px) for `clicks` (K, 3) in tile px."""
        core = self.model
        if tile.batch is None or not cache:
            tile.batch = core.prepare([tile.image])
        batch = core.with_clicks(tile.batch, [clicks])
        if cache and core.caches_image_features:
            if tile.features is None:
                tile.features = core.image_features(batch)
            features = tile.features
        else:
            features = core.image_features(batch)
        if cache and self.fast_clicks:
            if tile.fast is None:
                tile.fast = LinearClickHeads(core, tile.batch, features)
            det = tile.fast.detect(clicks)
        else:
            det = core.heads(core.fuse(features, batch), batch, candidates=True)[0]
        if self.guarantee_clicks and len(clicks):
            p = core.params
            det = explain_clicks(det, clicks, tuple(tile.image.shape[-2:]), p.click_box_sigma,
                                 p.default_box_size, class_sizes=self.class_sizes,
                                 size_sigma=p.click_box_size_sigma)
        return det

    def annotations(self, det: dict[str, Tensor]) -> list[Annotation]:
        refined = det.get("refined", torch.zeros(len(det["boxes"]), dtype=torch.bool))
        out = []
        for box, label, score, ref in zip(det["boxes"].tolist(), det["labels"].tolist(),
                                          det["scores"].tolist(), refined.tolist()):
            if score < self.min_score and not ref:
                continue
            out.append(Annotation(self.classes[label - 1], Box(*box), provenance=Provenance(
                "click_refined" if ref else "model", self.model_version, float(score))))
        return out


class InteractiveSession:
    """One image being annotated: clicks arrive one at a time, predictions follow each."""

    def __init__(self, predictor: Predictor, image: np.ndarray, cache: bool = True):
        from tinyloop.tiling import crop, tile_windows
        self.predictor, self.cache = predictor, cache
        self.height, self.width = image.shape[-2:]
        size = predictor.tiling.size
        if max(self.width, self.height) > size:
            windows = tile_windows(self.width, self.height, size, predictor.tiling.stride)
        else:
            windows = [Box(0, 0, self.width, self.height)]
        self.tiles = [_Tile(w, torch.from_numpy(np.ascontiguousarray(crop(image, w)))
                            .to(predictor.device)) for w in windows]
        self.clicks: list[Click] = []

    def add_click(self, click: Click) -> list[Annotation]:
        self.predictor.check_clicks([click], self.width, self.height)
        return self.set_clicks(self.clicks + [click])

    def undo_click(self) -> list[Annotation]:
        return self.set_clicks(self.clicks[:-1])

    def set_clicks(self, clicks: Sequence[Click]) -> list[Annotation]:
        """Predictions for exactly these clicks (checked first; nothing changes on error)."""
        from tinyloop.tiling import merge_predictions, shift_clicks
        self.predictor.check_clicks(clicks, self.width, self.height)
        self.clicks = list(clicks)
        for tile in self.tiles:
            mine = shift_clicks(self.clicks, tile.window) if len(self.tiles) > 1 else self.clicks
            key = tuple((c.x, c.y, c.category) for c in mine)
            if self.cache and key == tile.clicks_key:
                continue  # nothing new in this tile
            det = self.predictor.run_tile(tile, self.predictor.click_tensor(mine), self.cache)
            tile.predictions, tile.clicks_key = self.predictor.annotations(det), key
        if len(self.tiles) == 1:
            return list(self.tiles[0].predictions)
        return merge_predictions([(t.window, t.predictions) for t in self.tiles],
                                 self.predictor.tiling.nms_iou,
                                 cut_inside=self.predictor.tiling.cut_inside)
