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
