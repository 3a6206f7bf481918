"""MLflow models-from-code definition of the shoprec pyfunc model.

MLflow logs this file's source instead of a pickle; loading runs it and calls
``load_context``, which reads the bundle's plain files.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class ShoprecModel(PythonModel):
    """Answers recommendation requests from a :class:`ModelBundle` artifact."""

    def load_context(self, context: Any) -> None:
        """Load the bundle named ``bundle`` in the model's artifacts."""
        from shoprec.registry.bundle import ModelBundle

        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One response row (``item_ids``, ``scores``, ``source``) per request row."""
        return self.bundle.predict(model_input)


mlflow.models.set_model(ShoprecModel())
