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
}


def apply_runtime_defaults() -> None:
    """Set :data:`RUNTIME_DEFAULTS` in the environment where the user has not."""
    for key, value in RUNTIME_DEFAULTS.items():
        os.environ.setdefault(key, value)
