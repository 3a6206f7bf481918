"""Prefect tasks of the demand forecast; each wraps one ``shoprec.forecast`` function."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from shoprec.config import ForecastConfig
from shoprec.data.cleaning import CleanData
from shoprec.forecast import (
    Backtest,
    ForecastSettings,
    Panel,
    backtest,
    forecast_next,
    weekly_panel,
)
from shoprec.registry import runs

#: Prefect artifact key of the forecast table.
FORECAST_KEY = "shoprec-demand-forecast"


def settings(config: ForecastConfig) -> ForecastSettings:
    """The core's settings from the flow's configuration."""
    return ForecastSettings(test_weeks=config.test_weeks, horizon=config.horizon,
                            min_week_share=config.min_week_share, quantile=config.quantile,
                            seed=config.seed)


@task(name="weekly-panel", cache_policy=NO_CACHE)
def build_panel(data: CleanData, config: ForecastConfig) -> Panel:
    """Weekly units per product."""
    return weekly_panel(data.interactions, data.items, config.min_week_share)


@task(name="backtest", cache_policy=NO_CACHE)
def run_backtest(panel: Panel, config: ForecastConfig) -> Backtest:
    """Score every method on the held-out weeks."""
    return backtest(panel, settings(config))


@task(name="forecast", cache_policy=NO_CACHE)
def forecast_ahead(panel: Panel, config: ForecastConfig) -> pd.DataFrame:
    """Refit on every week and forecast the next weeks."""
    return forecast_next(panel, settings(config))


@task(name="write-forecast", cache_policy=NO_CACHE)
def write_forecast(ahead: pd.DataFrame, config: ForecastConfig) -> str:
    """Write ``forecast_date=YYYY-MM-DD/forecast.parquet`` (replaced by a rerun that day)."""
    folder = Path(config.output_dir) / f"forecast_date={datetime.now(UTC).date().isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / ".forecast.parquet.tmp"
    ahead.to_parquet(temporary, index=False)
    temporary.replace(folder / "forecast.parquet")
    create_table_artifact(key=FORECAST_KEY, table=ahead.head(200).assign(
        week=ahead["week"].astype(str).head(200)).round(2).to_dict(orient="records"),
        description=f"Demand forecast, next {config.horizon} weeks (first 200 rows)")
    return str(folder / "forecast.parquet")


@task(name="log-forecast-run", cache_policy=NO_CACHE)
def log_forecast_run(result: Backtest, config: ForecastConfig, panel: Panel,
                     fingerprint: str, flow_run_id: str) -> str:
    """An MLflow run: every method's held-out figures and a plot of the top products."""
    params = {**config.model_dump(), "products": len(panel.items), "weeks": len(panel.weeks)}
    return runs.log_forecast(config.experiment, f"demand-{flow_run_id[:8]}", result, params,
                             {"prefect_flow_run_id": flow_run_id,
                              "data_fingerprint": fingerprint})
