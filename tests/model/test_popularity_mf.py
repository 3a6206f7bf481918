"""Popularity and matrix factorisation: contract, learning, fold-in."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from shoprec.config import DataConfig, SplitConfig
from shoprec.evaluation import evaluate
from shoprec.models import FitContext, ImplicitALS, Popularity
from shoprec.pipeline import prepare
from shoprec.tuning import ValidationTuner
from tests.model.contract import RecommenderContract, block_matrix


class TestPopularityContract(RecommenderContract):
    def make(self) -> Popularity:
        return Popularity()


class TestALSContract(RecommenderContract):
    exact_explanations = True

    def make(self) -> ImplicitALS:
        return ImplicitALS(factors=4, iterations=5, regularization=0.1, seed=1)


@pytest.fixture(scope="module")
def planted(synthetic_dir):
    return prepare(DataConfig(interactions=str(synthetic_dir / "interactions.parquet"),
                              items=str(synthetic_dir / "items.parquet")),
                   split_config=SplitConfig(method="temporal", test_days=20,
                                            validation_days=20))


def test_popularity_ranks_by_distinct_users() -> None:
    model = Popularity().fit(block_matrix())
    counts = np.bincount(block_matrix().indices, minlength=10)
    assert np.argmax(model.item_scores_) == np.argmax(counts)


def test_mf_beats_popularity_on_planted_data(planted) -> None:
    encoded = planted.encoded
    tried: dict[float, float] = {}
    context = FitContext(tuner=ValidationTuner(
        encoded.train, encoded.validation,
        progress=lambda value, m: tried.update(
            {value: m["validation_ndcg_at_10_by_regularization"]})))
    pop = evaluate(Popularity().fit(encoded.train), encoded.test_history, encoded.test)
    model = ImplicitALS(seed=3).fit(encoded.train, context)
    # Chosen on validation: the grid, then two refinements around its best.
    assert set(model.regularization_grid) < set(tried) and len(tried) <= 8
    assert tried[model.regularization_] == max(tried.values())
    mf = evaluate(model, encoded.test_history, encoded.test)
    assert mf["users"] > 300
    assert mf["ndcg@10"] > 1.2 * pop["ndcg@10"]
    assert mf["recall@10"] > pop["recall@10"]


def test_fold_in_personalises_a_new_shopper(planted, synthetic_dir) -> None:
    import pandas as pd

    encoded = planted.encoded
    model = ImplicitALS(seed=3).fit(encoded.train)
    items = pd.read_parquet(synthetic_dir / "items.parquet").set_index("item_id")
    category = items.loc[encoded.items.ids, "category"].to_numpy()
    # A shopper who just viewed three items of one category, never seen in training.
    target = pd.Series(category).value_counts().index[-1]  # the least common category
    picks = np.flatnonzero(category == target)[:3]
    row = sp.csr_matrix((np.ones(3, np.float32), (np.zeros(3, int), picks)),
                        shape=(1, len(encoded.items)))
    top, _ = model.recommend(row, k=5)
    assert np.mean(category[top[0]] == target) >= 0.6
    # Popularity ignores the row entirely.
    pop_top, _ = Popularity().fit(encoded.train).recommend(row, k=5)
    assert np.mean(category[pop_top[0]] == target) < np.mean(category[top[0]] == target)


def test_fitted_users_are_scored_from_their_learned_factors(planted) -> None:
    """Batch scoring of known users skips the fold-in; the answers agree with it."""
    rows = planted.encoded.train
    model = ImplicitALS(regularization=100.0).fit(rows)
    fitted = model.score_fitted(np.arange(rows.shape[0]), rows)
    folded = model.score(rows)
    assert np.abs(fitted - folded).max() < 0.01 * np.abs(folded).max()
    top_fitted = np.argsort(-fitted, axis=1)[:, :10]
    top_folded = np.argsort(-folded, axis=1)[:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_fitted, top_folded,
                                                                    strict=True)])
    assert overlap > 0.95
    # A popularity model has no per-user state: it scores the rows.
    popularity = Popularity().fit(rows)
    np.testing.assert_array_equal(popularity.score_fitted(np.arange(5), rows[:5]),
                                  popularity.score(rows[:5]))
