"""Hyperparameter search on validation: one seeded Optuna study per family.

The search is driven by ask and tell, so the caller decides where trials run (the flow:
as tasks on its task runner, several at a time) while the study, its sampler and its
pruner stay in the caller's process. A trial fits the candidate on the training part with
the values asked for and is scored on validation only; a network reports every epoch's
validation ndcg@10, and the pruner stops a trial whose curve falls below the median of
the earlier trials at the same epoch. The first trial is always the family's configured
values, so the search can only improve on them as validation sees it.

Values the search sets explicitly are not chosen again inside the model: a λ asked for
replaces the family's own grid, for example.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from shoprec.errors import ModelSkippedError
from shoprec.evaluation import evaluate
from shoprec.features.encoding import EncodedSplit
from shoprec.training import fit_candidate
from shoprec.tuning.validation import ValidationTuner

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Real:
    """A real-valued dimension between ``low`` and ``high`` (log scale when ``log``)."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Integer:
    """An integer dimension between ``low`` and ``high`` inclusive."""

    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of ``values`` (ints, floats, strings or None)."""

    values: tuple[Any, ...]


Dimension = Real | Integer | Choice

_AUTOENCODER: dict[str, Dimension] = {
    "hidden": Choice((200, 400, 600)),
    "latent": Choice((64, 128, 200)),
    "dropout": Real(0.2, 0.7),
    "learning_rate": Real(3e-4, 5e-3, log=True),
    # None (a constant rate, dae's default) is a choice: trial 0 must lie inside the space to
    # join the study (RESULTS.md, eleventh session: 100 steps at 0.003 won on Online Retail's
    # validation with its 15-day weighting, lost at scale for dae).
    "learning_rate_half_life": Choice((None, 30, 100, 300, 1000)),
    "batch_size": Choice((128, 256, 512)),
    # None (vae's default) and 50 (dae's) are choices, as trial 0 must be; the others are
    # the measured range (RESULTS.md, twenty-ninth session). A longer average's curve peaks
    # later, so the median pruner may stop such a trial before it catches up.
    "average_half_life": Choice((None, 50, 100, 200, 400)),
}

#: The declared search spaces, inside the ranges of each family's configuration
#: (``shoprec.config``; a test keeps them there). Families not listed are not tuned.
SPACES: dict[str, dict[str, Dimension]] = {
    "mf": {
        "factors": Integer(16, 256, log=True),
        "regularization": Real(0.1, 3000.0, log=True),
        "alpha": Real(0.3, 30.0, log=True),
        "iterations": Integer(5, 30),
        "weighting": Choice(("bm25", "none")),
    },
    "mf-ratings": {
        "factors": Integer(4, 64, log=True),
        "regularization": Real(0.1, 100.0, log=True),
    },
    "ease": {"regularization": Real(10.0, 10_000.0, log=True)},
    "content": {
        "popularity_smoothing": Real(1e-3, 100.0, log=True),
        "similarity_exponent": Real(1.0, 4.0),
        "word_weight": Real(0.1, 3.0),
        "char_weight": Real(0.0, 2.0),
        "category_weight": Real(0.0, 2.0),
        "price_weight": Real(0.0, 1.0),
    },
    "vae": {**_AUTOENCODER, "beta_cap": Real(0.05, 0.5)},
    "dae": dict(_AUTOENCODER),
    "cfgan": {
        "generator_hidden": Choice((64, 128, 256)),
        "discriminator_hidden": Choice((32, 64, 128)),
        "zr_ratio": Real(0.1, 0.9),
        "pm_ratio": Real(0.1, 0.9),
        "zr_coefficient": Real(0.01, 1.0, log=True),
        "learning_rate": Real(3e-4, 3e-3, log=True),
        "learning_rate_half_life": Integer(100, 3000, log=True),
    },
}

#: Parameters the models take as a tuple of layer widths; the space asks for one width.
_WIDTHS = {"generator_hidden", "discriminator_hidden"}


def model_value(name: str, value: Any) -> Any:
    """A sampled value as the model's ``__init__`` takes it."""
    return (int(value),) if name in _WIDTHS else value


def space_value(name: str, value: Any) -> Any:
    """A configured value as the space holds it (the first width of a layer tuple)."""
    if name in _WIDTHS and isinstance(value, (tuple, list)):
        return int(value[0])
    return value


