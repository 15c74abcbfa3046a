"""`tinyloop NOUN VERB`: every command that was top-level before the nouns still parses to
the same handler with the same arguments; -C works before the command and after it."""
from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import NOUNS, all_verbs, build_parser, main
from flows.commands.base import CliProject

# every top-level command line before the nouns existed -> the same command under its noun;
# the arguments are the fewest each command needs
OLD_TO_NEW = [
    ("ingest", "data ingest"), ("stats", "data stats"),
    ("convert SRC OUT --from voc --to coco", "data convert SRC OUT --from voc --to coco"),
    ("export --format coco --out OUT", "data export --format coco --out OUT"),
    ("synthetic OUT", "data synthetic OUT"), ("embed", "data embed"), ("order", "data order"),
    ("train --labels L --images I --out O", "model train --labels L --images I --out O"),
    ("evaluate --labels L --images I --out O", "model evaluate --labels L --images I --out O"),
    ("init", "loop init"), ("prepare", "loop prepare"), ("simulate", "loop simulate"),
    ("iterate", "loop iterate"), ("resume", "loop resume"), ("history", "loop history"),
    ("serve", "loop serve"), ("sweep", "loop sweep"), ("step order", "loop step order"),
    ("review 2", "loop review 2"), ("workload 2", "report workload 2"),
    ("report", "report build"),
]


def parse(command_line: str) -> dict:
    """The parsed arguments, without the parser that `tinyloop NOUN` prints help with."""
    args = vars(build_parser().parse_args(command_line.split()))
    args.pop("usage_parser")
    return args


@pytest.mark.parametrize("old, new", OLD_TO_NEW)
def test_every_old_name_parses_to_the_same_handler(old, new):
    old_args, new_args = parse(old), parse(new)
    assert old_args["verb"].handler is new_args["verb"].handler
    assert old_args == new_args


def test_data_ingest_is_ingest():
    line = "-C proj ingest --source src --format yolo --keep-going --no-progress"
    assert parse(line) == parse(line.replace("ingest", "data ingest"))


@pytest.mark.parametrize("command_line", [
    "-C proj ingest", "ingest -C proj", "ingest --project proj", "data -C proj ingest",
    "-C elsewhere data ingest -C proj", "-C proj app status", "app status -C proj",
    "-C proj embed", "embed --root proj", "-C proj report",
])
def test_project_before_or_after_the_command(command_line):
    args = build_parser().parse_args(command_line.split())
    assert args.project == "proj"


def test_project_resolution():
    """-C, else the verb's own default, else the folder of --params, else ."""
    assert CliProject.resolve(None, None) == CliProject(Path("."), Path("params.yaml"))
    assert CliProject.resolve("proj", None).params_path == Path("proj/params.yaml")
    assert CliProject.resolve("proj", "other.yaml").params_path == Path("other.yaml")
    assert CliProject.resolve(None, "/x/y/params.yaml").root == Path("/x/y")
    assert CliProject.resolve(None, "/x/params.yaml", "runs/demo").root == Path("runs/demo")


def test_project_before_the_command_runs_it_there(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("tiling:\n  size: 512\n  stride: 256\n")
    assert main(["-C", str(tmp_path), "params", "check"]) == 0
    assert f"{tmp_path / 'params.yaml'}: ok" in capsys.readouterr().out
    (tmp_path / "params.yaml").write_text("tiling:\n  sise: 512\n")
    assert main(["-C", str(tmp_path), "params", "check"]) == 1
    assert "tiling.sise: unknown key (did you mean 'size'?)" in capsys.readouterr().err


def test_handlers_are_named_after_their_command():
    for verb in all_verbs():
        expected = "_".join(["cmd", *filter(None, [verb.noun, verb.name])])
        assert verb.handler.__name__ == expected, verb


def test_help_lists_the_nouns_and_each_noun_its_verbs(capsys):
    assert main([]) == 0
    top = capsys.readouterr().out
    assert all(noun in top for noun in NOUNS)
    assert "demo" in top and "ingest = data ingest" in top
    for noun in NOUNS:
        with pytest.raises(SystemExit):
            main([noun, "--help"])
        listing = capsys.readouterr().out
        for verb in all_verbs():
            if verb.noun == noun:
                assert verb.name in listing, (noun, verb.name)


def test_a_noun_alone_prints_its_verbs(capsys):
    assert main(["data"]) == 0
    assert "ingest" in capsys.readouterr().out
