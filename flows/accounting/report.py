"""The loop's report: per-batch workload table and plots, as HTML, markdown and JSON.

    reports/index.html    self-contained (plots embedded as base64 PNG, no CDN, no scripts)
    reports/report.md     the same table for a terminal or a pull request
    reports/summary.json  one row per batch (git-tracked DVC metrics; `tinyloop history`)
    reports/workload.csv  the same rows for `dvc plots`

Plots: WT/WB reduction per batch and cumulative, mAP@0.5 per iteration, the latest model's
mAP against the number of clicks. Reductions are against labeling every object by hand
(the loop paper's WT and WB; `seconds` adds the click and edit costs of the workload model).
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from c3det.threshold import read_min_score
from flows.project.layout import ProjectLayout
from flows.project.selection_record import batch_strategy, read_record
from flows.accounting.workload import cumulative
from tinyloop.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic

COLUMNS = [  # (key, header, format)
    ("batch", "batch", "{}"), ("images", "images", "{}"), ("objects", "objects", "{}"),
    ("clicks", "clicks", "{}"), ("accepted", "accepted", "{}"), ("added", "added", "{}"),
    ("deleted", "deleted", "{}"), ("moved", "moved", "{}"), ("relabeled", "relabeled", "{}"),
    ("WB", "WB", "{}"), ("WT", "WT s", "{:.0f}"), ("seconds", "time s", "{:.0f}"),
    ("wt_reduction", "WT red. %", "{:.1f}"), ("wt_reduction_cum", "WT red. cum %", "{:.1f}"),
    ("wb_reduction_cum", "WB red. cum %", "{:.1f}"),
    ("seconds_reduction_cum", "time red. cum %", "{:.1f}"),
    ("wt_reduction_cum_iou07", "WT red. cum % @0.7", "{:.1f}"), ("map50", "mAP@.5", "{:.3f}"),
    ("min_score", "shown from score", "{:.2f}"),  # flows.min_score auto only
    # order.select: the strategy that chose the batch, and what choosing it cost
    ("chosen_by", "chosen by", "{}"), ("select_s", "select s", "{:.1f}"),
    # simulator.missing click: how the added boxes were made, and what each kind cost
    ("drawn", "drawn", "{}"), ("drawn_seconds", "drawn s", "{:.0f}"),
    ("click_accepted", "click ok", "{}"), ("click_accepted_seconds", "click ok s", "{:.0f}"),
    ("click_fixed", "click fixed", "{}"), ("click_fixed_seconds", "click fixed s", "{:.0f}"),
    # ... and the time the same batches would have cost had every missing object been drawn
    ("seconds_drawn_reduction_cum", "time red. cum % if drawn", "{:.1f}"),
]
CLICK_MODE = ("drawn", "drawn_seconds", "click_accepted", "click_accepted_seconds",
              "click_fixed", "click_fixed_seconds", "seconds_drawn_reduction_cum")
OPTIONAL = {"min_score", "chosen_by", "select_s", *CLICK_MODE}  # left out when no row has a value


def batch_rows(layout: ProjectLayout) -> list[dict]:
    """One row per batch with workload.json: per-batch and cumulative numbers, and mAP."""
    rows, done = [], []
    selecting = any(layout.selection(n).exists() for n in layout.batch_numbers())
    for n in layout.batch_numbers():
        path = layout.workload(n)
        if not path.exists():
            continue
        w = json.loads(path.read_text(encoding="utf-8"))
        d = w.get("diff", {})
        done.append(w)
        cum = cumulative(done)
        cum07 = cumulative([b.get("iou_0.7", b) for b in done])
        metrics = {}
        if layout.metrics(n).exists():
            metrics = json.loads(layout.metrics(n).read_text(encoding="utf-8"))
        rows.append({
            "batch": n, "images": w["images"], "objects": w["objects"],
            "clicks": w.get("clicks", 0), **{k: d.get(k, 0) for k in
                                              ("accepted", "added", "deleted", "moved",
                                               "relabeled")},
            "WB": w["WB"], "WT": w["WT"], "seconds": w["seconds"],
            "wt_reduction": w.get("reduction_WT_pct"),
            "wb_reduction": w.get("reduction_WB_pct"),
            "wt_reduction_cum": cum["reduction_WT_pct"],
            "wb_reduction_cum": cum["reduction_WB_pct"],
            "seconds_reduction_cum": cum["reduction_seconds_pct"],
            "wt_reduction_cum_iou07": cum07["reduction_WT_pct"],
            "images_cum": cum["images"],
            "map50": metrics.get("map50"),
            "no_map_reason": metrics.get("no_map_reason"),
            "min_score": _shown_from(layout, n),
            **(chosen_by(layout, n) if selecting else {}),
            **click_mode(w, cum),
        })
    return rows


def chosen_by(layout: ProjectLayout, n: int) -> dict:
    """The strategy that chose batch n and the seconds its selection took (model n-1's
    record; the fixed order's name and no seconds without one)."""
    record = read_record(layout, n - 1) if n > 1 else None
    return {"chosen_by": batch_strategy(layout, n),
            "select_s": record.get("seconds") if record else None}


def click_mode(w: dict, cum: dict) -> dict:
    """The drawn / clicked-and-accepted / clicked-and-fixed counts and seconds of a batch
    whose missing objects were centre-clicked, and the cumulative time reduction had they
    been drawn (None otherwise: the columns stay hidden)."""
    clicked = w.get("click_accepted", 0) + w.get("click_fixed", 0)
    values = {**w, "seconds_drawn_reduction_cum": cum.get("reduction_seconds_if_drawn_pct")}
    return {k: (values.get(k) if clicked else None) for k in CLICK_MODE}


def _shown_from(layout: ProjectLayout, n: int) -> float | None:
    """The score from which batch n's model boxes were shown, when flows.min_score auto
    chose it for model n-1 (models/iter-NNN/threshold.json)."""
    return read_min_score(layout.model(n - 1)) if n >= 2 else None


def format_table(rows: list[dict], markdown: bool = False) -> str:
    """The per-batch workload table (plain text for the terminal, or markdown)."""
    columns = [c for c in COLUMNS
               if c[0] not in OPTIONAL or any(r.get(c[0]) is not None for r in rows)]
    heads = [h for _, h, _ in columns]
    cells = [[("-" if r.get(k) is None else f.format(r[k])) for k, _, f in columns]
             for r in rows]
    # say why mAP is "-" (no held-out images) and what to set
    notes = list(dict.fromkeys(f"mAP -: {r['no_map_reason']}" for r in rows
                               if r.get("no_map_reason")))
    if markdown:
        out = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        out += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(out + ["", *notes] if notes else out)
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(heads)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(heads), line(["-" * w for w in widths])] + [line(c) for c in cells]
                     + notes)


