"""Process-level settings applied by entry points (the CLI, the flow), never at import."""

from __future__ import annotations

import os

#: Usage telemetry of the tools shoprec runs; off unless the user sets them otherwise.
TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def disable_telemetry() -> None:
    """Switch off the usage telemetry of MLflow, Prefect's server and GX.

    shoprec makes no network call beyond what the user configures; each value is only a
    default, so a user who sets one of these variables keeps their choice.
    """
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
