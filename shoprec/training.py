"""Training candidates, the leaderboard, selection and the refit of the winner.

Pure functions over the prepared data; the Prefect flow runs them as tasks (one training
task per candidate, in parallel) and MLflow logging lives in :mod:`shoprec.registry`.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shoprec.config import TrainingConfig, WeightingConfig
from shoprec.data.cleaning import CleanData
from shoprec.errors import FitStopped, ModelFitError, ModelSkippedError
from shoprec.evaluation import evaluate, mlflow_name, rmse
from shoprec.evaluation.evaluate import evaluate_with_tradeoff
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
from shoprec.registry.publish import GateVerdict, gate
from shoprec.registry.recipe import (
    CatalogueSketch,
    ChampionReference,
    DataSketches,
    Recipe,
    catalogue_sketch,
    titled_sketch,
)
from shoprec.tuning import ValidationTuner

logger = logging.getLogger(__name__)

#: Leaderboard name of the champion's recipe retrained on the run's training split.
CHAMPION_RECIPE = "champion-recipe"


@dataclass
class CandidateResult:
    """One row of the leaderboard.

    Attributes:
        model: Candidate name.
        family: Model family.
        status: ``ok``, ``failed`` or ``skipped``.
        validation: Validation metrics (``ndcg@10`` ...).
        test: Test metrics.
        train_seconds: Time spent fitting on the training part (choices on validation
            included).
        refit_seconds: Time spent refitting on training + validation for the test figures.
        params: Hyperparameters.
        error: Why it failed or was skipped.
        curves: Per-epoch training curves (loss, validation ndcg@10) of iterative models.
        diversity: The accuracy/novelty trade-off on test: one mapping per weight of the
            novelty re-ranking (:func:`~shoprec.evaluation.evaluate.novelty_tradeoff`).
    """

    model: str
    family: str
    status: str = "ok"
    validation: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    refit_seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    curves: dict[str, list[float]] = field(default_factory=dict)
    diversity: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the summary's leaderboard entry)."""
        return asdict(self)


def model_params(name: str, config: TrainingConfig,
                 threads: int | None = None) -> dict[str, Any]:
    """Hyperparameters of candidate ``name``.

    Configured ones, plus the run's seed and, for models that take it, their share of the cores.
    """
    params = config.params.of(name)
    accepted = inspect.signature(CANDIDATES[name].__init__).parameters
    if "seed" in accepted:
        params.setdefault("seed", config.seed)
    if threads is not None and "threads" in accepted:
        params.setdefault("threads", threads)
    if name == "popularity" and config.popularity_epsilon is not None \
            and params.get("epsilon") is None:
        params["epsilon"] = config.popularity_epsilon
    return params


def fit_candidate(name: str, params: dict[str, Any], interactions: Any,
                  items: pd.DataFrame | None,
                  encoded: EncodedSplit | None = None,
                  has_ratings: bool = True,
                  tuner: ValidationTuner | None = None,
                  item_state: dict[str, Any] | None = None,
                  stop: Callable[[], bool] | None = None) -> tuple[Recommender, float]:
    """Build and fit one candidate.

    With ``encoded``, the values the recipe leaves open are chosen on its validation part
    (by ``tuner`` when given, e.g. one that reports epochs to a search's pruner).
    ``item_state``: an earlier fit's :meth:`~shoprec.models.base.Recommender.item_state`
    on the same ``items``, for the family to start from. ``stop``: asked between epochs
    and sweeps whether the fit is still wanted (:class:`~shoprec.models.base.FitContext`).

    Returns:
        The fitted model and the seconds spent fitting.

    Raises:
        ModelFitError: The catalogue is over the family's limit, or fitting failed.
        FitStopped: ``stop`` said the fit is no longer wanted.
    """
    model = make_model(name, params)
    n_items = interactions.shape[1]
    if model.max_items is not None and n_items > model.max_items:
        raise ModelSkippedError(f"{name} is limited to {model.max_items:,} items and the data "
                                f"has {n_items:,}")
    # The values the recipe leaves open are chosen on validation by the tuner.
    if tuner is None and encoded is not None:
        tuner = ValidationTuner(encoded.train, encoded.validation,
                                exclude_seen=not encoded.repeat_items)
    context = FitContext(items=items, has_ratings=has_ratings, tuner=tuner,
                         item_state=item_state, stop=stop,
                         repeat_items=None if encoded is None else encoded.repeat_items)
    began = time.perf_counter()
    model.fit(interactions, context)
    return model, time.perf_counter() - began


#: What a candidate reports once its validation figures are known: its name, the
#: hyperparameters its row will carry (the winner's refit takes them) and the figures.
ValidationReport = Callable[[str, dict[str, Any], dict[str, float]], None]


