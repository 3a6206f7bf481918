"""Process-level settings applied by entry points (the CLI, the flow), never at import."""

from __future__ import annotations

import os

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
