"""Experiments: orderings x pre-annotators x features, and the loop paper's Table 1.

    tinyloop sweep -C base --orderings random dissimilar --preannotators c3det plain \
        --features random-init simnet

Every cell of the grid is a full `simulate` run in its own project under `<base>/sweep/`
(params = the base project's params.yaml + the cell's overrides), so each cell is
versioned, resumable and reportable like any project. Cells with the same features share
the ingested pool and the embeddings (copied, computed once). Random and temporal orderings
do not look at the features, so they run once per pre-annotator and their row is repeated
for the other features (`same_as` names the cell that ran). The result is Table 1 of the
loop paper: cumulative WT and WB reduction % against fully manual labeling at IoU 0.5 and
0.7, one row per cell, written as sweep/table1.md and sweep/table1.json.
"""
from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

from prefect import flow

from flows.project.layout import ProjectLayout
from flows.accounting.workload import cumulative
from tinyloop.atomic import write_json_atomic, write_text_atomic

FEATURES = {  # name -> params overrides
    "random-init": {"features.extractor": "resnet18", "features.weights": "none"},
    "imagenet": {"features.extractor": "efficientnet_lite0", "features.weights": "imagenet"},
    "simnet": {"features.extractor": "simnet", "features.weights": "none"},
}




def _feature_free(name: str) -> bool:
    """An ordering that ignores the embeddings gives the same cell for every feature set."""
    from features.ordering import ordering
    return not ordering(name).uses_embeddings


def table1_row(layout: ProjectLayout) -> dict:
    """Cumulative WT/WB reduction % at IoU 0.5 and 0.7 over every finished batch."""
    entries: dict[str, list[dict]] = {"0.5": [], "0.7": []}
    for n in layout.batch_numbers():
        if not layout.workload(n).exists():
            continue
        w = json.loads(layout.workload(n).read_text())
        for iou, batches in entries.items():
            e = w.get(f"iou_{iou}", w if iou == "0.5" else None)
            if e is not None:
                batches.append(e)
    row = {}
    for iou, batches in entries.items():
        if batches:
            cum = cumulative(batches)
            row[f"WT@{iou}"] = cum["reduction_WT_pct"]
            row[f"WB@{iou}"] = cum["reduction_WB_pct"]
            row[f"time@{iou}"] = cum["reduction_seconds_pct"]
    return row


def format_table1(rows: list[dict]) -> str:
    cols = ["ordering", "preannotator", "features", "WT@0.5", "WB@0.5", "WT@0.7", "WB@0.7",
            "time@0.5"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join("-" if r.get(c) is None else str(r[c]) for c in cols)
                   + " |")
    return "\n".join(out)


def write_table1(out_dir: Path, rows: list[dict]) -> None:
    """sweep/table1.json and sweep/table1.md (with failed cells and reused rows noted)."""
    write_json_atomic(out_dir / "table1.json", rows)
    notes = "".join(f"\n- {r['ordering']}/{r['preannotator']}/{r['features']}: {r['error']}"
                    for r in rows if "error" in r)
    notes = "\n\nFailed cells:" + notes if notes else ""
    if any("same_as" in r for r in rows):
        notes += ("\n\nRandom and temporal orderings ignore the features: their rows for "
                  "further features repeat the cell that ran (`same_as` in table1.json).")
    write_text_atomic(out_dir / "table1.md", "# Table 1: workload reduction % vs fully "
                      "manual labeling\n\n" + format_table1(rows) + notes + "\n")


def cell_overrides(ordering: str, preannotator: str, features: str) -> dict:
    if features not in FEATURES:
        raise ValueError(f"unknown features {features!r}; choose from {sorted(FEATURES)}")
    return {"order.method": ordering, "flows.preannotator": preannotator,
            **FEATURES[features]}


@flow(name="sweep", log_prints=True)
def sweep(base: str, orderings: list[str], preannotators: list[str],
          features: list[str]) -> list[dict]:
    """Run every cell's `simulate` flow; write Table 1 (markdown + JSON) into base/sweep."""
    import yaml
    from flows.loop import prefect_env, simulate
    from flows.project.init import init_project
    base_layout = ProjectLayout(Path(base).resolve())
    params = yaml.safe_load(base_layout.params.read_text())
    source = params["data"]["source"]
    src = Path(source) if Path(source).is_absolute() else base_layout.root / source
    out_dir = base_layout.root / "sweep"
    rows, shared_pool, shared_features = [], None, {}
    ran: dict[tuple[str, str], dict] = {}  # (ordering, pre) -> row, feature-free orderings
    for ordering, pre, feat in itertools.product(orderings, preannotators, features):
        name = f"{ordering}-{pre}-{feat}"
        if _feature_free(ordering) and (ordering, pre) in ran:
            rows.append({**ran[ordering, pre], "features": feat,
                         "same_as": ran[ordering, pre]["cell"]})
            write_table1(out_dir, rows)
            continue
        root = out_dir / name
        fresh = not (root / "params.yaml").exists()
        layout = init_project(root, source=str(src))
        if fresh:
            shutil.copyfile(base_layout.params, layout.params)
            from flows.project.init import set_params
            set_params(layout.params, {"data.source": str(src),
                                       **cell_overrides(ordering, pre, feat)})
            if shared_pool is not None and not layout.pool.exists():
                shutil.copytree(shared_pool, layout.pool)
            if feat in shared_features and not layout.features.exists():
                shutil.copytree(shared_features[feat], layout.features)
        prefect_env(str(root))
        try:
            simulate(str(root))
            row = {"ordering": ordering, "preannotator": pre, "features": feat, "cell": name,
                   **table1_row(layout)}
            if _feature_free(ordering):
                ran[ordering, pre] = row
        except Exception as e:  # noqa: BLE001 - one failed cell (e.g. no ImageNet weights)
            row = {"ordering": ordering, "preannotator": pre, "features": feat,
                   "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        shared_pool = shared_pool or (layout.pool if layout.pool.exists() else None)
        if layout.features.exists():
            shared_features.setdefault(feat, layout.features)
        rows.append(row)
        print(f"{name}: {row}")
        write_table1(out_dir, rows)
    return rows
