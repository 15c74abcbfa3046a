"""Progress of the main job (issue #31): step lines when not on a terminal, bars on one,
nothing with --quiet; each batch's workload row as soon as the batch is done."""
from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys

import pytest

from tinyloop import progress
from tests.fixtures_flows import REPO, cli_env, make_project

BAR = re.compile(r"\r.*\d+/\d+ \[")   # a tqdm redraw: carriage return, n/total, [elapsed<eta


class Terminal(io.StringIO):
    """A stream that says it is a terminal (what tqdm draws its bars on)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def mode_unset(monkeypatch):
    """No mode forced by the environment; whatever a test's command configures is undone."""
    monkeypatch.setenv(progress.ENV, "bars")   # so that the end of the test removes it
    monkeypatch.delenv(progress.ENV)


# --- the helper ----------------------------------------------------------------------------------

def test_mode_is_bars_on_a_terminal_lines_elsewhere_and_quiet_wins(mode_unset, monkeypatch):
    assert progress.choose_mode(stream=Terminal()) == "bars"
    assert progress.choose_mode(stream=io.StringIO()) == "lines"
    assert progress.choose_mode(quiet=True, stream=Terminal()) == "quiet"
    monkeypatch.setenv(progress.ENV, "lines")   # forced by hand, or inherited from a parent
    assert progress.choose_mode(stream=Terminal()) == "lines"
    assert progress.choose_mode(quiet=True) == "quiet"


