"""The one-stage interactive detector: C3Det's click fusion in the neck of an ultralytics YOLO.

    model = build_interactive_yolo(num_classes=4, cfg="yolov8n-p2.yaml")
    losses = model(images, clicks, targets)      # model.train(): dict of scalar losses
    detections = model(images, clicks)           # model.eval(): c3det detections per image

The C3Det paper (seeds/000, sec. 3) adds clicks to "the features the detection head reads",
so it fits a one-stage detector as well as Faster R-CNN (the reference's one-stage path was
broken, BRIEF sec. 2). Here the YOLO backbone + neck run unchanged, and the feature maps
that feed the Detect head (P2..P5 for `yolov8n-p2.yaml`, strides 4..32) go through the same
fusion as the two-stage models before the head:

    fused_l = F_l + conv1x1_l(concat(F_l, C3_l, LF_l))     images with >= 1 click
    fused_l = F_l                                           images without clicks

- C3 (eqs. 1-3, c3det.c3 through c3det.fusion.ClickFusion): each click's template pooled
  from F_l at the click, correlated with F_l, max per class -> C maps per level;
- Late Fusion (c3det.late_fusion): the per-class click heatmaps (c3det.heatmaps) through a
  small pyramid of their own, one map per level at the same stride;
- the 1x1 convs start at zero and an image without clicks skips the branch, so at 0 clicks
  the model IS its plain YOLO (guarantee (1) of c3det.fusion).

`LevelFusion` is `ClickFusion` with one 1x1 conv per level sized to that level's width (a
YOLO neck widens with depth: 32/64/128/256 channels for the n scale, where the FPN of the
two-stage models is 256 everywhere); everything else, sliced-inference templates included,
is ClickFusion's. Defaults differ from the two-stage models in one place: the LF branch is
the "light" pyramid with 64 channels (the reference ResNet-18 + 256-wide FPN would cost more
than the whole yolov8n).

Losses (training) are ultralytics' own criterion of the DetectionModel (`init_criterion`:
v8DetectionLoss, or E2ELoss for end-to-end heads such as YOLO26), on ultralytics' batch
format built from the c3det targets, with ultralytics' default gains (box 7.5, cls 0.5,
dfl 1.5); the returned values are per image (ultralytics multiplies the sum by the batch
size before backward: the trainer does the same).

User-input Enforcing Loss on YOLO outputs (`loss_uel`). In the two-stage model UEL pushes
every positive RoI whose box overlaps (IoU > 0) a clicked object's box towards the clicked
class (c3det.uel). The one-stage analogue used here: the anchors the task-aligned assigner
made foreground (YOLO's "positive RoIs"), with their decoded box (detached, like a RoI)
overlapping a clicked box, get a binary cross-entropy towards the one-hot clicked class
(YOLO's classifier is per-class sigmoid, not softmax), summed over classes, averaged over
those anchors, times ultralytics' cls gain and `uel_weight`. The selection is
c3det.uel.uel_selection itself; where several clicked boxes overlap, the largest IoU wins.

Tensors (the c3det conventions, c3det.model):
    images      list of (3, H, W) float in [0, 1] ((1, H, W) grey is repeated); no resize;
                the batch is padded at the bottom/right to multiples of the largest stride
                with ultralytics' letterbox grey (114/255)
    clicks      None, or per image (K, 3) rows (x, y, class index 0..C-1) in image px
    targets[i]  {"boxes": (N, 4) xyxy px, "labels": (N,) int64 1..C, "clicked": (N,) bool}
    detections  per image {"boxes": (D, 4) xyxy px, "labels": (D,) 1..C, "scores": (D,)}

The stages `prepare` -> `image_features` -> `fuse` -> `heads` are those of
c3det.model.ClickDetector, so c3det.evaluate runs the backbone + neck once per image and
only the fusion and head per click set.
"""
from __future__ import annotations

import dataclasses
import io
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from c3det.backbone import LEVELS
from c3det.config import C3DetParams
from c3det.fusion import ClickFusion
from c3det.model import Batch
from c3det.uel import uel_selection
from c3det.yolo.lite_backbone import weights_follow
from c3det.yolo.models import find_model
from c3det.yolo.offline import ultralytics
from tinyloop.atomic import write_bytes_atomic

