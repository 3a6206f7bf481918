"""Stock-aware recommendations: down-weight products forecast to sell out beyond stock.

A stock file (``item_id, units``: units on hand) and a demand forecast (the
``shoprec-demand`` model or its Parquet output) give each product its *availability*: the
share of its forecast demand over the coming weeks that the stock covers,
``min(1, units / demand)``. A product with stock for all of its forecast demand, or with no
stock record or no forecast, keeps 1; one with no units left gets 0, forecast or not. The
batch multiplies each candidate's relevance by its availability
(:func:`shoprec.ranking.rerank_for_novelty`),
so a product about to sell out drops down the lists of the shoppers it would disappoint,
and one nobody can buy leaves them.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from shoprec.data.schema import canonical_ids
from shoprec.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: How many offending rows an error message names.
_SHOWN = 5


def read_stock(path: str | Path) -> pd.Series:
    """Units on hand per product from a CSV or Parquet file with ``item_id`` and ``units``.

    Returns:
        Units (float) indexed by item id (string).

    Raises:
        ConfigError: The file does not exist.
        DataError: A column is missing, a unit count is not a non-negative number, or an
            item appears twice; the message names the rows (1-based, as a spreadsheet
            counts them after the header).
    """
    source = Path(path)
    if source.is_dir():
        raise ConfigError(f"stock file {str(source)!r} is a folder; give a CSV or Parquet "
                          "file with columns item_id and units")
    if not source.is_file():
        raise ConfigError(f"stock file {str(source)!r} does not exist; give a CSV or Parquet "
                          "file with columns item_id and units")
    try:
        with warnings.catch_warnings():
            # A row with a field more than the header: pandas would take the first column
            # as an index and shift the others (units read from the wrong field).
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = (pd.read_parquet(source) if source.suffix.lower() in (".parquet", ".pq")
                     else pd.read_csv(source, dtype={"item_id": str}, index_col=False))
    except (ValueError, OSError, pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        raise DataError(f"stock file {str(source)!r} could not be read as "
                        f"{'Parquet' if source.suffix.lower() == '.parquet' else 'CSV'}: "
                        f"{exc}") from exc
    missing = [c for c in ("item_id", "units") if c not in frame.columns]
    if missing:
        raise DataError(f"stock file {str(source)!r} lacks the column(s) {', '.join(missing)} "
                        f"(it has {', '.join(map(str, frame.columns))}); it needs item_id and "
                        "units")
    units = pd.to_numeric(frame["units"], errors="coerce")
    # Spelled as the interactions' ids are (15443.0 -> 15443), or nothing would match them.
    canonical = canonical_ids(frame["item_id"])
    bad = frame.index[units.isna() | (units < 0) | ~np.isfinite(units.fillna(0))
                      | canonical.isna().to_numpy()]
    if len(bad):
        rows = ", ".join(str(i + 2) for i in bad[:_SHOWN])
        raise DataError(f"stock file {str(source)!r}: {len(bad)} row(s) without an item_id or "
                        f"with units that are not a non-negative number (lines {rows}"
                        f"{', ...' if len(bad) > _SHOWN else ''}); fix or remove them")
    ids = canonical.astype(str)
    repeated = ids[ids.duplicated(keep=False)]
    if len(repeated):
        names = ", ".join(sorted(set(repeated))[:_SHOWN])
        raise DataError(f"stock file {str(source)!r}: item(s) listed more than once ({names}"
                        f"{', ...' if repeated.nunique() > _SHOWN else ''}); give one row per "
                        "item with its total units")
    return pd.Series(units.to_numpy(dtype=float), index=ids.to_numpy(), name="units")


#: ``--forecast none``: stock alone (a product with no units left is held back, every
#: other keeps its place), for a shop without a demand forecast.
NO_FORECAST = "none"


def read_forecast(source: str, item_ids: np.ndarray | None = None) -> pd.DataFrame:
    """The latest demand forecast: ``item_id, week, forecast``.

    Args:
        source: A model URI of the ``shoprec-demand`` model (``models:/shoprec-demand@
            champion``), answered through its pyfunc interface; a ``forecast.parquet``
            file; or the root of the forecast data set (its latest ``forecast_date=``
            partition is read).
        item_ids: The products to ask a model about (every one of the file otherwise).

        ``none`` (:data:`NO_FORECAST`): no forecast; only products with no units left
            are held back.

    Raises:
        ConfigError: The source does not exist or holds no forecast.
    """
    if source.strip().lower() == NO_FORECAST:
        return _checked_forecast(pd.DataFrame({"item_id": [], "week": [], "forecast": []}),
                                 source)
    if ":/" in source:
        return _forecast_from_model(source, item_ids)
    path = Path(source)
    if path.is_dir():
        partitions = sorted(path.glob("forecast_date=*/forecast.parquet"))
        if not partitions:
            raise ConfigError(f"{source!r} holds no forecast_date=*/forecast.parquet; run "
                              "`shoprec forecast` first")
        path = partitions[-1]
        # The newest file, whatever its run's gate said: the registered champion is the
        # gated one. Say which, so a batch's log tells what it was ranked by.
        logger.info("reading the demand forecast of %s (the newest of %d in %s)",
                    path.parent.name, len(partitions), source)
    if not path.is_file():
        raise ConfigError(f"demand forecast {str(path)!r} does not exist; run `shoprec "
                          "forecast` first")
    try:
        frame = pd.read_parquet(path, columns=["item_id", "week", "forecast"])
    except (ValueError, KeyError, OSError) as exc:  # pyarrow's errors derive from these
        raise ConfigError(f"{str(path)!r} is not a demand forecast (it needs the columns "
                          f"item_id, week and forecast that `shoprec forecast` writes): {exc}"
                          ) from exc
    return _checked_forecast(frame, str(path))


def _checked_forecast(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """``frame`` with canonical ids and UTC weeks; a week or a figure that is not one refused.

    Raises:
        ConfigError: A week is not a date, or a forecast not a non-negative number.
    """
    weeks = pd.to_datetime(frame["week"], errors="coerce", utc=True)
    figures = pd.to_numeric(frame["forecast"], errors="coerce")
    ids = canonical_ids(frame["item_id"])
    bad = weeks.isna() | ~np.isfinite(figures.fillna(np.nan)) | (figures < 0) | ids.isna()
    if bad.any():
        shown = frame[bad.to_numpy()].head(_SHOWN).to_dict(orient="records")
        raise ConfigError(f"demand forecast {source!r}: {int(bad.sum())} row(s) without an "
                          "item_id, with a week that is not a date or a forecast that is not a "
                          f"non-negative number (such as {shown}); write it again with "
                          "`shoprec forecast`")
    return pd.DataFrame({"item_id": ids.astype(str).to_numpy(), "week": weeks.to_numpy(),
                         "forecast": figures.astype(float).to_numpy()})


def _forecast_from_model(uri: str, item_ids: np.ndarray | None) -> pd.DataFrame:
    import mlflow

    from shoprec.registry import tracking

    tracking.point_mlflow()
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # MLflow raises many kinds; all mean "not there"
        raise ConfigError(f"could not load the demand forecast {uri!r}: "
                          f"{tracking.redact(str(exc))}; run `shoprec forecast` first, "
                          "pass --forecast PATH of its Parquet output, or --forecast none "
                          "(forecast: none) to hold back only the products with no units "
                          "left") from exc
    ids = [] if item_ids is None else [str(i) for i in item_ids]
    if not ids:
        return pd.DataFrame({"item_id": [], "week": [], "forecast": []})
    try:
        answer = model.predict(pd.DataFrame({"item_id": ids}))
        answer = answer[answer["known"].astype(bool)]
    except Exception as exc:  # a model of another kind fails in its own ways
        raise ConfigError(f"{uri!r} did not answer like the demand forecast (shoprec-demand): "
                          f"{tracking.redact(str(exc))[:500]}") from exc
    if answer.empty:
        # Only the items it knows come back, so availability() never saw one to miss: a
        # shop's batch ran on another shop's forecast without a word.
        logger.warning("the demand forecast %s knows none of the %d catalogue items (is it "
                       "another shop's? pass --forecast, or name the shop's forecast: "
                       "SHOPREC_DEMAND_MODEL_NAME, demand_model_name in the batch form); "
                       "only products with no units left are held back", uri, len(ids))
    rows = answer[["item_id", "weeks", "forecast"]].explode(["weeks", "forecast"])
    return _checked_forecast(rows.rename(columns={"weeks": "week"}).reset_index(drop=True),
                             uri)


def no_units_left(item_ids: np.ndarray, held: list[str]) -> np.ndarray:
    """Per catalogue item, whether it is one of ``held`` (:func:`held_ids`).

    Products the stock file does not list are not held back: it may be an export of some
    products only. What real-time answers leave out (``serve --stock``).

    Args:
        item_ids: The catalogue, in the model's item order.
        held: The ids with no units left.
    """
    return np.isin(np.asarray(item_ids).astype(str), np.asarray(held, dtype=str))


def held_ids(stock: pd.Series) -> list[str]:
    """The ids a stock file gives no units left: what ``serve`` hands its workers."""
    return sorted(str(i) for i in stock.index[stock.to_numpy(dtype=float) <= 0])


def availability(item_ids: np.ndarray, stock: pd.Series, forecast: pd.DataFrame,
                 weeks: int = 0) -> np.ndarray:
    """Each product's share of forecast demand its stock covers, in [0, 1].

    Args:
        item_ids: The catalogue, in the model's item order.
        stock: Units on hand per item id (:func:`read_stock`).
        forecast: ``item_id, week, forecast`` (:func:`read_forecast`).
        weeks: Forecast weeks the stock must last (0: every week of the forecast).

    Returns:
        One float per catalogue item: 0 where the stock has no units (with or without a
        forecast), ``min(1, units / demand)`` where both are known and the demand is
        positive, else 1.
    """
    if len(forecast):
        last = pd.Timestamp(forecast["week"].max())
        last = last.tz_localize("UTC") if last.tzinfo is None else last.tz_convert("UTC")
        if last + pd.Timedelta(weeks=1) < pd.Timestamp.now(tz="UTC"):
            # A forecast is a frozen table: the champion only moves when a new one passes
            # its gate. Weeks already past still describe the demand it expected.
            logger.warning("the demand forecast ends with the week of %s, already past; run "
                           "`shoprec forecast` on recent sales for current weeks",
                           last.date().isoformat())
    if weeks > 0:
        starts = np.sort(forecast["week"].unique())
        # The weeks the stock must last are from this one on: a forecast made weeks ago
        # begins with weeks already past, whose demand the stock no longer has to meet.
        ends = pd.to_datetime(starts, utc=True) + pd.Timedelta(weeks=1)
        ahead = starts[ends > pd.Timestamp.now(tz="UTC")]
        first = (ahead if len(ahead) else starts)[:weeks]
        forecast = forecast[forecast["week"].isin(first)]
    demand = forecast.groupby("item_id")["forecast"].sum()
    ids = pd.Index(np.asarray(item_ids).astype(str))
    if len(demand) and not demand.index.isin(ids).any():
        logger.warning("the demand forecast names none of the %d catalogue items (is it "
                       "another shop's?); only products with no units left are held back",
                       len(ids))
    if len(stock) and not stock.index.isin(ids).any():
        logger.warning("the stock file names none of the %d catalogue items; check its "
                       "item_id column", len(ids))
    need = demand.reindex(ids).to_numpy(dtype=float)
    have = stock.reindex(ids).to_numpy(dtype=float)
    known = np.isfinite(need) & np.isfinite(have) & (need > 0)
    share = np.ones(len(ids))
    share[known] = np.minimum(1.0, have[known] / need[known])
    # None left is none to sell, whatever the forecast says (or whether it has the item).
    share[np.isfinite(have) & (have <= 0)] = 0.0
    if len(forecast):
        logger.info("stock: %d of %d catalogue items forecast to sell out (%d with no units)",
                    int((share < 1).sum()), len(ids), int((share == 0).sum()))
    else:
        logger.info("stock: %d of %d catalogue items have no units left (no forecast)",
                    int((share == 0).sum()), len(ids))
    return share
