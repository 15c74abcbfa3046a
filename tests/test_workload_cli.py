"""`tinyloop workload BATCH` on a project with two corrected batches."""
from __future__ import annotations

import json

from flows.cli import main
from flows.project.layout import ProjectLayout
from tinyloop.cocofile import write_labels

from tests.test_workload_diff import hand_made


def project(tmp_path):
    layout = ProjectLayout(tmp_path)
    pre, final = hand_made()
    write_labels(final, layout.labels(1))            # batch 1: from scratch
    write_labels(pre, layout.preannotations(2))
    write_labels(final, layout.labels(2))
    return layout


def test_cli_prints_diff_and_workload_with_cumulative(tmp_path, capsys):
    project(tmp_path)
    assert main(["workload", "2", "-C", str(tmp_path), "--images"]) == 0
    out = capsys.readouterr().out
    assert "accepted" in out and "IoU 0.7" in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert lines["accepted"] == ["2", "1"] and lines["moved"] == ["1", "2"]
    assert lines["relabeled"] == ["1", "1"] and lines["added"] == ["1", "1"]
    assert "WB 11 of 10 boxes" in out                 # 5 (batch 1) + 6
    assert "img" in lines                             # the per-image table


def test_cli_json_and_write(tmp_path, capsys):
    layout = project(tmp_path)
    assert main(["workload", "2", "-C", str(tmp_path), "--json", "--write"]) == 0
    w = json.loads(capsys.readouterr().out)
    assert (w["WB"], w["WT"]) == (6, 31.5)
    assert json.loads(layout.workload(2).read_text())["WB"] == 6


def test_cli_names_the_missing_file(tmp_path, capsys):
    assert main(["workload", "3", "-C", str(tmp_path)]) == 1
    assert "labels.json" in capsys.readouterr().err