@dataclass
class TrialOutcome:
    """What one trial gave: its validation score, or why it has none.

    Attributes:
        number: The trial's number in its study.
        params: The values it tried (as the model takes them).
        value: Validation score of the primary metric; ``None`` if pruned or failed.
        state: ``complete``, ``pruned``, ``failed`` or ``skipped`` (the family does not
            apply to the data).
        seconds: Wall time of the trial.
        error: The failure's message.
        epochs: Epochs a network trained before it stopped or was pruned.
        chosen: The values the fit settled on (``params`` with what the model chose on
            validation itself: a grid's λ, the epochs early stopping kept).
    """

    number: int
    params: dict[str, Any]
    value: float | None
    state: str
    seconds: float
    error: str | None = None
    epochs: int | None = None
    chosen: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchResult:
    """One family's search: its trials and the values it chose.

    Attributes:
        candidate: The candidate searched.
        best_params: The values of the best complete trial (as the model takes them).
        best_value: Its validation score.
        trials: Every trial, in order.
        seconds: Wall time of the search.
        importances: Share of the score's variance each searched value explains
            (Optuna's fANOVA), when enough trials completed; empty otherwise.
    """

    candidate: str
    best_params: dict[str, Any]
    best_value: float | None
    trials: list[TrialOutcome] = field(default_factory=list)
    seconds: float = 0.0
    importances: dict[str, float] = field(default_factory=dict)

    def tuned_params(self) -> dict[str, Any]:
        """The searched values of the best trial (what the candidate trains with)."""
        return {name: self.best_params[name] for name in SPACES.get(self.candidate, {})
                if name in self.best_params}

    def fitted_params(self) -> dict[str, Any]:
        """The best trial's searched values as its fit used them.

        A value left open (``None``: chosen on the family's grid) reads as the one the fit
        chose.

        The configured values winning printed ``chosen regularization=None``, which copied
        into the nightly meant "choose again", where the fit had used 10.0.
        """
        best = next((t for t in self.trials if t.state == "complete"
                     and t.value == self.best_value and t.params == self.best_params), None)
        chosen = best.chosen if best is not None else {}
        return {k: chosen.get(k, v) if v is None else v for k, v in self.tuned_params().items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (the run summary's ``tuning`` entry)."""
        states = [t.state for t in self.trials]
        return {"trials": len(self.trials), "complete": states.count("complete"),
                "pruned": states.count("pruned"), "failed": states.count("failed"),
                "skipped": next((t.error for t in self.trials if t.state == "skipped"), None),
                "best_value": self.best_value,
                "best_params": {k: _cell(v) for k, v in self.tuned_params().items()},
                "best_fitted": {k: _cell(v) for k, v in self.fitted_params().items()},
                "configured_value": next((t.value for t in self.trials if t.number == 0), None),
                "seconds": round(self.seconds, 3), "importances": self.importances}

    def frame(self) -> pd.DataFrame:
        """The trial table (one row per trial, one column per searched value)."""
        searched = list(SPACES.get(self.candidate, {}))
        rows = [{"trial": t.number, "state": t.state, "value": t.value,
                 "seconds": round(t.seconds, 3), "epochs": t.epochs, "error": t.error,
                 **{f"param_{k}": _cell(t.params.get(k)) for k in searched},
                 # What a value left open (empty) became in the fit.
                 **{f"fitted_{k}": _cell(t.chosen.get(k)) for k in searched
                    if t.params.get(k) is None and t.chosen.get(k) is not None}}
                for t in self.trials]
        return pd.DataFrame(rows)


def _cell(value: Any) -> Any:
    return str(list(value)) if isinstance(value, (tuple, list)) else value


class Pruned(Exception):
    """A trial stopped by the pruner."""


class Configured:
    """The first trial of every search: the configured values, as they are.

    Not sampled, never pruned; when the values it settles on lie inside the space it is
    added to the study as a finished trial, so the sampler learns from it too.
    """

    number = 0

    def report(self, value: float, step: int) -> None:
        """Nothing to report to: this trial is not the sampler's."""

    def should_prune(self) -> bool:
        """The configured values always run to the end."""
        return False


class FamilySearch:
    """A seeded study over one candidate's space, asked and told by its caller.

    Args:
        candidate: The candidate to tune (must have a space in :data:`SPACES`).
        base_params: Its configured hyperparameters (the first trial, and the values the
            space leaves alone).
        trials: Most trials to run (the configured values count as one).
        seconds: Wall-time budget; no trial starts after it is spent. ``None``: no limit.
        seed: Seed of the sampler (same seed, data and code: same trials).
    """

    def __init__(self, candidate: str, base_params: dict[str, Any], trials: int,
                 seconds: float | None, seed: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.candidate = candidate
        self.base_params = dict(base_params)
        self.space = SPACES[candidate]
        self.trials = trials
        self.seconds = seconds
        self.began = time.perf_counter()
        self.study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
            # No pruning before two trials have a curve, nor in a trial's first 3 epochs.
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3))
        self.distributions = {name: _distribution(d) for name, d in self.space.items()}
        self.outcomes: list[TrialOutcome] = []
        self._asked = 0

    def budget_left(self) -> bool:
        """Whether another trial may start (trials and seconds left)."""
        if self._asked >= self.trials:
            return False
        return self.seconds is None or time.perf_counter() - self.began < self.seconds

    def ask(self) -> tuple[Any, dict[str, Any]] | None:
        """The next trial and the hyperparameters to fit it with; ``None`` when spent.

        The first is :class:`Configured` with the configured values; the others are the
        sampler's, numbered from 1 in the order asked.
        """
        if not self.budget_left():
            return None
        self._asked += 1
        if self._asked == 1:
            return Configured(), dict(self.base_params)
        trial = self.study.ask(self.distributions)
        trial.set_user_attr("number", self._asked - 1)
        params = {**self.base_params,
                  **{name: model_value(name, value) for name, value in trial.params.items()}}
        return trial, params

    def tell(self, trial: Any, outcome: TrialOutcome) -> None:
        """Record a finished trial in the study."""
        import optuna

        self.outcomes.append(outcome)
        if outcome.state == "skipped":
            # The family does not apply to this data (no ratings, say): no other trial
            # would, so the search ends.
            self.trials = 0
            if not isinstance(trial, Configured):
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        if isinstance(trial, Configured):
            values = {name: space_value(name, outcome.chosen.get(name)) for name in self.space}
            if outcome.state == "complete" and all(
                    _inside(self.distributions[name], value) for name, value in values.items()):
                self.study.add_trial(optuna.trial.create_trial(
                    params=values, distributions=self.distributions, value=outcome.value))
            return
        if outcome.state == "complete":
            self.study.tell(trial, outcome.value)
        elif outcome.state == "pruned":
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def result(self) -> SearchResult:
        """The search so far: the best complete trial's values, or the configured ones."""
        complete = [o for o in self.outcomes if o.state == "complete" and o.value is not None]
        # Ties go to the earlier trial, so the configured values win a tie.
        best = max(complete, key=lambda o: (o.value, -o.number), default=None)
        return SearchResult(self.candidate,
                            best.params if best is not None else dict(self.base_params),
                            best.value if best is not None else None,
                            sorted(self.outcomes, key=lambda o: o.number),
                            time.perf_counter() - self.began, self._importances())

    def _importances(self) -> dict[str, float]:
        import optuna

        finished = [t for t in self.study.trials
                    if t.state == optuna.trial.TrialState.COMPLETE]
        if len(finished) < 3 or len(self.space) < 2:
            return {}
        try:
            # Seeded, so the same trials give the same shares.
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
            found = optuna.importance.get_param_importances(self.study, evaluator=evaluator)
        except (RuntimeError, ValueError) as exc:  # e.g. every trial scored the same
            logger.info("%s: no importances (%s)", self.candidate, exc)
            return {}
        return {name: round(float(share), 6) for name, share in found.items()}


def _distribution(dimension: Dimension) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(dimension, Real):
        return FloatDistribution(dimension.low, dimension.high, log=dimension.log)
    if isinstance(dimension, Integer):
        return IntDistribution(dimension.low, dimension.high, log=dimension.log)
    return CategoricalDistribution(list(dimension.values))


def _inside(distribution: Any, value: Any) -> bool:
    """Whether a configured value is one the space could have asked for."""
    if value is None:  # "choose on a grid" (λ left empty) unless the space offers None
        return None in getattr(distribution, "choices", ())
    try:
        return bool(distribution._contains(  # noqa: SLF001 - Optuna's own bounds check
            distribution.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def trial_number(trial: Any) -> int:
    """A trial's number in its search: 0 for the configured values, then in asked order."""
    return 0 if isinstance(trial, Configured) else int(trial.user_attrs["number"])


def run_trial(candidate: str, trial: Any, params: dict[str, Any], encoded: EncodedSplit,
              items: pd.DataFrame | None, primary: str) -> TrialOutcome:
    """Fit one trial on the training part and score it on validation only.

    A network reports each epoch's validation ndcg@10 to the trial, and stops when the
    study's pruner says so. Test data is never read.
    """
    began = time.perf_counter()
    number = trial_number(trial)
    epochs: list[int] = []

    def report(epoch: int, score: float) -> None:
        epochs.append(epoch)
        trial.report(score, epoch)
        # Not at the last epoch: the trial has run them all, and a pruned one is thrown
        # away where a finished one is scored at its best epoch. The fit says how many it
        # runs (a learning-rate schedule cuts the configured count).
        last = tuner.planned_epochs or params.get("epochs")
        if (not isinstance(last, int) or epoch + 1 < last) and trial.should_prune():
            raise Pruned(f"pruned after epoch {epoch + 1} (validation ndcg@10 {score:.4f})")

    def ended(state: str, error: str | None, value: float | None = None,
              chosen: dict[str, Any] | None = None) -> TrialOutcome:
        return TrialOutcome(number, params, value, state, time.perf_counter() - began, error,
                            len(epochs) or None, chosen or {})

    _, _, k = primary.partition("@")
    try:
        tuner = ValidationTuner(encoded.train, encoded.validation, on_epoch=report,
                                exclude_seen=not encoded.repeat_items)
        model, _ = fit_candidate(candidate, params, encoded.train, items, encoded,
                                 has_ratings=encoded.has_ratings, tuner=tuner)
        value = evaluate(model, encoded.train, encoded.validation, [int(k)],
                         exclude_seen=not encoded.repeat_items)[primary]
    except ModelSkippedError as exc:
        return ended("skipped", str(exc))
    except Pruned as exc:
        return ended("pruned", str(exc))
    except Exception as exc:  # noqa: BLE001 - a failed trial is a row of the table
        logger.info("%s trial %d failed: %s", candidate, number, exc)
        return ended("failed", f"{type(exc).__name__}: {exc}")
    if not math.isfinite(value):
        return ended("failed", "non-finite validation score")
    logger.info("%s trial %d: validation %s %.4f", candidate, number, primary, value)
    return ended("complete", None, float(value),
                 {**params, **getattr(model, "selected_params_", {})})


def _check_search(candidate: str, primary: str) -> None:
    """Refuse a family without a search space, or a metric no evaluation computes.

    A misspelt metric failed every trial after its fit (``KeyError: 'ndgc@10'``) and the
    search returned no choice; a family without a space was a bare ``KeyError``.

    Raises:
        ConfigError: Naming what there is to choose from.
    """
    from shoprec.errors import ConfigError
    from shoprec.evaluation.metrics import METRICS

    if candidate not in SPACES:
        raise ConfigError(f"{candidate} has no search space; the searchable families are "
                          f"{', '.join(SPACES)}")
    name, _, k = primary.partition("@")
    if name not in METRICS or not k.isdigit() or int(k) < 1:
        raise ConfigError(f"primary metric {primary!r}: give one of {', '.join(METRICS)} at a "
                          "K, e.g. ndcg@10")


def search(candidate: str, base_params: dict[str, Any], encoded: EncodedSplit,
           items: pd.DataFrame | None, primary: str, trials: int, seconds: float | None,
           seed: int, parallel: int = 1,
           run_batch: Callable[[list[tuple[Any, dict[str, Any]]]], list[TrialOutcome]]
           | None = None) -> SearchResult:
    """Search one family's space on validation.

    Args:
        candidate: The candidate.
        base_params: Its configured hyperparameters.
        encoded: The split (training and validation parts are read).
        items: Item features (content).
        primary: The metric to maximise on validation (``ndcg@10``).
        trials: Most trials.
        seconds: Wall-time budget, or ``None``.
        seed: Sampler seed.
        parallel: Trials asked at a time.
        run_batch: Runs a batch of ``(trial, params)`` and returns their outcomes in the
            same order (the flow submits them as tasks); default: one after another here.

    Returns:
        The trials and the chosen values.
    """
    _check_search(candidate, primary)
    study = FamilySearch(candidate, base_params, trials, seconds, seed)
    runner = run_batch or (lambda batch: [run_trial(candidate, t, p, encoded, items, primary)
                                          for t, p in batch])
    while True:
        batch = []
        for _ in range(max(1, parallel)):
            asked = study.ask()
            if asked is None:
                break
            batch.append(asked)
        if not batch:
            break
        # Told in trial order, whatever order they finished in: the same seed gives the
        # same trials whichever runner ran them.
        for (trial, _), outcome in zip(batch, runner(batch), strict=True):
            study.tell(trial, outcome)
    result = study.result()
    logger.info("%s: %d trials in %.1f s, best validation %s %s", candidate,
                len(result.trials), result.seconds, primary, result.best_value)
    return result