ultralytics()  # before any ultralytics submodule: no network, no telemetry
from ultralytics.cfg import get_cfg  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402
from ultralytics.utils import DEFAULT_CFG  # noqa: E402
from ultralytics.utils.loss import E2ELoss  # noqa: E402
from ultralytics.utils.nms import non_max_suppression  # noqa: E402

FORMAT = "tinyloop-c3det-yolo/1"
KIND = "yolo_c3det"
PAD_VALUE = 114 / 255  # ultralytics' letterbox grey


@dataclass
class YoloClickSpec:
    """Everything needed to rebuild an InteractiveYOLO (stored in its checkpoints)."""
    num_classes: int = 1
    cfg: str = "yolov8n-p2.yaml"   # ultralytics model yaml (scale letter in the name)
    use_lf: bool = True            # Late-Fusion branch
    use_c3: bool = True            # C3 correlation maps
    lf_backbone: str = "light"     # c3det.late_fusion: "light" or "resnet18" (reference)
    lf_channels: int = 64          # width of the LF maps concatenated at every level
    heatmap_sigma: float = 1.0     # px, LF click Gaussians (reference 1)
    c3_sigma: float = 3.0          # px, C3 template Gaussians (reference 3)
    c3_normalize: bool = True      # C3 correlation / channel count
    uel_weight: float = 1.0        # 0 turns the UEL off
    conf: float = 0.001            # inference score threshold (ultralytics val's)
    iou: float = 0.7               # NMS IoU (ultralytics val's)
    max_det: int = 300
    multi_label: bool = True       # a box may carry several classes (ultralytics val, and
    # torchvision's per-class Faster R-CNN post-processing the two-stage curve uses)

    @classmethod
    def from_params(cls, num_classes: int, params: C3DetParams | None = None,
                    **overrides) -> "YoloClickSpec":
        """The click knobs (sigmas, C3 normalisation, UEL weight) from c3det params; the LF
        width and backbone stay the one-stage defaults unless given in `overrides`."""
        p = params or C3DetParams()
        knobs = dict(heatmap_sigma=p.heatmap_sigma, c3_sigma=p.c3_sigma,
                     c3_normalize=p.c3_normalize, uel_weight=p.uel_weight)
        return cls(num_classes=num_classes, **{**knobs, **overrides})


class LevelFusion(ClickFusion):
    """ClickFusion over levels of different widths: the 1x1 conv of level l maps
    concat(F_l (channels[l]), C3 (C), LF (lf_channels)) -> channels[l], zero-initialised."""

    def __init__(self, num_classes: int, channels: list[int], **kwargs):
        super().__init__(num_classes, channels[0], levels=len(channels), **kwargs)
        extra = (num_classes if self.use_c3 else 0) + (self.lf.out_channels if self.lf else 0)
        self.mix = nn.ModuleList(nn.Conv2d(c + extra, c, 1) for c in channels)
        for conv in self.mix:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)


def level_names(strides: list[float]) -> list[str]:
    """Fusion level name per Detect input: the LF level of its stride (4 -> "0" .. 32 -> "3")."""
    names = []
    for s in strides:
        k = int(round(math.log2(s))) - 2
        if not 0 <= k < len(LEVELS) or 2 ** (k + 2) != s:
            raise ValueError(f"Detect level of stride {s:g}: the click branch has levels of "
                             "stride 4, 8, 16, 32 only (use a P2-P5 or P3-P5 model yaml)")
        names.append(LEVELS[k])
    return names


