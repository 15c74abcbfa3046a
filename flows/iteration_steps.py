"""One iteration's steps on batch n of a project directory: pre-annotate it with model n-1,
publish it to the annotation store (or let the simulated annotator label it), pull its labels,
measure its workload, train model n on batches 1..n and evaluate it on the held-out images.

Each step reads and writes the files of `flows.project.layout.ProjectLayout` and nothing
else, so the files are the loop's state: a step that finds its output complete returns it without
recomputing, and a step killed half-way leaves no half-written file behind (every write is
atomic). That is what makes the loop resumable after a kill -9 at any point: run it again
and every finished step is skipped, every unfinished one starts over (training continues
from its last finished epoch).

Human work is never overwritten: a batch's pre-annotations are written once (annotators may
already have seen them), the annotation store keeps every acknowledged edit, and labels.json
is only (re)written by pulling from the store, which returns the same file each time.

The `tinyloop step NAME` commands in dvc.yaml and the Prefect flows (flows/loop.py) call
these same functions; the prepare steps are in flows/prepare_steps.py.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from c3det import detectors
from c3det.threshold import shown as shown_boxes
from flows.annotate.annotation_store import AnnotationStore
from flows import model_policy
from flows.faults import fault_point
from flows.project.batches import batch_ids, batch_records, is_done, labeled, n_batches
from flows.project.project import Project
from flows.project.pool_split import eval_set, held_out_note
from flows.accounting.workload import batch_workload
from tinyloop.annotations import ImageLabels, LabelSet
from tinyloop.atomic import write_json_atomic
from tinyloop.cocofile import read_labels, write_labels

log = logging.getLogger(__name__)


def predict_images(p: Project, model_path: Path | None,
                   items: list[ImageLabels]) -> list[ImageLabels]:
    """Every box `model_path` scores on the images (the fan-out unit), before the min_score
    cut (`shown` makes it); no model = nothing predicted (batch 1)."""
    if model_path is None:
        return [ImageLabels(i.image) for i in items]
    from tinyloop.progress import bar
    predictor = model_policy.every_box_predictor(p, model_path)
    return [ImageLabels(i.image, predictor.scored(str(p.source / i.image.path)))
            for i in bar(items, desc=f"preannotate {len(items)} images", unit="image")]


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


def shown(p: Project, model_path: Path | None, items: list[ImageLabels]) -> list[ImageLabels]:
    """The boxes of `predict_images` that annotators see: those from the model's min_score,
    cut as every predictor cuts (c3det.threshold.shown)."""
    if model_path is None:
        return items
    min_score = model_policy.min_score_for(p, model_path)
    return [replace(i, annotations=shown_boxes(i.annotations, min_score)) for i in items]


def write_preannotations(p: Project, n: int, items: list[ImageLabels]) -> LabelSet:
    """Write batch n's pre-annotations (the shown boxes of `items`, every box the model
    scored) once; an existing file wins (annotators saw it). The scored boxes go first:
    preannotations.json marks the pair complete."""
    path = p.layout.preannotations(n)
    if path.exists():
        return read_labels(path)
    model = model_policy.model_for_batch(p, n)
    model_rel = str(model.relative_to(p.layout.root)) if model else None
    info = {"batch": n, "model": model_rel}
    if model is not None:
        write_labels(LabelSet(p.classes, items, info), p.layout.scored_predictions(n))
    labels = LabelSet(p.classes, shown(p, model, items), info)
    write_labels(labels, path)
    return labels


def preannotate(p: Project, n: int) -> LabelSet:
    """Batch n's pre-annotations, computed in one process (the flow fans out instead)."""
    if p.layout.preannotations(n).exists():
        return read_labels(p.layout.preannotations(n))
    return write_preannotations(p, n, predict_images(p, model_policy.model_for_batch(p, n),
                                                     batch_records(p, n).images))


def open_store(p: Project) -> AnnotationStore:
    """The annotation store named by flows.store (flows/annotate/stores.py)."""
    from flows.annotate.stores import open_store as open_named_store
    return open_named_store(p.layout.root, p.params)


def publish(p: Project, store: AnnotationStore, n: int, *, fresh: bool = False) -> list[str]:
    """Give batch n to the annotators. `fresh` (simulation only) restarts the batch's
    working copy from the pre-annotations; people's edits are never discarded."""
    pre = read_labels(p.layout.preannotations(n))
    if fresh:
        store.restart_batch(n)
    return store.open_batch(n, pre)


