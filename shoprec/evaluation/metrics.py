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
#: Beyond-accuracy figures (reported, never used to select): what the recommendations
#: expose, against the popularity of the items in the history the model knew.
BIAS_METRICS = ("novelty", "avg_popularity", "gini", "long_tail")
#: Shopper-activity groups of the per-group ndcg (terciles of history size).
ACTIVITY_GROUPS = ("light", "medium", "heavy")
#: The head of the catalogue: the most-interacted items that together hold this share of
#: the history's interactions (the Pareto convention); the other items are the long tail.
HEAD_SHARE = 0.8


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


def direction(name: str) -> str:
    """How a metric ranks two figures: ``"higher"`` or ``"lower"`` is better, or ``"none"``.

    ``name`` may carry its K (``gini@10``). The beyond-accuracy figures have no better
    side: a shop may want more or less exposure of its popular items, so they are only
    reported (``BIAS_METRICS``). ``rmse`` is an error: lower is better.
    """
    metric = name.partition("@")[0]
    if metric == "rmse":
        return "lower"
    # A standard error (``ndcg_se@10``) is how well a figure is known, not a figure to win.
    if metric in BIAS_METRICS or metric.endswith("_se"):
        return "none"
    return "higher"


def mlflow_name(name: str, prefix: str) -> str:
    """MLflow spelling of a metric: ``ndcg@10`` -> ``test_ndcg_at_10``."""
    return f"{prefix}_{name.replace('@', '_at_')}"


class Exposure:
    """Accumulates beyond-accuracy figures of top-K lists against item popularity.

    * ``novelty@k``: mean self-information ``-log2 p(i)`` of the recommended items, with
      ``p(i) = (users with i + 1) / (users + 1)`` in the history (higher: less obvious).
    * ``avg_popularity@k``: mean share of history users who had each recommended item.
    * ``gini@k``: Gini coefficient of how often each catalogue item is recommended (0:
      every item equally often; 1: one item everywhere).
    * ``long_tail@k``: share of recommendation slots given to items outside the head
      (:data:`HEAD_SHARE`).
    * ``ndcg_<group>@k``: ndcg of light, medium and heavy shoppers (terciles of their
      history's size among the evaluated users).

    Args:
        history: What the model knew: its rows give the item popularity; with
            ``rows`` they give each evaluated user's activity.
        ks: The cut-offs.
        activity: History size of every evaluated user (to cut the terciles).
    """

    def __init__(self, history: sp.csr_matrix, ks: list[int], activity: np.ndarray) -> None:
        counts = np.bincount(history.indices, minlength=history.shape[1]).astype(np.float64)
        users = max(int((np.diff(history.indptr) > 0).sum()), 1)
        self.share = counts / users
        self.information = -np.log2((counts + 1.0) / (users + 1.0))
        order = np.argsort(-counts, kind="stable")
        cumulative = np.cumsum(counts[order])
        head = order[: int(np.searchsorted(cumulative, HEAD_SHARE * cumulative[-1])) + 1] \
            if cumulative[-1] > 0 else order[:0]
        self.tail = np.ones(history.shape[1], dtype=bool)
        self.tail[head] = False
        self.ks = ks
        self.cuts = np.quantile(activity, [1 / 3, 2 / 3]) if len(activity) else np.zeros(2)
        self.shown = {k: np.zeros(history.shape[1], dtype=np.int64) for k in ks}
        self.sums = {k: np.zeros(3) for k in ks}  # novelty, popularity, tail (per user)
        self.group = {(g, k): [0.0, 0] for g in ACTIVITY_GROUPS for k in ks}
        self.users = 0

    def add(self, top: np.ndarray, hits: np.ndarray, n_relevant: np.ndarray,
            activity: np.ndarray) -> None:
        """Take one batch: its top-K lists, hits, relevant counts and history sizes."""
        self.users += len(top)
        groups = np.searchsorted(self.cuts, activity, side="left")  # 0 light ... 2 heavy
        for k in self.ks:
            shown = top[:, :k]
            valid = shown >= 0
            count = np.maximum(valid.sum(axis=1), 1)
            item = np.where(valid, shown, 0)
            for position, values in enumerate((self.information, self.share,
                                               self.tail.astype(np.float64))):
                self.sums[k][position] += float(
                    (np.where(valid, values[item], 0.0).sum(axis=1) / count).sum())
            np.add.at(self.shown[k], shown[valid], 1)
            gains = ndcg(hits, n_relevant, k)
            for index, name in enumerate(ACTIVITY_GROUPS):
                members = groups == index
                self.group[(name, k)][0] += float(gains[members].sum())
                self.group[(name, k)][1] += int(members.sum())

    def result(self) -> dict[str, float]:
        """The averaged figures, named like the accuracy metrics (``novelty@10``...)."""
        out: dict[str, float] = {}
        n = max(self.users, 1)
        for k in self.ks:
            novelty, popularity, tail = self.sums[k] / n
            out[metric_name("novelty", k)] = float(novelty)
            out[metric_name("avg_popularity", k)] = float(popularity)
            out[metric_name("gini", k)] = gini(self.shown[k])
            out[metric_name("long_tail", k)] = float(tail)
            for name in ACTIVITY_GROUPS:
                total, members = self.group[(name, k)]
                out[metric_name(f"ndcg_{name}", k)] = total / members if members else 0.0
        return out


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0: all equal; near 1: all on one)."""
    values = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(values), values.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * values).sum() / (n * total))
