"""Rerunning a project: `demo --stats-only` then the loop, params.yaml `data` edits rebuild
the pool (and features and order) or are refused once annotation started, import problems
stop prepare unless --keep-going, and the demo's schedule scales with image size."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from flows.project.init import init_project, set_params
from tests.fixtures_flows import light_demo_params

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "hit-uav"
FAST = {"features.image_size": 32, "features.batch_size": 8,
        "order.first_batch_size": 4, "order.batch_size": 4}


def copy_sample(dst: Path, n_train: int = 8, n_val: int = 4) -> Path:
    """A small copy of the bundled HIT-UAV sample: images, both label dirs, split lists."""
    lists = SAMPLE / "ImageSets" / "Main"
    splits = {"train": lists.joinpath("train.txt").read_text().split()[:n_train],
              "val": lists.joinpath("val.txt").read_text().split()[:n_val]}
    (dst / "ImageSets" / "Main").mkdir(parents=True)
    for split, ids in splits.items():
        (dst / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for i in ids:
            for sub, ext in (("images", ".jpg"), ("labels", ".xml"), ("labels_rotated", ".xml")):
                (dst / sub).mkdir(exist_ok=True)
                shutil.copyfile(SAMPLE / sub / f"{i}{ext}", dst / sub / f"{i}{ext}")
    return dst


def new_project(tmp: Path, source: Path, **overrides) -> Path:
    return init_project(tmp / "project", source=str(source), params_overrides={
        **light_demo_params(), **FAST, "flows.versioning": False, **overrides}).root


def git_files(root: Path) -> list[str]:
    return subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True,
                          check=True).stdout.split()


def prepare_steps(root: Path):
    """ingest -> features -> order, in this process (what the prepare flow computes)."""
    from flows.prepare_steps import features, ingest, order
    from flows.project.project import Project
    p = Project.open(root)
    ingest(p)
    features(p)
    order(p)
    return Project.open(root)


def stored_ids(p) -> list[str]:
    return json.loads(p.layout.embedding_ids.read_text())["ids"]


# --- 1. demo --stats-only, then the loop -----------------------------------------------------

@pytest.mark.prefect
def test_stats_only_then_prepare_versions_the_pool_with_dvc_not_git(
        tmp_path, prefect_harness, capsys):
    from flows.cli import main
    from flows.loop import prepare, with_runner
    source, root = copy_sample(tmp_path / "data"), tmp_path / "demo"
    for _ in range(2):  # the second run re-inits the project, as `tinyloop demo` does
        assert main(["demo", "--stats-only", "-C", str(root), "--source", str(source)]) == 0
    assert "images are 640x512 (median)" in capsys.readouterr().out
    set_params(root / "params.yaml", FAST)
    assert not [f for f in git_files(root) if f.startswith("data/")]
    with_runner(prepare, str(root))(str(root))  # failed: "data/pool is already tracked by SCM"
    assert not [f for f in git_files(root) if f.startswith("data/")]
    lock = (root / "dvc.lock").read_text()
    assert "path: data/pool" in lock and "dvc.lock" in git_files(root)


def test_versioning_untracks_a_pool_that_an_older_init_committed_to_git(tmp_path):
    """Projects broken by the old `git add -A` are repaired before DVC records the pool."""
    from flows.project.layout import ProjectLayout
    from flows.project.versioning import commit_prepared, run
    lay = ProjectLayout(new_project(tmp_path, copy_sample(tmp_path / "data", 2, 1)))
    lay.pool.mkdir(parents=True)
    lay.manifest.write_text("{}")
    run(lay, "git", "add", "-f", str(lay.manifest))
    run(lay, "git", "commit", "-q", "-m", "the old init")
    lay.dvc_yaml.write_text("stages:\n  ingest:\n    cmd: 'true'\n    outs:\n      - data/pool\n")
    commit_prepared(lay, ["ingest"], "prepare")
    assert "data/pool/manifest.json" not in git_files(lay.root)
    assert lay.manifest.read_text() == "{}" and "data/pool" in (lay.root / "dvc.lock").read_text()


# --- 2. params.yaml `data` edits ------------------------------------------------------------

def test_data_edit_before_annotation_rebuilds_pool_features_and_order(tmp_path):
    from flows.project.pool_import import import_pool
    from tinyloop.cocofile import read_labels
    root = new_project(tmp_path, copy_sample(tmp_path / "data"))
    p = prepare_steps(root)
    embedded = p.layout.embeddings.stat().st_mtime_ns
    assert "Bicycle" in read_labels(p.layout.ground_truth).categories

    # a class becomes an ignore class: same images, other labels -> same embeddings
    set_params(p.layout.params, {"data.classes": ["Person", "Car", "OtherVehicle"],
                                 "data.ignore_classes": ["DontCare", "Bicycle"]})
    p = steps_open(root)
    result = import_pool(p)
    assert result.imported and any(c.startswith("data.classes:") for c in result.changes)
    gt = read_labels(p.layout.ground_truth)
    assert gt.categories == ["Person", "Car", "OtherVehicle"]
    assert {a.category for i in gt for a in i.annotations} <= set(gt.categories)
    assert not p.layout.order.exists()  # rebuilt by the order step
    p = prepare_steps(root)
    assert p.layout.embeddings.stat().st_mtime_ns == embedded  # nothing to re-embed
    assert set(json.loads(p.layout.order.read_text())) == {i.id for i in pool_of(p)}

    # another source with fewer images: the images that left drop out of features and order
    smaller = copy_sample(tmp_path / "smaller", 5, 2)
    set_params(p.layout.params, {"data.source": str(smaller)})
    p = prepare_steps(root)
    kept = {i.id for i in read_labels(p.layout.manifest)}
    assert len(kept) == 7
    assert set(stored_ids(p)) == {i.id for i in pool_of(p)} <= kept
    assert set(json.loads(p.layout.order.read_text())) == {i.id for i in pool_of(p)}


def pool_of(p):
    from flows.project import pool_split
    return pool_split.pool(p)


def steps_open(root):
    from flows.project.project import Project
    return Project.open(root)


def test_data_edit_after_annotation_started_is_refused_and_changes_nothing(tmp_path):
    from flows.project.pool_import import PoolChanged, import_pool
    source = copy_sample(tmp_path / "data", 4, 2)
    # the sample's four classes, though this slice holds no Bicycle (init would detect three)
    root = new_project(tmp_path, source, **{
        "data.classes": ["Person", "Car", "Bicycle", "OtherVehicle"],
        "data.ignore_classes": ["DontCare"]})
    p = prepare_steps(root)
    p.layout.batch_dir(1).mkdir(parents=True)
    p.layout.preannotations(1).write_text("{}")  # batch 1 handed to the annotators
    pool_files = {f.name: f.read_bytes() for f in p.layout.pool.iterdir()}
    order = p.layout.order.read_bytes()

    set_params(p.layout.params, {"data.classes": ["Person", "Car", "OtherVehicle"],
                                 "data.ignore_classes": ["DontCare", "Bicycle"]})
    with pytest.raises(PoolChanged) as e:
        import_pool(steps_open(root))
    message = str(e.value)
    assert "data.classes" in message and "001" in message
    assert "revert" in message and "tinyloop init NEWDIR" in message
    assert {f.name: f.read_bytes() for f in p.layout.pool.iterdir()} == pool_files
    assert p.layout.order.read_bytes() == order

    # a `data` edit that leaves the pool as it is goes through (only the record changes)
    set_params(p.layout.params, {"data.classes": ["Person", "Car", "Bicycle", "OtherVehicle"],
                                 "data.ignore_classes": ["DontCare"],
                                 "data.verify_images": "header"})
    result = import_pool(steps_open(root))
    assert result.imported and result.changes == []
    assert p.layout.manifest.read_bytes() == pool_files["manifest.json"]
    assert not import_pool(steps_open(root)).imported  # and now it is up to date

    # new images in the source: appended after the existing batches, positions kept
    new_id = (SAMPLE / "ImageSets/Main/train.txt").read_text().split()[10]
    for sub, ext in (("images", ".jpg"), ("labels", ".xml"), ("labels_rotated", ".xml")):
        shutil.copyfile(SAMPLE / sub / f"{new_id}{ext}", source / sub / f"{new_id}{ext}")
    with (source / "ImageSets/Main/train.txt").open("a") as fh:
        fh.write(new_id + "\n")
    result = import_pool(steps_open(root))
    assert result.imported and "1 added, 0 removed, 0 with other" in result.changes[-1]
    before = json.loads(order)
    p = prepare_steps(root)
    after = json.loads(p.layout.order.read_text())
    assert {k: after[k] for k in before} == before
    assert after[new_id]["batch"] > max(v["batch"] for v in before.values())


# --- 3. import problems ---------------------------------------------------------------------

def corrupt_one_image(source: Path) -> str:
    victim = sorted((source / "images").iterdir())[0]
    victim.write_bytes(b"not a jpeg")
    return victim.name


def test_prepare_cli_prints_the_summary_and_stops_on_problems(tmp_path, capsys):
    from flows.cli import main
    source = copy_sample(tmp_path / "data", 4, 2)
    bad = corrupt_one_image(source)
    root = new_project(tmp_path, source)
    assert main(["prepare", "-C", str(root)]) == 1
    out, err = capsys.readouterr()
    assert "1 problem(s)" in out and bad in out
    assert "import_report.json" in err and "--keep-going" in err and "Traceback" not in err
    report = json.loads((root / "data" / "pool" / "import_report.json").read_text())
    assert len(report["problems"]) == 1 and not (root / "data" / "pool" / "manifest.json").exists()


@pytest.mark.prefect
def test_prepare_flow_fails_naming_the_report_unless_keep_going(tmp_path, prefect_harness):
    from flows.loop import prepare, with_runner
    from flows.project.pool_import import ImportProblems
    from tinyloop.cocofile import read_labels
    source = copy_sample(tmp_path / "data", 4, 2)
    bad = corrupt_one_image(source)
    root = str(new_project(tmp_path, source))
    with pytest.raises(ImportProblems, match=r"import_report\.json.*--keep-going"):
        with_runner(prepare, root)(root)
    with_runner(prepare, root)(root, keep_going=True)
    assert len(read_labels(Path(root) / "data" / "pool" / "manifest.json").images) == 5
    with_runner(prepare, root)(root)  # accepted once: a rerun does not stop again

    shutil.copyfile(SAMPLE / "images" / bad, source / "images" / bad)  # the image is fixed
    with_runner(prepare, root)(root)
    p = steps_open(root)
    assert len(read_labels(p.layout.manifest).images) == 6
    assert set(stored_ids(p)) == {i.id for i in pool_of(p)} == set(
        json.loads(p.layout.order.read_text()))


# --- 4. the demo's schedule and image size --------------------------------------------------

def test_demo_keeps_hituav_frames_at_full_size_and_scales_large_photos():
    from flows.commands.demo import DEMO_PARAMS, describe_scale, scale_for_images
    assert scale_for_images(640, 512) == {} and scale_for_images(1024, 768) == {}
    big = scale_for_images(4000, 2250)
    assert big["c3det.image_scale"] == 0.256  # 4000 px -> 1024 px at the network
    assert big["c3det.train.crop_size"] * 0.256 == pytest.approx(
        DEMO_PARAMS["c3det.train.crop_size"], abs=1)
    assert big["tiling.size"] >= 4000 and 0 < big["tiling.stride"] <= big["tiling.size"]
    assert scale_for_images(2250, 4000) == big  # portrait the same
    line = describe_scale(4000, 2250, big["c3det.image_scale"])
    assert "4000x2250" in line and "0.256" in line and "1024x576" in line
    assert "native resolution" in describe_scale(640, 512, 1.0)