class InteractiveYOLO(nn.Module):
    """An ultralytics DetectionModel (`self.yolo`) with C3Det's click fusion (`self.fusion`)
    between its neck and its Detect head."""

    kind = KIND
    uses_clicks = True                # c3det.evaluate: clicks matter ...
    clicks_change_detections = True   # ... through the network, not only a relabelling
    caches_image_features = True      # backbone + neck never see the clicks

    def __init__(self, spec: YoloClickSpec):
        super().__init__()
        self.spec = spec
        self.num_classes = spec.num_classes
        # by find_model: ultralytics finds its own yamls by name, ours (c3det/yolo/) by path
        self.yolo = DetectionModel(find_model(spec.cfg).arg, ch=3, nc=spec.num_classes,
                                   verbose=False)
        self.yolo.args = get_cfg(DEFAULT_CFG)   # loss gains (box, cls, dfl), as the trainer sets
        head = self.yolo.model[-1]
        channels = [box[0].conv.in_channels for box in head.cv2]   # Detect input widths
        self.level_names = level_names(self.yolo.stride.tolist())
        self.fusion = LevelFusion(spec.num_classes, channels, use_lf=spec.use_lf,
                                  use_c3=spec.use_c3, lf_channels=spec.lf_channels,
                                  heatmap_sigma=spec.heatmap_sigma, c3_sigma=spec.c3_sigma,
                                  c3_normalize=spec.c3_normalize, lf_backbone=spec.lf_backbone) \
            if spec.use_lf or spec.use_c3 else None
        self._criterion = None   # ultralytics' loss, built on first use on the model's device

    # --- stages (c3det.model.ClickDetector's) ---
    def prepare(self, images: list[Tensor], clicks: list[Tensor] | None = None,
                targets: list[dict[str, Tensor]] | None = None) -> Batch:
        """Pad the images into one (B, 3, H, W) tensor (H, W multiples of the largest stride);
        clicks and targets keep their pixel coordinates (padding is at the bottom/right)."""
        images = [im.expand(3, -1, -1) if im.shape[0] == 1 else im for im in images]
        for i, im in enumerate(images):
            if im.dim() != 3 or im.shape[0] != 3:
                raise ValueError(f"image {i}: expected a (3, H, W) tensor, got {tuple(im.shape)}")
        s = int(self.yolo.stride.max())
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        h = math.ceil(max(a for a, _ in sizes) / s) * s
        w = math.ceil(max(b for _, b in sizes) / s) * s
        x = images[0].new_full((len(images), 3, h, w), PAD_VALUE)
        for i, im in enumerate(images):
            x[i, :, :im.shape[-2], :im.shape[-1]] = im
        device = x.device
        if clicks is None:
            clicks = [torch.zeros(0, 3, device=device) for _ in images]
        if len(clicks) != len(images):
            raise ValueError(f"{len(images)} images but {len(clicks)} click tensors")
        clicks = [torch.as_tensor(c, dtype=torch.float32, device=device).reshape(-1, 3)
                  for c in clicks]
        return Batch(ImageList(x, sizes), clicks, targets, sizes, clicks)

    def image_features(self, batch: Batch) -> "OrderedDict[str, Tensor]":
        """Backbone + neck: the Detect head's inputs {level name: (B, C_l, H/s_l, W/s_l)}."""
        x, y = batch.images.tensors, []
        for m in self.yolo.model[:-1]:        # ultralytics' BaseModel._predict_once
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.yolo.save else None)
        head = self.yolo.model[-1]
        return OrderedDict(zip(self.level_names, (x if j == -1 else y[j] for j in head.f)))

    def fuse(self, features: "OrderedDict[str, Tensor]", batch: Batch,
             external: list[dict | None] | None = None) -> "OrderedDict[str, Tensor]":
        """The click branch (c3det.fusion); `external`: C3 templates of clicks outside each
        image (sliced inference), as ClickFusion takes them."""
        if self.fusion is None:
            return features
        return self.fusion(features, batch.clicks, batch.padded_size, external)

    def heads(self, features: "OrderedDict[str, Tensor]", batch: Batch):
        """Losses (training) or detections in input-image px (eval)."""
        out = self.yolo.model[-1](list(features.values()))
        if self.training:
            return self.losses(out, batch)
        return self.detections(out[0] if isinstance(out, tuple) else out, batch)

    def forward(self, images: list[Tensor], clicks: list[Tensor] | None = None,
                targets: list[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("training mode needs targets (call model.eval() to predict)")
        batch = self.prepare(images, clicks, targets)
        return self.heads(self.fuse(self.image_features(batch), batch), batch)

    # --- training ---
    def criterion(self):
        """ultralytics' criterion of this DetectionModel, (re)built on the model's device."""
        device = next(self.parameters()).device
        if self._criterion is None or crit_device(self._criterion) != device:
            self._criterion = self.yolo.init_criterion()
        return self._criterion

    def losses(self, preds: dict, batch: Batch) -> dict[str, Tensor]:
        """{box_loss, cls_loss, dfl_loss (l1_loss for DFL-free heads), loss_uel}: per image,
        with ultralytics' gains. preds: the Detect head's training output."""
        crit = self.criterion()
        ub = ultralytics_batch(batch.targets, batch.padded_size, crit_device(crit))
        if isinstance(crit, E2ELoss):   # E2ELoss.__call__, keeping the one-to-many assignment
            o2m, p = crit.one2many, preds["one2many"]
            assigned, loss, _ = o2m.get_assigned_targets_and_loss(p, ub)
            o2o = crit.one2one.get_assigned_targets_and_loss(preds["one2one"], ub)[1]
            loss = loss * crit.o2m + o2o * crit.o2o
        else:
            o2m, p = crit, preds
            assigned, loss, _ = crit.get_assigned_targets_and_loss(p, ub)
        out = dict(zip(o2m.loss_names, loss.unbind()))
        if self.spec.uel_weight > 0:
            fg, _, _, anchors, strides = assigned
            boxes = o2m.bbox_decode(anchors, p["boxes"].permute(0, 2, 1)).detach().float() * strides
            out["loss_uel"] = self.spec.uel_weight * o2m.hyp.cls * uel_loss(
                p["scores"], boxes, fg, batch.targets)
        return out

    def epoch_done(self) -> None:
        """End of a training epoch: E2ELoss moves weight from one-to-many to one-to-one (as
        ultralytics' trainer does; needs `self.yolo.args.epochs`)."""
        if hasattr(self._criterion, "update"):
            self._criterion.update()

    # --- inference ---
    def detections(self, y: Tensor, batch: Batch) -> list[dict[str, Tensor]]:
        """Detect's decoded output (B, 4 + C, A) xywh (or (B, max_det, 6) end-to-end) ->
        NMS -> c3det detections clipped to each input image."""
        s = self.spec
        head = self.yolo.model[-1]
        dets = non_max_suppression(y.float(), s.conf, s.iou, multi_label=s.multi_label,
                                   max_det=s.max_det, nc=self.num_classes,
                                   max_time_img=60.0, end2end=bool(head.end2end))
        out = []
        for d, (h, w) in zip(dets, batch.original_sizes):
            boxes = torch.stack([d[:, 0].clamp(0, w), d[:, 1].clamp(0, h),
                                 d[:, 2].clamp(0, w), d[:, 3].clamp(0, h)], 1)
            out.append({"boxes": boxes, "labels": d[:, 5].long() + 1, "scores": d[:, 4]})
        return out


def crit_device(crit) -> torch.device:
    return (crit.one2many if isinstance(crit, E2ELoss) else crit).device


def ultralytics_batch(targets: list[dict[str, Tensor]], padded_size: tuple[int, int],
                      device: torch.device) -> dict[str, Tensor]:
    """c3det targets -> ultralytics' loss batch: batch_idx (N,), cls (N, 1) 0..C-1, bboxes
    (N, 4) xywh normalised by the padded input size (W, H)."""
    h, w = padded_size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=device)
    idx, cls, boxes = [], [], []
    for i, t in enumerate(targets):
        b = t["boxes"].to(device).float().reshape(-1, 4)
        idx.append(torch.full((len(b),), float(i), device=device))
        cls.append((t["labels"].to(device).float() - 1).reshape(-1, 1))
        xywh = torch.cat([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], 1)
        boxes.append(xywh / scale)
    return {"batch_idx": torch.cat(idx), "cls": torch.cat(cls), "bboxes": torch.cat(boxes)}


def uel_loss(scores: Tensor, boxes: Tensor, fg: Tensor, targets: list[dict[str, Tensor]]
             ) -> Tensor:
    """UEL on YOLO outputs (module docstring). scores (B, C, A) class logits; boxes (B, A, 4)
    decoded xyxy px (detached); fg (B, A) bool, the assigner's foreground; targets[i] with
    "boxes", "labels" 1..C, "clicked" (N,) bool. Returns a scalar (0 with the graph kept
    when no anchor qualifies)."""
    selected, wanted = [], []
    for i, t in enumerate(targets):
        gt = t["boxes"].to(boxes)
        clicked = t.get("clicked")
        clicked = torch.zeros(len(gt), dtype=torch.bool, device=boxes.device) \
            if clicked is None else clicked.to(boxes.device).bool()
        s, c = uel_selection(boxes[i], fg[i].long(), gt, t["labels"].to(boxes.device), clicked)
        selected.append(s)
        wanted.append(c)
    selected, wanted = torch.stack(selected), torch.stack(wanted)   # (B, A)
    if not bool(selected.any()):
        return scores.sum() * 0.0
    logits = scores.permute(0, 2, 1)[selected]                                  # (S, C)
    onehot = F.one_hot(wanted[selected] - 1, scores.shape[1]).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").sum(1).mean()


def build_interactive_yolo(num_classes: int, cfg: str = "yolov8n-p2.yaml",
                           params: C3DetParams | None = None, **spec) -> InteractiveYOLO:
    """A fresh model: `cfg` an ultralytics model yaml, click knobs from `params` (c3det's),
    any YoloClickSpec field overridden by keyword."""
    return InteractiveYOLO(YoloClickSpec.from_params(num_classes, params, cfg=cfg, **spec))


# --- weights ---
def save(path: str | Path, model: InteractiveYOLO, meta: dict[str, Any]) -> Path:
    """Atomic checkpoint readable with weights_only: {"format", "meta" (+ "spec", "kind"),
    "state_dict"}. meta needs "classes"."""
    if "classes" not in meta:
        raise ValueError("checkpoint meta needs classes")
    meta = {**meta, "kind": KIND, "spec": dataclasses.asdict(model.spec),
            "classes": list(meta["classes"])}
    blob = {"format": FORMAT, "meta": meta, "state_dict": model.state_dict()}
    buf = io.BytesIO()
    torch.save(blob, buf)
    return write_bytes_atomic(path, buf.getvalue())


def load(path: str | Path, map_location: str | torch.device = "cpu"
         ) -> tuple[InteractiveYOLO, dict]:
    """(model in eval mode, meta) from a checkpoint of `save`."""
    blob = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} checkpoint (an interactive YOLO model.pt)")
    with weights_follow():   # a lite0 yaml's ImageNet backbone: the state_dict replaces it
        model = InteractiveYOLO(YoloClickSpec(**blob["meta"]["spec"]))
    model.load_state_dict(blob["state_dict"])
    return model.to(map_location).eval(), blob["meta"]


