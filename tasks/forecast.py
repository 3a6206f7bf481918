"""Prefect tasks of the demand forecast; each wraps one ``shoprec.forecast`` function."""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from shoprec_tasks import artifact_key

from shoprec.config import ForecastConfig
from shoprec.data.cleaning import CleanData
from shoprec.forecast import (
    Backtest,
    ForecastSettings,
    Panel,
    backtest,
    backtest_model,
    category_forecast,
    forecast_next,
    weekly_panel,
)
from shoprec.registry import runs
from shoprec.registry.demand import (
    DEMAND_MODEL_NAME,
    DemandChampion,
    demand_champion,
    demand_gate,
    publish_forecast,
    refuse_other_kind,
)
from shoprec.registry.publish import GateVerdict

#: Prefect artifact key of the forecast table.
FORECAST_KEY = "shoprec-demand-forecast"


def settings(config: ForecastConfig) -> ForecastSettings:
    """The core's settings from the flow's configuration."""
    return ForecastSettings(test_weeks=config.test_weeks, horizon=config.horizon,
                            min_week_share=config.min_week_share, quantile=config.quantile,
                            seed=config.seed, max_iter=config.max_iter,
                            learning_rate=config.learning_rate,
                            min_samples_leaf=config.min_samples_leaf,
                            threads=config.threads)


def recipe(config: ForecastConfig) -> dict[str, Any]:
    """The model's recipe under this configuration (recorded with its version)."""
    return settings(config).recipe()


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


@task(name="category-forecast", cache_policy=NO_CACHE)
def forecast_categories(ahead: pd.DataFrame, panel: Panel, data: CleanData) -> pd.DataFrame:
    """The weekly forecast per category (the products' forecasts summed)."""
    return category_forecast(ahead, panel, data.items)


@task(name="find-demand-champion", cache_policy=NO_CACHE)
def find_demand_champion(config: ForecastConfig) -> DemandChampion:
    """The registered champion forecast and its recipe (an error if unreadable).

    A name that holds recommenders is refused.
    """
    champion = demand_champion(config.registered_model_name)  # first: it fails closed
    refuse_other_kind(config.registered_model_name, "forecast")
    return champion


@task(name="retrain-demand-champion", cache_policy=NO_CACHE)
def retrain_champion(panel: Panel, config: ForecastConfig, champion: DemandChampion,
                     result: Backtest) -> tuple[dict[str, float] | None, str | None]:
    """The champion's recipe on this run's weeks: its held-out figures, or why there are none.

    A recipe equal to this run's is not trained twice: the same seed on the same weeks
    gives the same figures.
    """
    if champion.recipe is None:
        return None, None
    if champion.recipe == recipe(config):
        return result.test["model"], None
    try:
        return backtest_model(panel, settings(config).with_recipe(champion.recipe)), None
    except (ValueError, TypeError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


@task(name="demand-gate", cache_policy=NO_CACHE)
def judge_forecast(result: Backtest, config: ForecastConfig, champion: DemandChampion,
                   champion_test: dict[str, float] | None, problem: str | None) -> GateVerdict:
    """Beats the best naive baseline by the margin, and is no worse than the champion."""
    return demand_gate(result.test, result.best_naive(), config.gate_margin, champion,
                       champion_test, problem, same_recipe=champion.recipe == recipe(config))


@task(name="publish-forecast", cache_policy=NO_CACHE)
def publish_demand(ahead: pd.DataFrame, run_id: str, config: ForecastConfig,
                   verdict: GateVerdict, tags: dict[str, str]) -> dict[str, Any]:
    """Register the forecast as a version of ``shoprec-demand`` and set its aliases.

    The version is made from this run's own forecast in a private folder, never from the
    day's shared partition, which another run the same day may have rewritten meanwhile.
    """
    with tempfile.TemporaryDirectory(prefix="shoprec-demand-") as folder:
        own = Path(folder) / "forecast"
        own.mkdir()
        ahead.to_parquet(own / "forecast.parquet", index=False)
        return publish_forecast(own, run_id=run_id, name=config.registered_model_name,
                                verdict=verdict, recipe=recipe(config), tags=tags)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write under a temporary name, then rename: readers never see half a file."""
    # A name of this write's own: two runs on the same day never share a half-written file.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    frame.to_parquet(temporary, index=False)
    temporary.replace(path)


@task(name="write-forecast", cache_policy=NO_CACHE)
def write_forecast(ahead: pd.DataFrame, categories: pd.DataFrame,
                   config: ForecastConfig) -> tuple[str, str | None]:
    """Write ``forecast_date=YYYY-MM-DD/forecast.parquet`` (replaced by a rerun that day).

    The weekly forecast per category, when the catalogue has categories, goes to the same
    partition of its own data set (``config.category_root``), so each reads back whole
    with ``pandas.read_parquet(root)``. Without categories, that day's file of an earlier
    run (other data) is removed: it would not match the products' forecast.

    Returns:
        The forecast's file, and the per-category file or ``None``.
    """
    partition = f"forecast_date={datetime.now(UTC).date().isoformat()}"
    folder = Path(config.output_dir) / partition
    folder.mkdir(parents=True, exist_ok=True)
    _write_parquet(ahead, folder / "forecast.parquet")
    category_path = None
    if config.category_root:
        by_category = Path(config.category_root) / partition
        if len(categories):
            by_category.mkdir(parents=True, exist_ok=True)
            category_path = str(by_category / "forecast.parquet")
            _write_parquet(categories, Path(category_path))
        else:
            (by_category / "forecast.parquet").unlink(missing_ok=True)
    create_table_artifact(key=artifact_key(FORECAST_KEY, config.registered_model_name,
                                           DEMAND_MODEL_NAME), table=ahead.head(200).assign(
        week=ahead["week"].astype(str).head(200)).round(2).to_dict(orient="records"),
        description=f"Demand forecast, next {config.horizon} weeks (first 200 rows)")
    return str(folder / "forecast.parquet"), category_path


@task(name="log-forecast-run", cache_policy=NO_CACHE)
def log_forecast_run(result: Backtest, config: ForecastConfig, panel: Panel,
                     fingerprint: str, flow_run_id: str,
                     counts: dict[str, Any] | None = None) -> str:
    """An MLflow run: the methods' held-out figures, a chart, the data's counts."""
    params = {**config.model_dump(), "products": len(panel.items), "weeks": len(panel.weeks)}
    return runs.log_forecast(config.experiment, f"demand-{flow_run_id[:8]}", result, params,
                             {"prefect_flow_run_id": flow_run_id,
                              "data_fingerprint": fingerprint}, counts)
