"""Demand forecasting on the same clean purchase history: weekly units per product.

The clean interactions (purchases, ``value`` = units) are summed into weekly units per
product (weeks start on Monday, UTC) over a dense product x week panel, keeping products
sold in at least ``min_week_share`` of the weeks. The last ``test_weeks`` weeks are held out:
every method forecasts them from the weeks before (horizon 1 is the first held-out week),
and is scored by WAPE, MAE and bias, overall and per horizon.

The methods compared are these.

* ``naive_last_week``: the last observed week, for every horizon.
* ``naive_mean_4``: the mean of the last four observed weeks.
* ``naive_same_week_last_year``: the same week 52 weeks before, when the history reaches
  that far back for every held-out week (otherwise left out).
* ``model``: scikit-learn's ``HistGradientBoostingRegressor`` with absolute-error loss
  (:data:`POINT_LOSS`: the median, which is what WAPE rewards), one model for every
  horizon, on lag, rolling-window, calendar and product features known at the forecast
  origin; a second one with quantile loss gives an upper bound (``quantile``, default 0.9).

:func:`forecast_next` refits the model on every week and forecasts the next ``horizon``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shoprec.errors import DataError

logger = logging.getLogger(__name__)

#: Loss of the point forecast. WAPE is a sum of absolute errors, so the absolute error
#: (the median) is what it rewards; weekly units of wholesale orders are heavy-tailed.
POINT_LOSS = "absolute_error"


@dataclass(frozen=True)
class ForecastSettings:
    """What to forecast and how to judge it.

    Attributes:
        test_weeks: Weeks held out at the end.
        horizon: Weeks forecast ahead by :func:`forecast_next`.
        min_week_share: Keep products sold in at least this share of the weeks.
        quantile: The upper bound's quantile.
        lags: Lag features (weeks before the forecast origin).
        seed: Seed of the boosting models.
    """

    test_weeks: int = 8
    horizon: int = 4
    min_week_share: float = 0.5
    quantile: float = 0.9
    lags: tuple[int, ...] = (0, 1, 2, 3, 4, 8, 12)
    seed: int = 42


@dataclass
class Panel:
    """Weekly units: one row per product, one column per week (dense, zeros filled).

    Attributes:
        units: ``(products, weeks)`` float array.
        items: Product ids in row order.
        weeks: Week starts (Mondays) in column order.
        categories: Category code per product (-1: none).
    """

    units: np.ndarray
    items: np.ndarray
    weeks: pd.DatetimeIndex
    categories: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))


def weekly_panel(interactions: pd.DataFrame, items: pd.DataFrame | None = None,
                 min_week_share: float = 0.5) -> Panel:
    """Sum purchased units per product and week; keep products sold often enough.

    Raises:
        DataError: No purchase events, or fewer than 10 weeks of them.
    """
    sales = interactions[interactions["event"] == "purchase"]
    if sales.empty:
        raise DataError("no purchase events to forecast: the demand forecast needs "
                        "purchases with their units in 'value'")
    week = sales["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None).dt.to_period(
        "W-SUN").dt.start_time
    table = (pd.DataFrame({"item_id": sales["item_id"].astype(str), "week": week,
                           "units": sales["value"].astype(float)})
             .groupby(["item_id", "week"], observed=True)["units"].sum().unstack(fill_value=0))
    weeks = pd.date_range(table.columns.min(), table.columns.max(), freq="7D")
    if len(weeks) < 10:
        raise DataError(f"only {len(weeks)} weeks of purchases; the demand forecast needs at "
                        "least 10")
    table = table.reindex(columns=weeks, fill_value=0)
    sold = (table > 0).mean(axis=1) >= min_week_share
    table = table[sold]
    categories = np.full(len(table), -1, dtype=np.int64)
    if items is not None and "category" in items:
        codes = items.set_index(items["item_id"].astype(str))["category"].astype("category")
        mapped = codes.cat.codes.reindex(table.index)
        categories = mapped.fillna(-1).to_numpy(dtype=np.int64)
    logger.info("demand panel: %d products x %d weeks", len(table), len(weeks))
    return Panel(table.to_numpy(dtype=float), table.index.to_numpy(), weeks, categories)


def _features(panel: Panel, origin: int, horizon: int, lags: tuple[int, ...]) -> np.ndarray:
    """Features of every product for the week ``origin + horizon``, known at ``origin``."""
    units = panel.units
    columns = [units[:, origin - lag] if origin - lag >= 0 else np.full(len(units), np.nan)
               for lag in lags]
    for window in (4, 8, 12, 26):
        start = max(0, origin - window + 1)
        columns.append(units[:, start:origin + 1].mean(axis=1))
    columns.append(units[:, : origin + 1].mean(axis=1))  # the product's level so far
    target_week = panel.weeks[0] + pd.Timedelta(weeks=origin + horizon)
    n = len(units)
    columns += [np.full(n, horizon, dtype=float),
                np.full(n, target_week.isocalendar().week, dtype=float),
                np.full(n, target_week.month, dtype=float),
                panel.categories.astype(float) if len(panel.categories) else np.full(n, -1.0)]
    # A year back, where the history reaches.
    back = origin + horizon - 52
    columns.append(units[:, back] if back >= 0 else np.full(n, np.nan))
    # -1 marks a week before the history (units are never negative): a column that is
    # missing everywhere cannot be binned.
    return np.nan_to_num(np.column_stack(columns), nan=-1.0)


def _training_set(panel: Panel, last: int, horizons: int,
                  lags: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Examples from every origin whose target week is at most ``last``."""
    features, targets = [], []
    for origin in range(4, last):
        for horizon in range(1, horizons + 1):
            if origin + horizon > last:
                break
            features.append(_features(panel, origin, horizon, lags))
            targets.append(panel.units[:, origin + horizon])
    return np.vstack(features), np.concatenate(targets)