def train_and_evaluate(name: str, params: dict[str, Any], encoded: EncodedSplit,
                       items: pd.DataFrame | None, ks: list[int],
                       on_validation: ValidationReport | None = None,
                       curve_k: int | None = None) -> tuple[CandidateResult, Recommender]:
    """Fit a candidate, choose on validation, refit on training + validation, score on test.

    The protocol of DESIGN.md: the candidate is fitted on the training part, the values its
    recipe leaves open (regularisation, smoothing, epochs) are chosen on validation, and its
    validation figures come from that fit (scored from the training rows). It is then refit
    with those values, and nothing chosen again, on training + validation, and its test
    figures come from the refit (scored from the training + validation rows: what the
    model would know of the user at test time). Validation alone decides anything.

    ``on_validation``, when given, hears the validation figures before the refit starts
    (:class:`ValidationBoard`). ``curve_k``: the K of the accuracy/novelty curve (the
    primary metric's; by default the first of ``ks``).

    Returns:
        The leaderboard row and the refit model (the one the test figures are from).
    """
    model, seconds = fit_candidate(name, params, encoded.train, items, encoded,
                                   has_ratings=encoded.has_ratings)
    validation, _ = _scored(name, "validation", model, encoded.train, encoded.validation,
                            encoded.validation_ratings, ks, repeat_items=encoded.repeat_items)
    # Hyperparameters the model chose on validation are kept for the refits.
    chosen = {**params, **getattr(model, "selected_params_", {})}
    history = getattr(model, "history_", None) or []
    curves = {key: [float(r[key]) for r in history if key in r]
              for key in dict.fromkeys(k for r in history for k in r if k != "epoch")}
    reported = {**model.get_params(), **chosen}
    item_state = model.item_state()  # the same items: content's features are not redone
    del model  # one of the candidate's models in memory at a time
    if on_validation is not None:
        on_validation(name, reported, validation)
    refit, refit_seconds = fit_candidate(name, chosen, encoded.test_history, items,
                                         has_ratings=encoded.has_ratings,
                                         item_state=item_state)
    # And what --diversity would cost and buy, from the same scoring of the test users.
    test, diversity = _scored(name, "test", refit, encoded.test_history, encoded.test,
                              encoded.test_ratings, ks, curve_k=curve_k or ks[0],
                              repeat_items=encoded.repeat_items)
    result = CandidateResult(model=name, family=refit.family, validation=validation, test=test,
                             train_seconds=round(seconds, 3),
                             refit_seconds=round(refit_seconds, 3), params=reported,
                             curves=curves, diversity=diversity)
    logger.info("%s: validation %s, test %s (refit on training + validation), %.1f + %.1f s",
                name, validation, test, seconds, refit_seconds)
    return result, refit


