"""The demand-forecast flow: the training flow's data preparation, then the forecast.

Straight-line wiring of ``tasks/forecast.py``; all logic lives in ``shoprec.forecast``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from shoprec_flows.preparation import TaskSteps
from shoprec_tasks.data import private_result_storage
from shoprec_tasks.forecast import (
    build_panel,
    forecast_ahead,
    log_forecast_run,
    run_backtest,
    write_forecast,
)

from shoprec.config import CleaningConfig, DataConfig, ForecastConfig
from shoprec.forecast import summary
from shoprec.pipeline import load_and_validate
from shoprec.runtime import apply_runtime_defaults


@flow(name="shoprec-demand-forecast", log_prints=True)
def demand_forecast(
    data: DataConfig = DataConfig(),
    cleaning: CleaningConfig = CleaningConfig(),
    forecast: ForecastConfig = ForecastConfig(),
) -> dict[str, Any]:
    """Weekly units per product: backtest every method on held-out weeks, then forecast.

    The same load, validation, cleaning and quarantine as training (cached by the same
    keys), then the weekly panel, the backtest (naive baselines and the boosted model),
    the refit on every week and the forecast of the next ``forecast.horizon`` weeks,
    written as Parquet, a Prefect table artifact and an MLflow run.

    Args:
        data: Where the purchases are; empty interactions path means the bundled sample.
        cleaning: Cleaning rules.
        forecast: Held-out weeks, horizon, products kept, where the forecast goes.

    Returns:
        The summary: each method's held-out WAPE, MAE and bias, the forecast's file.
    """
    apply_runtime_defaults()
    private_result_storage()
    prepared = load_and_validate(data, cleaning, None, TaskSteps())
    panel = build_panel(prepared.data, forecast)
    result = run_backtest(panel, forecast)
    ahead = forecast_ahead(panel, forecast)
    path = write_forecast(ahead, forecast)
    run_id = str(flow_run.id)
    mlflow_run = log_forecast_run(result, forecast, panel, prepared.fingerprint, run_id)
    return summary(result, panel, path, mlflow_run, run_id)
