"""Datasets in the layouts users have them: VOC split lists, images without labels, a
dataset with no held-out split. Each test writes its small dataset into tmp_path."""
import json

from tinyloop.cocofile import read_labels
from tinyloop.ingest import import_dataset, write_pool
from tests.fixtures_formats import tiny_voc_params, voc_object, write_image, write_voc

PERSON = voc_object("Person", 10, 10, 20, 30)


def _voc_tree(root, ids, lists: dict[str, list[str]]):
    for image_id in ids:
        write_image(root / f"JPEGImages/{image_id}.png")
        write_voc(root / f"Annotations/{image_id}.xml", f"{image_id}.png", [PERSON])
    main = root / "ImageSets/Main"
    main.mkdir(parents=True)
    for name, listed in lists.items():
        (main / f"{name}.txt").write_text("".join(f"{i}\n" for i in listed))
    return tiny_voc_params(images_dir="JPEGImages", labels="Annotations",
                           split_dir="ImageSets/Main")


def _splits(labels):
    return {i.id: i.image.metadata.get("split") for i in labels}


def test_voc_train_val_trainval_test_is_the_normal_layout(tmp_path):
    ids = ["a", "b", "c", "d", "e"]
    params = _voc_tree(tmp_path, ids, {"train": ["a", "b"], "val": ["c"],
                                       "trainval": ["a", "b", "c"], "test": ["d", "e"],
                                       "Person_train": ["a  1", "b -1"]})
    labels, report = import_dataset(tmp_path, params, progress=False)
    assert report.problems == []
    assert _splits(labels) == {"a": "train", "b": "train", "c": "val", "d": "test",
                               "e": "test"}
    assert any("per-class list" in n and "Person_train.txt" in n for n in report.notes)


def test_ids_only_in_trainval_are_train_and_a_trainval_test_overlap_is_a_problem(tmp_path):
    params = _voc_tree(tmp_path, ["a", "b", "c"], {"trainval": ["a", "b", "c"],
                                                   "test": ["c"]})
    labels, report = import_dataset(tmp_path, params, progress=False)
    assert _splits(labels) == {"a": "train", "b": "train", "c": "test"}
    (p,) = report.problems
    assert p.file.endswith("trainval.txt") and "in both 'trainval' and 'test'" in p.message
    assert any("listed only in trainval.txt" in n for n in report.notes)


def test_an_image_without_labels_is_unlabeled_not_empty(tmp_path):
    for name in ("a", "b", "c", "empty"):
        write_image(tmp_path / f"images/{name}.png")
    write_voc(tmp_path / "labels/a.xml", "a.png", [PERSON])
    write_voc(tmp_path / "labels/empty.xml", "empty.png", [])  # labelled: no objects
    (tmp_path / "labels/c.xml").write_text("<annotation><object>")  # fails to parse
    labels, report = import_dataset(tmp_path, tiny_voc_params(), progress=False)
    assert report.unlabeled == 2 and report.labeled == 2
    assert "2 image(s) have no usable label file" in report.summary()
    out = tmp_path / "pool"
    write_pool(labels, report, out / "manifest.json", out / "gt.json")
    truth = read_labels(out / "gt.json")
    assert sorted(i.id for i in truth) == ["a", "empty"]
    manifest = {i.id: i.image.metadata for i in read_labels(out / "manifest.json")}
    assert manifest["b"]["labeled"] is False and manifest["c"]["labeled"] is False
    assert "labeled" not in manifest["empty"]


def test_a_source_without_labels_marks_nothing_unlabeled(tmp_path):
    write_image(tmp_path / "images/a.png")
    labels, report = import_dataset(tmp_path, tiny_voc_params(), progress=False)
    assert report.unlabeled == 0 and "labeled" not in labels.images[0].image.metadata


# --- the project level: pool, held-out images ----------------------------------------------

def _project(tmp_path, **overrides):
    """A VOC project of 20 images, 'u0'/'u1' without label files, no split lists."""
    from flows.project.init import init_project
    from flows.project.project import Project
    src = tmp_path / "data"
    for i in range(20):
        write_image(src / f"images/im{i:02d}.png")
        write_voc(src / f"labels/im{i:02d}.xml", f"im{i:02d}.png", [PERSON])
    for name in ("u0", "u1"):
        write_image(src / f"images/{name}.png")
    params = {"data.classes": ["Person", "Car"], "data.oriented_labels": None,
              "data.split_dir": None, "flows.versioning": False, **overrides}
    layout = init_project(tmp_path / "project", source=str(src), params_overrides=params)
    p = Project.open(layout.root)
    labels, report = import_dataset(p.source, p.params.data, progress=False)
    write_pool(labels, report, layout.manifest, layout.ground_truth, layout.import_report)
    return p