def load_detector_weights(model: InteractiveYOLO, path: str | Path) -> list[str]:
    """Start the YOLO part from a plain detector: an ultralytics checkpoint (`best.pt` /
    `last.pt` of its trainer: pickled modules, so only load files you trust), a state_dict
    of a DetectionModel, or a checkpoint of `save`. Copies the weights whose name and shape
    match (a head trained for another class count keeps this model's last class convs);
    returns the names copied under `yolo.`."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:   # ultralytics pickles the DetectionModel itself
        blob = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        state = {k.removeprefix("yolo."): v for k, v in blob["state_dict"].items()
                 if k.startswith("yolo.")}
    elif isinstance(blob, dict) and isinstance(blob.get("ema") or blob.get("model"), nn.Module):
        state = (blob.get("ema") or blob["model"]).float().state_dict()
    elif isinstance(blob, nn.Module):
        state = blob.float().state_dict()
    elif isinstance(blob, dict):
        state = blob.get("state_dict", blob)
    else:
        raise ValueError(f"{path}: no YOLO weights found ({type(blob).__name__})")
    mine = model.yolo.state_dict()
    take = {k: v for k, v in state.items()
            if k in mine and isinstance(v, Tensor) and v.shape == mine[k].shape}
    if not take:
        raise ValueError(f"{path}: no weight matches {model.spec.cfg} (another model yaml?)")
    model.yolo.load_state_dict(take, strict=False)
    return sorted("yolo." + k for k in take)
