"""The selection step of an iteration (order.select; strategies in features/selection.py):
after model n is trained and evaluated, it ranks the unpublished rest of the pool and the
next batch is cut from that ranking.

    candidates  the rest of the pool in its current order: all of it when it holds at most
                order.select.score_all_below images, else the next candidate_factor x
                batch_size of them
    score       model n's every scored box on each candidate (strategies that read the
                model; the flow fans this out, cached on the checkpoint's hash), and for
                `work` its acceptance rate by score on the held-out images
                (models/iter-NNN/calibration.json, once)
    rank        the strategy's ranking; the candidates best first, then the rest of the
                pool in its order
    record      models/iter-NNN/selection.json: each candidate's score and the reason it
                was ranked there, the cost (seconds, images scored); versioned with model n
    apply       data/order.json: the batches after the last fixed one re-cut from the record

Human work is never moved: batches 1..n, and any later batch whose pre-annotations exist
(annotators may have seen it), keep their images and positions. The record is written
before order.json and applying it is idempotent, so a run killed anywhere in this step and
started again gives the same order: before the record, the scores come back from the cache
(same model, same candidates) and the strategies are deterministic; after it, the record is
applied again.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from features.selection import FIXED, Cost, ImageBoxes, SelectionRequest, rank, strategy
from flows import model_policy
from flows.faults import fault_point
from flows.project.selection_record import read_record
from tinyloop.annotations import ImageLabels
from tinyloop.atomic import write_json_atomic


@dataclass
class Plan:
    """What model n ranks: `ids` (the candidates) out of `rest` (the unpublished images in
    their current order); batches up to `fixed_through` never change."""
    n: int
    strategy: str
    fixed_through: int
    rest: list[str]
    ids: list[str]
    uses_model: bool
    needs_calibration: bool


def is_selecting(p) -> bool:
    return p.params.order.select.strategy != FIXED


def pending(p, n: int) -> bool:
    """Does iteration n still have to rank the rest? (no record yet, a batch left to cut)"""
    from flows.project.batches import n_batches
    return is_selecting(p) and n + 1 <= n_batches(p) and not p.layout.selection(n).exists()


def fixed_through(p, n: int) -> int:
    """The last batch that may not change: n, or a later batch with pre-annotations."""
    later = [b for b in p.layout.batch_numbers() if b > n and p.layout.preannotations(b).exists()]
    return max([n, *later])


def _current_order(p) -> dict[str, dict[str, int]]:
    from features.order import read_order
    return read_order(p.layout.order)


def rest_of_pool(order: dict[str, dict[str, int]], fixed: int) -> list[str]:
    """The images of batches after `fixed`, in their order."""
    return [i for _, i in sorted((e["position"], i) for i, e in order.items()
                                 if e["batch"] > fixed)]


def plan(p, n: int) -> Plan:
    sp, batch_size = p.params.order.select, p.params.order.batch_size
    fixed = fixed_through(p, n)
    rest = rest_of_pool(_current_order(p), fixed)
    ids = rest if len(rest) <= sp.score_all_below else rest[:sp.candidate_factor * batch_size]
    chosen = strategy(sp.strategy)
    return Plan(n, sp.strategy, fixed, rest, ids, chosen.uses_model,
                sp.strategy == "work" and not p.layout.calibration(n).exists())


def calibration_ids(p) -> list[str]:
    """The held-out images `work` calibrates on (flows.eval_max_images of them at most)."""
    from flows.project.pool_split import eval_set
    return [i.id for i in eval_set(p)]


# --- boxes as plain arrays ----------------------------------------------------------------------

def boxes_json(item: ImageLabels) -> dict:
    """A scored image as the JSON-able arrays the selection reads (a task's cached result)."""
    anns = item.annotations
    return {"id": item.id, "boxes": [[a.box.x1, a.box.y1, a.box.x2, a.box.y2] for a in anns],
            "scores": [float(a.score if a.score is not None else 1.0) for a in anns],
            "classes": [a.category for a in anns]}


def image_boxes(d: dict) -> ImageBoxes:
    import numpy as np
    return ImageBoxes(np.asarray(d["boxes"], np.float64).reshape(-1, 4),
                      np.asarray(d["scores"], np.float64), list(d["classes"]))


# --- rank and write -----------------------------------------------------------------------------

def select(p, n: int, scored: dict[str, dict] | None = None,
           held_out: dict[str, dict] | None = None, seconds_scoring: float = 0.0) -> dict:
    """Rank the rest with model n, write the record, re-cut order.json (see the module
    docstring). `scored` / `held_out`: image id -> boxes_json of model n's boxes on the
    candidates / the held-out images (computed here, one process, when not given)."""
    record = read_record(p.layout, n)
    if record is not None:  # ranked before a kill: apply it (again)
        apply_record(p, record)
        return summary(record)
    t0 = time.perf_counter()
    pl = plan(p, n)
    if not pl.ids:
        return {"candidates": 0, "note": f"no unpublished image left after batch "
                                         f"{pl.fixed_through}: nothing to select"}
    if pl.uses_model and scored is None:
        scored = score_here(p, n, pl.ids)
    if pl.needs_calibration:
        write_calibration(p, n, held_out if held_out is not None else
                          score_here(p, n, calibration_ids(p)))
    ranking = rank(request(p, pl, scored), pl.strategy)
    fault_point("select")
    record = make_record(p, pl, ranking, scored, seconds_scoring + time.perf_counter() - t0)
    write_json_atomic(p.layout.selection(n), record)
    apply_record(p, record)
    return summary(record)


def score_here(p, n: int, ids: list[str]) -> dict[str, dict]:
    """Model n's boxes on `ids`, in this process (the flow fans out instead)."""
    from flows.iteration_steps import predict_images
    from tinyloop.cocofile import read_labels
    by_id = read_labels(p.layout.manifest).by_id()
    items = predict_images(p, p.layout.model(n), [by_id[i] for i in ids])
    return {i.id: boxes_json(i) for i in items}


def request(p, pl: Plan, scored: dict[str, dict] | None) -> SelectionRequest:
    """Everything the strategy reads about the candidates."""
    sp, model = p.params.order.select, p.layout.model(pl.n)
    chosen = strategy(pl.strategy)
    req = SelectionRequest(list(pl.ids), p.params.order.batch_size, sp,
                           class_counts=labelled_class_counts(p, pl.n),
                           min_score=model_policy.min_score_for(p, model),
                           calibration=read_calibration(p, pl.n),
                           cost=Cost(p.params.workload.box_seconds,
                                     p.params.workload.removal_fraction))
    if chosen.uses_model:
        req.boxes = [image_boxes(scored[i]) for i in pl.ids]
    if chosen.uses_embeddings:
        req.vectors, req.labeled_vectors = embeddings(p, pl)
    return req


def labelled_class_counts(p, n: int) -> dict[str, int]:
    from flows.project.batches import labeled
    return dict(Counter(a.category for im in labeled(p, n) for a in im.annotations))


def embeddings(p, pl: Plan):
    """(candidates' vectors, vectors of every image in a fixed batch)."""
    import numpy as np
    from features.embed import load_store
    store = load_store(p.layout.features, mmap=False)
    if store is None:
        raise FileNotFoundError(f"{p.layout.features} holds no embeddings: strategy "
                                f"{pl.strategy} needs them; run the features step first")
    vectors, ids, _ = store
    row = {i: r for r, i in enumerate(ids)}
    missing = [i for i in pl.ids if i not in row]
    if missing:
        raise FileNotFoundError(f"{len(missing)} candidates have no embedding (e.g. "
                                f"{missing[:3]}); run the features step again")
    taken = [i for i, e in _current_order(p).items()
             if e["batch"] <= pl.fixed_through and i in row]
    vectors = np.asarray(vectors, np.float32)
    return vectors[[row[i] for i in pl.ids]], vectors[[row[i] for i in taken]]


def write_calibration(p, n: int, held_out: dict[str, dict]) -> None:
    """models/iter-NNN/calibration.json: model n's acceptance rate by score on the held-out
    images (nothing held out: no file, and `work` reads scores as probabilities)."""
    import numpy as np
    from features.select_work import calibrate, match_accepted
    from flows.project.pool_split import eval_set
    truth = {i.id: i for i in eval_set(p) if i.id in held_out}
    if not truth:
        return
    scores, accepted = [], []
    for image_id, labels in truth.items():
        pred = image_boxes(held_out[image_id])
        t_boxes = np.array([[a.box.x1, a.box.y1, a.box.x2, a.box.y2]
                            for a in labels.annotations]).reshape(-1, 4)
        scores.append(pred.scores)
        accepted.append(match_accepted(pred, t_boxes, [a.category for a in labels.annotations],
                                       p.params.workload.iou))
    cal = calibrate(np.concatenate(scores), np.concatenate(accepted),
                    p.params.order.select.calibration_bins)
    write_json_atomic(p.layout.calibration(n), {"images": len(truth), **cal.to_json()})


def read_calibration(p, n: int):
    from features.select_work import Calibration
    path = p.layout.calibration(n)
    return Calibration.from_json(json.loads(path.read_text())) if path.exists() else None


def make_record(p, pl: Plan, ranking, scored, seconds: float) -> dict:
    """The selection record: every candidate's rank, score and reason, the new order of the
    rest, the cost."""
    import math
    ranked = [pl.ids[r] for r in ranking.order]
    chosen = set(ranked)
    rows = []
    for k, r in enumerate(ranking.order):
        score = float(ranking.scores[r])
        rows.append({"id": pl.ids[r], "rank": k + 1,
                     "score": None if math.isnan(score) or math.isinf(score) else score,
                     "reason": ranking.reasons[r]})
    return {"iteration": pl.n, "strategy": pl.strategy,
            "model": str(p.layout.model(pl.n).relative_to(p.layout.root)),
            "fixed_through_batch": pl.fixed_through, "batch_size": p.params.order.batch_size,
            "rest": len(pl.rest), "candidates": len(pl.ids),
            "images_scored": sum(i in (scored or {}) for i in pl.ids),
            "calibration": _calibration_note(p, pl), "seconds": round(seconds, 3),
            "ranking": rows, "order": ranked + [i for i in pl.rest if i not in chosen]}


def _calibration_note(p, pl: Plan) -> str | None:
    """work: on what model n's acceptance rates were measured."""
    if pl.strategy != "work":
        return None
    path = p.layout.calibration(pl.n)
    if not path.exists():
        return "none (no held-out images): scores read as probabilities"
    return f"{json.loads(path.read_text())['images']} held-out images"


def apply_record(p, record: dict) -> None:
    """Re-cut order.json from the record: the batches up to its fixed one untouched, the
    rest in the record's order (images added to the pool since follow in their order)."""
    from features.order import cut_batches
    order = _current_order(p)
    fixed = record["fixed_through_batch"]
    rest = rest_of_pool(order, fixed)
    in_rest = set(rest)
    ranked = [i for i in record["order"] if i in in_rest]
    placed = set(ranked)
    new_rest = ranked + [i for i in rest if i not in placed]
    start = max((e["position"] for e in order.values() if e["batch"] <= fixed), default=-1) + 1
    batches = cut_batches(len(new_rest), record["batch_size"], record["batch_size"], fixed + 1)
    for k, (image_id, b) in enumerate(zip(new_rest, batches)):
        order[image_id] = {"position": start + k, "batch": int(b)}
    write_json_atomic(p.layout.order, order)


def summary(record: dict) -> dict:
    nxt = record["fixed_through_batch"] + 1
    head = [r["id"] for r in record["ranking"][:record["batch_size"]]]
    return {"strategy": record["strategy"], "candidates": record["candidates"],
            "images_scored": record["images_scored"], "seconds": record["seconds"],
            "next_batch": nxt, "next_ids": head}


# --- params check --------------------------------------------------------------------------------

def params_notes(layout, params) -> list[str]:
    """What `params check` says about order.select on this project's pool (nothing to
    select from when the pool holds no more than the first batch)."""
    sp, op = params.order.select, params.order
    if sp.strategy == FIXED:
        return []
    size = pool_size(layout)
    if size is None:
        return []
    if size <= op.first_batch_size:
        return [f"order.select.strategy {sp.strategy}: the pool holds {size} images, no more "
                f"than the first batch (order.first_batch_size {op.first_batch_size}): there "
                "is nothing for a model to select; lower first_batch_size or add images"]
    if size < op.first_batch_size + op.batch_size:
        return [f"order.select.strategy {sp.strategy}: the pool holds {size} images, fewer "
                f"than the first batch plus one batch ({op.first_batch_size} + "
                f"{op.batch_size}): the one model-chosen batch takes whatever is left"]
    return []


def pool_size(layout) -> int | None:
    """Images in the ordered pool (data/order.json), else in the manifest; None before import."""
    for path in (layout.order, layout.manifest):
        if Path(path).exists():
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
            return len(doc) if path == layout.order else len(doc.get("images", []))
    return None
