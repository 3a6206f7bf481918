"""Behaviour every Recommender must show, on a tiny known-answer matrix.

Each model's test class inherits :class:`RecommenderContract` and supplies ``make``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shoprec.models.base import FitContext, Recommender


def block_items() -> pd.DataFrame:
    """Item frame of the block matrix: items 0-4 are kitchen things, 5-9 garden things."""
    words = ["mug", "teapot", "spoon", "plate", "bowl", "rake", "spade", "hose", "pot", "seed"]
    return pd.DataFrame({
        "item_id": [f"i{i}" for i in range(10)],
        "title": [f"{'KITCHEN' if i < 5 else 'GARDEN'} {w.upper()}" for i, w in enumerate(words)],
        "category": ["kitchen"] * 5 + ["garden"] * 5,
        "brand": ["acme", "bolt"] * 5,
        "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
        "text": [f"{'kitchen' if i < 5 else 'garden'} {w}" for i, w in enumerate(words)],
    })


def block_matrix() -> sp.csr_matrix:
    """Two taste blocks: users 0-5 like items 0-4, users 6-11 like items 5-9."""
    dense = np.zeros((12, 10), dtype=np.float32)
    for user in range(12):
        block = range(0, 5) if user < 6 else range(5, 10)
        for item in block:
            if (user + item) % 5 != 0:  # leave one item per user unseen in its block
                dense[user, item] = 1.0 + (item % 3)
    return sp.csr_matrix(dense)


class RecommenderContract:
    """Shared behaviour tests; subclasses implement :meth:`make`."""

    def make(self) -> Recommender:  # pragma: no cover - supplied by subclasses
        raise NotImplementedError

    def context(self) -> FitContext | None:
        """What the model needs besides the matrix (item frame...); none by default."""
        return None

    @pytest.fixture()
    def fitted(self) -> Recommender:
        model = self.make()
        assert model.fit(block_matrix(), self.context()) is model
        return model

    def test_fit_and_score_leave_the_input_untouched(self) -> None:
        # Candidates train side by side on one shared training matrix: a model that
        # rewrote it (binarising in place) would change every other candidate's data.
        rows = block_matrix()
        before = rows.copy()
        self.make().fit(rows, self.context()).score(rows)
        assert (rows != before).nnz == 0 and rows.dtype == before.dtype

    def test_scores_have_the_right_shape(self, fitted: Recommender) -> None:
        scores = fitted.score(block_matrix()[:3])
        assert scores.shape == (3, 10)
        assert scores.dtype == np.float32
        assert np.all(np.isfinite(scores))

    def test_recommend_excludes_seen_items(self, fitted: Recommender) -> None:
        rows = block_matrix()
        indices, scores = fitted.recommend(rows, k=3)
        assert indices.shape == (12, 3)
        for user in range(12):
            assert not set(indices[user]) & set(rows[user].indices)
            assert np.all(np.diff(scores[user]) <= 0)  # best first

    def test_k_larger_than_the_catalogue_pads(self, fitted: Recommender) -> None:
        indices, scores = fitted.recommend(block_matrix()[:1], k=15)
        assert indices.shape == (1, 15)
        assert (indices[0, -5:] == -1).all() and np.isneginf(scores[0, -5:]).all()

    def test_save_load_round_trip(self, fitted: Recommender, tmp_path: Path) -> None:
        fitted.save(tmp_path / "model")
        loaded = type(fitted).load(tmp_path / "model")
        rows = block_matrix()
        np.testing.assert_array_equal(fitted.score(rows), loaded.score(rows))
        # Parameters travel as JSON, so compare them in that form.
        assert json.loads(json.dumps(loaded.get_params())) == json.loads(
            json.dumps(fitted.get_params()))
        assert not list((tmp_path / "model").glob("*.pkl"))

    def test_a_new_row_gets_scores(self, fitted: Recommender) -> None:
        new = sp.csr_matrix(np.array([[0, 0, 0, 0, 0, 0, 2, 0, 1, 0]], dtype=np.float32))
        scores = fitted.score(new)
        assert scores.shape == (1, 10) and np.all(np.isfinite(scores))

    def test_an_empty_row_gets_scores(self, fitted: Recommender) -> None:
        scores = fitted.score(sp.csr_matrix((1, 10), dtype=np.float32))
        assert scores.shape == (1, 10) and np.all(np.isfinite(scores))

    #: Whether the family decomposes its score exactly (its contributions sum to it).
    exact_explanations = False

    def test_explanations_name_history_items_with_shares(self, fitted: Recommender) -> None:
        # A shopper with two items of each block: each recommendation is explained by
        # items of that history, shares in (0, 1], largest first, summing to at most 1.
        row = sp.csr_matrix(np.array([[1, 2, 0, 0, 0, 1, 1, 0, 0, 0]], dtype=np.float32))
        indices, _ = fitted.recommend(row, k=4)
        items = indices[0][indices[0] >= 0]
        explanations = fitted.explain(row, items, top=3)
        assert len(explanations) == len(items)
        for because in explanations:
            shares = [share for _, share in because]
            assert {item for item, _ in because} <= {0, 1, 5, 6}
            assert all(0 < s <= 1 for s in shares) and sum(shares) <= 1 + 1e-9
            assert shares == sorted(shares, reverse=True) and len(because) <= 3

    def test_exact_contributions_sum_to_the_score(self, fitted: Recommender) -> None:
        if not self.exact_explanations:
            pytest.skip("leave-one-out explanations do not decompose the score")
        row = sp.csr_matrix(np.array([[1, 2, 0, 0, 0, 1, 0, 0, 0, 0]], dtype=np.float32))
        items = np.arange(10)
        history, matrix = fitted.contributions(row, items)
        scores = fitted.score(row)[0]
        assert sorted(history.tolist()) == [0, 1, 5]
        np.testing.assert_allclose(matrix.sum(axis=1), np.where(scores > 0, scores, 0)
                                   if fitted.family == "content" else scores,
                                   rtol=1e-4, atol=1e-5)

    @pytest.mark.parametrize("precision", ["float16", "int8"])
    def test_a_compressed_model_loads_and_answers_alike(self, fitted: Recommender,
                                                        tmp_path: Path, precision: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
        import shoprec.models.storage as storage

        # The block models are tiny: round every array, or nothing would be rounded.
        monkeypatch.setattr(storage, "MIN_ELEMENTS", 0)
        rows = block_matrix()
        before = fitted.score(rows)
        fitted.compress(precision)
        fitted.save(tmp_path / "model")
        config = json.loads((tmp_path / "model" / "config.json").read_text())
        assert config["storage_precision"] == precision
        loaded = type(fitted).load(tmp_path / "model")
        after = loaded.score(rows)
        assert after.shape == before.shape and after.dtype == np.float32
        # Rounded weights: the same scores within the precision's step.
        scale = float(np.abs(before).max()) or 1.0
        np.testing.assert_allclose(after, before, atol=0.02 * scale, rtol=0.02)
        assert not list((tmp_path / "model").glob("*.keras"))  # weights only, rounded
