"""Training candidates, the leaderboard, selection and the refit of the winner.

Pure functions over the prepared data; the Prefect flow runs them as tasks (one training
task per candidate, in parallel) and MLflow logging lives in :mod:`shoprec.registry`.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shoprec.config import TrainingConfig, WeightingConfig
from shoprec.data.cleaning import CleanData
from shoprec.errors import ModelFitError, ModelSkippedError
from shoprec.evaluation import evaluate, rmse
from shoprec.features import IdMap, event_weights, interaction_matrix, item_frame
from shoprec.features.encoding import EncodedSplit
from shoprec.models import (
    CANDIDATES,
    ContentRecommender,
    FitContext,
    Popularity,
    Recommender,
    make_model,
)
from shoprec.registry.bundle import ModelBundle

logger = logging.getLogger(__name__)


@dataclass
class CandidateResult:
    """One row of the leaderboard.

    Attributes:
        model: Candidate name.
        family: Model family.
        status: ``ok``, ``failed`` or ``skipped``.
        validation: Validation metrics (``ndcg@10`` ...).
        test: Test metrics.
        train_seconds: Time spent fitting.
        params: Hyperparameters.
        error: Why it failed or was skipped.
        curves: Per-epoch training curves (loss, validation ndcg@10) of iterative models.
    """

    model: str
    family: str
    status: str = "ok"
    validation: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    curves: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the summary's leaderboard entry)."""
        return asdict(self)


def model_params(name: str, config: TrainingConfig,
                 threads: int | None = None) -> dict[str, Any]:
    """Hyperparameters of candidate ``name``: configured ones, plus the run's seed and, for
    models that take it, their share of the cores."""
    params = dict(config.params.get(name, {}))
    accepted = inspect.signature(CANDIDATES[name].__init__).parameters
    if "seed" in accepted:
        params.setdefault("seed", config.seed)
    if threads is not None and "threads" in accepted:
        params.setdefault("threads", threads)
    return params


def fit_candidate(name: str, params: dict[str, Any], interactions, items: pd.DataFrame | None,
                  encoded: EncodedSplit | None = None,
                  has_ratings: bool = True) -> tuple[Recommender, float]:
    """Build and fit one candidate.

    Returns:
        The fitted model and the seconds spent fitting.

    Raises:
        ModelFitError: The catalogue is over the family's limit, or fitting failed.
    """
    model = make_model(name, params)
    n_items = interactions.shape[1]
    if model.max_items is not None and n_items > model.max_items:
        raise ModelSkippedError(f"{name} is limited to {model.max_items:,} items and the data "
                                f"has {n_items:,}; skipped")
    context = FitContext(items=items, has_ratings=has_ratings)
    if encoded is not None:
        context.validation_history = encoded.train
        context.validation_relevance = encoded.validation
    began = time.perf_counter()
    model.fit(interactions, context)
    return model, time.perf_counter() - began


def train_and_evaluate(name: str, params: dict[str, Any], encoded: EncodedSplit,
                       items: pd.DataFrame | None, ks: list[int]) -> tuple[CandidateResult,
                                                                           Recommender]:
    """Fit a candidate on the training part and score it on validation and test.

    Validation is scored from the training rows; test from training + validation rows (what
    the model would know of the user at test time).
    """
    model, seconds = fit_candidate(name, params, encoded.train, items, encoded,
                                   has_ratings=encoded.has_ratings)
    validation = evaluate(model, encoded.train, encoded.validation, ks)
    test = evaluate(model, encoded.test_history, encoded.test, ks)
    if hasattr(model, "predict_pairs"):
        # Rating models are also judged on the rating values they predict.
        for metrics, history, ratings in (
                (validation, encoded.train, encoded.validation_ratings),
                (test, encoded.test_history, encoded.test_ratings)):
            value = rmse(model, history, ratings) if ratings is not None else float("nan")
            if np.isfinite(value):
                metrics["rmse"] = value
    for part, metrics in (("validation", validation), ("test", test)):
        if not all(np.isfinite(v) for v in metrics.values()):
            raise ModelFitError(f"{name} gave non-finite {part} metrics")
    # Hyperparameters the model chose on validation are kept for the refit.
    chosen = {**params, **getattr(model, "selected_params_", {})}
    history = getattr(model, "history_", None) or []
    curves = {key: [float(r[key]) for r in history if key in r]
              for key in dict.fromkeys(k for r in history for k in r if k != "epoch")}
    result = CandidateResult(model=name, family=model.family, validation=validation, test=test,
                             train_seconds=round(seconds, 3),
                             params={**model.get_params(), **chosen}, curves=curves)
    logger.info("%s: validation %s, test %s, %.1f s", name, validation, test, seconds)
    return result, model