def test_unlabeled_images_stay_out_of_a_simulated_pool_and_of_the_truth(tmp_path):
    from flows.project import pool_split
    p = _project(tmp_path)
    assert {"u0", "u1"} <= {i.id for i in pool_split.pool(p)}  # people can label them
    pool_split.mark_simulated(p)
    pool = {i.id for i in pool_split.pool(p)}
    assert len(pool) == 20 and not {"u0", "u1"} & pool  # the simulator has no truth there


def test_no_held_out_split_says_so_and_a_fraction_holds_out_labelled_images(tmp_path):
    from flows.project import pool_split
    p = _project(tmp_path)
    assert pool_split.eval_set(p).images == []
    note = pool_split.held_out_note(p)
    assert "none is in split 'val'" in note and "none (22)" in note
    assert "flows.eval_fraction" in note and "flows.eval_split" in note
    p.params.flows.eval_fraction = 0.3
    held = {i.id for i in pool_split.eval_set(p)}
    assert 2 <= len(held) <= 12 and not {"u0", "u1"} & held
    assert not held & {i.id for i in pool_split.pool(p)}
    assert pool_split.held_out_note(p) is None
    assert held == pool_split.held_out_ids(p, read_labels(p.layout.manifest))  # stable


def test_eval_fraction_is_validated(tmp_path):
    import pytest
    from flows.project.params import load_params
    from tinyloop.params import ParamsError
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps({"flows": {"eval_fraction": 1.5}}))
    with pytest.raises(ParamsError, match="eval_fraction"):
        load_params(path)


# --- YOLO and DOTA as published ------------------------------------------------------------

def _yolo_params(**kw):
    return tiny_voc_params(format="yolo", **kw)


def _write_yolo(root, split, name, lines):
    write_image(root / f"images/{split}/{name}.png", size=(100, 50))
    path = root / f"labels/{split}/{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))


