"""Process settings for a loop run; import this before Prefect so they take effect."""
from __future__ import annotations

import os
from pathlib import Path

from flows.project.layout import ProjectLayout


def prefect_env(root: str | Path) -> None:
    """Settings for a run in this project (before Prefect starts its server/client)."""
    state = ProjectLayout(root).state
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(state / "prefect-results"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # the temporary server needs more than the default 20 s on a busy 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    import torch  # seven other jobs share this kind of machine: stay within 2 threads
    torch.set_num_threads(int(os.environ.get("TINYLOOP_TORCH_THREADS", "2")))


def announce_prefect_start() -> None:
    """Say that the first flow starts a temporary Prefect server when no server is
    configured: on a busy machine that takes up to a minute, with nothing else to show."""
    from prefect.settings import PREFECT_API_URL
    if not PREFECT_API_URL.value():
        from tinyloop.progress import say
        say("starting a temporary Prefect server (up to a minute on a busy machine) ...")
