"""Evaluating a recommender on a relevance matrix, in batches of users."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from shoprec.errors import ModelFitError
from shoprec.evaluation.metrics import METRIC_FUNCTIONS, Exposure, hits_matrix, metric_name
from shoprec.models.base import Recommender, check_finite
from shoprec.ranking import diversity_pool, mask_seen, novelty_scale, rerank_for_novelty, top_k

logger = logging.getLogger(__name__)


def evaluate(model: Recommender, history: sp.csr_matrix, relevance: sp.csr_matrix,
             ks: Sequence[int] = (10,), batch_size: int = 2048,
             exclude_seen: bool = True, beyond_accuracy: bool = False,
             check_scores: bool = False) -> dict[str, float]:
    """Rank the full catalogue for every user with a relevant item and average the metrics.

    Only one batch of users is ever scored densely at a time; the top K comes from
    ``argpartition``.

    Args:
        model: A fitted recommender.
        history: What the model knows of each user (rows aligned with ``relevance``).
        relevance: Binary relevance; users with no relevant item are not evaluated.
        ks: Cut-offs.
        batch_size: Users scored at once.
        exclude_seen: Leave items in ``history`` out of the ranking.
        beyond_accuracy: Add novelty, average popularity, Gini of exposure, long-tail
            share and ndcg per activity group (see
            :class:`~shoprec.evaluation.metrics.Exposure`), against ``history``.
        check_scores: Refuse scores with NaN or +inf too (see :func:`scored`).

    Returns:
        ``{"ndcg@10": ..., "coverage@10": ..., ...}`` and ``"users"``: how many users were
        evaluated. Metrics are 0 when no user has a relevant item.
    """
    def rank(batch: np.ndarray, k: int) -> np.ndarray:
        rows = history[batch]
        scores = scored(model, rows, check_scores)
        if exclude_seen:
            mask_seen(scores, rows)
        return top_k(scores, k)[0]

    activity = np.diff(history.indptr) if beyond_accuracy else None
    return evaluate_ranker(rank, relevance, ks, batch_size, history=history
                           if beyond_accuracy else None, activity=activity)


def scored(model: Recommender, rows: sp.csr_matrix, finite: bool = False) -> np.ndarray:
    """``model``'s scores of ``rows``, held to the model interface's shape.

    A family being added whose ``score`` returned another shape passed unseen (one column
    short) or failed far away with a bare ``IndexError``; with ``finite``, NaN scores,
    which ranked as nothing and shortened the lists, fail the candidate too.

    Raises:
        ModelFitError: Not one score per user and item, or (``finite``) not finite.
    """
    scores = model.score(rows)
    expected = (rows.shape[0], rows.shape[1])
    name = getattr(model, "name", type(model).__name__)
    if getattr(scores, "shape", None) != expected:
        raise ModelFitError(f"{name}.score returned shape {getattr(scores, 'shape', None)} "
                            f"for {expected[0]} shoppers; the model interface wants one score "
                            f"per shopper and item: {expected}")
    # -inf is the interface's "never recommend" (a network's items outside its vocabulary).
    return check_finite(scores, name, never=True) if finite else scores


def evaluate_ranker(rank: Callable[[np.ndarray, int], np.ndarray], relevance: sp.csr_matrix,
                    ks: Sequence[int] = (10,), batch_size: int = 2048,
                    history: sp.csr_matrix | None = None,
                    activity: np.ndarray | None = None) -> dict[str, float]:
    """Average the metrics of any ranking function over users with a relevant item.

    Args:
        rank: ``rank(user_indices, k)`` returns the top-``k`` item indices of those users
            (``-1`` for padding or for items outside the index).
        relevance: Binary relevance rows.
        ks: Cut-offs.
        batch_size: Users ranked at once.
        history: With ``activity``, add the beyond-accuracy figures against it.
        activity: History size of each row of ``relevance``.

    Returns:
        The same mapping as :func:`evaluate`.
    """
    ks = sorted(set(int(k) for k in ks))
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be cut-offs of at least 1, got {list(ks)}")
    users = np.flatnonzero(np.diff(relevance.indptr) > 0)
    n_items = relevance.shape[1]
    sums = {metric_name(m, k): 0.0 for m in METRIC_FUNCTIONS for k in ks}
    # ndcg's spread over users too: its standard error says how far apart two figures must
    # be to mean anything (a few hundred test users put it near 0.01).
    squares = {k: 0.0 for k in ks}
    covered = {k: np.zeros(n_items, dtype=bool) for k in ks}
    exposure = Exposure(history, ks, activity[users]) \
        if history is not None and activity is not None else None
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        top = rank(batch, ks[-1])
        relevant = relevance[batch]
        hits = hits_matrix(top, relevant)
        n_relevant = np.diff(relevant.indptr)
        for k in ks:
            for metric, function in METRIC_FUNCTIONS.items():
                values = function(hits, n_relevant, k)
                sums[metric_name(metric, k)] += float(values.sum())
                if metric == "ndcg":
                    squares[k] += float(np.square(values, dtype=np.float64).sum())
            shown = top[:, :k]
            covered[k][shown[shown >= 0]] = True
        if exposure is not None and activity is not None:
            exposure.add(top, hits, n_relevant, activity[batch])
    n = len(users)
    result = {name: (total / n if n else 0.0) for name, total in sums.items()}
    for k in ks:
        result[metric_name("coverage", k)] = float(covered[k].mean()) if n_items else 0.0
        mean = result[metric_name("ndcg", k)]
        # The sample standard deviation over users / sqrt(n): the error of the mean.
        spread = (squares[k] - n * mean * mean) / (n - 1) if n > 1 else 0.0
        result[metric_name("ndcg_se", k)] = float(np.sqrt(max(spread, 0.0) / n)) \
            if n > 1 else 0.0
    if exposure is not None:
        result.update(exposure.result())
    result["users"] = float(n)
    return result


#: Weights of the accuracy/novelty trade-off curve (0: the model's own ranking).
TRADEOFF_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def novelty_tradeoff(model: Recommender, history: sp.csr_matrix, relevance: sp.csr_matrix,
                     weights: Sequence[float] = TRADEOFF_WEIGHTS, k: int = 10,
                     batch_size: int = 2048) -> list[dict[str, float]]:
    """Accuracy and exposure at each weight of the novelty re-ranking (``--diversity``).

    The model scores every evaluated user once; its best :func:`diversity_pool` items
    are kept and re-ranked at each weight (:func:`~shoprec.ranking.rerank_for_novelty`,
    with the novelty of the items' popularity in ``history``), and each ranking is
    evaluated like :func:`evaluate` with the beyond-accuracy figures.

    Returns:
        One mapping per weight: ``weight`` and the metrics at ``k``.
    """
    return evaluate_with_tradeoff(model, history, relevance, [k], weights, k, batch_size)[1]


def evaluate_with_tradeoff(model: Recommender, history: sp.csr_matrix,
                           relevance: sp.csr_matrix, ks: Sequence[int] = (10,),
                           weights: Sequence[float] = TRADEOFF_WEIGHTS, k: int = 10,
                           batch_size: int = 2048, exclude_seen: bool = True,
                           check_scores: bool = False
                           ) -> tuple[dict[str, float], list[dict[str, float]]]:
    """:func:`evaluate` with the beyond-accuracy figures, and :func:`novelty_tradeoff`.

    Both from one scoring of the users: each batch's scores give the top ``max(ks)``
    that :func:`evaluate` ranks by and the pool the re-ranking chooses from, so the
    figures are those of the two calls, at the cost of one (the scoring is most of an
    evaluation's time: a fold-in, a network's forward pass). ``exclude_seen`` as in
    :func:`evaluate`.
    """
    users = np.flatnonzero(np.diff(relevance.indptr) > 0)
    candidates = np.empty((len(users), min(diversity_pool(k), relevance.shape[1])),
                          dtype=np.int64)
    values = np.empty(candidates.shape, dtype=np.float32)
    position = np.full(relevance.shape[0], -1, dtype=np.int64)
    position[users] = np.arange(len(users))

    def rank(batch: np.ndarray, cut: int) -> np.ndarray:
        rows = history[batch]
        scores = scored(model, rows, check_scores)
        if exclude_seen:
            mask_seen(scores, rows)
        at = position[batch]
        candidates[at], values[at] = top_k(scores, candidates.shape[1])
        return top_k(scores, cut)[0]

    activity = np.diff(history.indptr)
    # Every user with a relevant item is ranked here, so the pool is filled for the curve.
    metrics = evaluate_ranker(rank, relevance, ks, batch_size, history=history,
                              activity=activity)
    novelty = novelty_scale(np.bincount(history.indices, minlength=history.shape[1]))
    curve = []
    for weight in weights:
        def rerank(batch: np.ndarray, cut: int, weight: float = weight) -> np.ndarray:
            at = position[batch]
            return rerank_for_novelty(candidates[at], values[at], novelty, cut, weight)[0]

        found = evaluate_ranker(rerank, relevance, [k], batch_size, history=history,
                                activity=activity)
        curve.append({"weight": float(weight), **found})
    return metrics, curve


class RatingPredictor(Protocol):
    """A model that predicts rating values (``mf-ratings``)."""

    def predict_pairs(self, user_rows: sp.csr_matrix, rows: np.ndarray,
                      items: np.ndarray) -> np.ndarray:
        """Predicted ratings of the (row, item) pairs, given the users' rows."""


def rmse(model: RatingPredictor, history: sp.csr_matrix, ratings: sp.csr_matrix,
         batch_size: int = 2048) -> float:
    """Root mean squared error of a rating model on the observed entries of ``ratings``.

    Each user's prediction comes from folding in their ``history`` row. The model must offer
    ``predict_pairs(user_rows, rows, items)``.
    """
    users = np.flatnonzero(np.diff(ratings.indptr) > 0)
    squared, count = 0.0, 0
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        block = ratings[batch].tocoo()
        predicted = model.predict_pairs(history[batch], block.row, block.col)
        squared += float(((predicted - block.data) ** 2).sum())
        count += block.nnz
    return float(np.sqrt(squared / count)) if count else float("nan")
