"""params.yaml validation: every bad key or value is named with its path."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.project.params import Params, load_params
from tinyloop.params import ParamsError, to_dict

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, doc) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_repository_params_file_is_valid():
    params = load_params(ROOT / "params.yaml")
    assert params.data.source == "data/sample/hit-uav"


def test_defaults_equal_the_shipped_params_file():
    """params.yaml documents the defaults; a drift between the two misleads users."""
    shipped = to_dict(load_params(ROOT / "params.yaml", on_this_machine=False))
    defaults = to_dict(Params())
    for section, values in shipped.items():
        assert values == defaults[section], f"params.yaml section {section} != defaults"


@pytest.mark.parametrize("doc, message", [
    ({"dataa": {}}, r"dataa: unknown key \(did you mean 'data'\?\)"),
    ({"tiling": {"size": "big"}}, "tiling.size: expected a whole number, got 'big'"),
    ({"tiling": {"size": 256, "stride": 512}}, r"tiling: stride \(512\) must be in 1..size"),
    ({"data": {"format": "pascal"}}, "data.format: expected one of 'voc', "),
    ({"data": {"classes": "Person"}}, "data.classes: expected a list"),
    ({"data": {"classes": ["A"], "ignore_classes": ["A"]}}, "cannot be both a class"),
    ({"project": {"seed": True}}, "project.seed: expected a whole number, got True"),
    (["not", "a", "mapping"], "expected a mapping"),
    ({"flows": {"min_score": 1.5}}, r"min_score must be in \[0, 1\] or auto, got 1.5"),
    ({"flows": {"min_score": "best"}}, "flows.min_score: expected a number or one of 'auto', got 'best'"),
])
def test_bad_values_are_named(tmp_path, doc, message):
    with pytest.raises(ParamsError, match=message):
        load_params(write(tmp_path, doc))


def test_min_score_takes_a_number_or_auto(tmp_path):
    assert load_params(write(tmp_path, {"flows": {"min_score": "auto"}})).flows.min_score == "auto"
    assert load_params(write(tmp_path, {"flows": {"min_score": 0}})).flows.min_score == 0.0


def test_missing_file_says_how_to_create_one(tmp_path):
    with pytest.raises(ParamsError, match="tinyloop init"):
        load_params(tmp_path / "nope.yaml")


def test_cli_check_exits_1_with_the_message(tmp_path):
    path = write(tmp_path, {"tiling": {"min_visible": 2}})
    out = subprocess.run([sys.executable, "-m", "flows.cli", "--params", str(path), "params",
                          "check"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1
    assert "tiling: min_visible (2.0) must be in (0, 1]" in out.stderr


@pytest.mark.parametrize("doc, message", [
    # a wrong type, named by its full key path
    ({"c3det": {"train": {"epochs": "many"}}},
     "params.yaml: c3det.train.epochs: expected a whole number, got 'many'"),
    ({"c3det": {"eval": {"click_steps": [0, "x"]}}},
     r"c3det.eval.click_steps\[1\]: expected a whole number, got 'x'"),
    # an unknown key: the closest known key is suggested
    ({"c3det": {"train": {"epochz": 3}}},
     r"c3det.train.epochz: unknown key \(did you mean 'epochs'\?\)"),
    ({"flows": {"schedules": {"zzz": "0 * * * *"}}},
     "flows.schedules.zzz: unknown key; allowed keys: retrain, check_batches"),
    # a value outside a Literal's choices
    ({"c3det": {"backbone": "vgg16"}},
     "c3det.backbone: expected one of 'efficientnet_lite0', .*got 'vgg16'"),
    # a section's cross-field rule (its check()), named by the section
    ({"c3det": {"train": {"epochs": 0}}}, "c3det.train: epochs and batch_size must be >= 1"),
    ({"features": {"simnet": {"batch_size": 1}}},
     r"features.simnet: epochs must be >= 1 and batch_size >= 2"),
])
def test_nested_problems_name_the_key_path_and_the_file(tmp_path, doc, message):
    path = write(tmp_path, doc)
    with pytest.raises(ParamsError, match=message) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: ")


def test_validated_params_are_the_plain_dataclasses(tmp_path):
    """The rest of the code uses attribute access and dataclasses.replace on them."""
    import dataclasses
    from c3det.config import TrainParams
    from flows.project.config import FlowParams
    params = load_params(write(tmp_path, {"flows": {"min_score": 0.25},
                                          "c3det": {"train": {"epochs": 2}}}))
    assert type(params) is Params and type(params.flows) is FlowParams
    assert type(params.c3det.train) is TrainParams and params.c3det.train.epochs == 2
    assert dataclasses.replace(params.flows, min_score=0.5).min_score == 0.5
    assert params.c3det.train.lr_steps == TrainParams().lr_steps  # untouched keys: defaults


def test_empty_section_keeps_the_defaults(tmp_path):
    assert load_params(write(tmp_path, {"tiling": None})).tiling == Params().tiling
