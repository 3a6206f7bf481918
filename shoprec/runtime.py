"""Process-level settings applied by entry points (the CLI, the flow), never at import."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

#: Defaults for the tools shoprec runs; a variable the user has set keeps its value.
RUNTIME_DEFAULTS = {
    # No usage telemetry: shoprec makes no network call beyond what the user configures.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # Prefect's temporary server creates its database on first use, which can take longer
    # than Prefect's 20 s default on a busy 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # MLflow's HTTP client retries a request 7 times with exponential backoff and waits
    # 120 s for each answer: a tracking server that went away would hold a run for many
    # minutes. Bounded here (any of them can be set by the user): a few quick retries for
    # a blip, then the run ends with the error.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def apply_runtime_defaults() -> None:
    """Set :data:`RUNTIME_DEFAULTS` in the environment where the user has not."""
    for key, value in RUNTIME_DEFAULTS.items():
        os.environ.setdefault(key, value)


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A short hash of the installed ``shoprec`` package's source files.

    Persisted intermediate results are keyed to it, so results written by other code are
    never loaded back (a changed class could not read them, or would read them wrongly).
    """
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def private_folder(path: str | Path) -> Path:
    """Create ``path`` if needed and make it readable by its owner only (mode 0700).

    Used for Prefect's persisted task results: they hold the customers' raw and cleaned
    interactions, and they are pickles, loaded back on a cache hit, so nobody else may read
    or plant files there.
    """
    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077:
        folder.chmod(0o700)
    return folder
