"""The data commands end to end on the bundled sample: ingest, stats, export, convert, demo;
bad input ends in a report and exit status 1, never a traceback."""
import json
from pathlib import Path

import pytest

from flows.cli import main
from tinyloop.cocofile import read_labels
from tests.fixtures_formats import voc_object, write_image, write_voc

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "hit-uav"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    if not (SAMPLE / "images").is_dir():
        pytest.skip("bundled sample missing")
    root = tmp_path_factory.mktemp("proj")
    rc = main(["--params", str(root / "params.yaml"), "ingest", "--project", str(root),
               "--source", str(SAMPLE), "--no-progress"])
    assert rc == 0
    return root


def test_ingest_writes_pool(project):
    gt = read_labels(project / "data/pool/ground_truth.json")
    manifest = read_labels(project / "data/pool/manifest.json")
    assert len(gt) == len(manifest) >= 50
    assert sum(len(i.annotations) for i in manifest) == 0
    assert sum(len(i.annotations) for i in gt) > 0
    assert json.loads((project / "data/pool/import_report.json").read_text())["problems"] == []


def test_stats_table_and_json(project, capsys):
    assert main(["--params", str(project / "params.yaml"), "stats", "--project",
                 str(project)]) == 0
    out = capsys.readouterr().out
    assert "<12" in out and "12-20" in out and "20-32" in out and ">32" in out
    assert "DontCare" in out and "train" in out and "val" in out
    assert main(["stats", str(project / "data/pool/ground_truth.json"), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert sum(stats["size_buckets"].values()) == stats["objects"] == \
        sum(stats["class_counts"].values())


@pytest.mark.parametrize("fmt", ["voc", "rolabelimg", "yolo", "dota", "coco",
                                 "fiftyone-coco", "yolo-dataset"])
def test_export_every_format(project, tmp_path, fmt):
    out = tmp_path / fmt
    assert main(["--params", str(project / "params.yaml"), "export", "--format", fmt,
                 "--out", str(out), "--project", str(project)]) == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    if fmt == "yolo-dataset":
        assert (out / "data.yaml").exists() and list((out / "labels/val").glob("*.txt"))


def test_convert_voc_to_dota(tmp_path, capsys):
    if not (SAMPLE / "images").is_dir():
        pytest.skip("bundled sample missing")
    out = tmp_path / "dota"
    assert main(["--params", str(tmp_path / "none.yaml"), "convert", str(SAMPLE), str(out),
                 "--from", "rolabelimg", "--labels", "labels_rotated", "--to", "dota"]) == 0
    assert len(list(out.glob("*.txt"))) == len(list((SAMPLE / "images").glob("*.jpg")))


def test_ingest_with_problems_exits_1_and_writes_only_the_report(tmp_path, capsys):
    src = tmp_path / "src"
    write_image(src / "images/a.png")
    write_voc(src / "labels/a.xml", "a.png", [voc_object("Truck", 1, 1, 5, 5)])
    proj = tmp_path / "proj"
    args = ["--params", str(tmp_path / "none.yaml"), "ingest", "--project", str(proj),
            "--source", str(src), "--no-progress"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "unknown class 'Truck'" in captured.out and "--keep-going" in captured.err
    assert (proj / "data/pool/import_report.json").exists()
    assert not (proj / "data/pool/manifest.json").exists()
    assert main(args + ["--keep-going"]) == 0
    assert len(read_labels(proj / "data/pool/manifest.json")) == 1


def test_missing_source_is_an_error_not_a_traceback(tmp_path, capsys):
    assert main(["--params", str(tmp_path / "none.yaml"), "ingest", "--project",
                 str(tmp_path), "--source", str(tmp_path / "nope")]) == 1
    assert "dataset directory not found" in capsys.readouterr().err


def test_demo_prints_statistics(tmp_path, capsys):
    if not (SAMPLE / "images").is_dir():
        pytest.skip("bundled sample missing")
    assert main(["--params", str(tmp_path / "none.yaml"), "demo", "--stats-only",
                 "--project", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and "Person" in out and "20-32" in out
    assert (tmp_path / "data/pool/ground_truth.json").exists()


def test_ingest_refuses_to_replace_the_pool_under_annotated_batches(tmp_path, capsys):
    (tmp_path / "data/batches/001").mkdir(parents=True)
    rc = main(["--params", str(tmp_path / "params.yaml"), "ingest", "--project",
               str(tmp_path), "--source", str(SAMPLE), "--no-progress"])
    assert rc == 1 and not (tmp_path / "data/pool").exists()
    assert "has annotated batches" in capsys.readouterr().err
