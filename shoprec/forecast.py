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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from shoprec.errors import DataError
from shoprec.threads import limit_threads

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
        max_iter: Boosting iterations.
        learning_rate: Boosting learning rate.
        min_samples_leaf: Smallest leaf of the boosted trees.
        threads: OpenMP threads of the boosting (see :func:`_boosting_threads`); the
            figures do not depend on it.
    """

    test_weeks: int = 8
    horizon: int = 4
    min_week_share: float = 0.5
    quantile: float = 0.9
    lags: tuple[int, ...] = (0, 1, 2, 3, 4, 8, 12)
    seed: int = 42
    max_iter: int = 300
    learning_rate: float = 0.05
    min_samples_leaf: int = 40
    threads: int = 1

    def recipe(self) -> dict[str, Any]:
        """What makes the model what it is (:data:`RECIPE_FIELDS`), recorded per version.

        The held-out weeks, the horizon and the products kept describe the comparison and
        the data, not the model: a champion's recipe is retrained with this run's.
        """
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in asdict(self).items() if name in RECIPE_FIELDS}

    def with_recipe(self, recipe: dict[str, Any]) -> ForecastSettings:
        """These settings with another version's model (``recipe``); unknown keys ignored."""
        known: dict[str, Any] = {k: tuple(v) if k == "lags" else v
                                 for k, v in recipe.items() if k in RECIPE_FIELDS}
        return replace(self, **known)


#: The settings that define the model (see :meth:`ForecastSettings.recipe`).
RECIPE_FIELDS = ("quantile", "lags", "seed", "max_iter", "learning_rate", "min_samples_leaf")


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
        DataError: No purchase events, fewer than 10 weeks of them, a gap of more than
            :data:`MAX_GAP_WEEKS` weeks without any, or no product sold often enough.
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
    every = pd.date_range(table.columns.min(), table.columns.max(), freq="7D")
    totals = table.reindex(columns=every, fill_value=0).sum(axis=0)
    _check_no_long_gap(totals, MAX_GAP_WEEKS)
    weeks = _whole_weeks(every[0], every[-1], sales)
    if len(weeks) < 10:
        raise DataError(f"only {len(weeks)} whole weeks of purchases; the demand forecast "
                        "needs at least 10")
    table = table.reindex(columns=weeks, fill_value=0)
    sold = (table > 0).mean(axis=1) >= min_week_share
    if not sold.any():
        sold_weeks = np.flatnonzero(totals.to_numpy() > 0)
        gap = int((np.diff(sold_weeks) - 1).max()) if len(sold_weeks) > 1 else 0
        # A long quiet stretch is the likelier cause (a year mistyped in a few rows).
        quiet = (f"; the data has {gap} weeks in a row without any purchase: is a date "
                 "far from the others (a mistyped year)?") if gap >= 26 else ""
        raise DataError(f"none of the {len(table):,} products was sold in at least "
                        f"{min_week_share:.0%} of the {len(weeks)} weeks; the demand forecast "
                        "learns from products with regular sales (give more of the shop's "
                        f"history, or a file with its regular products){quiet}")
    table = table[sold]
    categories = np.full(len(table), -1, dtype=np.int64)
    if items is not None and "category" in items:
        codes = items.set_index(items["item_id"].astype(str))["category"].astype("category")
        mapped = codes.cat.codes.reindex(table.index)
        categories = mapped.fillna(-1).to_numpy(dtype=np.int64)
    logger.info("demand panel: %d products x %d weeks", len(table), len(weeks))
    return Panel(table.to_numpy(dtype=float), table.index.to_numpy(), weeks, categories)


#: The share of a week's usual sales its data must cover for the week to be in the panel.
WHOLE_WEEK_SHARE = 0.95
#: Sales (rows) a week on average from which the shop's week is read (see _whole_weeks).
MIN_SALES_PER_WEEK = 50