def _boosting(loss: str, settings: ForecastSettings, quantile: float | None = None) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    extra = {"quantile": quantile} if quantile is not None else {}
    return HistGradientBoostingRegressor(loss=loss, max_iter=300, learning_rate=0.05,
                                         min_samples_leaf=40, random_state=settings.seed,
                                         **extra)


def scores(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """WAPE (sum of absolute errors over sum of units), MAE and bias (relative)."""
    total = float(np.abs(actual).sum())
    error = predicted - actual
    return {"wape": float(np.abs(error).sum() / total) if total else float("nan"),
            "mae": float(np.abs(error).mean()),
            "bias": float(error.sum() / total) if total else float("nan")}


@dataclass
class Backtest:
    """The held-out weeks' figures of every method.

    Attributes:
        test: Method -> ``wape``, ``mae``, ``bias`` over every held-out product-week.
        per_horizon: Method -> one such mapping per horizon (1 = the first held-out week).
        coverage: Share of held-out product-weeks at or under the model's upper bound.
        forecasts: The model's and the baselines' forecasts of the held-out weeks
            (long table: item_id, week, actual, one column per method, upper).
    """

    test: dict[str, dict[str, float]]
    per_horizon: dict[str, list[dict[str, float]]]
    coverage: float
    forecasts: pd.DataFrame

    def best_naive(self) -> str:
        """The naive baseline with the lowest WAPE."""
        return min((m for m in self.test if m.startswith("naive_")),
                   key=lambda m: self.test[m]["wape"])


def backtest(panel: Panel, settings: ForecastSettings = ForecastSettings()) -> Backtest:
    """Hold out the last ``test_weeks`` weeks and score every method on them.

    Raises:
        DataError: Too few weeks for the held-out part and the lags.
    """
    n_weeks = panel.units.shape[1]
    origin = n_weeks - settings.test_weeks - 1  # the last week every method may see
    if origin < 12:
        raise DataError(f"{n_weeks} weeks are too few to hold out {settings.test_weeks}")
    horizons = range(1, settings.test_weeks + 1)
    actual = np.column_stack([panel.units[:, origin + h] for h in horizons])
    seen = panel.units[:, : origin + 1]
    predictions: dict[str, np.ndarray] = {
        "naive_last_week": np.repeat(seen[:, -1:], len(horizons), axis=1),
        "naive_mean_4": np.repeat(seen[:, -4:].mean(axis=1, keepdims=True), len(horizons),
                                  axis=1)}
    if origin + 1 - 52 >= 0:
        predictions["naive_same_week_last_year"] = np.column_stack(
            [panel.units[:, origin + h - 52] for h in horizons])
    features, targets = _training_set(panel, origin, settings.test_weeks, settings.lags)
    point = _boosting(POINT_LOSS, settings).fit(features, targets)
    upper = _boosting("quantile", settings, settings.quantile).fit(features, targets)
    test_features = [_features(panel, origin, h, settings.lags) for h in horizons]
    predictions["model"] = np.column_stack([point.predict(f) for f in test_features])
    bound = np.column_stack([upper.predict(f) for f in test_features])
    test = {name: scores(actual, p) for name, p in predictions.items()}
    per_horizon = {name: [scores(actual[:, h], p[:, h]) for h in range(len(horizons))]
                   for name, p in predictions.items()}
    long = pd.DataFrame({
        "item_id": np.repeat(panel.items, len(horizons)),
        "week": np.tile(panel.weeks[origin + 1: origin + 1 + len(horizons)], len(panel.items)),
        "actual": actual.ravel(), **{name: p.ravel() for name, p in predictions.items()},
        "upper": np.maximum(bound, predictions["model"]).ravel()})
    coverage = float((actual <= np.maximum(bound, predictions["model"])).mean())
    logger.info("demand backtest over %d weeks: %s", settings.test_weeks,
                {m: round(v["wape"], 4) for m, v in test.items()})
    return Backtest(test, per_horizon, coverage, long)


def forecast_next(panel: Panel, settings: ForecastSettings = ForecastSettings()
                  ) -> pd.DataFrame:
    """Refit on every week and forecast the next ``horizon`` weeks of every product.

    Returns:
        item_id, week (its Monday), forecast (units) and upper (the quantile bound).
    """
    last = panel.units.shape[1] - 1
    features, targets = _training_set(panel, last, settings.horizon, settings.lags)
    point = _boosting(POINT_LOSS, settings).fit(features, targets)
    upper = _boosting("quantile", settings, settings.quantile).fit(features, targets)
    rows = []
    for horizon in range(1, settings.horizon + 1):
        x = _features(panel, last, horizon, settings.lags)
        forecast = np.maximum(point.predict(x), 0.0)
        rows.append(pd.DataFrame({
            "item_id": panel.items,
            "week": panel.weeks[-1] + pd.Timedelta(weeks=horizon),
            "forecast": forecast, "upper": np.maximum(upper.predict(x), forecast)}))
    return pd.concat(rows, ignore_index=True)


def summary(result: Backtest, panel: Panel, path: str, mlflow_run_id: str,
            flow_run_id: str) -> dict[str, Any]:
    """The forecast run's summary (``shoprec forecast --summary-json``).

    ``test`` holds one entry per method (``model`` and each ``naive_...``) with its
    ``wape``, ``mae`` and ``bias`` on the held-out weeks.
    """
    return {"test": result.test, "per_horizon": result.per_horizon,
            "best_naive": result.best_naive(), "upper_coverage": result.coverage,
            "products": len(panel.items), "weeks": len(panel.weeks),
            "forecast_file": path, "mlflow_run_id": mlflow_run_id,
            "prefect_flow_run_id": flow_run_id}
