"""MLflow models-from-code definition of the ``shoprec-demand`` pyfunc model.

A version is the forecast its run published (``forecast.parquet``: item_id, week, forecast,
upper) and the recipe that made it. ``predict`` answers, per requested product, its
forecast weeks with the point forecast and the upper bound. This file imports only pandas
and MLflow, so the model loads without shoprec installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class DemandForecastModel(PythonModel):
    """Answers ``item_id`` requests from the forecast table in the model's artifacts."""

    def load_context(self, context: Any) -> None:
        """Read ``forecast/forecast.parquet`` into per-product arrays."""
        table = pd.read_parquet(Path(context.artifacts["forecast"]) / "forecast.parquet")
        table = table.sort_values(["item_id", "week"])
        self.weeks = {}
        for item, part in table.groupby("item_id", sort=False):
            self.weeks[str(item)] = (
                [pd.Timestamp(w).date().isoformat() for w in part["week"]],
                [float(v) for v in part["forecast"]], [float(v) for v in part["upper"]])

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One row per request: ``item_id``, ``weeks``, ``forecast``, ``upper``, ``known``.

        A product outside the forecast (new, or sold in too few weeks to be forecast) gets
        empty lists and ``known`` false. A request without ``item_id`` is invalid input
        (HTTP 400 from MLflow's model server).
        """
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        if "item_id" not in model_input or len(model_input) == 0:
            raise MlflowException("invalid request: every row needs an item_id",
                                  error_code=INVALID_PARAMETER_VALUE)
        rows = []
        for item in model_input["item_id"]:
            if item is None or (isinstance(item, float) and pd.isna(item)):
                raise MlflowException("invalid request: every row needs an item_id",
                                      error_code=INVALID_PARAMETER_VALUE)
            weeks, forecast, upper = self.weeks.get(str(item), ([], [], []))
            rows.append({"item_id": str(item), "weeks": weeks, "forecast": forecast,
                         "upper": upper, "known": bool(weeks)})
        return pd.DataFrame(rows, columns=["item_id", "weeks", "forecast", "upper", "known"])


mlflow.models.set_model(DemandForecastModel())