def _whole_weeks(first: pd.Timestamp, last: pd.Timestamp, sales: pd.DataFrame
                 ) -> pd.DatetimeIndex:
    """The weeks (Monday starts) from ``first`` to ``last``, less part-weeks at the ends.

    Data exported on a Monday morning (the scheduled forecast's time) ends in a week of a
    few hours, whose units read as a collapse in demand and were forecast on (one day of
    data changed the forecast 8.6 times over). How much of a week the data covers is read
    from the shop's own week: the share of its units sold in each hour of the week (UTC),
    so a shop closed at weekends whose data ends on a Friday evening keeps that week. An
    end week covering under :data:`WHOLE_WEEK_SHARE` of it is left out (the last one is then
    the first week forecast), and so is a first week the data starts late in.
    """
    weeks = pd.date_range(first, last, freq="7D")
    times = sales["timestamp"].dt.tz_convert("UTC").dt.tz_localize(None)
    if len(sales) < MIN_SALES_PER_WEEK * len(weeks):
        # Too few sales to read the shop's week (one sale a week read whole end weeks as
        # 42% covered): by the calendar, an end week the data reaches on its first two
        # days only (a Monday export) or from its last two on is left out.
        keep = np.ones(len(weeks), dtype=bool)
        if len(weeks) and (times.max() - weeks[-1]) < pd.Timedelta(days=2):
            keep[-1] = False
        if len(weeks) > 1 and (times.min() - weeks[0]) >= pd.Timedelta(days=5):
            keep[0] = False
        if not keep.all():
            logger.info("demand panel: the end week(s) of %s left out: the data reaches "
                        "them on two days or fewer", ", ".join(
                            str(w.date()) for w in weeks[~keep]))
        return weeks[keep]
    slots = (times.dt.dayofweek * 24 + times.dt.hour).to_numpy()
    units = sales["value"].astype(float).to_numpy()
    profile = np.bincount(slots, weights=units, minlength=168)
    profile = profile / profile.sum() if profile.sum() > 0 else np.full(168, 1 / 168)
    begin, end = int(slots[np.argmin(times.to_numpy())]), int(slots[np.argmax(times.to_numpy())])
    keep = np.ones(len(weeks), dtype=bool)
    covered = {"last": profile[: end + 1].sum(), "first": profile[begin:].sum()}
    if len(weeks) and covered["last"] < WHOLE_WEEK_SHARE:
        keep[-1] = False
    if len(weeks) > 1 and covered["first"] < WHOLE_WEEK_SHARE:
        keep[0] = False
    for at, share in ((0, covered["first"]), (len(weeks) - 1, covered["last"])):
        if len(weeks) and not keep[at]:
            logger.info("demand panel: the week of %s is left out: the data covers %.0f%% "
                        "of the shop's usual week there", weeks[at].date(), 100 * share)
    return weeks[keep]


#: Weeks in a row without any sale that the panel may hold: a year and a half. More is no
#: shop's quiet season but a date far from the others (a typo, 2150 for 2015).
MAX_GAP_WEEKS = 78


def _check_no_long_gap(totals: pd.Series, longest: int) -> None:
    """Refuse weekly totals with more than ``longest`` empty weeks in a row.

    Raises:
        DataError: Naming the weeks on either side of the gap.
    """
    sold = np.flatnonzero(totals.to_numpy() > 0)
    gaps = np.diff(sold) - 1
    if len(gaps) and gaps.max() > longest:
        at = int(np.argmax(gaps))
        before, after = totals.index[sold[at]], totals.index[sold[at + 1]]
        raise DataError(f"no purchases for {int(gaps[at])} weeks between the week of "
                        f"{before.date()} and that of {after.date()}: a date far from the "
                        "others (a typo in a year?) would stretch the forecast over every "
                        "empty week between; fix or remove those rows")


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


@contextmanager
def _boosting_threads(settings: ForecastSettings) -> Iterator[None]:
    """Run the block's boosting on ``settings.threads`` OpenMP threads.

    scikit-learn's boosting opens a parallel region per tree node, and GCC's OpenMP
    threads spin at each one's end. With the cores busy elsewhere (another process's
    training, the other half of a two-process test run) a spinning thread waits for one
    that is not running: on 2 cores beside two busy processes, the backtest of 36
    products took 196 s on 2 threads against 10 s on one (``benchmarks/forecast_threads.py``).
    On idle cores a second thread pays on a large panel (Online Retail's 2,593 products:
    86 s against 122 s for backtest and forecast) and not on a small one. One is the
    default: a scheduled forecast may well run beside a training.
    """
    # Imported first: a cap reaches only the OpenMP runtimes already loaded.
    import sklearn.ensemble  # noqa: F401

    with limit_threads(settings.threads, "openmp"):
        yield


