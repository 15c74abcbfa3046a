"""CFINet's Feature Imitation (FI) head on the Faster R-CNN RoI head (Yuan et al., "Small
Object Detection via Coarse-to-fine Proposal Generation and Imitation Learning", ICCV 2023,
section 3.2; equation numbers below are the paper's).

Two parts:
- `ChannelReweight`, in the box head path at training AND inference: three valid 3x3 convs
  (+ GroupNorm, no activation; the paper's Feat2Embed convs, the reference code's
  "comp_convs") shrink each (C, 7, 7) RoI feature to a compact (C,) vector; 1 + softmax of it
  over channels re-weights the RoI feature's channels before the box head. Installed as
  `roi_heads.box_head = ReweightedBoxHead(reweight, old box head)`, so every caller of
  `box_head` (ClickRoIHeads.forward, c3det.click_heads) gets it.
- the imitation branch, training only (`FIRoIHeads.forward` in eval mode is ClickRoIHeads'):
  instance quality IQ of each ground-truth object (eq. 3); a per-class in-memory ring buffer
  of exemplar embeddings from high-quality objects (`ExemplarQueue`); a 128-d embedding MLP
  on the compact vector (eq. 4, `EmbeddingHead`); a supervised-contrastive loss that pulls
  the proposals of low-quality objects toward their class's exemplars and pushes them from
  other classes' exemplars and from background RoIs (eq. 5, `supervised_contrastive`), added
  to the detection losses with weight alpha_3 (eq. 6) as `loss_fi`.

Departures from the paper / reference code (said here so nobody hunts for them):
- the queue keeps 128-d embeddings (computed without gradient, like the paper's frozen
  exemplar pass), not (256, 7, 7) RoI features, and lives in memory (the reference wrote it to
  disk per GPU and kept the wrong slice when truncating). Its buffers are saved with the
  weights (state_dict, checkpoints, last.pt): a resumed run continues with the same queue, so
  c3det.train's exact resume holds; the cost is num_classes x 128 KB (256 x 128 float32).
  Inference never reads it. Under DDP (broadcast_buffers) every rank uses rank 0's queue.
- an object's exemplar is the embedding of its own ground-truth box RoI; high-quality objects
  are not anchors of the loss (the paper's augmented self-positives, Gamma, are left out).
- IQ uses the IoU of each proposal's regressed box for the object's class (the paper's
  "predicted box"; the reference used the proposal's IoU); ground-truth boxes that torchvision
  appends to the proposals are not counted.
- the loss uses every exemplar in the queue and at most `queue_size` background RoIs per step
  as the bank (no per-object sampling of N_pos / N_neg); exemplars of this step's
  high-quality objects enter the queue after the loss.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import fastrcnn_loss

from c3det.config import FIParams
from c3det.uel import ClickRoIHeads

HIDDEN = 512   # Feat2Embed MLP width (paper: two layers of 512, then the 128-d embedding)


# --- inference path ---------------------------------------------------------------------------

class ChannelReweight(nn.Module):
    """RoI features (R, C, S, S) -> (re-weighted (R, C, S, S), compact (R, C)).

    (S - 1) // 2 valid 3x3 convs + GroupNorm take S to 1 (odd S; a spatial mean takes any rest
    to 1); the channel weights 1 + softmax_c(compact) lie in (1, 2) (reference code)."""

    def __init__(self, channels: int, roi_size: int):
        super().__init__()
        if roi_size < 3:
            raise ValueError(f"FI channel re-weighting needs RoIs of >= 3x3 cells, got {roi_size}")
        layers: list[nn.Module] = []
        for _ in range((roi_size - 1) // 2):
            layers += [nn.Conv2d(channels, channels, 3, bias=False),
                       nn.GroupNorm(math.gcd(32, channels), channels)]
        self.convs = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        compact = self.convs(x).mean((2, 3))                       # (R, C)
        weights = 1 + F.softmax(compact, dim=1)                    # (R, C), each in (1, 2)
        return x * weights[:, :, None, None], compact


class ReweightedBoxHead(nn.Module):
    """The box head with FI's channel re-weighting in front: (R, C, S, S) -> head's output."""

    def __init__(self, reweight: ChannelReweight, head: nn.Module):
        super().__init__()
        self.reweight, self.head = reweight, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.reweight(x)[0])


# --- training-only parts ----------------------------------------------------------------------

class EmbeddingHead(nn.Module):
    """Feat2Embed's MLP (eq. 4, v = Theta_FI(x)): compact (R, C) -> L2-normalised (R, D)."""

    def __init__(self, channels: int, dim: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, HIDDEN), nn.ReLU(),
                                 nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, dim))

    def forward(self, compact: Tensor) -> Tensor:
        return F.normalize(self.mlp(compact), dim=1)