def _scored(name: str, part: str, model: Recommender, history: Any, relevant: Any,
            ratings: Any, ks: list[int], curve_k: int | None = None,
            repeat_items: bool = False) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The ranking metrics of one part, RMSE too for rating models; all must be finite.

    With ``curve_k``, also the accuracy/novelty curve of ``--diversity`` at that K (else
    empty). With ``repeat_items``, the items of the history stay in the ranking (they are
    relevant: ``SplitConfig.repeat_items``).
    """
    # Once per part and candidate, the scores are held to the interface (their shape,
    # and finite): a family that breaks it fails with the reason, never publishes.
    if curve_k is not None:
        metrics, curve = evaluate_with_tradeoff(model, history, relevant, ks, k=curve_k,
                                                exclude_seen=not repeat_items,
                                                check_scores=True)
    else:
        metrics, curve = evaluate(model, history, relevant, ks, beyond_accuracy=True,
                                  exclude_seen=not repeat_items, check_scores=True), []
    if hasattr(model, "predict_pairs") and ratings is not None:
        # Rating models are also judged on the rating values they predict.
        value = rmse(model, history, ratings)
        if np.isfinite(value):
            metrics["rmse"] = value
    if not all(np.isfinite(v) for v in metrics.values()):
        raise ModelFitError(f"{name} gave non-finite {part} metrics")
    return metrics, curve


def train_candidate_row(name: str, params: dict[str, Any], encoded: EncodedSplit,
                        items: pd.DataFrame | None, ks: list[int],
                        on_validation: ValidationReport | None = None,
                        curve_k: int | None = None) -> CandidateResult:
    """The leaderboard row of one candidate: trained and scored, or skipped with the reason.

    A candidate that does not apply to the data (no ratings, a catalogue over its limit)
    is an expected outcome, not a failure: it comes back as a ``skipped`` row. Real
    failures raise. ``on_validation``, ``curve_k``: see :func:`train_and_evaluate`.
    """
    try:
        return train_and_evaluate(name, params, encoded, items, ks, on_validation,
                                  curve_k)[0]
    except ModelSkippedError as exc:
        logger.info("%s skipped: %s", name, exc)
        return failed_result(name, params, exc)


def retrain_recipe(recipe: Recipe, encoded: EncodedSplit, items: pd.DataFrame | None,
                   ks: list[int], threads: int | None = None,
                   label: str = CHAMPION_RECIPE, curve_k: int | None = None) -> CandidateResult:
    """Retrain a registered version's recipe on this run's split.

    It is scored on the same validation and test users as every candidate.

    Args:
        recipe: The version's candidate and chosen hyperparameters.
        encoded: This run's split.
        items: The item frame (content features).
        ks: Cut-offs.
        threads: Cores for the model, where it takes a thread count.
        label: The row's name in the leaderboard.
        curve_k: The K of its accuracy/novelty curve (the candidates').

    Returns:
        Its leaderboard row, named ``label``; ``failed`` or ``skipped`` with the reason when
        the recipe cannot be trained here (unknown candidate, no longer applies, failure).
    """
    params = recipe.training_params(threads)
    try:
        if recipe.candidate not in CANDIDATES:
            raise ModelFitError(f"the recipe's candidate {recipe.candidate!r} is not one of "
                                f"this code's ({', '.join(CANDIDATES)})")
        result = train_candidate_row(recipe.candidate, params, encoded, items, ks,
                                     curve_k=curve_k)
    except Exception as exc:  # noqa: BLE001 - the reason goes to the gate, not a traceback
        logger.warning("the recipe of %s could not be retrained: %s", recipe.candidate, exc)
        result = failed_result(recipe.candidate, params, exc)
    result.model = label
    return result


def warn_cutoffs_past_catalogue(ks: list[int], items: int) -> list[int]:
    """Warn about cut-offs K that hold the whole training catalogue; returns them.

    Every list of such a K holds every item a model can rank: its recall, hit rate and
    coverage are 1 for every model, and no figure at it can tell two models apart.
    """
    wide = [k for k in ks if k >= items]
    if wide and items <= 1:
        # No K under 1 exists: the advice is to add products, not to change K.
        logger.warning("the training part holds %d item: every model recommends it and no "
                       "figure can tell two models apart; train on more products", items)
    elif wide:
        logger.warning("--k %s: at least the %d items trained on, so every top K holds the "
                       "whole catalogue and every model scores alike there; use a K under %d",
                       ",".join(map(str, wide)), items, items)
    return wide


def failed_result(name: str, params: dict[str, Any], error: BaseException) -> CandidateResult:
    """A leaderboard row for a candidate that failed or was skipped."""
    family = CANDIDATES[name].family if name in CANDIDATES else "unknown"
    skipped = isinstance(error, ModelSkippedError)
    # A skip's reason is a sentence for the user; a failure keeps its exception type.
    message = str(error) if skipped else f"{type(error).__name__}: {error}"
    status = "skipped" if skipped else "failed"
    return CandidateResult(model=name, family=family, status=status, params=params,
                           error=message)


def leaderboard_frame(results: list[CandidateResult], primary: str) -> pd.DataFrame:
    """The leaderboard as a table, best validation score of the primary metric first."""
    rows = []
    for result in results:
        row: dict[str, Any] = {"model": result.model, "family": result.family,
                               "status": result.status,
                               "train_seconds": result.train_seconds,
                               "refit_seconds": result.refit_seconds}
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
    # The champion's recipe is a reference for the gate, not a candidate.
    ok = [r for r in results if r.status == "ok" and r.model != CHAMPION_RECIPE]
    if not ok:
        reasons = "; ".join(f"{r.model}: {r.error}" for r in results
                            if r.model != CHAMPION_RECIPE)
        raise ModelFitError(f"every candidate failed: {reasons}")
    return max(ok, key=lambda r: r.validation[primary])


class ValidationBoard:
    """The candidates' validation figures as they come in, for the winner's early refit.

    The winner is the best candidate on validation (:func:`select_winner`), so it is known
    once every candidate has its validation figures, while the slowest are still refitting
    for their test figures. Its refit on all the data can then start beside them
    (:func:`refit_early`) instead of after them, on cores the last candidates leave idle.
    Each candidate posts its figures (:meth:`post`) and says when its task has ended
    however it ended (:meth:`ended`); :meth:`wait` gives the winner once nothing more can
    come. A candidate whose task then fails (its test refit) drops out, as it does from the
    selection, and the board names the next best; :meth:`cancel` withdraws the question
    when the run fails. A refit whose winner is no longer named stops at its next epoch or
    sweep (:meth:`superseded`).

    Thread-safe; for candidates training in this process (threads, not Dask workers).

    Args:
        names: The candidates, in the leaderboard's order (a tie goes to the first, as in
            :func:`select_winner`); the champion's recipe is not one of them.
        primary: The metric the winner is chosen by.
        early: The candidates that may be refit early if they win (``None``: all); the
            others are refit after the selection, as before.
    """

    def __init__(self, names: list[str], primary: str,
                 early: set[str] | None = None) -> None:
        self._names = list(dict.fromkeys(names))
        self._primary = primary
        self._early = set(self._names) if early is None else set(early)
        self._posted: dict[str, tuple[dict[str, Any], float]] = {}
        self._ended: set[str] = set()
        self._failed: set[str] = set()
        self._closed = False
        self._cancelled = False
        self._changed = threading.Condition()

    def post(self, name: str, params: dict[str, Any], validation: dict[str, float]) -> None:
        """Record ``name``'s validation figures and the values its row will carry."""
        with self._changed:
            if name in self._names and self._primary in validation:
                self._posted[name] = (dict(params), float(validation[self._primary]))
                self._changed.notify_all()

    def ended(self, name: str, *, ok: bool = True) -> None:
        """``name``'s task has ended: its figures are all it will post.

        ``ok=False``: it ended without a leaderboard row that can win (it failed or was
        skipped), so its posted figures no longer count.
        """
        with self._changed:
            self._ended.add(name)
            if not ok:
                self._failed.add(name)
            self._changed.notify_all()

    def close(self) -> None:
        """Nothing more will come: a :meth:`wait` still undecided gives up."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def cancel(self) -> None:
        """No early refit is wanted any more (the run failed): nothing is named from now on."""
        with self._changed:
            self._closed = self._cancelled = True
            self._changed.notify_all()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        with self._changed:
            return self._cancelled

    def wait_closed(self) -> None:
        """Block until every candidate's task has ended (:meth:`close`) or :meth:`cancel`."""
        with self._changed:
            self._changed.wait_for(lambda: self._closed)

    def superseded(self, chosen: tuple[str, dict[str, Any]]) -> bool:
        """Whether ``chosen`` (a :meth:`wait`'s answer) is no longer the winner named."""
        return self.decided() != chosen

    def may_refit_early(self, name: str) -> bool:
        """Whether ``name``'s refit may start before the selection ends."""
        return name in self._early

    def decided(self) -> tuple[str, dict[str, Any]] | None:
        """The winner and its values, if every candidate is settled; else ``None``."""
        with self._changed:
            return self._decision()

    def wait(self, timeout: float | None = None) -> tuple[str, dict[str, Any]] | None:
        """Block until the winner is known (its name and values), or ``None``.

        ``None`` when the board was closed first or cancelled, the wait timed out, or no
        candidate that can still win posted figures.
        """
        with self._changed:
            self._changed.wait_for(lambda: self._closed or self._settled(), timeout)
            return self._decision()

    def _settled(self) -> bool:
        return all(name in self._posted or name in self._ended for name in self._names)

    def _decision(self) -> tuple[str, dict[str, Any]] | None:
        standing = [name for name in self._names
                    if name in self._posted and name not in self._failed]
        if self._cancelled or not self._settled() or not standing:
            return None
        # max keeps the first of equal scores, in the leaderboard's order like select_winner.
        best = max(standing, key=lambda name: self._posted[name][1])
        return best, dict(self._posted[best][0])


