"""The demand forecast in the MLflow registry: ``shoprec-demand``, its gate and its versions.

Every forecast run registers a version (alias ``challenger``) holding the forecast it
published and its recipe (:meth:`~shoprec.forecast.ForecastSettings.recipe`). It becomes
``champion`` only if it passes the gate, the recommender's rules with WAPE (lower is
better) as the metric:

* ``beats_best_naive``: the model's held-out WAPE is at least ``margin`` (relative) under
  the best naive baseline's;
* ``not_worse_than_champion``: the model's WAPE is at most that of the champion's recipe
  retrained on this run's weeks and scored on the same held-out weeks (never the champion's
  published figures, which came from other weeks). A registry that cannot be read, or a
  champion without a readable recipe, fails this check.

``previous-champion``, the alias-move log, ``shoprec rollback`` and the fault handling of
an interrupted upload are the recommender's (:mod:`shoprec.registry.publish`).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from shoprec.errors import RegistryError
from shoprec.registry import tracking
from shoprec.registry.aliases import CHAMPION, alias_version
from shoprec.registry.publish import GateCheck, GateVerdict, register_pyfunc

logger = logging.getLogger(__name__)

#: The registered model of the demand forecast.
DEMAND_MODEL_NAME = "shoprec-demand"
#: Version tag holding the recipe (JSON).
DEMAND_RECIPE_TAG = "demand_recipe"
#: Version tag that says what a version is (the recommender's versions have none).
KIND_TAG, KIND = "shoprec_kind", "demand-forecast"
PYFUNC_FILE = Path(__file__).with_name("demand_model.py")
#: What loading the model imports (see ``demand_model.py``).
REQUIREMENTS = ("mlflow", "pandas", "pyarrow")


@dataclass
class DemandChampion:
    """The current champion of the demand model.

    Attributes:
        version: Its version; ``None`` when the alias is not set.
        recipe: Its recipe, when readable.
        error: Why it cannot be compared (registry unreadable, no recipe).
    """

    version: str | None = None
    recipe: dict[str, Any] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the run summary)."""
        return asdict(self)


def demand_champion(name: str = DEMAND_MODEL_NAME) -> DemandChampion:
    """The champion of ``name`` and its recipe; never raises.

    Only an unset alias means "no champion"; a registry that cannot be read, or a champion
    without a readable recipe, gives a reference with ``error`` set, which fails the gate.
    """
    try:
        version = alias_version(name, CHAMPION)
        if version is None:
            return DemandChampion()
        try:
            tags = tracking.client().get_model_version(name, version).tags or {}
        except Exception as exc:  # any client failure is a registry fault
            raise RegistryError(f"could not read {name} version {version} from the MLflow "
                                f"registry at {tracking.display_uri()}: "
                                f"{tracking.redact(str(exc))}") from exc
    except RegistryError as exc:
        return DemandChampion(error=str(exc))
    try:
        recipe = json.loads(tags[DEMAND_RECIPE_TAG])
        if not isinstance(recipe, dict):
            raise TypeError("not a JSON object")
    except (KeyError, TypeError, ValueError):
        return DemandChampion(version, None, (
            f"champion version {version} has no readable '{DEMAND_RECIPE_TAG}' tag, so it "
            "cannot be retrained for a like-for-like comparison (is it a demand-forecast "
            "version?)"))
    return DemandChampion(version, recipe)


def refuse_other_kind(name: str, kind: str) -> None:
    """Refuse to register a ``kind`` (``recommender`` or ``forecast``) under another kind's name.

    What ``name`` holds is what its champion is, or else its latest labelled version (one a
    run left unlabelled says nothing: the next publication withdraws it).
    A forecast registered under the recommender's name becomes its challenger, and a
    rollback or a hand-set alias can then serve it to shoppers; the reverse breaks the
    batch's stock-aware ranking. A registry that cannot be read is left to the run, which
    fails closed on it.

    Raises:
        ConfigError: ``name`` holds the other kind.
    """
    from mlflow.exceptions import MlflowException

    from shoprec.errors import ConfigError

    client = tracking.client()
    try:
        version = alias_version(name, CHAMPION)
        if version is None:
            found = client.search_model_versions(f"name = '{name}'", max_results=100,
                                                 order_by=["version_number DESC"])
            version = next((str(v.version) for v in found if "gate" in (v.tags or {})), None)
        if version is None:
            return
        forecast = is_forecast_version(name, version)
    except (RegistryError, MlflowException):
        return
    if forecast != (kind == "forecast"):
        held = "demand forecasts" if forecast else "recommenders"
        other = DEMAND_MODEL_NAME if kind == "forecast" else "shoprec-recommender"
        such = f", such as {other!r}" if other != name else ""
        raise ConfigError(f"registered model {name!r} holds {held} (version {version}); a "
                          f"{kind} cannot be registered under it: use another "
                          f"--registered-model-name{such}")