class ExemplarQueue(nn.Module):
    """Per-class ring buffer of exemplar embeddings: classes 1..num_classes (0 = background is
    never stored), `size` slots of `dim` each; a full class overwrites its oldest entries.
    Buffers: they move with .to(device) and are saved in state_dict (exact resume)."""

    def __init__(self, num_classes: int, size: int = 256, dim: int = 128):
        super().__init__()
        self.num_classes, self.size, self.dim = num_classes, size, dim
        self.register_buffer("slots", torch.zeros(num_classes, size, dim))  # (C, size, D)
        self.register_buffer("next", torch.zeros(num_classes, dtype=torch.long))  # (C,) slot
        # the next entry of each class goes to; (C,) filled slots, <= size
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.long))

    @torch.no_grad()
    def push(self, features: Tensor, labels: Tensor) -> None:
        """features (N, D), labels (N,) in 1..C; rows of one class enter in the given order."""
        if len(features) == 0:
            return
        if labels.min() < 1 or labels.max() > self.num_classes:
            raise ValueError(f"exemplar labels must be in 1..{self.num_classes}, "
                             f"got {labels.unique().tolist()}")
        for label in labels.unique().tolist():
            rows = features[labels == label][-self.size:].to(self.slots.dtype)   # (n, D)
            c, n = label - 1, len(rows)
            at = (self.next[c] + torch.arange(n, device=self.slots.device)) % self.size
            self.slots[c, at] = rows
            self.next[c] = (self.next[c] + n) % self.size
            self.count[c] = torch.clamp(self.count[c] + n, max=self.size)

    def get(self, label: int) -> Tensor:
        """(n, D) embeddings of class `label` (1..C), oldest first."""
        c = label - 1
        n = int(self.count[c])
        if n < self.size:
            return self.slots[c, :n]
        start = int(self.next[c])
        return torch.cat([self.slots[c, start:], self.slots[c, :start]])

    def full(self, label: int) -> bool:
        return int(self.count[label - 1]) == self.size

    def bank(self) -> tuple[Tensor, Tensor]:
        """Every stored embedding (M, D) and its class (M,) in 1..C."""
        feats = [self.get(c) for c in range(1, self.num_classes + 1)]
        labels = [torch.full((len(f),), c, dtype=torch.long, device=self.slots.device)
                  for c, f in enumerate(feats, start=1)]
        return torch.cat(feats), torch.cat(labels)


