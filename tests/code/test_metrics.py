"""Metrics against hand-computed cases: perfect, zero hits, fewer relevant than K."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from shoprec.evaluation import evaluate
from shoprec.evaluation.metrics import (
    METRIC_FUNCTIONS,
    average_precision,
    f1,
    hit_rate,
    hits_matrix,
    ndcg,
    precision,
    recall,
    reciprocal_rank,
)
from shoprec.models.popularity import Popularity


def one(hits: list[int], n_relevant: int, k: int, fn) -> float:
    return float(fn(np.array([hits], dtype=bool), np.array([n_relevant]), k)[0])


def test_perfect_ranking_scores_one() -> None:
    for name, fn in METRIC_FUNCTIONS.items():
        if name == "precision":
            assert one([1, 1, 1], 3, 3, fn) == pytest.approx(1.0)
        else:
            assert one([1, 1, 1], 3, 3, fn) == pytest.approx(1.0), name


def test_zero_hits_score_zero() -> None:
    for name, fn in METRIC_FUNCTIONS.items():
        assert one([0, 0, 0, 0, 0], 2, 5, fn) == 0.0, name


def test_hand_computed_case() -> None:
    # Ranks 1..5, hits at ranks 2 and 4, 3 relevant items, K = 5.
    hits, rel, k = [0, 1, 0, 1, 0], 3, 5
    assert one(hits, rel, k, precision) == pytest.approx(2 / 5)
    assert one(hits, rel, k, recall) == pytest.approx(2 / 3)
    p, r = 2 / 5, 2 / 3
    assert one(hits, rel, k, f1) == pytest.approx(2 * p * r / (p + r))
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert one(hits, rel, k, ndcg) == pytest.approx(dcg / idcg)
    assert one(hits, rel, k, average_precision) == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert one(hits, rel, k, reciprocal_rank) == pytest.approx(1 / 2)
    assert one(hits, rel, k, hit_rate) == 1.0


def test_fewer_relevant_than_k() -> None:
    # One relevant item found at rank 1 with K = 10: ideal DCG is capped at 1 hit.
    hits = [1] + [0] * 9
    assert one(hits, 1, 10, ndcg) == pytest.approx(1.0)
    assert one(hits, 1, 10, recall) == pytest.approx(1.0)
    assert one(hits, 1, 10, precision) == pytest.approx(0.1)
    assert one(hits, 1, 10, average_precision) == pytest.approx(1.0)
    # Found at rank 3 instead.
    hits = [0, 0, 1] + [0] * 7
    assert one(hits, 1, 10, ndcg) == pytest.approx(1 / math.log2(4))
    # More relevant than K: map and ndcg divide by K, recall by the relevant count.
    assert one([1, 1], 5, 2, average_precision) == pytest.approx(1.0)
    assert one([1, 1], 5, 2, ndcg) == pytest.approx(1.0)
    assert one([1, 1], 5, 2, recall) == pytest.approx(2 / 5)


def test_hits_matrix_ignores_padding() -> None:
    relevance = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 0]], dtype=np.float32))
    top = np.array([[1, 2, -1], [2, 1, 0]])
    assert hits_matrix(top, relevance).tolist() == [[True, False, False],
                                                    [False, False, True]]


def test_evaluate_excludes_seen_and_counts_coverage() -> None:
    # Item 0 is most popular but already seen by user 0; item 1 is next and relevant.
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]], np.float32))
    relevance = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], np.float32))
    model = Popularity().fit(train)
    result = evaluate(model, train, relevance, ks=(1, 2))
    assert result["users"] == 2  # user 1 has nothing relevant
    # User 0 gets item 1 (item 0 is seen); user 2 has seen 0-2, so only item 3 is left.
    assert result["hit_rate@1"] == pytest.approx(1.0)
    assert result["precision@1"] == pytest.approx(1.0)
    assert result["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert result["coverage@1"] == pytest.approx(2 / 4)
    assert result["coverage@2"] == pytest.approx(3 / 4)  # items 1, 2 and 3
    assert evaluate(model, train, relevance, ks=(1,), exclude_seen=False)["hit_rate@1"] == 0


def test_gini_of_exposure() -> None:
    from shoprec.evaluation.metrics import gini

    assert gini(np.array([5, 5, 5, 5])) == 0.0
    assert gini(np.array([0, 0, 0, 8])) == pytest.approx(0.75)  # (n - 1) / n: all on one
    assert gini(np.array([1, 2, 3, 4])) == pytest.approx(0.25)  # sum|xi-xj| / (2 n^2 mean)
    assert gini(np.zeros(3)) == 0.0


class _Fixed:
    """A 'model' that recommends the same ranked list to everyone."""

    def __init__(self, order: list[int], n_items: int) -> None:
        self.order, self.n_items = order, n_items

    def score(self, rows: sp.csr_matrix) -> np.ndarray:
        scores = np.full((rows.shape[0], self.n_items), -1.0, dtype=np.float32)
        scores[:, self.order] = np.arange(len(self.order), 0, -1, dtype=np.float32)
        return scores


def test_beyond_accuracy_figures_by_hand() -> None:
    # Six users; item 0 in everyone's history, item 1 in two, items 2-3 in nobody's.
    history = np.zeros((6, 4), dtype=np.float32)
    history[:, 0] = 1
    history[:2, 1] = 1
    history[5, 1] = 1
    history = sp.csr_matrix(history)
    relevance = sp.csr_matrix(np.array([[0, 0, 1, 0]] * 3 + [[0, 0, 0, 1]] * 3,
                                       dtype=np.float32))
    # Everyone is shown items 2 and 3 (0 and 1 are seen or ranked below).
    found = evaluate(_Fixed([2, 3], 4), history, relevance, ks=[2], exclude_seen=True,
                     beyond_accuracy=True)
    # p(i) = (users with i + 1) / (6 + 1) = 1/7 for items 2 and 3.
    assert found["novelty@2"] == pytest.approx(math.log2(7))
    assert found["avg_popularity@2"] == 0.0
    # Head: items 0 and 1 (9 interactions, 80% reached at item 1); 2 and 3 are tail.
    assert found["long_tail@2"] == 1.0
    # Exposure: items 2 and 3 six times each, 0 and 1 never: Gini of [0, 0, 6, 6] = 0.5.
    assert found["gini@2"] == pytest.approx(0.5)
    # Activity: users 0, 1 and 5 have two items, 2, 3 and 4 one; the terciles are 1 and 2,
    # so 2, 3, 4 are light (at most 1) and 0, 1, 5 medium (above 1, at most 2); nobody is
    # heavy. Relevant: item 2 (rank 1) for users 0-2, item 3 (rank 2) for users 3-5.
    second = 1 / math.log2(3)
    assert found["ndcg_light@2"] == pytest.approx((1.0 + 2 * second) / 3)
    assert found["ndcg_medium@2"] == pytest.approx((2.0 + second) / 3)
    assert found["ndcg_heavy@2"] == 0.0
    # Item 1 sits in the head (the cut at 80% of 9 interactions falls on it): showing it
    # is not long tail.
    head = evaluate(_Fixed([1, 2], 4), history, relevance, ks=[2], exclude_seen=False,
                    beyond_accuracy=True)
    assert head["long_tail@2"] == 0.5
    # Without the flag, only the accuracy figures.
    assert "novelty@2" not in evaluate(_Fixed([2, 3], 4), history, relevance, ks=[2])


def test_the_tradeoff_curve_starts_at_the_models_figures_and_buys_novelty() -> None:
    from shoprec.evaluation.evaluate import evaluate_with_tradeoff, novelty_tradeoff
    from shoprec.models import ImplicitALS

    rng = np.random.default_rng(5)
    # Popularity skewed like a shop's: item i is chosen with weight 1 / (i + 1).
    p = 1 / np.arange(1, 121)
    rows = [rng.choice(120, size=8, replace=False, p=p / p.sum()) for _ in range(300)]
    dense = np.zeros((300, 120), dtype=np.float32)
    for user, items in enumerate(rows):
        dense[user, items] = 1
    history = sp.csr_matrix(dense * (rng.random(dense.shape) < 0.7))
    relevance = sp.csr_matrix(dense - history.toarray())
    model = ImplicitALS(factors=8, regularization=1.0, iterations=8, seed=1).fit(history)
    curve = novelty_tradeoff(model, history, relevance, weights=(0.0, 0.5, 1.0), k=10)
    plain = evaluate(model, history, relevance, ks=[10], beyond_accuracy=True)
    assert [c["weight"] for c in curve] == [0.0, 0.5, 1.0]
    for name in ("ndcg@10", "novelty@10", "gini@10", "long_tail@10", "coverage@10"):
        assert curve[0][name] == pytest.approx(plain[name]), name
    novelty = [c["novelty@10"] for c in curve]
    popularity = [c["avg_popularity@10"] for c in curve]
    assert novelty[0] < novelty[1] < novelty[2]
    assert popularity[0] > popularity[1] > popularity[2]
    # The leaderboard's test figures and curve come from one scoring: the same figures as
    # the two calls, with cut-offs on both sides of the curve's.
    calls = []

    class Counted(ImplicitALS):
        def score(self, user_rows: sp.csr_matrix) -> np.ndarray:
            calls.append(user_rows.shape[0])
            return super().score(user_rows)

    counted = Counted(factors=8, regularization=1.0, iterations=8, seed=1).fit(history)
    both, shared = evaluate_with_tradeoff(counted, history, relevance, ks=[5, 20],
                                          weights=(0.0, 0.5, 1.0), k=10, batch_size=128)
    assert sum(calls) == int((np.diff(relevance.indptr) > 0).sum())  # each user once
    assert both == evaluate(model, history, relevance, ks=[5, 20], batch_size=128,
                            beyond_accuracy=True)
    assert shared == novelty_tradeoff(model, history, relevance, weights=(0.0, 0.5, 1.0),
                                      k=10, batch_size=128)


def test_ndcgs_standard_error_is_that_of_the_users_mean() -> None:
    """A reader's: no figure said how far apart two leaderboard rows must be to differ; the
    error of the mean is recomputed here from each user's ndcg, by hand."""
    from shoprec.evaluation.evaluate import evaluate_ranker

    relevance = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1],
                                        [0, 0, 0, 0], [1, 1, 1, 0]], dtype=np.float32))
    fixed = np.array([[0, 1], [0, 1], [0, 1], [0, 1], [0, 1]])
    result = evaluate_ranker(lambda users, k: fixed[users, :k], relevance, ks=[2])
    # Users 0, 1, 2 and 4 have relevant items (3 has none and is not evaluated).
    first, second = 1.0, 1.0 / np.log2(3)
    per_user = np.array([first / (first + second), second / first, 0.0, 1.0])
    assert result["ndcg@2"] == pytest.approx(per_user.mean())
    assert result["ndcg_se@2"] == pytest.approx(per_user.std(ddof=1) / np.sqrt(4))
    one = evaluate_ranker(lambda users, k: fixed[users, :k], relevance[:1], ks=[2])
    assert one["ndcg_se@2"] == 0.0  # one user: no spread to estimate
    # A promotion's table never calls a larger error "better".
    from shoprec.evaluation.metrics import direction

    assert direction("ndcg_se@10") == "none" and direction("ndcg@10") == "higher"


