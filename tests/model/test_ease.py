"""EASE: contract, closed form, learning on planted data, the item limit."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from shoprec.config import DataConfig, SplitConfig
from shoprec.errors import ModelFitError, ModelSkippedError
from shoprec.evaluation import evaluate
from shoprec.models import EASE, FitContext, Popularity
from shoprec.pipeline import prepare
from shoprec.training import failed_result, fit_candidate
from shoprec.tuning import ValidationTuner
from tests.model.contract import RecommenderContract, block_matrix


class TestEASEContract(RecommenderContract):
    exact_explanations = True

    def make(self) -> EASE:
        return EASE(regularization=1.0)


def test_closed_form_matches_the_definition() -> None:
    x = block_matrix().toarray()
    x[x > 0] = 1.0
    lam = 2.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    expected = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    model = EASE(regularization=lam).fit(block_matrix())
    np.testing.assert_allclose(model.weights_, expected, rtol=1e-4, atol=1e-5)
    assert np.all(np.diag(model.weights_) == 0)


def test_ease_beats_popularity_on_planted_data(synthetic_dir) -> None:
    prepared = prepare(DataConfig(interactions=str(synthetic_dir / "interactions.parquet")),
                       split_config=SplitConfig(test_days=20, validation_days=20))
    encoded = prepared.encoded
    tuner = ValidationTuner(encoded.train, encoded.validation)
    model = EASE().fit(encoded.train, FitContext(tuner=tuner))
    assert model.regularization_ in model.regularization_grid
    ease = evaluate(model, encoded.test_history, encoded.test)
    pop = evaluate(Popularity().fit(encoded.train), encoded.test_history, encoded.test)
    assert ease["ndcg@10"] > 1.2 * pop["ndcg@10"]


def test_above_the_item_limit_it_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EASE, "max_items", 5)
    with pytest.raises(ModelSkippedError, match="limited to 5 items") as info:
        fit_candidate("ease", {}, block_matrix(), None)
    assert failed_result("ease", {}, info.value).status == "skipped"


def test_a_new_row_is_scored_from_its_items() -> None:
    model = EASE(regularization=1.0).fit(block_matrix())
    row = sp.csr_matrix(np.array([[0, 0, 0, 0, 0, 0, 1, 0, 0, 0]], np.float32))
    top, _ = model.recommend(row, k=4)
    assert set(top[0]) <= {5, 7, 8, 9}  # its own block


def test_over_its_limit_it_models_the_most_interacted_items() -> None:
    matrix = block_matrix()
    counts = np.diff(matrix.tocsc().indptr)
    model = EASE(regularization=1.0, vocabulary=6).fit(matrix)
    kept = model.vocabulary_
    assert len(kept) == 6 and model.n_items_ == 10
    assert counts[kept].min() >= np.delete(counts, kept).max()
    assert model.selected_params_ == {"regularization": 1.0, "history_weights": 0.0,
                                      "vocabulary": 6}
    scores = model.score(matrix)
    rest = np.setdiff1d(np.arange(10), kept)
    # Every item has a score; the unmodelled ones rank after the modelled, by popularity.
    assert np.isfinite(scores).all()
    assert (scores[:, rest].max(axis=1) < scores[:, kept].min(axis=1)).all()
    by_popularity = rest[np.argsort(-counts[rest], kind="stable")]
    assert (np.diff(scores[0, by_popularity]) <= 0).all()


def test_the_item_limit_follows_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec.models import autoencoder

    memory = {"bytes": 24 * 2**30}
    monkeypatch.setattr(autoencoder, "machine_memory", lambda: memory["bytes"])
    monkeypatch.setattr(autoencoder.os, "cpu_count", lambda: 2)
    assert autoencoder.ease_item_limit(4) == 12_000  # time-bound
    monkeypatch.setattr(autoencoder.os, "cpu_count", lambda: 64)
    assert autoencoder.ease_item_limit(4) == 17_000  # memory-bound: 40% of 24 GB
    memory["bytes"] = 2 * 2**30
    assert autoencoder.ease_item_limit(4) == 4_500


def test_the_memory_is_the_machine_s_or_its_container_s() -> None:
    import psutil

    from shoprec.models.autoencoder import machine_memory

    assert 0 < machine_memory() <= psutil.virtual_memory().total


def test_a_trimmed_model_still_learns_and_round_trips(synthetic_dir, tmp_path) -> None:
    prepared = prepare(DataConfig(interactions=str(synthetic_dir / "interactions.parquet")),
                       split_config=SplitConfig(test_days=20, validation_days=20))
    encoded = prepared.encoded
    half = encoded.shape[1] // 2
    model = EASE(vocabulary=half).fit(
        encoded.train, FitContext(tuner=ValidationTuner(encoded.train, encoded.validation)))
    assert len(model.vocabulary_) == half
    ease = evaluate(model, encoded.test_history, encoded.test)
    pop = evaluate(Popularity().fit(encoded.train), encoded.test_history, encoded.test)
    assert ease["ndcg@10"] > 1.2 * pop["ndcg@10"]
    model.save(tmp_path / "ease")
    again = EASE.load(tmp_path / "ease")
    rows = encoded.train[:20]
    assert np.array_equal(again.score(rows), model.score(rows))


def test_contributions_are_exact_with_a_vocabulary() -> None:
    # Six of the ten items modelled: their scores decompose over the modelled history;
    # the others are ranked by popularity and explained by nothing.
    model = EASE(regularization=1.0, vocabulary=6).fit(block_matrix())
    row = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 1, 1, 0, 0, 0]], dtype=np.float32))
    history, matrix = model.contributions(row, np.arange(10))
    scores = model.score(row)[0]
    modelled = np.zeros(10, dtype=bool)
    modelled[model.vocabulary_] = True
    np.testing.assert_allclose(matrix[modelled].sum(axis=1), scores[modelled], rtol=1e-4,
                               atol=1e-5)
    assert not matrix[~modelled].any()
    outside = [h for h in history if h not in set(model.vocabulary_)]
    assert outside and not matrix[:, np.isin(history, outside)].any()


def test_a_gram_matrix_that_is_not_positive_definite_is_a_clear_error() -> None:
    gram = np.diag([1.0, 2.0, 3.0])
    with pytest.raises(ModelFitError, match="not positive definite"):
        EASE._solve(gram, -2.5)


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[np.dtype]:
    """The precision of each inverse EASE takes, in order."""
    from shoprec.models import autoencoder

    dtypes: list[np.dtype] = []
    invert = autoencoder.invert_spd

    def recording(matrix: np.ndarray) -> tuple[np.ndarray, int]:
        dtypes.append(matrix.dtype)
        return invert(matrix)

    monkeypatch.setattr(autoencoder, "invert_spd", recording)
    return dtypes


def test_single_precision_where_the_condition_allows_and_double_elsewhere(
        monkeypatch: pytest.MonkeyPatch, solved: list[np.dtype]) -> None:
    """The bound (largest row sum + λ) / λ picks the precision; both agree with the definition."""
    rng = np.random.default_rng(4)
    x = (rng.random((300, 37)) < 0.2).astype(np.float64)
    gram = x.T @ x
    inverse = np.linalg.inv(gram + 5.0 * np.eye(37))
    expected = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(expected, 0.0)
    # The largest row sum of this Gram matrix is 603: the bound is about 122 at λ 5.
    single = EASE._solve(gram, 5.0)
    assert solved == [np.float32]
    monkeypatch.setattr("shoprec.models.autoencoder.EASE_SINGLE_PRECISION_CONDITION", 50.0)
    double = EASE._solve(gram, 5.0)
    assert solved == [np.float32, np.float64]
    for weights in (single, double):
        assert weights.dtype == np.float32 and weights.flags.c_contiguous
        np.testing.assert_allclose(weights, expected, rtol=1e-4, atol=1e-6)


def test_a_solve_single_precision_cannot_do_is_done_in_double(
        monkeypatch: pytest.MonkeyPatch, solved: list[np.dtype]) -> None:
    """Single precision's Cholesky fails on a nearly singular matrix; double's does not."""
    monkeypatch.setattr("shoprec.models.autoencoder.EASE_SINGLE_PRECISION_CONDITION", np.inf)
    rng = np.random.default_rng(5)
    x = rng.random((40, 3)) @ rng.random((3, 30))  # rank 3: singular but for λ
    gram = x.T @ x
    weights = EASE._solve(gram, 1e-7)
    assert solved == [np.float32, np.float64]
    assert np.isfinite(weights).all()


def test_the_inverse_is_mirrored_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec.models import autoencoder

    rng = np.random.default_rng(4)
    x = (rng.random((300, 37)) < 0.2).astype(np.float64)
    gram = x.T @ x
    whole = EASE._solve(gram, 5.0)
    monkeypatch.setattr(autoencoder, "EASE_MIRROR_ROWS", 8)  # blocks that do not divide 37
    blocks = EASE._solve(gram, 5.0)
    inverse = np.linalg.inv(gram + 5.0 * np.eye(37))
    expected = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(blocks, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(blocks, whole)
