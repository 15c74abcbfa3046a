"""Inference: a trained detector + an image + class-labelled clicks -> annotations.

    predictor = Predictor("models/iter-002/model.pt")          # or Predictor(model, classes)
    annotations = predictor.predict("img.jpg", [Click(120, 80, "Car")])
    session = predictor.session("img.jpg")                     # one image, clicks one by one
    annotations = session.add_click(Click(120, 80, "Car"))     # re-runs only the click part

- Every click ends with a box of its class covering it (c3det.click_to_box); such boxes have
  provenance `click_refined`, the rest `model`; all carry the model version and score.
- Model boxes scoring below `min_score` are not shown (click-refined ones always are), cut
  by c3det.threshold.shown after the tiles are merged, as YoloPredictor does. By default a
  checkpoint's chosen threshold applies (threshold.json beside it, c3det.threshold.
  min_score_of; 0 when none was chosen, and for a model object); an explicit `min_score`
  wins. `scored(image, clicks)` gives every box before that cut (what the loop keeps as
  the track record).
- A click outside the image or of a class the model does not know is refused (ClickError).
- Images larger than the tile size (tinyloop TilingParams, default 1024) are predicted tile by
  tile (tinyloop.tiling) and merged by tinyloop.tiling.merge_predictions (truncated-copy rule,
  class-wise NMS). Sliced interactive inference: the local click inputs (Late-Fusion
  heatmaps, the tile's own C3 templates, the click-to-box guarantee) take every click inside
  the tile, so a click in an overlap reaches both tiles; C3's global context crosses tiles:
  every click outside a tile still lends it its C3 template (eq. 1, taken on the click's
  "home" tile, see `home_tile`), correlated with the tile's features beside the tile's own
  clicks (c3det.fusion, `external`). So one click can raise far-away objects of its class in
  other tiles, and with a C3 model a new click re-runs every tile. An image that fits in one
  tile is predicted exactly as before.
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
from c3det.click_to_box import explain_clicks
from c3det.fusion import template_count
from c3det.model import Batch, ClickDetector
from c3det.threshold import min_score_of, shown
from tinyloop.annotations import Annotation, Box, Click, Provenance
from tinyloop.config import TilingParams
from tinyloop.device import resolve_device


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


@dataclass
class TileInputs:
    """What one tile's prediction reads from the image's clicks."""
    clicks: list[Click]       # the clicks inside the tile (border included), tile px: local
    external: dict | None     # C3 templates of the clicks outside it, {level: (T (K, D),
    #                           classes (K,))}; None for non-C3 models or when there are none
    key: tuple                # what the tile's predictions depend on (re-run when it changes)


def home_tile(x: float, y: float, windows: Sequence[Box], width: float, height: float) -> int:
    """The window a click at (x, y) (image px) takes its C3 template from: of the windows
    holding it, the one where it lies farthest from a window border inside the image (image
    borders do not count: the unsliced image has them too); ties go to the first window.

    One tile rather than the average over the tiles holding it: near a cut, the features of
    the click's surroundings lose the context beyond the cut (zero padding instead; P5's
    receptive field spans hundreds of px), so that template is the less reliable one and
    averaging would only dilute the better one. The home template is eq. (1) on real
    features, the one an unsliced view of that neighbourhood gives.
    """
    def margin(w: Box) -> float:
        return min(x - w.x1 if w.x1 > 0 else np.inf, w.x2 - x if w.x2 < width else np.inf,
                   y - w.y1 if w.y1 > 0 else np.inf, w.y2 - y if w.y2 < height else np.inf)
    holding = [i for i, w in enumerate(windows) if w.x1 <= x <= w.x2 and w.y1 <= y <= w.y2]
    if not holding:
        raise ValueError(f"no window holds the click at ({x:g}, {y:g})")
    return max(holding, key=lambda i: margin(windows[i]))


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
            min_score = min_score_of(checkpoint_or_model, min_score)
        else:
            model = checkpoint_or_model
            if classes is None:
                raise ValueError("Predictor(model, classes): give the class names")
        self.classes = list(classes)
        if len(self.classes) != model.num_classes:
            raise ValueError(f"{len(self.classes)} class names for a {model.num_classes}-class model")
        self.device = resolve_device(device)
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
        """The annotations to show for `image` after `clicks` (from `min_score`)."""
        return shown(self.scored(image, clicks), self.min_score)

    def scored(self, image, clicks: Sequence[Click] = ()) -> list[Annotation]:
        """Every box the model scores for `image` after `clicks`, before the min_score cut."""
        return self.session(image, cache=False).scored(clicks)

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

    @property
    def global_c3(self) -> bool:
        """Does the model correlate click templates (C3), so clicks reach other tiles?"""
        return self.model.fusion is not None and self.model.fusion.use_c3

    @torch.no_grad()
    def tile_features(self, tile: _Tile) -> tuple[Batch, dict]:
        """A tile's prepared batch and backbone + FPN features, computed once and kept on the
        tile (kinds whose features do not depend on the clicks)."""
        if tile.batch is None:
            tile.batch = self.model.prepare([tile.image])
        if tile.features is None:
            tile.features = self.model.image_features(tile.batch)
        return tile.batch, tile.features

    @torch.no_grad()
    def tile_templates(self, tile: _Tile, click: Click) -> dict:
        """C3 templates (eq. 1) of one click (tile px) on that tile's features, per level."""
        batch, features = self.tile_features(tile)
        scaled = self.model.with_clicks(batch, [self.click_tensor([click])]).clicks[0]
        return self.model.fusion.templates(features, scaled, batch.padded_size)

    @torch.no_grad()
    def run_tile(self, tile: _Tile, clicks: Tensor, cache: bool,
                 external: dict | None = None) -> dict[str, Tensor]:
        """Detections of one tile (tile px) for `clicks` (K, 3) in tile px and the C3
        templates `external` of clicks outside the tile ({level: (T, classes)} or None)."""
        core = self.model
        if tile.batch is None:
            tile.batch = core.prepare([tile.image])
        batch = core.with_clicks(tile.batch, [clicks])
        if core.caches_image_features and (cache or tile.features is not None):
            if tile.features is None:
                tile.features = core.image_features(batch)
            features = tile.features
        else:
            features = core.image_features(batch)
        if not template_count(external):
            external = None
        if cache and self.fast_clicks:
            if tile.fast is None:
                tile.fast = LinearClickHeads(core, tile.batch, features)
            det = tile.fast.detect(clicks, True, external)
        else:
            fused = core.fuse(features, batch, None if external is None else [external])
            det = core.heads(fused, batch, candidates=True)[0]
        if self.guarantee_clicks and len(clicks):
            p = core.params
            det = explain_clicks(det, clicks, tuple(tile.image.shape[-2:]), p.click_box_sigma,
                                 p.default_box_size, class_sizes=self.class_sizes,
                                 size_sigma=p.click_box_size_sigma)
        return det

    def annotations(self, det: dict[str, Tensor]) -> list[Annotation]:
        """Every detection of `det` as an annotation (the min_score cut comes later)."""
        refined = det.get("refined", torch.zeros(len(det["boxes"]), dtype=torch.bool))
        out = []
        for box, label, score, ref in zip(det["boxes"].tolist(), det["labels"].tolist(),
                                          det["scores"].tolist(), refined.tolist()):
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
        self._templates: dict[tuple, dict] = {}   # click -> its C3 templates (cached sessions)

    def add_click(self, click: Click) -> list[Annotation]:
        self.predictor.check_clicks([click], self.width, self.height)
        return self.set_clicks(self.clicks + [click])

    def undo_click(self) -> list[Annotation]:
        return self.set_clicks(self.clicks[:-1])

    def set_clicks(self, clicks: Sequence[Click]) -> list[Annotation]:
        """The annotations to show for exactly these clicks (checked first; nothing changes
        on error)."""
        return shown(self.scored(clicks), self.predictor.min_score)

    def scored(self, clicks: Sequence[Click]) -> list[Annotation]:
        """Every box scored for exactly these clicks, before the min_score cut (checked
        first; nothing changes on error)."""
        from tinyloop.tiling import merge_predictions
        self.predictor.check_clicks(clicks, self.width, self.height)
        self.clicks = list(clicks)
        for tile, inputs in zip(self.tiles, self.tile_inputs(self.clicks)):
            if self.cache and inputs.key == tile.clicks_key:
                continue  # nothing new in this tile
            det = self.predictor.run_tile(tile, self.predictor.click_tensor(inputs.clicks),
                                          self.cache, inputs.external)
            tile.predictions, tile.clicks_key = self.predictor.annotations(det), inputs.key
        if not self.cache:   # features kept only while the clicks' templates were taken
            for tile in self.tiles:
                tile.batch = tile.features = None
        if len(self.tiles) == 1:
            return list(self.tiles[0].predictions)
        return merge_predictions([(t.window, t.predictions) for t in self.tiles],
                                 self.predictor.tiling.nms_iou,
                                 cut_inside=self.predictor.tiling.cut_inside)

    def tile_inputs(self, clicks: Sequence[Click]) -> list[TileInputs]:
        """Per tile: its own clicks (every click inside it, border included) and, for C3
        models, the templates of every other click, each taken on its home tile."""
        from tinyloop.tiling import shift_clicks
        if len(self.tiles) == 1:
            mine = list(clicks)
            return [TileInputs(mine, None, tuple((c.x, c.y, c.category) for c in mine))]
        out, store = [], self._templates if self.cache else {}
        for tile in self.tiles:
            mine = shift_clicks(clicks, tile.window)
            key = tuple((c.x, c.y, c.category) for c in mine)
            if not self.predictor.global_c3:
                out.append(TileInputs(mine, None, key))
                continue
            w = tile.window
            others = [c for c in clicks if not (w.x1 <= c.x <= w.x2 and w.y1 <= c.y <= w.y2)]
            external = None
            if others:
                parts = [self.templates(c, store) for c in others]
                external = {name: (torch.cat([p[name][0] for p in parts]),
                                   torch.cat([p[name][1] for p in parts])) for name in parts[0]}
            out.append(TileInputs(mine, external,
                                  (key, tuple((c.x, c.y, c.category) for c in others))))
        return out

    def templates(self, click: Click, store: dict | None = None) -> dict:
        """One click's C3 templates {level: (T (1, D), classes (1,))}, taken on its home tile
        (remembered in `store` by click)."""
        from tinyloop.tiling import shift_clicks
        store = {} if store is None else store
        key = (click.x, click.y, click.category)
        if key not in store:
            windows = [t.window for t in self.tiles]
            tile = self.tiles[home_tile(click.x, click.y, windows, self.width, self.height)]
            store[key] = self.predictor.tile_templates(tile,
                                                       shift_clicks([click], tile.window)[0])
        return store[key]
