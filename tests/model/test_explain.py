"""Explanations on planted data, where the right answer is known.

Shoppers buy within one of four blocks of ten items; a shopper whose history holds two
items of block 0 and two of block 2 gets recommendations from those blocks, and each
recommendation must be explained by the history items of its own block.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shoprec.models import EASE, ContentRecommender, FitContext, ImplicitALS, MultVAE, Popularity
from shoprec.models.base import Recommender

BLOCKS, PER_BLOCK = 4, 10


def planted() -> tuple[sp.csr_matrix, pd.DataFrame]:
    rng = np.random.default_rng(3)
    rows, cols = [], []
    for user in range(400):
        block = user % BLOCKS
        chosen = rng.choice(PER_BLOCK, size=5, replace=False) + block * PER_BLOCK
        rows += [user] * len(chosen)
        cols += chosen.tolist()
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                           shape=(400, BLOCKS * PER_BLOCK))
    names = ["kitchen", "garden", "office", "party"]
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(BLOCKS * PER_BLOCK)],
                          "title": [f"{names[i // PER_BLOCK]} thing {i}"
                                    for i in range(BLOCKS * PER_BLOCK)],
                          "category": [names[i // PER_BLOCK] for i in range(BLOCKS * PER_BLOCK)]})
    return matrix, items


def shopper() -> sp.csr_matrix:
    row = np.zeros((1, BLOCKS * PER_BLOCK), dtype=np.float32)
    row[0, [0, 1, 20, 21]] = 1.0
    return sp.csr_matrix(row)


@pytest.mark.parametrize("make", [
    pytest.param(lambda: EASE(regularization=10.0), id="ease"),
    pytest.param(lambda: ImplicitALS(factors=8, regularization=1.0, iterations=10, seed=1),
                 id="mf"),
    pytest.param(lambda: ContentRecommender(popularity_smoothing=1.0), id="content"),
    pytest.param(lambda: MultVAE(hidden=32, latent=8, epochs=40, batch_size=50, seed=1),
                 id="vae", marks=pytest.mark.slow),
])
def test_each_recommendation_is_explained_by_its_own_block(make) -> None:
    matrix, items = planted()
    model: Recommender = make().fit(matrix, FitContext(items=items))
    row = shopper()
    indices, _ = model.recommend(row, k=6)
    recommended = indices[0][indices[0] >= 0]
    blocks = recommended // PER_BLOCK
    assert set(blocks) <= {0, 2}, f"recommendations left the shopper's blocks: {recommended}"
    for item, because in zip(recommended, model.explain(row, recommended, top=2), strict=True):
        assert because, f"item {item} has no explanation"
        top_item, top_share = because[0]
        assert top_item // PER_BLOCK == item // PER_BLOCK, (item, because)
        # The other block's items push the item down or not at all: its own block's two
        # items carry most of the weight.
        own = sum(s for h, s in because if h // PER_BLOCK == item // PER_BLOCK)
        assert own > 0.5, (item, because)


def test_popularity_explains_nothing() -> None:
    matrix, _ = planted()
    model = Popularity().fit(matrix)
    row = shopper()
    indices, _ = model.recommend(row, k=3)
    assert model.explain(row, indices[0]) == [[], [], []]


def test_a_history_item_that_barely_moved_the_score_is_no_reason() -> None:
    """After the largest, items under half a percent of the push are left out (they printed
    as "0%"); the largest stays, however small, so an explained item is never bare."""
    from shoprec.models.base import MIN_SHARE, shares

    history = np.array([3, 7, 9])
    matrix = np.array([[90.0, 9.8, 0.2],     # 0.2% of the push: left out
                       [1.0, 1.0, 1.0]])     # three even thirds: all kept
    first, even = shares(history, matrix, top=3)
    assert [h for h, _ in first] == [3, 7] and all(s >= MIN_SHARE for _, s in first)
    assert [h for h, _ in even] == [3, 7, 9]
    spread = np.full((1, 400), 1.0)  # 0.25% each: only the first is named
    assert len(shares(np.arange(400), spread, top=3)[0]) == 1