def failed_result(name: str, params: dict[str, Any], error: BaseException) -> CandidateResult:
    """A leaderboard row for a candidate that failed or was skipped."""
    family = CANDIDATES[name].family if name in CANDIDATES else "unknown"
    message = f"{type(error).__name__}: {error}"
    status = "skipped" if isinstance(error, ModelSkippedError) else "failed"
    return CandidateResult(model=name, family=family, status=status, params=params,
                           error=message)


def leaderboard_frame(results: list[CandidateResult], primary: str) -> pd.DataFrame:
    """The leaderboard as a table, best validation score of the primary metric first."""
    rows = []
    for result in results:
        row: dict[str, Any] = {"model": result.model, "family": result.family,
                               "status": result.status,
                               "train_seconds": result.train_seconds}
        row.update({f"validation_{k}": v for k, v in result.validation.items() if k != "users"})
        row.update({f"test_{k}": v for k, v in result.test.items() if k != "users"})
        row["error"] = result.error or ""
        rows.append(row)
    frame = pd.DataFrame(rows)
    key = f"validation_{primary}"
    if key in frame:
        frame = frame.sort_values(key, ascending=False, na_position="last", kind="stable")
    return frame.reset_index(drop=True)


def select_winner(results: list[CandidateResult], primary: str) -> CandidateResult:
    """The successful candidate with the best validation score of the primary metric.

    Raises:
        ModelFitError: No candidate succeeded.
    """
    ok = [r for r in results if r.status == "ok"]
    if not ok:
        reasons = "; ".join(f"{r.model}: {r.error}" for r in results)
        raise ModelFitError(f"every candidate failed: {reasons}")
    return max(ok, key=lambda r: r.validation[primary])


def refit_bundle(name: str, params: dict[str, Any], data: CleanData,
                 weighting: WeightingConfig, meta: dict[str, Any]) -> ModelBundle:
    """Refit the winner on all clean data and bundle it for serving.

    The item index covers the whole catalogue, products nobody has bought yet included, and
    the bundle always carries a content model for search, whatever family won.

    Args:
        name: Candidate name.
        params: Its hyperparameters.
        data: All clean interactions and the catalogue.
        weighting: Event weights.
        meta: Description stored in the bundle.
    """
    interactions = data.interactions
    has_ratings = bool((interactions["event"] == "rating").any())
    users = IdMap.from_values(interactions["user_id"])
    items = IdMap.from_values(pd.concat([interactions["item_id"], data.items["item_id"]]))
    matrix = interaction_matrix(interactions, users, items, event_weights(interactions, weighting))
    frame = item_frame(data.items, items)
    model, seconds = fit_candidate(name, params, matrix, frame, has_ratings=has_ratings)
    if isinstance(model, ContentRecommender):
        search = model
    else:
        search = ContentRecommender(popularity_smoothing=0.1).fit(matrix, FitContext(items=frame))
    fallback = Popularity().fit(matrix)
    logger.info("refit %s on all %d interactions in %.1f s", name, matrix.nnz, seconds)
    return ModelBundle(model=model, users=users, items=items, history=matrix,
                       fallback=fallback, search=search,
                       titles=frame["title"].fillna("").astype(str).tolist(),
                       meta={**meta, "model": name, "family": model.family,
                             "refit_seconds": round(seconds, 3)})