@dataclass(frozen=True)
class EarlyRefit:
    """A candidate refit on all the data before the selection ended (:func:`refit_early`).

    Attributes:
        name: The candidate.
        params: The values it was refit with.
        model: The fitted model.
        seconds: Seconds spent fitting.
        parts: The bundle's parts it was fitted on (their ``matrix``).
    """

    name: str
    params: dict[str, Any]
    model: Recommender
    seconds: float
    parts: BundleParts

    def refits(self, name: str, params: dict[str, Any]) -> bool:
        """Whether this is ``name``'s refit with exactly ``params``."""
        return self.name == name and self.params == params


def refit_early(board: ValidationBoard, parts: BundleParts) -> EarlyRefit | None:
    """Refit the validation winner on all the data as soon as ``board`` names it.

    While it fits, the board is asked between epochs and sweeps whether it still names the
    same winner: when that candidate's task fails (its test refit), the fit stops there and
    the one named next is refit; when the run fails (the board is cancelled), it stops and
    ``None`` comes back. A single solve (ease, content, popularity) runs to its end first.
    The refit is returned once every candidate's task has ended, and only if its candidate
    is still the one named then: a refit that ended, or failed, before its candidate's
    task failed is dropped for the next.

    Returns:
        The refit, or ``None`` when the board closed without naming a winner (no candidate
        had validation figures, or all that had them failed), was cancelled (the run
        failed), or names one that may not be refit early.

    Raises:
        ModelFitError: The refit of the candidate still named failed (the flow then refits
            it after the selection).
    """
    while True:
        chosen = board.wait()
        if chosen is None:
            logger.info("no early refit: %s", "it was withdrawn (the run failed, or another "
                        "candidate won)" if board.cancelled
                        else "the board closed without a winner")
            return None
        name, params = chosen
        made = None
        if board.may_refit_early(name):
            logger.info("%s leads on validation with every candidate scored: refitting it on "
                        "all %d interactions beside the candidates' test refits", name,
                        parts.matrix.nnz)
            try:
                model, seconds = fit_candidate(name, params, parts.matrix, parts.frame,
                                               has_ratings=parts.has_ratings,
                                               stop=partial(board.superseded, chosen))
            except FitStopped:
                logger.info("%s's early refit stopped: %s", name, "it was withdrawn"
                            if board.cancelled else "it no longer leads")
                continue
            except ModelFitError:
                # What failed it here may fail its test refit too: then the next is refit.
                board.wait_closed()
                if board.superseded(chosen):
                    logger.info("%s's early refit failed, and it no longer leads", name)
                    continue
                raise
            made = EarlyRefit(name, params, model, seconds, parts)
        # A leader can still drop out until every candidate's task has ended.
        board.wait_closed()
        if board.superseded(chosen):
            continue
        if made is None:
            logger.info("no early refit: %s is refit after the selection", name)
        return made


