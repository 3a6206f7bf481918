"""The demand-forecast flow: the training flow's data preparation, then the forecast.

Straight-line wiring of ``tasks/forecast.py``; all logic lives in ``shoprec.forecast``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import flow_run
from shoprec_flows.parameters import with_deployment_values
from shoprec_flows.preparation import TaskSteps
from shoprec_tasks.data import private_result_storage
from shoprec_tasks.forecast import (
    build_panel,
    find_demand_champion,
    forecast_ahead,
    forecast_categories,
    judge_forecast,
    log_forecast_run,
    publish_demand,
    retrain_champion,
    run_backtest,
    write_forecast,
)

from shoprec.config import CleaningConfig, DataConfig, ForecastConfig
from shoprec.data.io import check_writable_folder
from shoprec.files import folder_in_use
from shoprec.forecast import summary
from shoprec.pipeline import data_counts, load_and_validate
from shoprec.registry.publish import git_commit
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
    written as Parquet, a Prefect table artifact and an MLflow run, and registered as a
    version of ``shoprec-demand`` that becomes champion if it passes the gate
    (:mod:`shoprec.registry.demand`).

    Args:
        data: Where the purchases are; empty interactions path means the bundled sample.
        cleaning: Cleaning rules.
        forecast: Held-out weeks, horizon, products kept, where the forecast goes.

    Returns:
        The summary: each method's held-out WAPE, MAE and bias, the forecast's file, the
        gate's verdict and the registered version.
    """
    apply_runtime_defaults(str(flow_run.id))
    merged = with_deployment_values(data=data, cleaning=cleaning, forecast=forecast)
    data, cleaning, forecast = merged["data"], merged["cleaning"], merged["forecast"]
    for folder, field in ((forecast.output_dir, "forecast.output_dir"),
                          (forecast.category_root, "forecast.category_output_dir"),
                          (forecast.quarantine_root, "forecast.quarantine_dir")):
        if folder:  # typed in the Prefect form: refused now, not after the backtest
            made = "://" not in folder and not Path(folder).exists()
            check_writable_folder(folder, field)
            if made and folder == forecast.category_root:
                # Written only when the catalogue has categories: none is left empty.
                Path(folder).rmdir()
    private_result_storage()
    # Every row is used or set aside with its reason, as in training; another run
    # preparing into this folder meanwhile takes turns with this one.
    with folder_in_use(forecast.quarantine_root, "forecast.quarantine_dir"):
        prepared = load_and_validate(data, cleaning, forecast.quarantine_root or None,
                                     TaskSteps())
    panel = build_panel(prepared.data, forecast)
    champion = find_demand_champion(forecast)
    result = run_backtest(panel, forecast)
    champion_test, problem = retrain_champion(panel, forecast, champion, result)
    verdict = judge_forecast(result, forecast, champion, champion_test, problem)
    ahead = forecast_ahead(panel, forecast)
    path, category_path = write_forecast(ahead, forecast_categories(ahead, panel,
                                                                    prepared.data), forecast)
    run_id, commit = str(flow_run.id), git_commit()
    counts = data_counts(prepared)
    mlflow_run = log_forecast_run(result, forecast, panel, prepared.fingerprint, run_id, counts)
    registered = publish_demand(ahead, mlflow_run, forecast, verdict, {
        "prefect_flow_run_id": run_id, "data_fingerprint": prepared.fingerprint,
        "git_commit": commit, "test_model_wape": f"{result.test['model']['wape']:.6f}",
        "best_naive": result.best_naive(),
        "test_best_naive_wape": f"{result.test[result.best_naive()]['wape']:.6f}"})
    return {**summary(result, panel, path, mlflow_run, run_id), "data": counts,
            "category_forecast_file": category_path,
            "gate": verdict.to_dict(), "champion_before": champion.to_dict(),
            "champion_test": champion_test, "registered": registered}
