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
