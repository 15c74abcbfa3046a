"""A torch Dataset over a LabelSet: images, boxes, ignore regions and (training) clicks.

Training samples are random multi-scale crops with random horizontal flips, so a CPU can
train on small crops of large images; every random choice comes from a generator seeded by
(seed, epoch, index), which makes an epoch reproducible and a resumed run identical to an
uninterrupted one. Evaluation samples are whole images, unchanged.

One sample is `(image, target)`:
    image   (3, H, W) float32 in [0, 1]
    target  {"boxes": (N, 4) float xyxy, "labels": (N,) int64 in 1..C,
             "ignore": (M, 4) float xyxy, "clicks": (K, 3) float (x, y, class 0..C-1),
             "clicked": (N,) bool, "image_id": str}
`collate` keeps lists (images differ in size; torchvision detectors take lists).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from c3det.clicks import synthesize_training_clicks
from c3det.config import TrainParams
from tinyloop.annotations import ImageLabels, LabelSet


def _load_image(path: Path) -> np.ndarray:
    from tinyloop.images import load_image
    return load_image(path)


def label_tensors(im: ImageLabels, categories: list[str]) -> dict[str, torch.Tensor]:
    """boxes (N,4), labels (N,) 1..C and ignore (M,4) of one image; unknown classes are an error."""
    index = {c: i + 1 for i, c in enumerate(categories)}
    boxes, labels = [], []
    for a in im.annotations:
        if a.category not in index:
            raise ValueError(f"image {im.image.path}: class {a.category!r} is not one of "
                             f"{categories}; add it to data.classes in params.yaml or fix the label")
        boxes.append(a.box.xyxy())
        labels.append(index[a.category])
    ignore = [r.box.xyxy() for r in im.ignore]
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "ignore": torch.tensor(ignore, dtype=torch.float32).reshape(-1, 4)}


class DetectionDataset(Dataset):
    """Images of a LabelSet under `image_root`; `params` given = training crops + clicks."""

    def __init__(self, labels: LabelSet, image_root: str | Path,
                 params: TrainParams | None = None, cache: bool = True):
        self.labels = labels
        self.root = Path(image_root)
        self.params = params
        self.cache = cache
        self.epoch = 0
        self._images: dict[int, torch.Tensor] = {}
        self._targets = [label_tensors(im, labels.categories) for im in labels.images]

    def __len__(self) -> int:
        return len(self.labels.images)

    def set_epoch(self, epoch: int) -> None:
        """Training crops and clicks depend on the epoch (and seed, index) only."""
        self.epoch = epoch

    def image(self, i: int) -> torch.Tensor:
        """(3, H, W) float32; cached as uint8, grey images as one channel."""
        if i in self._images:
            img = self._images[i]
        else:
            arr = _load_image(self.root / self.labels.images[i].image.path)
            img = torch.from_numpy(np.round(arr * 255).astype(np.uint8))
            if torch.equal(img[0], img[1]) and torch.equal(img[0], img[2]):
                img = img[:1]
            if self.cache:
                self._images[i] = img
        return img.expand(3, -1, -1).float() / 255

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        image = self.image(i)
        t = {k: v.clone() for k, v in self._targets[i].items()}
        t["image_id"] = self.labels.images[i].id
        if self.params is None:
            t["clicks"] = torch.zeros((0, 3))
            t["clicked"] = torch.zeros(len(t["boxes"]), dtype=torch.bool)
            return image, t
        p = self.params
        rng = np.random.default_rng([p.seed, self.epoch, i])
        image, t = random_crop(image, t, p, rng)
        t["clicks"], t["clicked"] = synthesize_training_clicks(
            t["boxes"], t["labels"], t["ignore"], rng, p.max_clicks, p.zero_click_share,
            p.click_noise_px)
        return image, t


def crop_origin(boxes: torch.Tensor, w: int, h: int, s: int, object_share: float,
                rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of an s x s window in a w x h image: with probability `object_share`
    (and objects present) a window that wholly holds one random object, else anywhere."""
    lo_x, hi_x, lo_y, hi_y = 0, max(w - s, 0), 0, max(h - s, 0)
    if len(boxes) and rng.random() < object_share:
        x1, y1, x2, y2 = boxes[int(rng.integers(len(boxes)))].tolist()
        lo_x, hi_x = min(max(0, int(np.ceil(x2)) - s), hi_x), max(min(int(x1), hi_x), 0)
        lo_y, hi_y = min(max(0, int(np.ceil(y2)) - s), hi_y), max(min(int(y1), hi_y), 0)
        hi_x, hi_y = max(hi_x, lo_x), max(hi_y, lo_y)
    return int(rng.integers(lo_x, hi_x + 1)), int(rng.integers(lo_y, hi_y + 1))


def random_crop(image: torch.Tensor, t: dict, p: TrainParams,
                rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
    """Resize by a random factor of p.scales, cut a p.crop_size square, maybe flip."""
    scale = float(p.scales[rng.integers(len(p.scales))])
    if scale != 1.0:
        h, w = image.shape[-2:]
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        t["boxes"] = t["boxes"] * scale
        t["ignore"] = t["ignore"] * scale
    _, h, w = image.shape
    s = p.crop_size
    x0, y0 = crop_origin(t["boxes"], w, h, s, p.object_crop_share, rng)
    crop = torch.zeros((3, s, s))
    part = image[:, y0:y0 + s, x0:x0 + s]
    crop[:, :part.shape[1], :part.shape[2]] = part
    cw, ch = part.shape[2], part.shape[1]
    shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
    limit = torch.tensor([cw, ch, cw, ch], dtype=torch.float32)
    boxes = t["boxes"] - shift
    clipped = torch.minimum(boxes.clamp(min=0), limit)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (inside >= p.min_visible * area) & (inside > 0)
    t["boxes"], t["labels"] = clipped[keep], t["labels"][keep]
    ig = torch.minimum((t["ignore"] - shift).clamp(min=0), limit)
    t["ignore"] = ig[(ig[:, 2] > ig[:, 0]) & (ig[:, 3] > ig[:, 1])]
    if p.flip and rng.random() < 0.5:
        crop = crop.flip(-1)
        for k in ("boxes", "ignore"):
            b = t[k]
            t[k] = torch.stack([s - b[:, 2], b[:, 1], s - b[:, 0], b[:, 3]], dim=1)
    return crop, t


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    images, targets = zip(*batch)
    return list(images), list(targets)
