"""Fault injection for the kill -9 tests: make the loop stop at a named point."""
from __future__ import annotations

import os
import time
from pathlib import Path


def fault_point(name: str) -> None:
    """Test hook: `TINYLOOP_FAULT=name[:sleep]` makes this point sleep forever or raise.

    The kill -9 tests start the loop in a subprocess with the hook set, wait until the
    process reaches the point (it first writes the point name to the file named by
    `TINYLOOP_FAULT_MARKER`) and SIGKILL it.
    `TINYLOOP_FAULT=name:raise` raises instead (a crash without a kill).
    """
    spec = os.environ.get("TINYLOOP_FAULT", "")
    for item in filter(None, spec.split(",")):
        point, _, action = item.partition(":")
        if point != name:
            continue
        marker = os.environ.get("TINYLOOP_FAULT_MARKER")
        if marker:
            Path(marker).write_text(name)
        if action == "raise":
            raise RuntimeError(f"fault injected at {name}")
        while True:  # wait to be killed
            time.sleep(0.2)
