"""Evaluating a recommender on a relevance matrix, in batches of users."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from shoprec.evaluation.metrics import METRIC_FUNCTIONS, hits_matrix, metric_name
from shoprec.models.base import Recommender
from shoprec.ranking import mask_seen, top_k

logger = logging.getLogger(__name__)


def evaluate(model: Recommender, history: sp.csr_matrix, relevance: sp.csr_matrix,
             ks: Sequence[int] = (10,), batch_size: int = 2048,
             exclude_seen: bool = True) -> dict[str, float]:
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

    Returns:
        ``{"ndcg@10": ..., "coverage@10": ..., ...}`` and ``"users"``: how many users were
        evaluated. Metrics are 0 when no user has a relevant item.
    """
    def rank(batch: np.ndarray, k: int) -> np.ndarray:
        rows = history[batch]
        scores = model.score(rows)
        if exclude_seen:
            mask_seen(scores, rows)
        return top_k(scores, k)[0]

    return evaluate_ranker(rank, relevance, ks, batch_size)


def evaluate_ranker(rank: Callable[[np.ndarray, int], np.ndarray], relevance: sp.csr_matrix,
                    ks: Sequence[int] = (10,), batch_size: int = 2048) -> dict[str, float]:
    """Average the metrics of any ranking function over users with a relevant item.

    Args:
        rank: ``rank(user_indices, k)`` returns the top-``k`` item indices of those users
            (``-1`` for padding or for items outside the index).
        relevance: Binary relevance rows.
        ks: Cut-offs.
        batch_size: Users ranked at once.

    Returns:
        The same mapping as :func:`evaluate`.
    """
    ks = sorted(set(int(k) for k in ks))
    users = np.flatnonzero(np.diff(relevance.indptr) > 0)
    n_items = relevance.shape[1]
    sums = {metric_name(m, k): 0.0 for m in METRIC_FUNCTIONS for k in ks}
    covered = {k: np.zeros(n_items, dtype=bool) for k in ks}
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        top = rank(batch, ks[-1])
        relevant = relevance[batch]
        hits = hits_matrix(top, relevant)
        n_relevant = np.diff(relevant.indptr)
        for k in ks:
            for metric, function in METRIC_FUNCTIONS.items():
                sums[metric_name(metric, k)] += float(function(hits, n_relevant, k).sum())
            shown = top[:, :k]
            covered[k][shown[shown >= 0]] = True
    n = len(users)
    result = {name: (total / n if n else 0.0) for name, total in sums.items()}
    for k in ks:
        result[metric_name("coverage", k)] = float(covered[k].mean()) if n_items else 0.0
    result["users"] = float(n)
    return result


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