def instance_quality(class_probs: Tensor, ious: Tensor, assigned: Tensor,
                     gt_labels: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. (3): IQ = 1/|S'| sum_{j in S'} C_{j,c*} IoU_j, S' = the proposals assigned to the
    object whose argmax class is the object's class c*.

    class_probs (P, C+1) softmax scores (column 0 = background), ious (P,) IoU of each
    proposal's box with its object, assigned (P,) object index 0..G-1 or -1 (not counted),
    gt_labels (G,) in 1..C -> (IQ (G,), |S'| (G,) int64); IQ = 0 where |S'| = 0."""
    iq = class_probs.new_zeros(len(gt_labels))
    count = torch.zeros(len(gt_labels), dtype=torch.long, device=class_probs.device)
    keep = assigned >= 0
    obj = assigned[keep]                                      # (P',)
    label = gt_labels[obj]                                    # (P',) c* of each proposal
    probs = class_probs[keep]
    in_s = probs.argmax(1) == label                           # (P',) in S'
    term = probs.gather(1, label[:, None])[:, 0] * ious[keep]  # C_{j,c*} IoU_j
    iq.index_add_(0, obj[in_s], term[in_s])
    count.index_add_(0, obj[in_s], torch.ones_like(obj[in_s]))
    return iq / count.clamp(min=1), count


def supervised_contrastive(anchors: Tensor, anchor_labels: Tensor, bank: Tensor,
                           bank_labels: Tensor, temperature: float) -> Tensor:
    """Eq. (5), per anchor j with positives P(j) = bank rows of its label:
        l_j = -1/|P(j)| sum_{p in P(j)} log(exp(v_j.v_p / tau) / sum_{i in bank} exp(v_j.v_i / tau))
    averaged over the anchors that have a positive (0, still in the graph, when none has).

    anchors (N, D), anchor_labels (N,), bank (M, D), bank_labels (M,) (0 = background);
    vectors are used as given (EmbeddingHead already L2-normalises) -> scalar."""
    positive = anchor_labels[:, None] == bank_labels[None, :]          # (N, M)
    n_pos = positive.sum(1)                                           # (N,)
    valid = n_pos > 0
    if not bool(valid.any()):
        return anchors.sum() * 0.0 + bank.sum() * 0.0
    logits = anchors.float() @ bank.float().T / temperature           # (N, M)
    log_prob = logits - logits.logsumexp(1, keepdim=True)             # (N, M)
    per_anchor = -(log_prob * positive).sum(1)[valid] / n_pos[valid]  # (N_valid,)
    return per_anchor.mean()


def paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of row i of a (N, 4) with row i of b (N, 4), xyxy -> (N,)."""
    lt, rb = torch.maximum(a[:, :2], b[:, :2]), torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(1)  # noqa: E731
    return inter / (area(a) + area(b) - inter).clamp(min=1e-6)


class FeatureImitation(nn.Module):
    """The training-only FI state: embedding head + exemplar queue + the knobs."""

    def __init__(self, channels: int, num_classes: int, params: FIParams):
        super().__init__()
        self.params = params
        self.embed = EmbeddingHead(channels, params.embedding_dim)
        self.queue = ExemplarQueue(num_classes, params.queue_size, params.embedding_dim)


class FIRoIHeads(ClickRoIHeads):
    """ClickRoIHeads (+ UEL when its weight > 0) with FI: `box_head` is a ReweightedBoxHead,
    `fi` the FeatureImitation state; training adds `loss_fi` (eq. 6: weight * eq. 5)."""

    @classmethod
    def from_heads(cls, heads: ClickRoIHeads, fi: FeatureImitation,
                   reweight: ChannelReweight) -> "FIRoIHeads":
        new = cls.__new__(cls)
        new.__dict__.update(heads.__dict__)         # same settings and submodules ...
        new._modules = OrderedDict(heads._modules)  # ... in a dict of its own: `heads` unchanged
        new.box_head = ReweightedBoxHead(reweight, heads.box_head)
        new.fi = fi
        return new

    def forward(self, features, proposals, image_shapes, targets=None, candidates: bool = False):
        if not self.training:        # inference: only the re-weighting (inside box_head) runs
            return super().forward(features, proposals, image_shapes, targets, candidates)
        proposals, matched, labels, regression_targets = self.select_training_samples(proposals,
                                                                                      targets)
        pooled = self.box_roi_pool(features, proposals, image_shapes)      # (R, C, S, S)
        reweighted, compact = self.box_head.reweight(pooled)
        class_logits, box_regression = self.box_predictor(self.box_head.head(reweighted))
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels,
                                                      regression_targets)
        losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
        if self.uel_weight > 0:
            losses["loss_uel"] = self.uel_weight * self._uel(class_logits, proposals, labels,
                                                             targets)
        losses["loss_fi"] = self.fi.params.weight * self._imitation(
            features, image_shapes, proposals, matched, labels, targets, compact,
            class_logits, box_regression)
        return [], losses

    def _imitation(self, features, image_shapes, proposals: list[Tensor],
                   matched: list[Tensor], labels: list[Tensor], targets: list[dict[str, Tensor]],
                   compact: Tensor, class_logits: Tensor, box_regression: Tensor) -> Tensor:
        """Eq. (5) on this batch, then the high-quality objects' exemplars into the queue.
        compact (R, C), class_logits (R, C+1), box_regression (R, 4 (C+1)) of the R RoIs."""
        roi_labels = torch.cat(labels)                                     # (R,) 0..C
        gt_boxes = [t["boxes"] for t in targets]
        gt_labels = torch.cat([t["labels"] for t in targets])              # (G,) 1..C
        obj = torch.cat([m + off for m, off in zip(matched, _offsets(gt_boxes))])  # (R,)
        is_gt = torch.cat([(r == b[m]).all(1) if len(b) else torch.zeros_like(m, dtype=bool)
                           for r, m, b in zip(proposals, matched, gt_boxes)])      # (R,)
        fg = roi_labels > 0
        assigned = torch.where(fg & ~is_gt, obj, -1)    # (R,) object of each real proposal
        with torch.no_grad():
            probs, ious = self._scores_and_ious(class_logits, box_regression, proposals,
                                                assigned, gt_boxes, gt_labels)
            iq, count = instance_quality(probs, ious, assigned, gt_labels)        # eq. (3)
            high = (iq >= self.fi.params.quality_threshold) & \
                (count >= self.fi.params.min_proposals)                          # (G,)
        low = fg.clone()                                # anchors: RoIs of low-quality objects
        low[fg] = ~high[obj[fg]]
        loss = self._contrast(compact, roi_labels, low)
        self._push(features, image_shapes, gt_boxes, gt_labels, high)
        return loss

    def _contrast(self, compact: Tensor, roi_labels: Tensor, anchor: Tensor) -> Tensor:
        """Eq. (5): anchor RoIs (mask (R,)) against the queue's exemplars and at most
        queue_size background RoIs of this batch (label 0)."""
        bg = torch.where(roi_labels == 0)[0]
        bg = bg[torch.randperm(len(bg), device=bg.device)[:self.fi.params.queue_size]]
        exemplars, exemplar_labels = self.fi.queue.bank()                  # (M, D), (M,)
        v = self.fi.embed(torch.cat([compact[anchor], compact[bg]]))       # eq. (4)
        n = int(anchor.sum())
        return supervised_contrastive(
            v[:n], roi_labels[anchor], torch.cat([exemplars.to(v.dtype), v[n:]]),
            torch.cat([exemplar_labels, roi_labels[bg]]), self.fi.params.temperature)

    def _scores_and_ious(self, class_logits: Tensor, box_regression: Tensor,
                         proposals: list[Tensor], assigned: Tensor, gt_boxes: list[Tensor],
                         gt_labels: Tensor) -> tuple[Tensor, Tensor]:
        """class_probs (R, C+1) and the IoU (R,) of each RoI's regressed box for its object's
        class with that object (0 for unassigned RoIs)."""
        probs = F.softmax(class_logits.float(), -1)
        ious = probs.new_zeros(len(probs))
        rows = torch.where(assigned >= 0)[0]
        if len(rows):
            boxes = self.box_coder.decode(box_regression.float(), proposals)  # (R, C+1, 4)
            obj = assigned[rows]
            pred = boxes[rows, gt_labels[obj]]                                # (P, 4)
            ious[rows] = paired_iou(pred, torch.cat(gt_boxes)[obj].float())
        return probs, ious

    @torch.no_grad()
    def _push(self, features, image_shapes, gt_boxes: list[Tensor], gt_labels: Tensor,
              high: Tensor) -> None:
        """The embeddings of the high-quality objects' own box RoIs into the queue (the paper
        freezes Feat2Embed for exemplars: no gradient)."""
        if not bool(high.any()):
            return
        per_image = high.split([len(b) for b in gt_boxes])
        boxes = [b[h] for b, h in zip(gt_boxes, per_image)]
        compact = self.box_head.reweight(self.box_roi_pool(features, boxes, image_shapes))[1]
        self.fi.queue.push(self.fi.embed(compact), gt_labels[high])


def _offsets(gt_boxes: list[Tensor]) -> list[int]:
    """Index of each image's first object in the batch-wide object list."""
    sizes = [len(b) for b in gt_boxes]
    return [sum(sizes[:i]) for i in range(len(sizes))]


def with_feature_imitation(heads: ClickRoIHeads, channels: int, num_classes: int,
                           params: FIParams) -> ClickRoIHeads:
    """`heads` itself when FI is off; else an FIRoIHeads sharing its settings and modules.
    channels: of the pooled RoI features (the FPN width)."""
    if not params.enabled:
        return heads
    size = heads.box_roi_pool.output_size[0]
    return FIRoIHeads.from_heads(heads, FeatureImitation(channels, num_classes, params),
                                 ChannelReweight(channels, size))