def data_catalogue(data: CleanData) -> DataSketches:
    """The sketches of the clean data's items, shoppers, and items with their titles.

    The gate checks with them that a night's data is the shop's, and whole.
    """
    items = data.interactions["item_id"].unique()
    titles = data.items.set_index("item_id")["title"].reindex(items) \
        if "title" in data.items else pd.Series(pd.NA, index=items)
    first = data.interactions["timestamp"].min() if len(data.interactions) else None
    return DataSketches(catalogue_sketch(items),
                        catalogue_sketch(data.interactions["user_id"].unique()),
                        titled_sketch(items, titles.to_numpy(dtype=object)),
                        None if first is None or pd.isna(first)
                        else pd.Timestamp(first).isoformat())


def data_cutoff(data: CleanData) -> str | None:
    """The latest interaction time of the clean data (UTC, ISO 8601), ``None`` if empty."""
    latest = data.interactions["timestamp"].max() if len(data.interactions) else None
    return None if latest is None or pd.isna(latest) else pd.Timestamp(latest).isoformat()


@dataclass(frozen=True)
class BundleParts:
    """What a published bundle holds besides its model, the same whichever family wins.

    Built from all the clean data alone, so a run builds it while its candidates train
    (:func:`bundle_parts`) and the winner's refit only fits the winner.

    Attributes:
        users: Shoppers' index.
        items: Items' index: the whole catalogue, products nobody has bought yet included.
        matrix: All interactions, weighted.
        frame: The catalogue in the items' index order.
        has_ratings: Whether the interactions hold rating events.
        search: The content model that answers search queries (``None`` without item text).
        fallback: The popularity fallback.
        weighting: The event weights ``matrix`` was built with.
        fallback_params: The fallback's hyperparameters.
    """

    users: IdMap
    items: IdMap
    matrix: sp.csr_matrix
    frame: pd.DataFrame
    has_ratings: bool
    search: ContentRecommender | None
    fallback: Popularity
    weighting: WeightingConfig
    fallback_params: dict[str, Any]


def bundle_parts(data: CleanData, weighting: WeightingConfig,
                 fallback_params: dict[str, Any] | None = None,
                 with_search: bool = True) -> BundleParts:
    """Index and weight all clean data, and fit the bundle's search and fallback models.

    Args:
        data: All clean interactions and the catalogue.
        weighting: Event weights.
        fallback_params: Hyperparameters of the popularity fallback (its ``epsilon``).
        with_search: Whether to fit the search model (a ``content`` winner is its own).

    Returns:
        The parts, for :func:`refit_bundle`.

    Raises:
        ModelFitError: The search model or the fallback could not be fitted.
    """
    interactions = data.interactions
    users = IdMap.from_values(interactions["user_id"])
    items = IdMap.from_values(pd.concat([interactions["item_id"], data.items["item_id"]]))
    matrix = interaction_matrix(interactions, users, items, event_weights(interactions, weighting),
                                weighting.repeats)
    frame = item_frame(data.items, items)
    search: ContentRecommender | None = None
    try:
        if with_search:
            search = ContentRecommender(popularity_smoothing=0.1).fit(
                matrix, FitContext(items=frame))
    except ModelSkippedError as exc:
        # Recommendations do not need item text; search does, and says so when asked.
        logger.info("the published model has no search index: %s", exc)
    return BundleParts(users=users, items=items, matrix=matrix, frame=frame,
                       has_ratings=bool((interactions["event"] == "rating").any())
                       and weighting.keeps_ratings(),
                       search=search, fallback=Popularity(**(fallback_params or {})).fit(matrix),
                       weighting=weighting, fallback_params=dict(fallback_params or {}))


