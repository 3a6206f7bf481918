"""top_k is exact: the same values as a full sort, whatever the shape, ties and -inf."""

from __future__ import annotations

import numpy as np
import pytest

from shoprec.ranking import top_k


@pytest.mark.parametrize("n_items", [5, 700, 2561, 10_000])
def test_top_k_matches_a_full_sort(n_items: int) -> None:
    rng = np.random.default_rng(n_items)
    for trial in range(40):
        k = int(rng.integers(1, 30))
        scores = rng.standard_normal((int(rng.integers(1, 30)), n_items)).astype(np.float32)
        if trial % 3 == 0:
            scores = np.round(scores, 1)  # many ties
        if trial % 4 == 0:
            scores[rng.random(scores.shape) < 0.9] = -np.inf  # mostly masked rows
        if trial % 5 == 0:
            scores[:] = 0.0  # every entry tied
        if trial % 7 == 0:
            scores[0] = -np.inf  # nothing eligible
        indices, values = top_k(scores, k)
        assert indices.shape == values.shape == (len(scores), k)
        expected = -np.sort(-scores, axis=1)[:, :k]
        np.testing.assert_array_equal(values[:, : expected.shape[1]], expected)
        for row in range(len(scores)):
            chosen = indices[row][indices[row] >= 0]
            assert len(set(chosen)) == len(chosen)
            np.testing.assert_array_equal(scores[row, chosen], values[row, : len(chosen)])
            assert np.all(np.isneginf(values[row, len(chosen):]))


def test_novelty_reranking_trades_order_for_rarity() -> None:
    from shoprec.ranking import novelty_scale, rerank_for_novelty

    novelty = novelty_scale(np.array([100.0, 50.0, 10.0, 1.0, 0.0]))
    assert novelty[0] == 0.0 and novelty[4] == 1.0 and np.all(np.diff(novelty) > 0)
    indices = np.array([[0, 1, 2, 3], [3, 2, -1, -1]])
    scores = np.array([[4.0, 3.0, 2.0, 1.0], [2.0, 1.0, -np.inf, -np.inf]], np.float32)
    # Weight 0 keeps the model's order; padding stays padding.
    kept, _ = rerank_for_novelty(indices, scores, novelty, 3, 0.0)
    np.testing.assert_array_equal(kept, [[0, 1, 2], [3, 2, -1]])
    # Weight 1 orders the candidates by rarity alone (only among the candidates).
    rare, values = rerank_for_novelty(indices, scores, novelty, 3, 1.0)
    np.testing.assert_array_equal(rare, [[3, 2, 1], [3, 2, -1]])
    assert np.all(np.diff(values[0]) <= 0)
    # One weight per row.
    mixed, _ = rerank_for_novelty(indices, scores, novelty, 2, np.array([0.0, 1.0]))
    np.testing.assert_array_equal(mixed, [[0, 1], [3, 2]])
