"""The shoprec pyfunc model's code, as the installed shoprec defines it.

``pyfunc_model.py``, the file MLflow logs with each version (models from code), only hands
MLflow this class. A version logged by an older shoprec carries its own copy of the whole
class instead: :func:`shoprec.serving.server.create_app` serves it with this one, so that
every version on a server follows the operator's settings (explanations, live sessions,
diversity) and answers errors alike.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

logger = logging.getLogger(__name__)


def apply_serving_environment(bundle: Any) -> None:
    """Set a served bundle's options from what ``shoprec serve`` hands its workers.

    Args:
        bundle: The :class:`~shoprec.registry.bundle.ModelBundle` served.

    Raises:
        ConfigError: The server holds another pseudonymisation key than the model's.
    """
    from shoprec.serving.engine import DIVERSITY_ENV, EXPLANATIONS_ENV, default_diversity
    from shoprec.serving.sessions import SESSIONS_ENV, SessionStore

    # `shoprec serve --diversity W` hands its workers the default re-ranking weight.
    bundle.diversity = default_diversity(os.environ.get(DIVERSITY_ENV))
    # A served model names shoppers' past purchases only when its operator allows it.
    bundle.explanations = os.environ.get(EXPLANATIONS_ENV) == "1"
    # Another pseudonymisation key than the model's fails here; none is said once.
    if bundle.meta.get("pseudonym_key_id") and bundle.user_key is None:
        from shoprec.privacy import KEY_ENV

        logger.warning("this model's shoppers are pseudonyms and %s is not set: requests "
                       "must name shoppers by their pseudonyms; raw ids are refused",
                       KEY_ENV)
    # `shoprec serve --stock FILE`: products with no units left are never answered.
    from shoprec.serving.engine import STOCK_ENV

    if os.environ.get(STOCK_ENV):
        import json

        from shoprec.inventory import no_units_left

        bundle.held_back = no_units_left(bundle.items.ids, json.loads(os.environ[STOCK_ENV]))
    # `shoprec serve` keeps live sessions (POST /events) in this SQLite file.
    if os.environ.get(SESSIONS_ENV) and getattr(bundle, "sessions", None) is None:
        bundle.sessions = SessionStore(os.environ[SESSIONS_ENV])


class ShoprecModel(PythonModel):
    """Answers recommendation requests from a :class:`ModelBundle` artifact."""

    def load_context(self, context: Any) -> None:
        """Load the bundle named ``bundle`` in the model's artifacts."""
        from shoprec.registry.bundle import ModelBundle

        self.bundle = ModelBundle.load(context.artifacts["bundle"])
        apply_serving_environment(self.bundle)

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