def is_forecast_version(name: str, version: str) -> bool:
    """Whether ``name`` version ``version`` is a demand forecast (its ``shoprec_kind`` tag)."""
    tags = tracking.client().get_model_version(name, str(version)).tags or {}
    return tags.get(KIND_TAG) == KIND


def demand_gate(test: dict[str, dict[str, float]], best_naive: str, margin: float,
                champion: DemandChampion, champion_test: dict[str, float] | None = None,
                champion_problem: str | None = None, same_recipe: bool = False) -> GateVerdict:
    """Decide whether a forecast version may become champion (WAPE, lower is better).

    Args:
        test: Every method's held-out figures (``model`` and the ``naive_...`` baselines).
        best_naive: The baseline with the lowest WAPE.
        margin: Relative margin under the best naive WAPE (0.05: at least 5% lower).
        champion: The current champion (:func:`demand_champion`).
        champion_test: The champion's recipe's held-out figures on this run's weeks.
        champion_problem: Why there are none (the retrain failed).
        same_recipe: The champion's recipe is this run's, so its figures are the model's
            own (same seed, same weeks) and were not computed twice.

    Returns:
        The verdict; ``passed`` only if every check passed.
    """
    value = float(test["model"]["wape"])
    naive = float(test[best_naive]["wape"])
    bar = naive * (1.0 - margin)
    checks = [GateCheck("beats_best_naive", value <= bar, value, naive,
                        f"wape {value:.4f} vs {best_naive} {naive:.4f} x {1 - margin:.2f} = "
                        f"{bar:.4f}")]
    name = "not_worse_than_champion"
    if champion.error:
        checks.append(GateCheck(name, False, value, None, champion.error))
    elif champion.version is None:
        checks.append(GateCheck(name, True, value, None, "no champion yet"))
    elif champion_test is None:
        checks.append(GateCheck(
            name, False, value, None, f"champion version {champion.version}'s recipe could "
            f"not be retrained on this run's weeks: {champion_problem or 'no result'}"))
    else:
        reference = float(champion_test["wape"])
        how = ("(the same recipe as this run's: the same model on the same weeks)"
               if same_recipe else "retrained on this run's weeks, same held-out weeks")
        checks.append(GateCheck(
            name, value <= reference, value, reference,
            f"wape {value:.4f} vs {reference:.4f} for champion version {champion.version}'s "
            f"recipe {how}"))
    return GateVerdict(all(c.passed for c in checks), "wape", checks, champion.version)


def _signature() -> tuple[Any, pd.DataFrame]:
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import Array, ColSpec, Schema

    inputs = Schema([ColSpec(DataType.string, "item_id")])
    outputs = Schema([ColSpec(DataType.string, "item_id"),
                      ColSpec(Array(DataType.string), "weeks"),
                      ColSpec(Array(DataType.double), "forecast"),
                      ColSpec(Array(DataType.double), "upper"),
                      ColSpec(DataType.boolean, "known")])
    return ModelSignature(inputs=inputs, outputs=outputs), pd.DataFrame({"item_id": []})


def publish_forecast(folder: str | Path, *, run_id: str, name: str, verdict: GateVerdict,
                     recipe: dict[str, Any], tags: dict[str, str]) -> dict[str, Any]:
    """Register the forecast in ``folder`` (``forecast.parquet``) as a version of ``name``.

    Args:
        folder: Holds ``forecast.parquet`` (item_id, week, forecast, upper).
        run_id: The forecast's MLflow run.
        name: Registered model name.
        verdict: The gate's decision (:func:`demand_gate`).
        recipe: The model's recipe, recorded as the ``demand_recipe`` tag.
        tags: Other version tags (data fingerprint, flow run id, figures...).

    Returns:
        ``{"name", "version", "aliases", "model_uri", "previous_champion"}``.
    """
    signature, _ = _signature()
    forecast = pd.read_parquet(Path(folder) / "forecast.parquet", columns=["item_id"])
    example = pd.DataFrame({"item_id": forecast["item_id"].astype(str).unique()[:2]})
    requirements = [f"{d}=={importlib.metadata.version(d)}" for d in REQUIREMENTS]
    return register_pyfunc(
        run_id=run_id, name=name, verdict=verdict,
        tags={**tags, KIND_TAG: KIND, DEMAND_RECIPE_TAG: json.dumps(recipe, sort_keys=True)},
        python_model=PYFUNC_FILE, artifacts={"forecast": str(folder)}, signature=signature,
        example=example, requirements=requirements)