def simulate_annotation(p: Project, store: AnnotationStore, n: int) -> dict:
    """The simulated annotator corrects batch n through the store and marks it done.

    A batch not marked done is restarted from its pre-annotations (simulated work only), so
    a run killed half-way through the batch gives exactly the labels of an unbroken run.
    """
    if p.layout.done_marker(n).exists():
        return {"skipped": True}
    publish(p, store, n, fresh=True)
    from flows.accounting.simulator import save_logs, simulate_batch
    gt = read_labels(p.layout.ground_truth)
    ids = batch_ids(p, n)
    wanted = set(ids)
    truth = LabelSet(gt.categories, [i for i in gt if i.id in wanted], gt.info)
    sim = p.params.simulator
    if p.params.flows.preannotator == "plain" or n == 1 or model_policy.boxes_hidden(p, n):
        # a plain detector cannot use clicks, batch 1 has no model yet, and a model whose
        # boxes are hidden (no score paid on the held-out images) shows nothing for a click:
        # clicks there would cost annotator time for nothing
        sim = replace(sim, rounds=0)
    logs = simulate_batch(store, n, truth, _predictor_fn(p, n), sim, image_ids=ids,
                          cost=p.params.workload, clicker=_centre_clicker(p, n, truth))
    save_logs(logs, p.layout.batch_dir(n) / "simulation.json")
    fault_point("annotated")
    return {"images": len(logs), "clicks": sum(r.clicks for lg in logs for r in lg.rounds)}


def _centre_clicker(p: Project, n: int, truth: LabelSet):
    """simulator.missing click: the image click-to-box over batch n, having learned from
    batches 1..n-1 (None when missing objects are drawn)."""
    if p.params.simulator.missing != "click":
        return None
    from flows.accounting.simulator import centre_clicker
    earlier = labeled(p, n - 1).images if n > 1 else []
    paths = {i.id: str(p.source / i.image.path) for i in [*earlier, *truth.images]}
    return centre_clicker(p.params.annotate.click_box, paths, earlier)


def _predictor_fn(p: Project, n: int):
    """`predict(image_id, clicks) -> list[Annotation]` with model n-1 (nothing for batch 1),
    showing what the App would (flows.model_policy.predictor)."""
    model = model_policy.model_for_batch(p, n)
    if model is None:
        return lambda image_id, clicks: []
    predictor = model_policy.predictor(p, model)
    images = {i.id: i.image for i in read_labels(p.layout.preannotations(n))}

    def predict(image_id, clicks):
        return predictor.predict(str(p.source / images[image_id].path), list(clicks))
    return predict




def pull(p: Project, store: AnnotationStore, n: int) -> LabelSet:
    """Write batch n's labels.json (+ clicks.json) from the store; needs the done marker."""
    if not is_done(p, n):
        raise RuntimeError(f"batch {n} is not marked done ({p.layout.done_marker(n)} is "
                           "missing); finish it in the App or run `tinyloop resume`")
    fault_point("pull")
    labels = store.pull(n)
    return labels


def workload(p: Project, n: int) -> dict:
    """workload.json of batch n: diff of the corrected labels against the pre-annotations."""
    path = p.layout.workload(n)
    if path.exists():
        return json.loads(path.read_text())
    pre = read_labels(p.layout.preannotations(n))
    final = read_labels(p.layout.labels(n))
    refined_path = p.layout.batch_dir(n) / "refined.json"
    refined = read_labels(refined_path) if refined_path.exists() else None
    w = batch_workload(pre, final, p.params.workload, first_batch=(n == 1), refined=refined)
    w["batch"] = n
    write_json_atomic(path, w)
    return w




def model_kind(p: Project) -> str:
    return "plain" if p.params.flows.preannotator == "plain" else "c3det"


