"""The validation tuner: picks grid values and stops epochs by validation ndcg@10."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from shoprec.errors import ModelFitError
from shoprec.evaluation.evaluate import evaluate, evaluate_ranker
from shoprec.features.encoding import sample_users
from shoprec.models.base import Recommender
from shoprec.ranking import mask_seen, top_k

logger = logging.getLogger(__name__)

#: Hyperparameter grids are scored on at most this many validation users (seeded sample):
#: a grid runs one evaluation per value, and ndcg@10 on 20,000 users has a standard error
#: near 0.0015, finer than the steps between grid values.
SELECTION_USERS = 20_000
#: Memory for one batch of part scores when weights are chosen (a blend): batches shrink
#: on wide catalogues to stay within it.
WEIGHTS_MEMORY_BYTES = 256 * 2**20
#: Early stopping scores each epoch on at most this many validation users (seeded sample):
#: enough to rank epochs, and an epoch's check stays cheap at any data size.
EARLY_STOPPING_USERS = 5_000


class ValidationTuner:
    """Scores a model on the validation part of a split, for the families that choose.

    Args:
        history: Rows the model sees when scored (the training part).
        relevance: Binary relevance of the validation part.
        progress: Callback ``(step, metrics)`` for curves (MLflow, Prefect); optional.
        on_epoch: Called with ``(epoch, validation ndcg@10)`` after each scored epoch; it
            may raise to stop training (a search's pruner does). Optional.
        exclude_seen: Leave the items of ``history`` out of the ranking (off when the split
            keeps them relevant: ``SplitConfig.repeat_items``).
    """

    def __init__(self, history: sp.csr_matrix, relevance: sp.csr_matrix,
                 progress: Callable[[float, dict[str, float]], None] | None = None,
                 on_epoch: Callable[[int, float], None] | None = None,
                 exclude_seen: bool = True) -> None:
        self.history = history
        self.exclude_seen = exclude_seen
        self.relevance = relevance
        self.progress = progress
        self.on_epoch = on_epoch
        #: The last :meth:`select`'s chosen value's score on :data:`SELECTION_USERS`
        #: (``None`` before one, or after a ``quick`` one): a caller whose model ends in
        #: that value's state need not score it again.
        self.selected_score: float | None = None
        #: The epochs the fit being watched will run at most, once it says so
        #: (:func:`shoprec.models.epochs.train_epochs`): a learning-rate schedule can cut
        #: the configured count.
        self.planned_epochs: int | None = None

    def score(self, model: Recommender, users: int) -> float:
        """Validation ndcg@10 of ``model`` on a seeded sample of at most ``users`` users."""
        relevance, _ = sample_users(self.relevance, users, np.random.default_rng(0))
        return evaluate(model, self.history, relevance, ks=(10,),
                        exclude_seen=self.exclude_seen)["ndcg@10"]

    def select(self, model: Recommender, grid: Sequence[float],
               apply: Callable[..., Any], what: str, refine: int = 0,
               quick: bool = False, warm: bool = False,
               margin: float = 0.0) -> tuple[float, Any]:
        """Pick a hyperparameter value by validation ndcg@10.

        Args:
            model: The model being fitted; scored after each ``apply``.
            grid: Values to try.
            apply: Puts the model in the state of one value and returns that state (the
                family knows how, e.g. EASE solves once per value on one Gram matrix).
            what: The hyperparameter's name, for logs and the progress callback.
            refine: Steps of a log-scale refinement after the grid (positive values only):
                each tries the best value so far times and divided by half the previous
                step's ratio, starting from the grid's spacing around its best. A penalty
                whose good range is narrower than the grid's spacing is found this way
                (ALS's λ: a decade off the best is no better than popularity).
            quick: Score on early stopping's sample (:data:`EARLY_STOPPING_USERS`) instead
                of :data:`SELECTION_USERS`: for a coarse choice made after a fit, whose
                cost should stay that of an epoch's check.
            warm: Call ``apply(value, start)``, ``start`` the state of a value next to it
                (``None`` first): on the grid the previous value's, in a refinement step
                that of its centre (the best value when the step began). A family whose
                fit is iterative starts there: from the last value tried instead, a
                refinement would start from the far end of the grid, and a short fit from
                there scores where it started, not where it would converge.
            margin: The first value tried (the grid's first, or its smallest when
                ``warm``) stands unless the best scores more than this share higher (0.01:
                1%): for a default that should not give way to a gain inside the noise.

        Returns:
            The best value and the state ``apply`` returned for it (the caller restores it,
            so the winning value is not fitted twice).

        Raises:
            ValueError: The grid is empty.
        """
        self.selected_score = None  # until this selection has chosen
        best: tuple[float, float, Any] | None = None
        first: tuple[float, float, Any] | None = None
        tried: list[float] = []
        last: Any = None

        def attempt(value: float, start: Any = None) -> None:
            nonlocal best, first, last
            state = apply(value, start) if warm else apply(value)
            if warm:
                last = state
            score = self.score(model, EARLY_STOPPING_USERS if quick else SELECTION_USERS)
            tried.append(value)
            logger.info("%s %s %g: validation ndcg@10 %.4f", model.name, what, value, score)
            if self.progress is not None:
                self.progress(value, {f"validation_ndcg_at_10_by_{what}": score})
            if best is None or score > best[0]:
                best = (score, value, state)
            if first is None:
                first = (score, value, state)

        # Warm: in increasing order, so each grid value starts from its neighbour's state.
        for value in sorted(grid) if warm else grid:
            attempt(float(value), last)
        if best is None:
            raise ValueError(f"{model.name}: empty grid for {what}")
        values = sorted(set(tried))
        if refine > 0 and len(values) > 1 and values[0] > 0:
            position = values.index(best[1])
            # The grid's log-spacing next to its best value; each step halves it.
            step = min(abs(np.log(values[i] / best[1])) for i in (position - 1, position + 1)
                       if 0 <= i < len(values))
            for _ in range(refine):
                step /= 2
                centre, centre_state = best[1], best[2]
                for value in (centre / np.exp(step), centre * np.exp(step)):
                    value = float(f"{value:.4g}")  # readable in logs and the recipe
                    if any(abs(np.log(value / seen)) <= step / 4 for seen in tried):
                        continue
                    try:
                        attempt(value, centre_state)
                    except ModelFitError as exc:
                        # Past the configured grid a value may not fit (a tiny penalty);
                        # the ones that did still stand.
                        tried.append(value)
                        logger.warning("%s %s %g: not fitted (%s); left out", model.name,
                                       what, value, exc)
        chosen = best
        if first is not None and best[0] <= first[0] * (1 + margin):
            if best[1] != first[1]:
                logger.info("%s %s %g kept: %g scores %.4f against %.4f, within the %g%% "
                            "margin", model.name, what, first[1], best[1], best[0], first[0],
                            100 * margin)
            chosen = first
        self.selected_score = None if quick else chosen[0]
        # Recorded on the model, whose ``selected_params_`` hands it to the refit.
        tuned = getattr(model, "tuned_", None)
        if not isinstance(tuned, dict):
            tuned = {}
            model.tuned_ = tuned  # type: ignore[attr-defined]
        tuned[what] = chosen[1]
        return chosen[1], chosen[2]

    def select_weights(self, model: Recommender,
                       parts: Callable[[sp.csr_matrix], list[np.ndarray]],
                       combos: Sequence[Sequence[float]], what: str | None = None,
                       values: Sequence[float] | None = None) -> Sequence[float]:
        """Pick the weights of a weighted sum of score parts by validation ndcg@10.

        The parts are scored once per batch of a seeded sample of at most
        :data:`SELECTION_USERS` validation users (the sample :meth:`select` scores), and
        every combination is ranked from those scores; a batch's scores stay within
        :data:`WEIGHTS_MEMORY_BYTES`. A hyperparameter that only weighs parts of a score
        is chosen this way at the cost of one scoring, not one per value.

        Args:
            model: The model choosing (for logs).
            parts: Scores each part for a batch of history rows.
            combos: Candidate weight vectors, one weight per part; the first wins ties
                (and is returned when no validation user has a relevant item).
            what: The hyperparameter the combinations stand for: each one's figure is
                then logged and sent to the progress callback, as :meth:`select` does.
            values: That hyperparameter's value for each combination (with ``what``).

        Returns:
            The best combination.
        """
        n_parts, n_items = len(combos[0]), self.relevance.shape[1]
        relevance, _ = sample_users(self.relevance, SELECTION_USERS, np.random.default_rng(0))
        users = np.flatnonzero(np.diff(relevance.indptr) > 0)
        totals = np.zeros(len(combos))
        if len(users) == 0:
            logger.info("%s: no validation user to choose weights on; %s kept", model.name,
                        list(combos[0]))
            self._report(model, totals, 1, what, values)  # every figure 0, as select's
            return combos[0]
        size = max(1, min(2048, WEIGHTS_MEMORY_BYTES // (4 * n_items * (n_parts + 1))))
        for start in range(0, len(users), size):
            chunk = users[start:start + size]
            rows, relevant = self.history[chunk], relevance[chunk]
            scored = parts(rows)

            def ranker(combo: Sequence[float],
                       rows: sp.csr_matrix = rows,
                       scored: list[np.ndarray] = scored) -> Callable[[np.ndarray, int],
                                                                       np.ndarray]:
                def rank(at: np.ndarray, k: int) -> np.ndarray:
                    # ``at`` is sorted and distinct, so as long as the batch it is every
                    # row in order: the parts are read as they are, not copied first.
                    whole = len(at) == rows.shape[0]
                    scores: np.ndarray | None = None
                    for weight, part in zip(combo, scored, strict=True):
                        if weight:
                            own = part if whole else part[at]
                            if scores is None:
                                scores = (weight * own).astype(np.float32, copy=False)
                            else:
                                scores += weight * own
                    if scores is None:
                        scores = np.zeros((len(at), n_items), dtype=np.float32)
                    if self.exclude_seen:
                        mask_seen(scores, rows if whole else rows[at])
                    return top_k(scores, k)[0]
                return rank

            for position, combo in enumerate(combos):
                found = evaluate_ranker(ranker(combo), relevant, (10,), batch_size=len(chunk))
                totals[position] += found["ndcg@10"] * found["users"]
        self._report(model, totals, len(users), what, values)
        best = int(np.argmax(totals))  # the first of equals
        logger.info("%s weights %s: validation ndcg@10 %.4f (%d combinations, %d users)",
                    model.name, list(combos[best]), totals[best] / len(users), len(combos),
                    len(users))
        return combos[best]

    def _report(self, model: Recommender, totals: np.ndarray, users: int, what: str | None,
                values: Sequence[float] | None) -> None:
        """Log each combination's figure (``totals`` over ``users``) as ``what``'s values."""
        if what is None:
            return
        for position, value in enumerate(range(len(totals)) if values is None else values):
            figure = float(totals[position] / users)
            logger.info("%s %s %g: validation ndcg@10 %.4f", model.name, what, value, figure)
            if self.progress is not None:
                self.progress(value, {f"validation_ndcg_at_10_by_{what}": figure})

    def early_stopping(self, patience: int) -> EarlyStopping:
        """A fresh epoch callback that stops after ``patience`` epochs without gain."""
        return EarlyStopping(self, patience)


class EarlyStopping:
    """Epoch callback: scores each epoch, keeps the best weights, says when to stop."""

    def __init__(self, tuner: ValidationTuner, patience: int) -> None:
        self.tuner = tuner
        self.patience = patience
        self.best_score = -1.0
        self.best_epoch = -1
        self.best_weights: Any = None
        self.waited = 0

    def after_epoch(self, model: Recommender, epoch: int, record: dict[str, float],
                    get_weights: Callable[[], Any]) -> bool:
        """Score the epoch into ``record``; keep a copy of the weights if it is the best.

        Returns:
            Whether training should stop now.
        """
        score = self.tuner.score(model, EARLY_STOPPING_USERS)
        record["validation_ndcg_at_10"] = score
        if score > self.best_score:
            self.best_score, self.best_epoch, self.waited = score, epoch, 0
            self.best_weights = get_weights()
        else:
            self.waited += 1
        if self.tuner.on_epoch is not None:
            self.tuner.on_epoch(epoch, score)
        return self.waited >= self.patience