# --- plots -----------------------------------------------------------------------------------

def _figure_png(draw) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    draw(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def plot_reduction(rows: list[dict]) -> bytes:
    def draw(ax):
        b = [r["batch"] for r in rows]
        ax.bar(b, [r["wt_reduction"] or 0 for r in rows], color="#9ecae1",
               label="WT reduction, this batch")
        ax.plot(b, [r["wt_reduction_cum"] or 0 for r in rows], "o-", color="#08519c",
                label="WT reduction, cumulative")
        ax.plot(b, [r["seconds_reduction_cum"] or 0 for r in rows], "s--", color="#e6550d",
                label="time reduction incl. clicks, cumulative")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("batch")
        ax.set_ylabel("% less work than manual")
        ax.set_xticks(b)
        ax.legend(fontsize=8)
        ax.set_title("Annotation work saved")
    return _figure_png(draw)


def plot_map(rows: list[dict]) -> bytes:
    def draw(ax):
        pts = [(r["images_cum"], r["map50"]) for r in rows if r["map50"] is not None]
        if pts:
            ax.plot(*zip(*pts), "o-", color="#31a354")
            for (x, y), r in zip(pts, [r for r in rows if r["map50"] is not None]):
                ax.annotate(f"iter {r['batch']}", (x, y), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xlabel("labeled images")
        ax.set_ylabel("mAP@0.5 (held-out split, 0 clicks)")
        ax.set_title("Model quality per iteration")
    return _figure_png(draw)


def plot_map_vs_clicks(metrics: list[dict]) -> bytes:
    def draw(ax):
        for m in metrics:
            if m.get("steps") and len(m["steps"]) > 1:
                ax.plot(m["steps"], m["map_vs_clicks"], "o-", ms=3,
                        label=f"iter {m['batch']}")
        ax.set_xlabel("clicks per image")
        ax.set_ylabel("mAP@0.5")
        ax.set_title("mAP vs clicks")
        if ax.lines:
            ax.legend(fontsize=8)
    return _figure_png(draw)


# --- writing ---------------------------------------------------------------------------------

def build_report(layout: ProjectLayout, title: str = "tinyloop report",
                 notes: str = "") -> dict:
    """Write index.html, report.md, summary.json, workload.csv and img/*.png; returns paths."""
    rows = batch_rows(layout)
    metrics = [json.loads(layout.metrics(n).read_text(encoding="utf-8"))
               for n in layout.batch_numbers() if layout.metrics(n).exists()]
    plots = {"reduction": plot_reduction(rows), "map": plot_map(rows),
             "map_vs_clicks": plot_map_vs_clicks(metrics)}
    out = layout.reports
    for name, png in plots.items():
        write_bytes_atomic(out / "img" / f"{name}.png", png)
    last = rows[-1] if rows else {}
    summary = {"batches": rows,
               "wt_reduction_cum": last.get("wt_reduction_cum"),
               "wb_reduction_cum": last.get("wb_reduction_cum"),
               "seconds_reduction_cum": last.get("seconds_reduction_cum"),
               "map50": last.get("map50")}
    write_json_atomic(out / "summary.json", summary)
    keys = [k for k, _, _ in COLUMNS]
    csv = "\n".join([",".join(keys)] + [",".join("" if r.get(k) is None else str(r[k])
                                                 for k in keys) for r in rows]) + "\n"
    write_text_atomic(out / "workload.csv", csv)
    md = (f"# {title}\n\n{notes}\n\n{format_table(rows, markdown=True)}\n\n"
          "![reduction](img/reduction.png)\n![mAP](img/map.png)\n"
          "![mAP vs clicks](img/map_vs_clicks.png)\n")
    write_text_atomic(layout.report_md, md)
    write_text_atomic(layout.report_html, _html(title, notes, rows, plots))
    return {"html": layout.report_html, "markdown": layout.report_md,
            "summary": out / "summary.json", "rows": rows}


def _html(title: str, notes: str, rows: list[dict], plots: dict[str, bytes]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in COLUMNS)
    body = "".join("<tr>" + "".join(
        f"<td>{'-' if r.get(k) is None else html.escape(f.format(r[k]))}</td>"
        for k, _, f in COLUMNS) + "</tr>" for r in rows)
    imgs = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"></figure>' for name, png in plots.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;
text-align:right}}th{{background:#f0f0f0}}figure{{display:inline-block;margin:8px}}</style>
</head><body><h1>{html.escape(title)}</h1><p>{html.escape(notes)}</p>
<p>Reductions are against labeling every object by hand. WT and WB follow the loop paper
(additions cost T, removals T/2); "time" adds the click and box-edit costs.</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{imgs}</body></html>
"""


def prefect_artifacts(layout: ProjectLayout, rows: list[dict]) -> None:
    """Publish the table as Prefect artifacts (inside a flow or task run only)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    create_table_artifact(key="workload", table=[{k: r.get(k) for k, _, _ in COLUMNS}
                                                 for r in rows],
                          description=f"per-batch workload, {layout.root.name}")
    create_markdown_artifact(key="report", markdown=layout.report_md.read_text("utf-8"),
                             description=f"report of {layout.root.name}")


def batch_artifact(layout: ProjectLayout, row: dict) -> None:
    """One finished batch's workload row as a markdown artifact (key workload-batch-NNN),
    in the Prefect UI as soon as the batch is done (inside a flow or task run only)."""
    from prefect.artifacts import create_markdown_artifact
    create_markdown_artifact(key=f"workload-batch-{row['batch']:03d}",
                             markdown=format_table([row], markdown=True),
                             description=f"batch {row['batch']} of {layout.root.name}: "
                                         "workload against labeling every box by hand")


def write_png(path: Path, png: bytes) -> None:
    write_bytes_atomic(path, png)