def test_a_score_of_another_shape_or_not_finite_fails_the_candidate_with_the_reason() -> None:
    """A reader adding a family: one column short passed unseen (or failed far away with a
    bare IndexError), and NaN scores ranked as nothing and shortened every list."""
    from shoprec.errors import ModelFitError
    from shoprec.evaluation.evaluate import scored

    history = sp.csr_matrix(np.eye(4, 5, dtype=np.float32))

    class Broken:
        name = "knn"

        def __init__(self, scores: np.ndarray) -> None:
            self.scores = scores

        def score(self, rows: sp.csr_matrix) -> np.ndarray:
            return self.scores[: rows.shape[0]]

    with pytest.raises(ModelFitError, match=r"knn.score returned shape \(4, 4\) for 4 "
                                            r"shoppers; .* \(4, 5\)"):
        scored(Broken(np.zeros((4, 4), np.float32)), history)  # type: ignore[arg-type]
    nan = np.zeros((4, 5), np.float32)
    nan[1, 2] = np.nan
    assert scored(Broken(nan), history) is not None  # unchecked: the epochs' evaluations
    with pytest.raises(ModelFitError, match="knn produced non-finite scores"):
        scored(Broken(nan), history, finite=True)  # type: ignore[arg-type]
    up = np.zeros((4, 5), np.float32)
    up[0, 0] = np.inf
    with pytest.raises(ModelFitError, match="knn produced non-finite scores"):
        scored(Broken(up), history, finite=True)  # type: ignore[arg-type]
    # -inf is the interface's "never recommend": a network's items outside its vocabulary
    # (a second reader's: every network failed on a catalogue over 10,000 products).
    never = np.zeros((4, 5), np.float32)
    never[:, 4] = -np.inf
    assert scored(Broken(never), history, finite=True) is not None  # type: ignore[arg-type]