def refit_bundle(name: str, params: dict[str, Any], data: CleanData,
                 weighting: WeightingConfig, meta: dict[str, Any],
                 fallback_params: dict[str, Any] | None = None,
                 quantize: str | None = None, prune_top: int | None = None,
                 parts: BundleParts | None = None,
                 fitted: EarlyRefit | None = None) -> ModelBundle:
    """Refit the winner on all clean data and bundle it for serving.

    The item index covers the whole catalogue, products nobody has bought yet included, and
    the bundle always carries a content model for search, whatever family won (the winner
    itself when it is ``content``).

    Args:
        name: Candidate name.
        params: Its hyperparameters.
        data: All clean interactions and the catalogue.
        weighting: Event weights.
        meta: Description stored in the bundle.
        fallback_params: Hyperparameters of the popularity fallback (its ``epsilon``).
        quantize: Precision the published model's arrays are stored at (see
            :meth:`~shoprec.models.base.Recommender.compress`).
        prune_top: Weights kept per item by an ease model (or an ease member of a blend).
        parts: :func:`bundle_parts` of the same ``data``, ``weighting`` and
            ``fallback_params``, when they were built beforehand; built here otherwise.
        fitted: The same refit made beforehand (:func:`refit_early`); it is taken, with
            the parts it was fitted on, instead of fitting again.

    Raises:
        ValueError: ``parts`` were built with another weighting or fallback, or ``fitted``
            is another candidate's refit, or the same one's with other values.
    """
    if fitted is not None:
        if not fitted.refits(name, params):
            raise ValueError(f"refit_bundle: the early refit is {fitted.name!r}'s with its "
                             f"own values; it cannot stand for {name!r}'s with these")
        parts = fitted.parts  # the model was fitted on these
    if parts is None:
        parts = bundle_parts(data, weighting, fallback_params, with_search=name != "content")
    elif parts.weighting != weighting or parts.fallback_params != (fallback_params or {}):
        raise ValueError("refit_bundle: the parts were built with another weighting or "
                         "fallback than the refit's; build them with the same ones")
    if fitted is None:
        model, seconds = fit_candidate(name, params, parts.matrix, parts.frame,
                                       has_ratings=parts.has_ratings)
    else:
        model, seconds = fitted.model, fitted.seconds
    search = model if isinstance(model, ContentRecommender) else parts.search
    logger.info("refit %s on all %d interactions in %.1f s", name, parts.matrix.nnz, seconds)
    if quantize is not None or prune_top is not None:
        # A blend prunes its ease member; any other family refuses --prune-top by name.
        model.compress(quantize, prune_top if name in ("ease", "blend") else None)
        if prune_top is not None and name not in ("ease", "blend"):
            logger.info("--prune-top left the %s winner as it is (ease weights only)", name)
    return ModelBundle(model=model, users=parts.users, items=parts.items, history=parts.matrix,
                       fallback=parts.fallback, search=search,
                       titles=parts.frame["title"].fillna("").astype(str).tolist(),
                       meta={**meta, "model": name, "family": model.family,
                             "refit_seconds": round(seconds, 3),
                             # Whether it was refit beside the candidates' test refits.
                             "refit_early": fitted is not None,
                             # How served requests combine an item's events (engine).
                             "repeats": weighting.repeats,
                             "compression": {"quantize": quantize, "prune_top": prune_top}})


@dataclass
class CandidateJob:
    """One training job of a run: a candidate, or the champion's recipe retrained.

    Attributes:
        label: Its leaderboard name (``champion-recipe`` for the recipe).
        candidate: The candidate (family member) it trains.
        params: Hyperparameters.
        recipe: The champion's recipe, for the reference job only.
    """

    label: str
    candidate: str
    params: dict[str, Any]
    recipe: Recipe | None = None

    @property
    def slow(self) -> bool:
        """Whether the candidate trains for minutes (the networks)."""
        return bool(getattr(CANDIDATES.get(self.candidate), "slow_to_train", False))

    @property
    def process_pools(self) -> bool:
        """Whether its thread pools are the process's (TensorFlow's), not its own."""
        return bool(getattr(CANDIDATES.get(self.candidate), "threads_per_process", False))


def plan_jobs(config: TrainingConfig, recipe: Recipe | None, threads: int,
              process_threads: int | None = None,
              tuned: dict[str, dict[str, Any]] | None = None) -> list[CandidateJob]:
    """The run's training jobs in leaderboard order.

    Every candidate, then the champion's recipe when there is a champion (the gate's like-for-like
    reference). A candidate gets ``threads`` (its share of the cores), or ``process_threads``
    when its thread pools are the process's (TensorFlow: one pool that all the networks
    training side by side share; sized to a share, it left cores idle once the others were
    done). ``tuned`` holds, per candidate, the values a hyperparameter search chose; they
    replace the configured ones (and so enter the recipe of the version registered).
    """
    tuned = tuned or {}
    jobs = [CandidateJob(name, name, {**model_params(
        name, config, process_threads if process_threads and CANDIDATES[name].threads_per_process
        else threads), **tuned.get(name, {})}) for name in config.models]
    if recipe is not None:
        jobs.append(CandidateJob(CHAMPION_RECIPE, recipe.candidate, recipe.params, recipe))
    return jobs


