"""Every benchmark script imports and answers --help (scripts without options are only
imported): a moved module breaks this test, not the next benchmark run."""
import contextlib
import io
import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted(p for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py")
                    if p.stem != "common")   # what the scripts share, not a script


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_imports_and_answers_help(script, monkeypatch):
    takes_options = "argparse" in script.read_text()
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    # as `python benchmarks/X.py` does: the script's folder first (scripts import `common`)
    monkeypatch.setattr(sys, "path", [str(script.parent), *sys.path])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if not takes_options:
            runpy.run_path(str(script), run_name="benchmark_import_check")
            return
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(script), run_name="__main__")
    assert stop.value.code in (0, None) and "usage:" in out.getvalue()


def test_scripts_share_common_only():
    """No script edits sys.path or imports another script: what they share is in common.py."""
    import re
    names = {p.stem for p in BENCHMARKS}
    for script in BENCHMARKS:
        text = script.read_text()
        assert "sys.path" not in text, script.name
        imported = set(re.findall(r"^\s*(?:from|import) (\w+)", text, re.M))
        assert not imported & names, (script.name, imported & names)