def _boosting(loss: str, settings: ForecastSettings, quantile: float | None = None) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    extra = {"quantile": quantile} if quantile is not None else {}
    return HistGradientBoostingRegressor(loss=loss, max_iter=settings.max_iter,
                                         learning_rate=settings.learning_rate,
                                         min_samples_leaf=settings.min_samples_leaf,
                                         random_state=settings.seed, **extra)


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
        by_category: Method -> the same figures on weekly units per category (the
            products' forecasts summed); empty when the products have no categories.
    """

    test: dict[str, dict[str, float]]
    per_horizon: dict[str, list[dict[str, float]]]
    coverage: float
    forecasts: pd.DataFrame
    by_category: dict[str, dict[str, float]] = field(default_factory=dict)

    def best_naive(self) -> str:
        """The naive baseline with the lowest WAPE."""
        return min((m for m in self.test if m.startswith("naive_")),
                   key=lambda m: self.test[m]["wape"])


def _origin(panel: Panel, settings: ForecastSettings) -> int:
    """The last week every method may see in the backtest.

    Raises:
        DataError: Too few weeks for the held-out part and the lags.
    """
    n_weeks = panel.units.shape[1]
    origin = n_weeks - settings.test_weeks - 1
    if origin < 12:
        raise DataError(f"{n_weeks} weeks are too few to hold out {settings.test_weeks}")
    if not panel.units[:, origin + 1:].any():
        # WAPE divides by the held-out units: with none, no method can be judged.
        raise DataError(f"the last {settings.test_weeks} weeks (from "
                        f"{panel.weeks[origin + 1].date()}) have no sales of the forecast's "
                        f"{len(panel.items):,} products, so the backtest has nothing to score; "
                        "hold out fewer weeks (--test-weeks) or give data up to recent sales")
    return origin


def _held_out_model(panel: Panel, origin: int, settings: ForecastSettings,
                    upper: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The model trained on the weeks up to ``origin``, on the held-out weeks.

    Returns its point forecasts (products x held-out weeks) and, when ``upper``, its
    quantile bound.
    """
    horizons = range(1, settings.test_weeks + 1)
    features, targets = _training_set(panel, origin, settings.test_weeks, settings.lags)
    test_features = [_features(panel, origin, h, settings.lags) for h in horizons]
    with _boosting_threads(settings):
        point = _boosting(POINT_LOSS, settings).fit(features, targets)
        predicted = np.column_stack([point.predict(f) for f in test_features])
        if not upper:
            return predicted, None
        bound = _boosting("quantile", settings, settings.quantile).fit(features, targets)
        return predicted, np.column_stack([bound.predict(f) for f in test_features])


def _per_category(panel: Panel, values: np.ndarray) -> np.ndarray:
    """Rows summed per category (products without one left out)."""
    known = panel.categories >= 0
    codes = panel.categories[known]
    totals = np.zeros((int(codes.max()) + 1 if len(codes) else 0, values.shape[1]))
    np.add.at(totals, codes, values[known])
    return totals[np.unique(codes)]


def backtest(panel: Panel, settings: ForecastSettings = ForecastSettings()) -> Backtest:
    """Hold out the last ``test_weeks`` weeks and score every method on them.

    Raises:
        DataError: Too few weeks for the held-out part and the lags.
    """
    origin = _origin(panel, settings)
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
    predictions["model"], quantile = _held_out_model(panel, origin, settings, upper=True)
    assert quantile is not None
    bound = np.maximum(quantile, predictions["model"])
    test = {name: scores(actual, p) for name, p in predictions.items()}
    per_horizon = {name: [scores(actual[:, h], p[:, h]) for h in range(len(horizons))]
                   for name, p in predictions.items()}
    by_category = {}
    if (panel.categories >= 0).any():
        totals = _per_category(panel, actual)
        by_category = {name: scores(totals, _per_category(panel, p))
                       for name, p in predictions.items()}
    long = pd.DataFrame({
        "item_id": np.repeat(panel.items, len(horizons)),
        "week": np.tile(panel.weeks[origin + 1: origin + 1 + len(horizons)], len(panel.items)),
        "actual": actual.ravel(), **{name: p.ravel() for name, p in predictions.items()},
        "upper": bound.ravel()})
    coverage = float((actual <= bound).mean())
    logger.info("demand backtest over %d weeks: %s", settings.test_weeks,
                {m: round(v["wape"], 4) for m, v in test.items()})
    return Backtest(test, per_horizon, coverage, long, by_category)


def backtest_model(panel: Panel, settings: ForecastSettings) -> dict[str, float]:
    """The model's held-out ``wape``, ``mae`` and ``bias`` alone (no baselines, no bound).

    What a champion's recipe is judged by when it is retrained on this run's weeks.
    """
    origin = _origin(panel, settings)
    actual = np.column_stack([panel.units[:, origin + h]
                              for h in range(1, settings.test_weeks + 1)])
    return scores(actual, _held_out_model(panel, origin, settings, upper=False)[0])


def forecast_next(panel: Panel, settings: ForecastSettings = ForecastSettings()
                  ) -> pd.DataFrame:
    """Refit on every week and forecast the next ``horizon`` weeks of every product.

    Returns:
        item_id, week (its Monday), forecast (units) and upper (the quantile bound).
    """
    last = panel.units.shape[1] - 1
    features, targets = _training_set(panel, last, settings.horizon, settings.lags)
    rows = []
    with _boosting_threads(settings):
        point = _boosting(POINT_LOSS, settings).fit(features, targets)
        upper = _boosting("quantile", settings, settings.quantile).fit(features, targets)
        for horizon in range(1, settings.horizon + 1):
            x = _features(panel, last, horizon, settings.lags)
            forecast = np.maximum(point.predict(x), 0.0)
            rows.append(pd.DataFrame({
                "item_id": panel.items,
                "week": panel.weeks[-1] + pd.Timedelta(weeks=horizon),
                "forecast": forecast, "upper": np.maximum(upper.predict(x), forecast)}))
    return pd.concat(rows, ignore_index=True)


def category_forecast(ahead: pd.DataFrame, panel: Panel,
                      items: pd.DataFrame | None) -> pd.DataFrame:
    """Weekly units per category: the products' point forecasts summed.

    The upper bounds are not summed (a sum of per-product quantiles is not the quantile of
    the sum). Empty when the catalogue has no categories.
    """
    if items is None or "category" not in items or not (panel.categories >= 0).any():
        return pd.DataFrame(columns=["category", "week", "forecast", "products"])
    category = items.set_index(items["item_id"].astype(str))["category"]
    frame = ahead.assign(category=ahead["item_id"].map(category)).dropna(subset=["category"])
    return (frame.groupby(["category", "week"], observed=True)
            .agg(forecast=("forecast", "sum"), products=("item_id", "nunique"))
            .reset_index())


def summary(result: Backtest, panel: Panel, path: str, mlflow_run_id: str,
            flow_run_id: str) -> dict[str, Any]:
    """The forecast run's summary (``shoprec forecast --summary-json``).

    ``test`` holds one entry per method (``model`` and each ``naive_...``) with its
    ``wape``, ``mae`` and ``bias`` on the held-out weeks; ``test_by_category`` the same on
    weekly units per category.
    """
    return {"test": result.test, "test_by_category": result.by_category,
            "per_horizon": result.per_horizon,
            "best_naive": result.best_naive(), "upper_coverage": result.coverage,
            "products": len(panel.items), "weeks": len(panel.weeks),
            "forecast_file": path, "mlflow_run_id": mlflow_run_id,
            "prefect_flow_run_id": flow_run_id}
