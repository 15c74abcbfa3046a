"""Where a project's files live: one place for every path, so no module spells a path twice.

A project directory (made by `tinyloop init`) looks like this::

    params.yaml  dvc.yaml  dvc.lock  .dvc/  .dvc-remote/
    data/pool/manifest.json          every image: id, path, size, capture metadata
    data/pool/ground_truth.json      the source's labels (simulation and evaluation only)
    data/features/embeddings.npy + ids.json
    data/order.json                  image id -> {"position", "batch"}
    data/batches/001/preannotations.json  model output before any human touch
    data/batches/001/scored_predictions.json  every box the model scored, shown or not
    data/batches/001/clicks.json          annotator (or simulator) clicks, by round
    data/batches/001/labels.json          the corrected labels: human truth for this batch
    data/batches/001/workload.json        diff counts, WB, WT, reduction vs manual
    data/batches/001/done                 marker: the annotators said the batch is finished
    models/iter-001/model.pt + metrics.json
    models/iter-001/selection.json   order.select: how model 1 ranked the rest of the pool
    models/iter-001/detector/model.pt  the plain detector under it (flows.train_recipe
                                     detector_first only)
    reports/index.html + report.md + img/

Batch numbers start at 1 and are written with three digits (``001``); iteration N trains on
batches 1..N, so ``models/iter-N`` belongs to batch N.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from c3det.threshold import threshold_path


def batch_name(n: int) -> str:
    """``7 -> "007"``; batch numbers start at 1."""
    if n < 1:
        raise ValueError(f"batch numbers start at 1, got {n}")
    return f"{n:03d}"


@dataclass(frozen=True)
class ProjectLayout:
    root: Path

    def __init__(self, root: str | Path = "."):
        object.__setattr__(self, "root", Path(root))

    # --- project files -------------------------------------------------------------------
    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def dvc_yaml(self) -> Path:
        return self.root / "dvc.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    # --- the pool ------------------------------------------------------------------------
    @property
    def pool(self) -> Path:
        return self.data / "pool"

    @property
    def manifest(self) -> Path:
        return self.pool / "manifest.json"

    @property
    def ground_truth(self) -> Path:
        return self.pool / "ground_truth.json"

    @property
    def import_report(self) -> Path:
        return self.pool / "import_report.json"

    @property
    def features(self) -> Path:
        return self.data / "features"

    @property
    def embeddings(self) -> Path:
        return self.features / "embeddings.npy"

    @property
    def embedding_ids(self) -> Path:
        return self.features / "ids.json"

    @property
    def order(self) -> Path:
        return self.data / "order.json"

    # --- batches -------------------------------------------------------------------------
    @property
    def batches(self) -> Path:
        return self.data / "batches"

    def batch_dir(self, n: int) -> Path:
        return self.batches / batch_name(n)

    def preannotations(self, n: int) -> Path:
        return self.batch_dir(n) / "preannotations.json"

    def scored_predictions(self, n: int) -> Path:
        """Every box batch n's model scored (>= c3det.score_thresh), before min_score: what
        showing it from any other score would have saved is known once the batch is
        corrected (model_policy.track_record)."""
        return self.batch_dir(n) / "scored_predictions.json"

    def clicks(self, n: int) -> Path:
        return self.batch_dir(n) / "clicks.json"

    def labels(self, n: int) -> Path:
        return self.batch_dir(n) / "labels.json"

    def workload(self, n: int) -> Path:
        return self.batch_dir(n) / "workload.json"

    def done_marker(self, n: int) -> Path:
        """Exists once the annotators marked batch n finished (written by `signal_done`)."""
        return self.batch_dir(n) / "done"

    def batch_numbers(self) -> list[int]:
        """Batches that have a directory, ascending."""
        if not self.batches.is_dir():
            return []
        return sorted(int(p.name) for p in self.batches.iterdir()
                      if p.is_dir() and p.name.isdigit())

    def labeled_batches(self) -> list[int]:
        """Batches whose corrected labels.json exists, ascending."""
        return [n for n in self.batch_numbers() if self.labels(n).exists()]

    # --- models, reports -----------------------------------------------------------------
    @property
    def models(self) -> Path:
        return self.root / "models"

    def model_dir(self, n: int) -> Path:
        return self.models / f"iter-{batch_name(n)}"

    def model(self, n: int) -> Path:
        return self.model_dir(n) / "model.pt"

    def detector_dir(self, n: int) -> Path:
        """flows.train_recipe detector_first: where model n's plain detector is trained."""
        return self.model_dir(n) / "detector"

    def detector(self, n: int) -> Path:
        """flows.train_recipe detector_first: model n's plain detector."""
        return self.detector_dir(n) / "model.pt"

    def selection(self, n: int) -> Path:
        """order.select: how model n ranked the unpublished rest of the pool (each image's
        score and reason, the cost); versioned with model n."""
        return self.model_dir(n) / "selection.json"

    def calibration(self, n: int) -> Path:
        """order.select.strategy work: model n's acceptance rate by score, held out."""
        return self.model_dir(n) / "calibration.json"

    def metrics(self, n: int) -> Path:
        return self.model_dir(n) / "metrics.json"

    def threshold(self, n: int) -> Path:
        """flows.min_score auto: the score from which model n's boxes are shown."""
        return threshold_path(self.model(n))

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def report_html(self) -> Path:
        return self.reports / "index.html"

    @property
    def report_md(self) -> Path:
        return self.reports / "report.md"

    # --- loop state ----------------------------------------------------------------------
    @property
    def state(self) -> Path:
        """Private loop bookkeeping (locks, run ids); never versioned."""
        return self.root / ".tinyloop"

    @property
    def dvc_mutex(self) -> Path:
        """File lock that serialises every DVC/git operation of the loop."""
        return self.state / "dvc.mutex"


def tag_name(n: int) -> str:
    """The git tag of iteration n: ``iter-007``."""
    return f"iter-{batch_name(n)}"
