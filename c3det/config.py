"""Knobs of the interactive detector (params.yaml section `c3det`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


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
    max_clicks: int = 20             # Nu ~ U{0..max_clicks}, K = min(Nu, #objects)
    zero_click_share: float = 0.25   # share of samples with no click (keeps 0-click accuracy)
    click_noise_px: float = 0.0      # Gaussian std of simulated click positions (px)
    max_images: int | None = None    # train on the first N images only (reduced CPU schedules)
    amp: bool = True                 # mixed precision when CUDA is present
    num_workers: int = 0             # DataLoader workers
    seed: int = 0

    def check(self) -> str | None:
        if self.epochs < 1 or self.batch_size < 1:
            return "epochs and batch_size must be >= 1"
        if not 0 <= self.zero_click_share <= 1:
            return f"zero_click_share ({self.zero_click_share}) must be in [0, 1]"
        if not self.scales or min(self.scales) <= 0:
            return "scales: give at least one positive resize factor"
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
class C3DetParams:
    backbone: Literal["resnet50", "resnet18"] = "resnet18"
    weights: str = "none"  # "imagenet" (needs torchvision's cached weights), a file, or "none"
    train: TrainParams = field(default_factory=TrainParams)  # owner H3b
    eval: EvalParams = field(default_factory=EvalParams)     # owner H3b