def test_configure_keeps_the_mode_for_child_processes(mode_unset, monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert progress.configure() == "bars" and os.environ[progress.ENV] == "bars"
    assert progress.configure(quiet=True) == "quiet" and progress.current_mode() == "quiet"


def test_step_lines_say_start_and_elapsed_time_or_failure(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV, "lines")
    with progress.step("train", "iter 2/4"):
        pass
    with pytest.raises(ValueError), progress.step("evaluate", "iter 2/4"):
        raise ValueError("boom")
    assert capsys.readouterr().out.splitlines() == [
        "[iter 2/4] train: start", "[iter 2/4] train: done in 0s",
        "[iter 2/4] evaluate: start", "[iter 2/4] evaluate: failed after 0s"]


def test_durations_read_as_minutes_and_hours():
    assert [progress.format_duration(s) for s in (0.4, 41, 72, 7500)] == \
        ["0s", "41s", "1m12s", "2h05m"]


def test_lines_mode_writes_a_bar_line_only_after_a_silence(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV, "lines")
    now = [1000.0]
    monkeypatch.setattr(progress, "clock", lambda: now[0])
    monkeypatch.setattr(progress, "_last_line_at", now[0])
    bar = progress.bar(total=10, desc="train c3det", unit="step")
    for _ in range(3):
        now[0] += 2.0
        bar.update(1)
    assert capsys.readouterr().out == ""          # 6 s of work: not yet worth a line
    now[0] += progress.LINE_INTERVAL_S
    bar.set_postfix_str("epoch 1/5, loss 0.812")
    bar.update(1)
    assert capsys.readouterr().out == (
        "train c3det: 4/10 steps (40%), 5.2 s/step, 32s left, epoch 1/5, loss 0.812\n")
    now[0] += 1.0
    bar.update(1)
    assert capsys.readouterr().out == ""          # the line just written resets the silence


def test_bars_mode_draws_on_the_terminal_and_keeps_step_lines_on_stdout(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV, "bars")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress.step("embed", "prepare"):
        for _ in progress.bar(range(5), desc="embed 5 images", unit="batch"):
            pass
    assert BAR.search(terminal.getvalue()) and "embed 5 images" in terminal.getvalue()
    assert capsys.readouterr().out.splitlines() == [
        "[prepare] embed: start", "[prepare] embed: done in 0s"]


def test_quiet_shows_neither_bars_nor_lines(monkeypatch, capsys):
    monkeypatch.setenv(progress.ENV, "quiet")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress.step("train", "iter 1/2"):
        assert list(progress.bar(range(3), desc="x")) == [0, 1, 2]
    assert capsys.readouterr().out == "" and terminal.getvalue() == ""


def test_a_bar_turned_off_by_its_caller_stays_off(monkeypatch):
    monkeypatch.setenv(progress.ENV, "bars")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(progress.bar(range(3), desc="x", enabled=False)) == [0, 1, 2]
    assert terminal.getvalue() == ""


# --- `tinyloop simulate`, three runs on one project: a log, a terminal, --quiet ------------------

@pytest.mark.prefect
def test_simulate_prints_step_lines_bars_on_a_terminal_and_nothing_with_quiet(
        tmp_path, mode_unset, monkeypatch, capsys, prefect_harness):
    from flows.cli import main
    monkeypatch.setenv("TINYLOOP_TORCH_THREADS", "1")
    root = str(make_project(tmp_path, **{"flows.iterations": 3, "flows.versioning": False}))

    # 1. not a terminal (a log, CI): step lines, then batch 1's row before the final table
    assert main(["simulate", "-C", root, "--iterations", "1"]) == 0
    out, err = capsys.readouterr()
    for line in ("[prepare] features: start", "[prepare] pool ready: 12 images, 3 batches",
                 "[iter 1/3] annotate: start", "[iter 1/3] train: start",
                 "[iter 1/3] evaluate: start", "[iter 1/3] report: start"):
        assert line in out
    assert re.search(r"\[iter 1/3\] train: done in (\d+s|\d+m\d\ds)\n", out)
    row_at = out.index("[iter 1/3] batch 1 workload:")
    assert row_at < out.rindex("WT red. %") and not BAR.search(err)
    artifacts, task_runs = prefect_names()   # the session's server: other tests' runs too
    assert "workload-batch-001" in artifacts and task_runs == {"train-batch-1",
                                                                "evaluate-batch-1"}

    # 2. a terminal: the same lines, and the bars of training and of the simulated annotator
    monkeypatch.delenv(progress.ENV)   # each command is a process of its own: no mode yet
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["simulate", "-C", root, "--iterations", "2"]) == 0
    out = capsys.readouterr().out
    assert "[iter 2/3] train: start" in out and "[iter 2/3] batch 2 workload:" in out
    drawn = terminal.getvalue()
    assert BAR.search(drawn)
    assert "train c3det" in drawn and "annotate batch 2 (simulated)" in drawn

    # 3. --quiet on a terminal: neither; the results are still printed
    monkeypatch.delenv(progress.ENV)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["simulate", "-C", root, "--iterations", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "[iter" not in out and "[prepare]" not in out and terminal.getvalue() == ""
    assert "WT red. %" in out and "report:" in out


def prefect_names() -> tuple[set[str], set[str]]:
    """(the per-batch artifact keys, the train/evaluate task run names) on the server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterKey,
                                                TaskRunFilter, TaskRunFilterName)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(like_="workload-batch-")))
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            name=TaskRunFilterName(any_=["train-batch-1", "evaluate-batch-1"])))
    return {a.key for a in artifacts}, {r.name for r in runs}


# --- a real pseudo-terminal: the CLI sees a TTY by itself -----------------------------------------

def run_in_terminal(*args: str, timeout: float = 300) -> str:
    """`tinyloop ARGS` with stdout and stderr on a pseudo-terminal; everything it wrote."""
    env = cli_env()
    env.pop(progress.ENV, None)
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary)
    os.close(secondary)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([primary], [], [], timeout)
            if not ready:
                raise TimeoutError(f"tinyloop {' '.join(args)}: silent for {timeout} s")
            try:
                data = os.read(primary, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(primary)
        proc.wait(timeout=60)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, text
    return text


def test_model_train_draws_its_bar_on_a_real_terminal_and_not_with_quiet(tmp_path):
    import yaml
    from tests.fixtures_flows import make_dataset
    data = make_dataset(tmp_path / "data", 4)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"c3det": {
        "roi_batch_size": 32,
        "train": {"epochs": 2, "batch_size": 2, "crop_size": 64, "warmup_iters": 1}}}))
    common = ["--params", str(tmp_path / "params.yaml"), "model", "train", "--labels",
              str(data / "labels.json"), "--images", str(data), "--kind", "plain"]
    shown = run_in_terminal(*common, "--out", str(tmp_path / "a"))
    assert BAR.search(shown) and "train plain" in shown
    assert re.search(r"(step/s|s/step)", shown)   # tqdm's rate
    quiet = run_in_terminal(*common, "--out", str(tmp_path / "b"), "--quiet")
    assert not BAR.search(quiet) and "train plain" not in quiet
