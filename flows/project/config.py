"""Knobs of the annotation side and the loop (sections annotate, simulator, workload, flows)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from c3det.image_click_box import ClickBoxParams


@dataclass
class AnnotateParams:
    dataset_name: str = "tinyloop"
    app_port: int = 5151
    app_address: str = "127.0.0.1"
    # a centre click -> a box from the image alone, where no model exists (batch 1, a class
    # the model never saw): c3det/image_click_box.py
    click_box: ClickBoxParams = field(default_factory=ClickBoxParams)


@dataclass
class SimulatorParams:
    """The simulated annotator (flows/accounting/simulator.py); defaults follow Benenson et al.
    2019 (corrective clicks at scale)."""
    click_sigma: float = 3.0     # px, std of isotropic Gaussian click noise (Benenson: 3 px)
    noise: Literal["gaussian", "none"] = "gaussian"  # click noise model
    rounds: int = 3              # click rounds per image (Benenson et al. 2019: 3 rounds x 3 clicks
    clicks_per_round: int = 3    # beat 9 clicks at once; returns diminish after ~15 clicks)
    min_error_size: float = 0.0  # px (sqrt of box area): smaller errors get no click
    error_iou: float = 0.5       # a GT object counts as found when a same-class box has IoU >= this
    seed: int = 0                # click-noise random seed
    correct: bool = True         # after the rounds, edit the labels to equal the ground truth
    # stop clicking on an image once a round's clicks cost more seconds than the edits they
    # saved (workload cost model): a person who sees clicks not helping; false = Benenson et
    # al. 2019's fixed rounds
    stop_unpaid_clicks: bool = False
    # with stop_unpaid_clicks: after this many images in a row whose clicks did not pay, stop
    # clicking for the rest of the batch (a person gives up a tool that costs time; the next
    # batch, with a retrained model, is tried afresh). 0 = never give up
    give_up_after_unpaid: int = 0
    # with stop_unpaid_clicks: stop clicking for the rest of the batch once its clicks so far
    # cost more seconds than they saved (bounds what clicks can lose on a batch)
    give_up_when_behind: bool = False
    # objects still missing after the rounds: "draw" every box by hand; "click" their centre
    # (click_sigma noise) and take the box c3det.image_click_box makes from the image, kept
    # when its IoU with the true box is >= accept_iou, else moved onto it (issue #30)
    missing: Literal["draw", "click"] = "draw"
    accept_iou: float = 0.5

    def check(self) -> str | None:
        if not 0 < self.accept_iou <= 1:
            return "accept_iou must be in (0, 1]"
        if self.give_up_after_unpaid < 0:
            return "give_up_after_unpaid must be >= 0 (0 = never)"
        if self.click_sigma < 0:
            return "click_sigma must be >= 0 pixels"
        if self.rounds < 0 or self.clicks_per_round < 0:
            return "rounds and clicks_per_round must be >= 0"
        if not 0 < self.error_iou <= 1:
            return "error_iou must be in (0, 1]"
        return None


@dataclass
class WorkloadParams:
    """The annotation cost model (flows/accounting/workload.py). WT of the loop paper uses
    box_seconds (T) and removal_fraction (T/2); the rest extends it to clicks and box edits."""
    box_seconds: float = 7.0        # T: draw one box from scratch (7.0 s: extreme clicking,
                                    # Papadopoulos et al., ICCV 2017; the loop paper leaves T open)
    removal_fraction: float = 0.5   # a removal costs removal_fraction * T (the loop paper: T/2)
    move_seconds: float = 3.5       # adjust a roughly right box (assumption: T/2, no source)
    relabel_seconds: float = 3.0    # change a box's class (assumption: one further click)
    accept_image_seconds: float = 4.0  # decide an image is fine as it is (Benenson: ~4 s)
    first_click_seconds: float = 8.0   # first corrective click on an image (Benenson: ~8 s)
    click_seconds: float = 3.0         # each further click (Benenson et al. 2019: ~3 s)
    # click mode (simulator.missing: click): a centre click on a missing object (1.87 s per
    # click, Papadopoulos et al., CVPR 2017, "Training object class detectors with click
    # supervision"), then deciding whether the box it produced is right (1.6 s per yes/no box
    # verification, Papadopoulos et al., CVPR 2016, "We don't need no bounding-boxes");
    # a wrong box is then moved (move_seconds)
    centre_click_seconds: float = 1.9
    box_verify_seconds: float = 1.6
    iou: float = 0.5                # match threshold: same class and IoU >= iou is accepted
    report_ious: list[float] = field(default_factory=lambda: [0.5, 0.7])  # also reported
                                    # (the loop paper reports 0.5 and 0.7)
    # the IoU that matches pre-annotations to final labels: "box" of the axis-aligned boxes,
    # "oriented" of the oriented boxes' polygons (an annotation without one counts as its
    # box), "auto" oriented on images where every annotation of both sides has an oriented
    # box (an annotator who only turns a box has moved it; the axis-aligned outline of a
    # turned box may barely change)
    geometry: Literal["auto", "box", "oriented"] = "auto"

    def check(self) -> str | None:
        if not all(0 < t <= 1 for t in [self.iou, *self.report_ious]):
            return "iou and report_ious must be in (0, 1]"
        if min(self.box_seconds, self.move_seconds, self.relabel_seconds,
               self.accept_image_seconds, self.first_click_seconds, self.click_seconds,
               self.removal_fraction, self.centre_click_seconds,
               self.box_verify_seconds) < 0:
            return "costs must be >= 0"
        return None


@dataclass
class ScheduleParams:
    """Cron schedules `tinyloop serve` registers (empty string = no schedule)."""
    retrain: str = "0 2 * * *"       # nightly: retrain on every labeled batch, evaluate, version
    check_batches: str = "0 * * * *"  # hourly: continue the loop when a batch was marked done


@dataclass
class FlowParams:
    """The loop (owner: flows/loop.py)."""
    iterations: int = 3              # batches to run (first batch included); 0 = until the pool is done
    store: Literal["file", "fiftyone"] = "file"  # where annotators' edits arrive
    preannotator: Literal["c3det", "plain"] = "c3det"  # c3det: clicks refine; plain: no clicks
    # model boxes below this score are not shown to annotators; "auto": per model, the score
    # that maximises the WT reduction on the held-out split (chosen when the model is evaluated)
    min_score: float | Literal["auto"] = 0.5
    # with min_score auto: show a model's boxes only if some score saves at least this % of WT
    # on the held-out split; otherwise none (min_score 1.01): a weak model costs deletions
    auto_min_gain_pct: float = 2.0
    # with min_score auto: model n is shown only from scores from which model n-1 did not cost
    # time on batch n (just corrected): the pool's own images veto the held-out split's
    # estimate score by score (docs/benchmarks/flows.md, batches of 50)
    auto_track_record: bool = True
    warm_start: bool = True          # model n starts from model n-1's weights (False: from scratch)
    # epochs of a warm-started model (null: c3det.train.epochs, lr_steps scaled to fit). Model
    # n-1 has already learned batches 1..n-1, so a few epochs over 1..n suffice; without this
    # iteration n costs n x epochs x batch size, the loop's dominant and growing cost
    warm_start_epochs: int | None = None
    # c3det pre-annotator: "end_to_end" trains detector and click branch together;
    # "detector_first" trains the plain detector, then only the click branch on top of it
    # (c3det.train.freeze_detector), so 0 clicks is exactly that detector. On HIT-UAV the
    # latter scored higher at 0 and at 20 clicks (docs/benchmarks/c3det_accuracy.md).
    train_recipe: Literal["end_to_end", "detector_first"] = "end_to_end"
    # detector_first: the click branch trains this share of its detector's epochs (on the
    # CPU loop it cost ~45 % of the detector's time for clicks that rarely pay)
    click_branch_share: float = 1.0
    eval_split: str = "val"          # metadata["split"] held out of the pool for evaluation
    # when no image is in eval_split: hold out this share of the labelled images (a fixed
    # pseudo-random choice by image id, so adding images never moves one); 0 = none
    eval_fraction: float = 0.0
    eval_max_images: int = 0         # evaluate on the first N held-out images (0 = all)
    task_runner: Literal["thread", "dask"] = "thread"  # dask: fan-out over a LocalCluster
    dask_workers: int = 2            # LocalCluster workers for task_runner dask
    preannotate_chunk: int = 16      # images per pre-annotation task (the fan-out unit)
    wait_timeout_s: int = 604800     # a paused flow gives up after this (files keep the state; rerun)
    versioning: bool = True          # dvc add + commit + git tag iter-NNN per iteration
    push_attempts: int = 4           # dvc push retries with exponential back-off
    push_delay_s: float = 2.0        # first back-off delay (doubles every attempt)
    oom_retries: int = 2             # CUDA out-of-memory: retry training with half the batch
    schedules: ScheduleParams = field(default_factory=ScheduleParams)

    def check(self) -> str | None:
        if self.iterations < 0 or self.dask_workers < 1 or self.preannotate_chunk < 1:
            return "iterations >= 0, dask_workers >= 1 and preannotate_chunk >= 1 are required"
        if self.push_attempts < 1 or self.oom_retries < 0:
            return "push_attempts >= 1 and oom_retries >= 0 are required"
        if self.warm_start_epochs is not None and self.warm_start_epochs < 1:
            return f"warm_start_epochs must be >= 1 or null, got {self.warm_start_epochs}"
        if not 0.0 < self.click_branch_share <= 1.0:
            return (f"click_branch_share must be in (0, 1], got {self.click_branch_share}: "
                    "the share of the detector's epochs the click branch trains")
        if not 0.0 <= self.eval_fraction < 1.0:
            return f"eval_fraction must be in [0, 1), got {self.eval_fraction}"
        if self.min_score != "auto" and not 0.0 <= self.min_score <= 1.0:
            return f"min_score must be in [0, 1] or auto, got {self.min_score}"
        return None