def blend_job(results: list[CandidateResult], config: TrainingConfig) -> CandidateJob | None:
    """The blend of the ``config.blend`` best candidates on validation, if there are two.

    Its members keep the values their own runs chose (``CandidateResult.params``); the
    champion's recipe, a reference for the gate, is never a member.
    """
    if config.blend < 2:
        return None
    primary = config.primary_metric
    ok = sorted((r for r in results if r.status == "ok" and r.model != CHAMPION_RECIPE
                 and r.model in CANDIDATES and r.model != "blend"),
                key=lambda r: -r.validation[primary])[:config.blend]
    if len(ok) < 2:
        logger.info("blend skipped: fewer than two candidates succeeded")
        return None
    members = [{"name": r.model, "params": dict(r.params)} for r in ok]
    return CandidateJob("blend", "blend", {"members": members})


def submission_order(jobs: list[CandidateJob]) -> list[CandidateJob]:
    """Slow (neural) jobs first, so that a run does not end waiting on one of them."""
    return sorted(jobs, key=lambda job: not job.slow)


def start_after(jobs: list[CandidateJob], slots: int | None) -> dict[str, str]:
    """The job each job must wait for, so that at most ``slots`` networks train at a time.

    Networks share one set of thread pools per process (TensorFlow's): side by side they
    only split those pools, while each holds its batches, weights and optimizer state in
    memory. Jobs whose pools are the process's form ``slots`` chains in
    :func:`submission_order`, each starting when the one ``slots`` places before it has
    ended (failed or not); other jobs wait for nothing.

    Args:
        jobs: The run's jobs.
        slots: How many networks may train at once; ``None``: no limit.

    Returns:
        Label of a waiting job -> label of the job it starts after.
    """
    if slots is None:
        return {}
    chained = [job.label for job in submission_order(jobs) if job.process_pools]
    return {label: chained[i - slots] for i, label in enumerate(chained) if i >= slots}


def networks_at_once(jobs: list[CandidateJob], slots: int | None) -> int:
    """How many of ``jobs`` train at the same time on the process's pools (the networks).

    All of them, or ``slots`` (:func:`start_after`) when that is fewer.
    """
    networks = sum(job.process_pools for job in jobs)
    return networks if slots is None else min(networks, slots)


def job_result(job: CandidateJob, outcome: Any) -> CandidateResult:
    """The leaderboard row of a finished job.

    Its result, or a failed row when the job raised, returned a failed state, or was lost with its
    worker.
    """
    if isinstance(outcome, CandidateResult):
        return outcome
    if isinstance(outcome, BaseException):
        error = outcome
        if type(outcome).__module__.startswith("distributed"):
            # Raised by Dask (no import here: the core does not depend on it).
            error = RuntimeError(f"lost on the Dask cluster: the worker running it died or "
                                 f"the task was cancelled ({type(outcome).__name__}: "
                                 f"{outcome})")
    else:
        error = RuntimeError(f"{job.label}: {outcome}")
    result = failed_result(job.candidate, job.params, error)
    result.model = job.label
    return result


@dataclass
class Selection:
    """What the run decided: the winner, the gate's verdict, the recipe to register."""

    winner: CandidateResult
    verdict: GateVerdict
    leaderboard: pd.DataFrame
    recipe: Recipe
    catalogue: DataSketches | None = None