def train(p: Project, n: int, batch_size: int | None = None) -> dict:
    """Model n on batches 1..n (resumes a killed run from its last finished epoch).

    A CUDA out-of-memory error retries with half the batch size (flows.oom_retries times).
    `models/iter-NNN/train.json` is written last: it marks the model finished.
    """
    done = p.layout.model_dir(n) / "train.json"
    if done.exists():
        model_policy.publish_current(p, n)
        return json.loads(done.read_text())
    c3 = _schedule(p, n)
    family = detectors.family_for(c3)
    size = batch_size or family.batch_size(c3)
    for attempt in range(p.params.flows.oom_retries + 1):
        params = family.with_batch_size(c3, size)
        try:
            fault_point("train")
            t0 = time.perf_counter()
            result = _fit(p, n, params)
            break
        except RuntimeError as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if "out of memory" not in str(e).lower() or size == 1 or \
                    attempt == p.params.flows.oom_retries:
                raise
            size = max(1, size // 2)
            log.warning("CUDA out of memory: retrying training with batch_size %d", size)
            _empty_cuda_cache()
    summary = {"batch": n, "images": len(labeled(p, n).images), "batch_size": size,
               "kind": model_kind(p), "detector": c3.detector,
               "seconds": time.perf_counter() - t0,
               "epochs": len(result.get("epochs", []))}
    write_json_atomic(done, summary)
    # the resume state (weights + optimizer) is only needed by an unfinished run: keeping
    # it would make every iteration hash, cache and push it
    for d in (p.layout.model_dir(n), p.layout.detector_dir(n)):
        (d / "last.pt").unlink(missing_ok=True)
    model_policy.publish_current(p, n)
    return summary


def _schedule(p: Project, n: int):
    """c3det params for model n: a warm-started model trains flows.warm_start_epochs epochs,
    its learning-rate schedule compressed to fit (as its detector family does that)."""
    c3, epochs = p.params.c3det, p.params.flows.warm_start_epochs
    if epochs is None or model_policy.warm_start(p, n) is None:
        return c3
    return detectors.family_for(c3).with_epochs(c3, epochs, compress_schedule=True)


def _fit(p: Project, n: int, params) -> dict:
    """Train model n by flows.train_recipe (where its detector family has two stages); each
    stage resumes from its last finished epoch. A family that exports its training set
    does so under .tinyloop/, outside what DVC versions, and removes it once finished."""
    previous = p.layout.detector(n - 1) if n > 1 else None
    return detectors.family_for(params).train(
        labeled(p, n), p.source, params, p.layout.model_dir(n), kind=model_kind(p),
        init_from=model_policy.warm_start(p, n), resume=True, tiling=p.params.tiling,
        recipe=p.params.flows.train_recipe, detector_dir=p.layout.detector_dir(n),
        detector_init=model_policy.warm_start(p, n, previous),
        scratch_dir=p.layout.state / "train-data" / f"iter-{n:03d}",
        version=f"iter-{n:03d}", model_base=p.layout.root,
        click_epochs=click_branch_epochs(p.params.flows, params.train.epochs))


def click_branch_epochs(flows, detector_epochs: int) -> int | None:
    """detector_first: the click branch's epochs, flows.click_branch_share of its
    detector's (at least 1; None: as many)."""
    share = flows.click_branch_share
    return None if share >= 1.0 else max(1, round(share * detector_epochs))


def _eval_model(p: Project, n: int):
    """Model n as c3det.evaluate.map_vs_clicks scores it."""
    return detectors.eval_model(p.layout.model(n), p.classes, tiling=p.params.tiling)[0]


def _empty_cuda_cache() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate(p: Project, n: int) -> dict:
    """mAP of model n on the held-out split, with and without clicks -> metrics.json
    (and, with flows.min_score auto, the score threshold of its pre-annotations)."""
    path, test = p.layout.metrics(n), eval_set(p)
    chosen = model_policy.choose_min_score(p, n, test)
    if path.exists():
        metrics = json.loads(path.read_text())
    else:
        metrics = {"batch": n, "images_labeled": len(labeled(p, n).images),
                   "eval_images": len(test.images)}
        if test.images:
            from c3det.evaluate import map_vs_clicks
            model = _eval_model(p, n)
            ev = p.params.c3det.eval
            if model_kind(p) == "plain":
                ev = replace(ev, click_steps=[0])
            curve = map_vs_clicks(model, test, p.source, ev, name=f"iter-{n:03d}")
            metrics.update({"map50": curve["map_mean"][0], "steps": curve["steps"],
                            "map_vs_clicks": curve["map_mean"],
                            "map_vs_clicks_std": curve["map_std"],
                            "per_class": {c: v[0] for c, v in curve["per_class"].items()}})
        else:  # say why mAP is "-" in the report, and what to set
            metrics["no_map_reason"] = held_out_note(p) or "no labelled held-out images"
            log.warning("batch %d: %s", n, metrics["no_map_reason"])
        if chosen:
            metrics.update(min_score=chosen["min_score"],
                           wt_by_min_score=chosen["wt_by_min_score"])
        write_json_atomic(path, metrics)
    cur = p.layout.models / "current"
    cur.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cur / "metrics.json", metrics)
    write_json_atomic(cur / "map_vs_clicks.json", [
        {"clicks": k, "map50": m} for k, m in zip(metrics.get("steps", []),
                                                  metrics.get("map_vs_clicks", []))])
    return metrics


def preannotate_next(p: Project, n: int) -> Path | None:
    """After model n: pre-annotate batch n+1 and mirror it as the dvc stage output."""
    if n + 1 > n_batches(p):
        return None
    pre = preannotate(p, n + 1)
    out = p.layout.data / "next" / "preannotations.json"
    write_labels(pre, out)
    return out
