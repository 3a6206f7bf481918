"""Ranking metrics at K with binary relevance (DESIGN.md, evaluation protocol).

Every per-user metric has one signature: ``metric(hits, n_relevant, k) -> np.ndarray``, where
``hits[u, r]`` says whether the item ranked ``r + 1`` for user ``u`` is relevant and
``n_relevant[u]`` is the size of the user's relevant set. Values lie in [0, 1].
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: Per-user metrics, averaged over evaluated users.
USER_METRICS = ("precision", "recall", "f1", "ndcg", "map", "mrr", "hit_rate")
#: All metric names; coverage is computed over the catalogue, not per user.
METRICS = (*USER_METRICS, "coverage")


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def precision(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Hits in the top ``k`` divided by ``k``. Range [0, 1]."""
    return hits[:, :k].sum(axis=1) / k


def recall(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Hits in the top ``k`` divided by the number of relevant items. Range [0, 1]."""
    return hits[:, :k].sum(axis=1) / np.maximum(n_relevant, 1)


def f1(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Harmonic mean of precision and recall at ``k`` (0 when both are 0). Range [0, 1]."""
    p, r = precision(hits, n_relevant, k), recall(hits, n_relevant, k)
    total = p + r
    return np.divide(2 * p * r, total, out=np.zeros_like(total), where=total > 0)


def ndcg(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """DCG with 1/log2(rank+1) gains over the ideal DCG of min(relevant, k) hits. [0, 1]."""
    discounts = _discounts(k)
    dcg = (hits[:, :k] * discounts).sum(axis=1)
    ideal_cum = np.concatenate([[0.0], np.cumsum(discounts)])
    idcg = ideal_cum[np.minimum(n_relevant, k)]
    return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


def average_precision(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Sum of precision@i at each hit i <= k, divided by min(relevant, k). Range [0, 1]."""
    top = hits[:, :k].astype(np.float64)
    precision_at = np.cumsum(top, axis=1) / np.arange(1, k + 1)
    return (precision_at * top).sum(axis=1) / np.maximum(np.minimum(n_relevant, k), 1)


def reciprocal_rank(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """1 / rank of the first hit within ``k``, 0 if none. Range [0, 1]."""
    top = hits[:, :k]
    first = top.argmax(axis=1)
    return np.asarray(np.where(top.any(axis=1), 1.0 / (first + 1), 0.0), dtype=np.float64)


def hit_rate(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """1 if any of the top ``k`` is relevant, else 0."""
    return np.asarray(hits[:, :k].any(axis=1), dtype=np.float64)


METRIC_FUNCTIONS = {
    "precision": precision,
    "recall": recall,
    "f1": f1,
    "ndcg": ndcg,
    "map": average_precision,
    "mrr": reciprocal_rank,
    "hit_rate": hit_rate,
}


def hits_matrix(top: np.ndarray, relevance: sp.csr_matrix) -> np.ndarray:
    """Boolean ``(users, K)`` array: whether each recommended item is relevant.

    Args:
        top: Recommended item indices per row (``-1`` for padding).
        relevance: Binary relevance rows aligned with ``top``.
    """
    n_items = relevance.shape[1]
    rows = np.repeat(np.arange(relevance.shape[0], dtype=np.int64), np.diff(relevance.indptr))
    relevant_keys = rows * n_items + relevance.indices
    keys = np.arange(top.shape[0], dtype=np.int64)[:, None] * n_items + top
    found = np.isin(keys, relevant_keys) & (top >= 0)
    return found


def metric_name(metric: str, k: int) -> str:
    """The display name of a metric, e.g. ``ndcg@10``."""
    return f"{metric}@{k}"


def mlflow_name(name: str, prefix: str) -> str:
    """MLflow spelling of a metric: ``ndcg@10`` -> ``test_ndcg_at_10``."""
    return f"{prefix}_{name.replace('@', '_at_')}"