def select_and_judge(results: list[CandidateResult], config: TrainingConfig,
                     champion: ChampionReference, weighting: WeightingConfig, cutoff: str | None,
                     fingerprint: str, commit: str,
                     catalogue: DataSketches | CatalogueSketch | None = None,
                     repeat_items: bool = False) -> Selection:
    """Pick the best candidate on validation and judge it with the gate.

    The gate compares on test, against popularity and the champion's recipe retrained on
    the same split; ``catalogue`` (the data's :func:`catalogue_sketch`) against the
    champion's, recorded with the version.

    Raises:
        ModelFitError: No candidate succeeded.
    """
    if isinstance(catalogue, CatalogueSketch):  # a caller of the items' sketch alone
        catalogue = DataSketches(catalogue)
    primary = config.primary_metric
    winner = select_winner(results, primary)
    by_name = {r.model: r for r in results if r.status == "ok"}
    popularity = by_name["popularity"].test if "popularity" in by_name else None
    reference = next((r for r in results if r.model == CHAMPION_RECIPE), None)
    # The weighting the matrices were built with; a search that chose it is not part of it.
    weights = weighting.model_dump(mode="json", exclude={"search"})
    verdict = gate(primary, winner.test, popularity, config.gate_margin, champion,
                   reference.test if reference and reference.status == "ok" else None,
                   reference.error if reference else None, weights,
                   min_users=config.gate_min_users,
                   catalogue=catalogue.items if catalogue else None,
                   shoppers=catalogue.shoppers if catalogue else None,
                   titled=catalogue.titled if catalogue else None, cutoff=cutoff,
                   start=catalogue.start if catalogue else None, winner=winner.model,
                   repeat_items=repeat_items)
    recipe = Recipe(winner.model, winner.params, weights, cutoff, fingerprint, commit)
    return Selection(winner, verdict, leaderboard_frame(results, primary), recipe,
                     catalogue)


def version_tags(selection: Selection, primary: str, fingerprint: str, commit: str,
                 flow_run_id: str, compression: str = "") -> dict[str, str]:
    """The tags of the version a run registers: where it came from and its recipe.

    ``compression`` (e.g. ``int8, prune_top=200``) says how the published model was
    stored: its test figures are the uncompressed candidate's (see the README).
    """
    winner = selection.winner
    return {"data_fingerprint": fingerprint, "git_commit": commit,
            "prefect_flow_run_id": flow_run_id, "primary_metric": primary,
            "primary_metric_test": f"{winner.test[primary]:.6f}", "candidate": winner.model,
            **({"compression": compression} if compression else {}),
            **(selection.catalogue.to_tags() if selection.catalogue else {}),
            **selection.recipe.to_tags()}


def compression_tag(config: TrainingConfig) -> str:
    """How the published model is stored (``""``: as trained)."""
    parts = [config.quantize or ""] + ([f"prune_top={config.prune_top}"]
                                        if config.prune_top else [])
    return ", ".join(p for p in parts if p)


def headline_metrics(winner: CandidateResult) -> dict[str, float]:
    """The winner's metrics under MLflow names (``validation_ndcg_at_10`` ...)."""
    return {**{mlflow_name(k, "validation"): v for k, v in winner.validation.items()},
            **{mlflow_name(k, "test"): v for k, v in winner.test.items()}}


def data_metrics(data: dict[str, Any]) -> dict[str, float]:
    """A run's data counts as MLflow metrics (``data_rows_in``, ``data_quarantine_share``...).

    Logged beside the figures so that runs chart against each other in MLflow's UI: a
    night whose export lost a third of its shoppers' ids showed only in an artifact.
    """
    rows_in = float(data.get("rows_in") or 0)
    out = {f"data_{key}": float(data[key]) for key in (
        "rows_in", "rows_clean", "rows_quarantined", "users", "items") if key in data}
    out["data_quarantine_share"] = float(data.get("rows_quarantined") or 0) / rows_in \
        if rows_in else 0.0
    out.update({f"data_quarantined_{reason}": float(count) for reason, count in
                (data.get("quarantined_by_reason") or {}).items()})
    return out


def run_summary(data_summary: dict[str, Any], config: TrainingConfig,
                results: list[CandidateResult], selection: Selection,
                champion: ChampionReference,
                registered: dict[str, Any], mlflow_run_id: str,
                flow_run_id: str, tuning: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run summary of DESIGN.md (``--summary-json``, the run report).

    ``tuning`` holds each searched family's summary (trials, best values) when the run
    had a search stage.
    """
    primary = config.primary_metric
    return {
        **data_summary,
        "k": config.ks,
        "primary_metric": primary,
        "leaderboard": [_entry(r) for r in sorted(
            results, key=lambda r: -r.validation.get(primary, float("-inf")))],
        "winner": selection.winner.model,
        "winner_test": selection.winner.test,
        "gate": selection.verdict.to_dict(),
        "champion_before": champion.to_dict(),
        "recipe": selection.recipe.to_dict(),
        "registered": registered,
        "mlflow_run_id": mlflow_run_id,
        "prefect_flow_run_id": flow_run_id,
        **({"tuning": tuning} if tuning else {}),
    }


def _entry(result: CandidateResult) -> dict[str, Any]:
    """A leaderboard entry in the summary schema of DESIGN.md."""
    drop = {"users"}
    return {"model": result.model, "family": result.family, "status": result.status,
            "validation": {k: v for k, v in result.validation.items() if k not in drop},
            "test": {k: v for k, v in result.test.items() if k not in drop},
            "train_seconds": result.train_seconds, "refit_seconds": result.refit_seconds,
            "error": result.error,
            "diversity": [{k: v for k, v in point.items() if k not in drop}
                          for point in result.diversity]}
