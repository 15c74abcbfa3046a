"""The report: cumulative reductions computed right, HTML self-contained, markdown table."""
from __future__ import annotations

import base64
import json
import re

from flows.project.layout import ProjectLayout
from flows.accounting.report import batch_rows, build_report, format_table


def write_batch(lay: ProjectLayout, n: int, objects: int, wb: int, wt: float, seconds: float,
                map50: float | None) -> None:
    lay.batch_dir(n).mkdir(parents=True, exist_ok=True)
    w = {"images": 4, "objects": objects, "clicks": 3 * (n - 1), "WB": wb, "WT": wt,
         "seconds": seconds, "manual_seconds": objects * 7.0,
         "reduction_WT_pct": round(100 * (1 - wt / (objects * 7.0)), 2),
         "diff": {"accepted": objects - wb, "added": wb, "deleted": 0, "moved": 0,
                  "relabeled": 0},
         "iou_0.7": {"WT": wt + 7.0, "manual_seconds": objects * 7.0}}
    lay.workload(n).write_text(json.dumps(w))
    if map50 is not None:
        lay.model_dir(n).mkdir(parents=True, exist_ok=True)
        lay.metrics(n).write_text(json.dumps({"batch": n, "map50": map50, "steps": [0, 1, 3],
                                              "map_vs_clicks": [map50, map50 + .1, .5]}))


def test_cumulative_numbers_and_self_contained_html(tmp_path):
    lay = ProjectLayout(tmp_path)
    write_batch(lay, 1, objects=10, wb=10, wt=70.0, seconds=70.0, map50=0.1)   # from scratch
    write_batch(lay, 2, objects=10, wb=4, wt=21.0, seconds=35.0, map50=0.2)
    write_batch(lay, 3, objects=20, wb=2, wt=14.0, seconds=30.0, map50=None)
    rows = batch_rows(lay)
    assert [r["batch"] for r in rows] == [1, 2, 3]
    # cumulative WT: (70 + 21 + 14) / (40 * 7) -> 62.5 % saved; WB: 16 of 40 -> 60 %
    assert rows[-1]["wt_reduction_cum"] == 62.5
    assert rows[-1]["wb_reduction_cum"] == 60.0
    assert rows[1]["wt_reduction_cum"] == round(100 * (1 - 91 / 140), 2)
    assert rows[-1]["seconds_reduction_cum"] == round(100 * (1 - 135 / 280), 2)
    assert rows[-1]["wt_reduction_cum_iou07"] == round(100 * (1 - 126 / 280), 2)
    assert rows[0]["map50"] == 0.1 and rows[2]["map50"] is None

    out = build_report(lay, title="t")
    page = out["html"].read_text()
    assert not re.search(r"(src|href)=[\"']https?:", page) and "<script" not in page
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) == 3 and all(base64.b64decode(p)[:4] == b"\x89PNG" for p in pngs)
    assert "62.5" in page
    md = out["markdown"].read_text()
    assert md.count("\n| ") >= 4 and "62.5" in md
    summary = json.loads((lay.reports / "summary.json").read_text())
    assert summary["wt_reduction_cum"] == 62.5 and len(summary["batches"]) == 3
    assert (lay.reports / "workload.csv").read_text().count("\n") == 4
    text = format_table(rows)
    assert text.splitlines()[0].split()[0] == "batch" and len(text.splitlines()) == 5


def test_empty_project_gives_an_empty_report(tmp_path):
    out = build_report(ProjectLayout(tmp_path))
    assert out["rows"] == [] and out["html"].exists()


def test_table1_row_reduces_at_both_ious(tmp_path):
    from flows.sweep import cell_overrides, format_table1, table1_row
    lay = ProjectLayout(tmp_path)
    for n, (wt5, wb5, wt7, wb7) in enumerate([(70.0, 10, 70.0, 10), (14.0, 2, 28.0, 4)], 1):
        lay.batch_dir(n).mkdir(parents=True)
        lay.workload(n).write_text(json.dumps({
            "iou_0.5": {"WT": wt5, "WB": wb5, "seconds": wt5, "manual_seconds": 70.0,
                        "objects": 10},
            "iou_0.7": {"WT": wt7, "WB": wb7, "seconds": wt7, "manual_seconds": 70.0,
                        "objects": 10}}))
    row = table1_row(lay)
    assert row["WT@0.5"] == 40.0 and row["WB@0.5"] == 40.0      # 84/140, 12/20
    assert row["WT@0.7"] == 30.0 and row["WB@0.7"] == 30.0      # 98/140, 14/20
    table = format_table1([{"ordering": "random", "preannotator": "c3det",
                            "features": "simnet", **row}])
    assert "| random | c3det | simnet | 40.0 | 40.0 | 30.0 | 30.0 |" in table
    assert cell_overrides("dissimilar", "plain", "simnet")["features.extractor"] == "simnet"


def test_shown_from_score_column_appears_only_with_auto_thresholds(tmp_path):
    lay = ProjectLayout(tmp_path)
    for n in (1, 2):
        write_batch(lay, n, objects=10, wb=10, wt=70.0, seconds=70.0, map50=0.1)
    assert "shown from score" not in format_table(batch_rows(lay))
    lay.threshold(1).write_text(json.dumps({"min_score": 0.35}))  # model 1 -> batch 2
    rows = batch_rows(lay)
    assert [r["min_score"] for r in rows] == [None, 0.35]
    lines = format_table(rows).splitlines()
    assert "shown from score" in lines[0] and lines[-1].endswith("0.35")
    assert lines[-2].endswith("-")


def test_the_table_says_why_map_is_missing(tmp_path):
    lay = ProjectLayout(tmp_path)
    write_batch(lay, 1, objects=10, wb=10, wt=70.0, seconds=70.0, map50=None)
    lay.model_dir(1).mkdir(parents=True, exist_ok=True)
    lay.metrics(1).write_text(json.dumps({"batch": 1, "no_map_reason": "no held-out images"}))
    rows = batch_rows(lay)
    assert rows[0]["map50"] is None
    assert format_table(rows).splitlines()[-1] == "mAP -: no held-out images"
    assert format_table(rows, markdown=True).endswith("mAP -: no held-out images")
