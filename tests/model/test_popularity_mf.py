"""Popularity and matrix factorisation: contract, learning, fold-in."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from shoprec.config import DataConfig, SplitConfig
from shoprec.errors import ModelFitError
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


class TestUnweightedALSContract(RecommenderContract):
    exact_explanations = True

    def make(self) -> ImplicitALS:
        return ImplicitALS(factors=4, iterations=5, regularization=0.1, seed=1,
                           weighting="none")


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


@pytest.mark.parametrize(("weighting", "small_groups"),
                         [("bm25", False), ("none", False), ("bm25", True)])
def test_fold_in_solves_each_rows_normal_equations(weighting, small_groups,
                                                   monkeypatch) -> None:
    """The grouped fold-in gives each row the solution of its own system.

    Rows of every length from empty to longer than the factors (both ways of solving),
    weights under 1 (BM25 confidences below an unobserved item's), in shuffled order; in
    one group per way, or in groups of at most 3 rows and a block too small for a row of
    more than 10 items (such a row alone).
    """
    if small_groups:
        from shoprec.models import mf

        monkeypatch.setattr(mf, "FOLD_IN_ROWS", 3)
        monkeypatch.setattr(mf, "FOLD_IN_BLOCK_VALUES", 80)
    rng = np.random.default_rng(5)
    n_items, factors = 120, 8
    lengths = rng.permutation(np.r_[0, 0, np.arange(1, 40), 90])
    cols = [rng.choice(n_items, size=n, replace=False) for n in lengths]
    rows = sp.csr_matrix((np.concatenate([rng.uniform(0.2, 6.0, n) for n in lengths]
                                         ).astype(np.float32),
                          np.concatenate(cols).astype(np.int64),
                          np.r_[0, np.cumsum(lengths)]), shape=(len(lengths), n_items))
    model = ImplicitALS(factors=factors, regularization=1.0, iterations=3, alpha=2.0,
                        weighting=weighting).fit(rows)
    got = model.user_factors(rows)
    weighted, y = model._weighted(rows), model.item_factors64_
    for r, n in enumerate(lengths):
        if n == 0:
            assert not got[r].any()
            continue
        at = slice(weighted.indptr[r], weighted.indptr[r + 1])
        c, f = model.alpha * weighted.data[at].astype(np.float64), y[weighted.indices[at]]
        want = np.linalg.solve(y.T @ y + np.eye(factors) + f.T @ ((c - 1)[:, None] * f),
                               f.T @ c)
        np.testing.assert_allclose(got[r], want, rtol=1e-9, atol=1e-12)
    assert (model.alpha * weighted.data < 1).any()  # confidences under 1 were exercised


def test_batch_lists_are_the_served_lists_and_their_explanations_add_up(
        planted, tmp_path) -> None:
    """An e-mail's list is the site's for every known shopper, and its ``because`` shares
    decompose its own score: from ALS's learned user factors a quarter of the sample's
    batch lists parted from the served ones, and the shares explained another score."""
    import pandas as pd

    from shoprec.batch import write_recommendations
    from shoprec.features.idmap import IdMap
    from shoprec.registry.bundle import ModelBundle

    rows = planted.encoded.train
    model = ImplicitALS(iterations=5).fit(rows)
    users = IdMap([f"u{i}" for i in range(rows.shape[0])])
    bundle = ModelBundle(model=model, users=users,
                         items=IdMap([f"i{i}" for i in range(rows.shape[1])]), history=rows,
                         fallback=Popularity().fit(rows), meta={"model": "mf"})
    write_recommendations(bundle, tmp_path, k=5, explain=True)
    batch = pd.read_parquet(tmp_path)
    served_items, served_scores = model.recommend(rows, k=5)
    lists = batch.sort_values(["user_id", "rank"]).groupby("user_id")["item_id"].agg(list)
    assert lists.to_dict() == {f"u{u}": [f"i{j}" for j in served_items[u]]
                               for u in range(rows.shape[0])}
    for user in (0, 7, 42, rows.shape[0] - 1):
        mine = batch[batch["user_id"] == f"u{user}"].sort_values("rank")
        assert list(mine["item_id"]) == [f"i{j}" for j in served_items[user]]
        np.testing.assert_allclose(mine["score"], served_scores[user], rtol=1e-5)
        for item, because in zip(mine["item_id"], mine["because"], strict=True):
            shares = model.explain(rows[user], np.array([int(item[1:])]), 50)[0]
            assert [f"i{h}" for h, _ in shares][:len(because)] == [
                b["item_id"] for b in because]
            np.testing.assert_allclose([b["share"] for b in because],
                                       [s for _, s in shares][:len(because)], rtol=1e-6)


def test_bm25_weighs_popular_items_and_long_histories_less() -> None:
    # Item 0 is in three rows of four, item 2 in one; shopper 2 has three entries.
    rows = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 1, 0]],
                                  dtype=np.float32))
    model = ImplicitALS(factors=2, iterations=2, regularization=1.0, weighting="bm25",
                        bm25_k1=10.0, bm25_b=0.8).fit(rows)
    shoppers = np.array([3, 3, 1])
    idf = np.log1p((4 - shoppers + 0.5) / (shoppers + 0.5))
    np.testing.assert_allclose(model.item_idf_, idf)
    assert model.average_length_ == 1.75
    weighted = model._weighted(rows).toarray()
    # x (k1 + 1) / (k1 (1 - b + b n / n̄) + x) idf, entry by entry.
    norm = 0.2 + 0.8 * np.array([1, 2, 3, 1]) / 1.75
    expected = (rows.toarray() * 11.0 / (10.0 * norm[:, None] + rows.toarray())) * idf
    np.testing.assert_allclose(weighted, expected, rtol=1e-6)
    assert (weighted[rows.nonzero()] > 0).all()  # popular items still count
    assert weighted[2, 2] > weighted[2, 0]  # the rare item outweighs the popular one
    assert weighted[0, 0] > weighted[2, 0]  # one entry of three weighs less than one of one
    # "none" keeps the entries, and a recipe saved before the choice existed means "none".
    plain = ImplicitALS(factors=2, iterations=2, regularization=1.0, weighting="none")
    np.testing.assert_array_equal(plain.fit(rows)._weighted(rows).toarray(), rows.toarray())
    assert ImplicitALS.current_params({"factors": 2})["weighting"] == "none"
    with pytest.raises(ValueError, match="weighting must be"):
        ImplicitALS(weighting="tfidf").fit(rows)


def test_a_saved_bm25_model_folds_rows_in_as_before(tmp_path, planted) -> None:
    rows = planted.encoded.train
    model = ImplicitALS(regularization=100.0, iterations=3).fit(rows)
    model.save(tmp_path / "mf")
    loaded = ImplicitALS.load(tmp_path / "mf")
    assert loaded.weighting == "bm25" and loaded.average_length_ == model.average_length_
    np.testing.assert_allclose(loaded.score(rows[:50]), model.score(rows[:50]), rtol=1e-5)


def test_a_bundle_saved_before_bm25_scores_its_rows_unweighted(tmp_path, planted) -> None:
    rows = planted.encoded.train
    model = ImplicitALS(regularization=100.0, iterations=3, weighting="none").fit(rows)
    model.save(tmp_path / "mf")
    config = json.loads((tmp_path / "mf" / "config.json").read_text())
    for key in ("weighting", "bm25_k1", "bm25_b"):  # as an older version wrote it
        del config["params"][key]
    (tmp_path / "mf" / "config.json").write_text(json.dumps(config))
    loaded = ImplicitALS.load(tmp_path / "mf")
    assert loaded.weighting == "none" and loaded.item_idf_ is None
    np.testing.assert_allclose(loaded.score(rows[:50]), model.score(rows[:50]), rtol=1e-5)
    # A BM25 bundle that lost its statistics is refused, not scored unweighted.
    config["params"]["weighting"] = "bm25"
    (tmp_path / "mf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFitError, match="without its statistics"):
        ImplicitALS.load(tmp_path / "mf")


def test_stored_zeros_are_no_shoppers_and_stay_zero() -> None:
    rows = sp.csr_matrix((np.array([1.0, 0.0, 0.0, 2.0], np.float32),
                          (np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]))), shape=(3, 3))
    assert rows.nnz == 4  # the two zeros are stored
    model = ImplicitALS(factors=2, iterations=2, regularization=1.0, bm25_b=1.0).fit(rows)
    expected_idf = np.log1p((3 - np.array([1, 0, 1]) + 0.5) / (np.array([1, 0, 1]) + 0.5))
    np.testing.assert_allclose(model.item_idf_, expected_idf)
    weighted = model._weighted(rows)  # row 1 is all zeros: with b = 1 its norm is 0
    assert np.isfinite(weighted.data).all() and weighted[1].sum() == 0
    assert np.isfinite(model.score(rows)).all()
