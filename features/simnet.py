"""SimNet: a CNN (EfficientNet-Lite or ResNet) trained on the unlabeled pool itself to embed
similar images nearby.

As in the paper (the active-learning loop paper, section 3.1): every image is split horizontally
into its top and bottom halves; the two halves of one image are a positive pair, halves of other
images are negatives; the loss is the structured lifted loss of Oh Song et al. (CVPR 2016):

    J_ij = log( sum_{k in N(i)} exp(m - D_ik) + sum_{l in N(j)} exp(m - D_jl) ) + D_ij
    L    = 1 / (2 |P|) * sum_{(i,j) in P} max(0, J_ij)^2

with D the Euclidean distance between embeddings and m the margin. The embedding is a linear
projection (`embedding_dim`) of the CNN's global-pooled features; it is what `embed`
stores for extractor "simnet". The network, its checkpoint file and its loading are
features.extractors' (`SimNet`, `save_simnet`, `load_simnet`); this module trains it.
With `features.weights: imagenet` the CNN starts from ImageNet weights (the paper trains
from those too). CUDA + AMP are used when present.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from features.config import FeaturesParams
from features.extractors import (PoolImageFiles, SimNet, preprocess,
                                 resize_square, save_simnet)
from tinyloop.atomic import write_json_atomic
from tinyloop.device import resolve_device

log = logging.getLogger(__name__)


def lifted_structured_loss(emb: torch.Tensor, labels: torch.Tensor, margin: float = 1.0
                           ) -> torch.Tensor:
    """emb (M, E), labels (M,) with every label appearing exactly twice -> scalar loss."""
    sq = (emb[:, None, :] - emb[None, :, :]).pow(2).sum(-1)
    dist = sq.clamp_min(1e-12).sqrt()                              # (M, M)
    same = labels[:, None] == labels[None, :]
    neg_logits = (margin - dist).masked_fill(same, float("-inf"))
    neg = torch.logsumexp(neg_logits, dim=1)                        # (M,) log sum over N(i)
    i, j = torch.triu_indices(len(labels), len(labels), offset=1, device=emb.device)
    pos = same[i, j]
    i, j = i[pos], j[pos]
    J = torch.logaddexp(neg[i], neg[j]) + dist[i, j]
    return F.relu(J).pow(2).sum() / (2 * len(i))


class HalfPairs(PoolImageFiles):
    """Item: (2, 3, size, size) = the top and bottom half of one pool image, in [0, 1]."""

    def __getitem__(self, i: int):
        image, error = self.load(i)
        if image is None:
            return None, f"{self.paths[i]}: {error}"
        h = image.shape[1] // 2
        halves = torch.cat([resize_square(part[None], self.size)
                            for part in (image[:, :h], image[:, h:2 * h])])
        if torch.rand(()) < 0.5:  # flips keep the pair a pair but stop pixel matching
            halves = halves.flip(-1)
        return halves, None


def _collate(items):
    ok = [x for x, err in items if err is None]
    return (torch.stack(ok) if ok else None), [err for _, err in items if err is not None]


def train_simnet(paths: Sequence[Path], params: FeaturesParams, out_path: str | os.PathLike,
                 progress: bool = True, max_steps: int | None = None) -> dict:
    """Train SimNet on the pool images `paths`; save to `out_path`; return the loss history.

    Returns {"epoch_loss": [mean per epoch], "step_loss": [...], "skipped": [errors]}.
    """
    from tinyloop.progress import bar
    sp = params.simnet
    if len(paths) < 2:
        raise ValueError("SimNet needs at least 2 readable pool images (negatives come from "
                         "other images); use extractor resnet18/resnet50 for tiny pools")
    device = resolve_device(params.device, "features.device")
    torch.manual_seed(params.seed)
    model = SimNet(sp.backbone, sp.embedding_dim, params.weights, params.seed).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=sp.lr)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    gen = torch.Generator().manual_seed(params.seed)
    loader = DataLoader(HalfPairs(paths, sp.image_size), batch_size=min(sp.batch_size, len(paths)),
                        shuffle=True, drop_last=True, generator=gen, collate_fn=_collate,
                        num_workers=params.num_workers)
    history: dict = {"epoch_loss": [], "step_loss": [], "skipped": []}
    steps = 0
    model.train()
    steps_bar = bar(total=sp.epochs * len(loader), desc="train simnet", unit="step",
                    enabled=progress)
    for epoch in range(sp.epochs):
        losses = []
        for pairs, errors in loader:
            steps_bar.update(1)
            if epoch == 0:
                history["skipped"] += errors
            if pairs is None or len(pairs) < 2:
                continue
            b = len(pairs)
            images = preprocess(pairs.view(2 * b, *pairs.shape[2:]).to(device), sp.image_size)
            labels = torch.arange(b, device=device).repeat_interleave(2)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                emb = model(images)
            loss = lifted_structured_loss(emb.float(), labels, sp.margin)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(loss.item())
            history["step_loss"].append(loss.item())
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        history["epoch_loss"].append(float(np.mean(losses)) if losses else float("nan"))
        log.info("simnet epoch %d: loss %.4f", epoch + 1, history["epoch_loss"][-1])
        if max_steps is not None and steps >= max_steps:
            break
    steps_bar.close()
    save_simnet(out_path, model, history)
    return history


def with_checkpoint_under(params: FeaturesParams, root: str | os.PathLike) -> FeaturesParams:
    """`params` with a relative `simnet.checkpoint` resolved against the project `root`
    (not the working directory, which differs between the CLI, DVC and flow workers)."""
    ckpt = Path(params.simnet.checkpoint)
    if ckpt.is_absolute():
        return params
    return dataclasses.replace(params, simnet=dataclasses.replace(
        params.simnet, checkpoint=str(Path(root) / ckpt)))


def ensure_simnet(params: FeaturesParams, root: str | os.PathLike,
                  paths: Callable[[], Sequence[Path]], *, retrain: bool = False,
                  progress: bool = True) -> tuple[FeaturesParams, dict | None]:
    """For extractor "simnet": train SimNet on the pool images `paths()` unless its checkpoint
    exists (or `retrain`). Returns (params with the checkpoint resolved, the loss history or
    None when nothing was trained). Other extractors pass through untouched."""
    if params.extractor != "simnet":
        return params, None
    params = with_checkpoint_under(params, root)
    ckpt = Path(params.simnet.checkpoint)
    if ckpt.exists() and not retrain:
        return params, None
    history = train_simnet(list(paths()), params, ckpt, progress=progress)
    write_json_atomic(ckpt.with_suffix(".json"), history)
    return params, history
