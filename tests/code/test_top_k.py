"""top_k is exact: the same values as a full sort, whatever the shape, ties and -inf.

spread_columns places each score at its own item.
"""

from __future__ import annotations

import numpy as np
import pytest

from shoprec.ranking import spread_columns, top_k


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


@pytest.mark.parametrize("width, kept", [(9, [0, 2, 3, 8]), (6, [5]), (5, [0, 1, 2, 3, 4]),
                                         (700, None)])
def test_spread_columns_places_each_score_at_its_item(width: int, kept: list[int] | None,
                                                      ) -> None:
    rng = np.random.default_rng(width)
    columns = (np.array(kept) if kept is not None
               else np.sort(rng.choice(width, 450, replace=False)))
    inside = rng.standard_normal((7, len(columns)))  # float64 in: float32 out
    rest = np.setdiff1d(np.arange(width), columns)
    outside = rng.standard_normal((7, len(rest))).astype(np.float32)
    expected = np.empty((7, width), dtype=np.float32)
    expected[:, columns] = inside
    expected[:, rest] = outside
    spread = spread_columns(inside, columns, width, outside)
    assert spread.dtype == np.float32
    np.testing.assert_array_equal(spread, expected)
    one = np.full((7, 1), -np.inf, dtype=np.float32)  # one score for every other item
    expected[:, rest] = -np.inf
    np.testing.assert_array_equal(spread_columns(inside, columns, width, one), expected)
    with pytest.raises(ValueError, match="columns"):
        spread_columns(inside, columns, width, np.zeros((7, len(rest) + 2)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_check_finite_finds_every_nan_and_infinity_and_passes_large_finite_scores(
        dtype: type) -> None:
    """The row-sum shortcut misses no bad score, and an overflowing sum is no false alarm."""
    from shoprec.errors import ModelFitError
    from shoprec.models.base import check_finite

    scores = np.random.default_rng(0).standard_normal((37, 501)).astype(dtype)
    assert check_finite(scores, "m") is scores
    for bad in (np.nan, np.inf, -np.inf):
        for row, column in ((0, 0), (36, 500), (17, 250)):
            broken = scores.copy()
            broken[row, column] = bad
            with pytest.raises(ModelFitError, match="m produced non-finite"):
                check_finite(broken, "m")
    both = scores.copy()
    both[3, 4], both[3, 5] = np.inf, -np.inf  # the row's sum is NaN, not a number
    with pytest.raises(ModelFitError):
        check_finite(both, "m")
    huge = np.full((4, 8), np.finfo(dtype).max / 2, dtype=dtype)  # each row's sum overflows
    assert check_finite(huge, "m") is huge
    for layout in (broken[:, ::2], np.asfortranarray(broken), broken.T):  # other layouts
        with pytest.raises(ModelFitError):
            check_finite(layout, "m")
    assert check_finite(scores[:, ::2], "m").base is scores
    with pytest.raises(ModelFitError):
        check_finite(np.array([1.0, np.nan], dtype=dtype), "m")  # one dimension: exact test


@pytest.mark.parametrize("items", [60, 5000])
def test_ties_are_broken_by_index_whatever_k(items: int) -> None:
    """The top 10 is the top 50's first 10, also among tied scores (popularity's counts):
    a model's test figures and its diversity curve at weight 0 differed."""
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, size=(200, items)).astype(np.float32)
    scores[0] = -np.inf
    ten, _ = top_k(scores, 10)
    fifty, _ = top_k(scores, 50)
    np.testing.assert_array_equal(ten, fifty[:, :10])
    stable = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    expected = np.where(np.isfinite(np.take_along_axis(scores, stable, axis=1)), stable, -1)
    np.testing.assert_array_equal(ten, expected)
