"""Every benchmark script imports and answers --help (scripts without options are only
imported): a moved module breaks this test, not the next benchmark run."""
import contextlib
import io
import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_imports_and_answers_help(script, monkeypatch):
    takes_options = "argparse" in script.read_text()
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    monkeypatch.setattr(sys, "path", list(sys.path))   # scripts may add their folder
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if not takes_options:
            runpy.run_path(str(script), run_name="benchmark_import_check")
            return
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(script), run_name="__main__")
    assert stop.value.code in (0, None) and "usage:" in out.getvalue()
