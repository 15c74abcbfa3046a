"""Progress of long work: bars on a terminal, plain lines elsewhere, nothing with --quiet.

One mode per process, chosen once by the command line (`configure`):

    bars    stderr is a terminal: tqdm bars (rate, ETA) on stderr, step lines on stdout
    lines   not a terminal (CI, Prefect workers, a pipe, a log file): no redraws; a
            running bar writes a plain line once LINE_INTERVAL_S passed without any
            progress line; and the step lines
    quiet   --quiet: neither

Libraries (c3det, features, the simulator) open their bars with `bar(...)`; their own
`progress=False` still turns one off. The mode is kept in the environment (TINYLOOP_PROGRESS)
so that processes started from this one (Dask workers, `dvc repro` running `tinyloop step`)
follow it; setting it by hand forces a mode (TINYLOOP_PROGRESS=lines on a terminal).
Standard library and tqdm only: c3det/ and features/ use it and stay free of flows/.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Iterable, Iterator, TextIO

MODES = ("bars", "lines", "quiet")
ENV = "TINYLOOP_PROGRESS"
# In lines mode a running bar prints once this long has passed without any progress line
# (from it, another bar, or a step): well under the ~30 s a reader takes for a hang
LINE_INTERVAL_S = 15.0
clock = time.monotonic  # replaceable in tests
_last_line_at = clock()  # when the last progress line was written


# --- the mode ----------------------------------------------------------------------------------

def choose_mode(quiet: bool = False, stream: TextIO | None = None) -> str:
    """quiet -> "quiet"; else a mode forced by TINYLOOP_PROGRESS; else "bars" when `stream`
    (default: stderr, where bars are drawn) is a terminal, "lines" when it is not."""
    if quiet:
        return "quiet"
    forced = os.environ.get(ENV)
    if forced in MODES:
        return forced
    return "bars" if _is_terminal(stream if stream is not None else sys.stderr) else "lines"


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def configure(quiet: bool = False) -> str:
    """Choose this process's mode (`choose_mode`) and keep it for it and its children."""
    mode = choose_mode(quiet)
    os.environ[ENV] = mode
    return mode


def current_mode() -> str:
    """The configured mode; unconfigured (a library used from Python), decided as
    `choose_mode` would."""
    return choose_mode()


# --- step lines --------------------------------------------------------------------------------

def say(line: str) -> None:
    """One line of progress on stdout, unless quiet. Written to the stream itself, not with
    print(): a Prefect flow with log_prints would turn a print into a log record, which the
    project's PREFECT_LOGGING_LEVEL (WARNING) drops."""
    global _last_line_at
    mode = current_mode()
    if mode == "quiet":
        return
    _last_line_at = clock()
    if mode == "bars":  # tqdm clears its bars, writes the line, and draws them again below
        from tqdm import tqdm
        tqdm.write(line, file=sys.stdout)
    else:
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


@contextmanager
def step(name: str, where: str = "") -> Iterator[None]:
    """`[where] name: start` now and `[where] name: done in 1m12s` (or `failed after`) at
    the end of the block."""
    label = f"[{where}] {name}" if where else name
    say(f"{label}: start")
    start = clock()
    try:
        yield
    except BaseException:
        say(f"{label}: failed after {format_duration(clock() - start)}")
        raise
    say(f"{label}: done in {format_duration(clock() - start)}")


def format_duration(seconds: float) -> str:
    """41s, 1m12s, 2h05m."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


# --- bars --------------------------------------------------------------------------------------

def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
        unit: str = "it", initial: int = 0, enabled: bool = True):
    """A progress bar as the mode wants it: a tqdm bar, a `LineBar`, or a `SilentBar`.
    Each has tqdm's calls that this project uses: iteration, update(n), set_postfix_str,
    set_postfix, close, and `with`."""
    mode = current_mode() if enabled else "quiet"
    total = _total(iterable, total)
    if mode == "bars":
        from tqdm import tqdm
        # leave=False: the step's "done in" line stays instead; mininterval keeps a 2-core
        # machine from spending time on redraws
        return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial,
                    leave=False, mininterval=1.0, file=sys.stderr, **_size(sys.stderr))
    if mode == "lines":
        return LineBar(iterable, total=total, desc=desc, unit=unit, initial=initial)
    return SilentBar(iterable)


def _size(stream) -> dict:
    """tqdm's size arguments: follow the terminal's width; 80x24 when it reports none (a
    pseudo-terminal nobody sized, as in `docker run -t` or a test), where tqdm would draw
    nothing at all."""
    try:
        columns, rows = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        columns = rows = 0
    return {"dynamic_ncols": True} if columns and rows else {"ncols": 80, "nrows": 24}


def _plural(unit: str) -> str:
    """step -> steps, batch -> batches (the units the bars here count)."""
    return unit + ("es" if unit.endswith(("ch", "sh", "s", "x")) else "s")


def _total(iterable: Iterable | None, total: int | None) -> int | None:
    """`total`, else the iterable's length when it has one."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        return len(iterable)
    return total


class SilentBar:
    """A bar that shows nothing (quiet, or progress=False)."""

    def __init__(self, iterable: Iterable | None = None):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable if self.iterable is not None else ())

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LineBar(SilentBar):
    """A bar for logs: `desc: 45/160 steps (28%), 1.9 s/step, 3m38s left, <postfix>`,
    written when LINE_INTERVAL_S passed without a progress line, never redrawn. The silence
    is counted over every line, not per bar: a run of short bars still speaks up."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None,
                 desc: str = "", unit: str = "it", initial: int = 0):
        super().__init__(iterable)
        self.total, self.desc, self.unit = _total(iterable, total), desc, unit
        self.n = self.initial = initial
        self.postfix = ""
        self.started = clock()

    def __iter__(self):
        for item in super().__iter__():
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.n += n
        if clock() - _last_line_at >= LINE_INTERVAL_S:
            say(self.line())

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def line(self) -> str:
        """The bar's state as one line (rate and time left from this run's own pace)."""
        done, elapsed = self.n - self.initial, clock() - self.started
        units = _plural(self.unit)
        parts = [f"{self.n}/{self.total} {units}" if self.total else f"{self.n} {units}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if done > 0:
            per_item = elapsed / done
            parts.append(f"{per_item:.1f} s/{self.unit}" if per_item >= 1 else
                         f"{1 / per_item:.1f} {self.unit}/s")
            if self.total:
                parts.append(f"{format_duration(per_item * (self.total - self.n))} left")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: " + ", ".join(parts)