def test_yolo_with_only_a_data_yaml_takes_names_and_splits_from_it(tmp_path):
    _write_yolo(tmp_path, "train", "a", ["1 0.5 0.5 0.2 0.2"])
    _write_yolo(tmp_path, "val", "b", ["0 0.5 0.5 0.2 0.2"])
    (tmp_path / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnames:\n  0: Car\n  1: Person\n")
    labels, report = import_dataset(tmp_path, _yolo_params(), progress=False)
    assert report.problems == []
    by_id = labels.by_id()
    assert [a.category for a in by_id["a"].annotations] == ["Person"]  # index 1 of the yaml
    assert [a.category for a in by_id["b"].annotations] == ["Car"]
    assert _splits(labels) == {"a": "train", "b": "val"}
    assert any("class names from data.yaml: Car, Person" in n for n in report.notes)


def test_roboflow_layout_with_parent_relative_split_paths(tmp_path):
    for split, name in (("train", "a"), ("valid", "b")):
        write_image(tmp_path / f"{split}/images/{name}.png", size=(100, 50))
        (tmp_path / f"{split}/labels").mkdir(parents=True)
        (tmp_path / f"{split}/labels/{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "README.dataset.txt").write_text("exported from roboflow\n")
    (tmp_path / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\n"
                                        "nc: 1\nnames: ['Person']\n")
    labels, report = import_dataset(tmp_path, _yolo_params(images_dir=".", labels="."),
                                    progress=False)
    assert report.problems == [] and report.annotations == 2
    assert _splits(labels) == {"a": "train", "b": "val"}


def test_yolo_with_only_a_names_file(tmp_path):
    _write_yolo(tmp_path, "train", "a", ["0 0.5 0.5 0.2 0.2", "1 0.2 0.2 0.1 0.1"])
    (tmp_path / "obj.names").write_text("Car\nPerson\n")
    labels, report = import_dataset(tmp_path, _yolo_params(), progress=False)
    assert report.problems == []
    assert [a.category for a in labels.images[0].annotations] == ["Car", "Person"]


def test_yolo_without_class_names_is_an_error_that_asks_for_them(tmp_path):
    import pytest
    from tinyloop.ingest import DatasetError
    _write_yolo(tmp_path, "train", "a", ["0 0.5 0.5 0.2 0.2"])
    with pytest.raises(DatasetError, match="YOLO labels but no class names: write "
                                           "classes.txt"):
        import_dataset(tmp_path, _yolo_params(), progress=False)


def test_a_bad_yolo_line_costs_that_line_only(tmp_path):
    _write_yolo(tmp_path, "train", "a", ["0 0.5 0.5 0.2 0.2", "0 0.5 oops 0.2 0.2",
                                         "1 0.2 0.2 0.1 0.1"])
    (tmp_path / "classes.txt").write_text("Person\nCar\n")
    labels, report = import_dataset(tmp_path, _yolo_params(), progress=False)
    (p,) = report.problems
    assert p.file == "labels/train/a.txt" and "line 2" in p.message
    assert p.kind == "label line"
    assert [a.category for a in labels.images[0].annotations] == ["Person", "Car"]


DOTA = ("imagesource:GoogleEarth\ngsd:0.146\n"
        "10 10 30 10 30 20 10 20 Car 0\n"
        "40 5 50 5 60 5 70 5 Car 0\n"          # collinear: no area
        "52 22 60 28 55 34 47 28 Person 1\n")


def _dota_dataset(root):
    write_image(root / "images/a.png", size=(100, 50))
    (root / "labels").mkdir()
    (root / "labels/a.txt").write_text(DOTA)
    return tiny_voc_params(format="dota")


def test_a_collinear_dota_polygon_is_one_problem_and_the_rest_is_kept(tmp_path):
    labels, report = import_dataset(tmp_path, _dota_dataset(tmp_path), progress=False)
    (p,) = report.problems
    assert p.file == "labels/a.txt" and "line 4" in p.message and "collinear" in p.message
    assert [a.category for a in labels.images[0].annotations] == ["Car", "Person"]


def test_dota_import_then_export_gives_back_the_same_file(tmp_path):
    from tinyloop.formats.dota import export_dota
    from tinyloop.cocofile import write_labels
    src = tmp_path / "src"
    src.mkdir()
    labels, _ = import_dataset(src, _dota_dataset(src), progress=False)
    written = tmp_path / "pool.json"
    write_labels(labels, written)  # through the project's labels file, as `export` reads it
    export_dota(read_labels(written), tmp_path / "out")
    good = [line for line in DOTA.splitlines() if "40 5 50 5" not in line]
    assert (tmp_path / "out/a.txt").read_text().splitlines() == good


def test_an_unsplit_dataset_exports_a_valid_yolo_dataset(tmp_path):
    import yaml
    from tinyloop.formats.yolo import export_yolo_dataset
    write_image(tmp_path / "src/images/a.png")
    write_voc(tmp_path / "src/labels/a.xml", "a.png", [PERSON])
    labels, _ = import_dataset(tmp_path / "src", tiny_voc_params(), progress=False)
    data = yaml.safe_load(export_yolo_dataset(labels, tmp_path / "src",
                                              tmp_path / "yolo").read_text())
    for split in ("train", "val"):
        assert (tmp_path / "yolo" / data[split] / "a.png").exists()
    assert data["names"] == {0: "Person", 1: "Car"}


def test_holding_out_more_images_reorders_before_any_batch_and_stops_after(tmp_path):
    import pytest
    from flows import prepare_steps
    from flows.project import batches, pool_split
    p = _project(tmp_path, **{"features.image_size": 32, "features.num_workers": 0,
                              "order.first_batch_size": 4, "order.batch_size": 4})
    prepare_steps.features(p)
    prepare_steps.order(p)
    assert set(batches.read_order(p)) == {i.id for i in pool_split.pool(p)}
    p.params.flows.eval_fraction = 0.3  # some ordered images become held out
    held = pool_split.held_out_ids(p, read_labels(p.layout.manifest))
    prepare_steps.order(p)
    assert held and not held & set(batches.read_order(p))
    p.params.flows.eval_fraction = 0.6
    p.layout.batch_dir(1).mkdir(parents=True)
    with pytest.raises(RuntimeError, match="no longer in the pool.*Revert that change"):
        prepare_steps.order(p)
