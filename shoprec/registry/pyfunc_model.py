"""MLflow models-from-code definition of the shoprec pyfunc model.

MLflow logs this file's source instead of a pickle; loading runs it and calls
``load_context``, which reads the bundle's plain files.
"""

from __future__ import annotations

import os
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
        # `shoprec serve --diversity W` hands its workers the default re-ranking weight.
        from shoprec.serving.engine import DIVERSITY_ENV, EXPLANATIONS_ENV, default_diversity

        self.bundle.diversity = default_diversity(os.environ.get(DIVERSITY_ENV))
        # A served model names shoppers' past purchases only when its operator allows it.
        self.bundle.explanations = os.environ.get(EXPLANATIONS_ENV) == "1"
        # A server holding another pseudonymisation key than the model's fails here.
        _ = self.bundle.user_key
        # `shoprec serve` keeps live sessions (POST /events) in this SQLite file.
        from shoprec.serving.sessions import SESSIONS_ENV, SessionStore

        if os.environ.get(SESSIONS_ENV):
            self.bundle.sessions = SessionStore(os.environ[SESSIONS_ENV])

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        """One response row (``item_ids``, ``scores``, ``titles``, ``source``) per request.

        A malformed request raises an ``MlflowException`` marked as invalid input, which
        MLflow's model server answers with HTTP 400 and the message.
        """
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import (
            INTERNAL_ERROR,
            INVALID_PARAMETER_VALUE,
            TEMPORARILY_UNAVAILABLE,
        )

        from shoprec.errors import ServingUnavailableError

        if len(model_input) == 0:
            # MLflow drops fields outside the signature before this call, so a request made
            # only of unknown fields arrives as an empty frame.
            raise MlflowException(
                "invalid request: no request row carries any of the fields user_id, "
                "recent_items, query, k, explain, diversity, item_id (fields outside these "
                "are ignored)",
                error_code=INVALID_PARAMETER_VALUE)
        try:
            return self.bundle.predict(model_input)
        except (ValueError, TypeError) as exc:
            raise MlflowException(f"invalid request: {exc}",
                                  error_code=INVALID_PARAMETER_VALUE) from exc
        except ServingUnavailableError as exc:  # a fault of the server's (its erasure list)
            # Said as a fault (503), not as the client's mistake with a traceback.
            raise MlflowException(f"server error: {exc}",
                                  error_code=TEMPORARILY_UNAVAILABLE) from exc
        except Exception as exc:  # a bug: a 500, without MLflow's traceback in the answer
            raise MlflowException(f"internal error: {type(exc).__name__}: {exc}",
                                  error_code=INTERNAL_ERROR) from exc


mlflow.models.set_model(ShoprecModel())
