"""CFGAN (TensorFlow): contract, learning, divergence and collapse detection, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from shoprec.config import DataConfig, SplitConfig
from shoprec.errors import ModelFitError
from shoprec.evaluation import evaluate
from shoprec.models import CFGAN, FitContext, Popularity
from shoprec.pipeline import prepare
from shoprec.training import failed_result
from shoprec.tuning import ValidationTuner
from tests.model.contract import RecommenderContract, block_matrix

#: TensorFlow: importing it and training a network take seconds.
pytestmark = pytest.mark.slow

TINY = dict(generator_hidden=[8], discriminator_hidden=[4], epochs=3, batch_size=4, seed=1)


class TestCFGANContract(RecommenderContract):
    def make(self) -> CFGAN:
        return CFGAN(**TINY)


@pytest.fixture(scope="module")
def planted(synthetic_dir):
    return prepare(DataConfig(interactions=str(synthetic_dir / "interactions.parquet")),
                   split_config=SplitConfig(test_days=20, validation_days=20)).encoded


def test_beats_popularity_on_planted_data(planted) -> None:
    context = FitContext(tuner=ValidationTuner(planted.train, planted.validation))
    model = CFGAN(epochs=40, seed=2).fit(planted.train, context)
    result = evaluate(model, planted.test_history, planted.test)
    pop = evaluate(Popularity().fit(planted.train), planted.test_history, planted.test)
    assert result["ndcg@10"] > 1.2 * pop["ndcg@10"]
    # Early stopping kept the best validation epoch; both networks' losses are recorded.
    scores = [r["validation_ndcg_at_10"] for r in model.history_]
    assert model.best_epoch_ == int(np.argmax(scores))
    assert model.selected_params_ == {"epochs": model.best_epoch_ + 1,
                                      "history_weights": model._reading_exponent()}
    for key in ("generator_loss", "discriminator_loss", "user_dependence"):
        assert all(np.isfinite(r[key]) for r in model.history_), key


def test_sparse_rows_train_the_same_networks(planted, monkeypatch) -> None:
    """Below SPARSE_INPUT_DENSITY cfgan's products with its 0/1 rows are sparse: the same
    training up to rounding (the masks are drawn alike), and a weight decay still applies."""
    from shoprec.models import epochs

    def train(density: float) -> CFGAN:
        monkeypatch.setattr(epochs, "SPARSE_INPUT_DENSITY", density)
        return CFGAN(epochs=3, seed=2, weight_decay=1e-4).fit(planted.train)

    dense, sparse = train(0.0), train(1.0)
    assert not dense.sparse_input_ and sparse.sparse_input_
    for key in ("generator_loss", "discriminator_loss", "zero_reconstruction"):
        np.testing.assert_allclose([r[key] for r in sparse.history_],
                                   [r[key] for r in dense.history_], rtol=1e-4)
    np.testing.assert_allclose(sparse.score(planted.test_history),
                               dense.score(planted.test_history), rtol=1e-3, atol=1e-3)
    # The planted rows are 15% dense: dense rows at the default threshold.
    monkeypatch.undo()
    assert not CFGAN(epochs=1, seed=2).fit(planted.train).sparse_input_


def test_split_discriminator_reads_vector_and_condition_as_keras_does(planted) -> None:
    """``_judge`` splits the first layer into the vector's and the condition's halves: the
    logits the Keras model gives [vector, condition], for dense and sparse rows."""
    import tensorflow as tf

    from shoprec.models.epochs import coo_indices

    model = CFGAN(epochs=1, seed=2).fit(planted.train)
    rows = (planted.train[:40] > 0).astype(np.float32)  # 0/1, as training reads them
    real = tf.constant(rows.toarray(), tf.float32)
    rng = np.random.default_rng(0)
    fake = tf.constant(rng.random(rows.shape), tf.float32)  # unlike the condition
    expected = model.discriminator_(tf.concat([tf.concat([v, real], axis=1)
                                               for v in (real, fake)], axis=0))
    # The condition as training builds it (fit's sparse_step).
    condition = tf.SparseTensor(coo_indices(rows), np.ones(rows.nnz, np.float32), rows.shape)
    for got in (model._judge([real, fake], real, None),
                model._judge([condition, fake], real, condition)):
        assert got.shape == (80, 1)
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4,
                                   atol=1e-5)


def test_collapse_detector_fires_on_a_broken_configuration() -> None:
    # Heavy weight decay with a fast optimiser drives every kernel to zero: the generator
    # then gives every shopper the same vector (its biases).
    broken = CFGAN(**{**TINY, "epochs": 60, "weight_decay": 100.0, "learning_rate": 0.05})
    with pytest.raises(ModelFitError, match="collapsed at epoch .*no longer depend on the "
                                            "shopper") as caught:
        broken.fit(block_matrix())
    # The pipeline turns the error into a failed leaderboard row carrying the reason.
    row = failed_result("cfgan", broken.get_params(), caught.value)
    assert row.status == "failed" and "collapsed" in row.error
    # The same network trained sanely keeps depending on the shopper.
    healthy = CFGAN(**{**TINY, "epochs": 20}).fit(block_matrix())
    assert min(r["user_dependence"] for r in healthy.history_) > 0.1


def test_nan_losses_raise_a_model_fit_error() -> None:
    with pytest.raises(ModelFitError, match="diverged at epoch 0.*NaN or infinite"):
        CFGAN(**{**TINY, "learning_rate": 1e30}).fit(block_matrix())


def test_bad_ratios_are_refused() -> None:
    with pytest.raises(ModelFitError, match="zr_ratio must be in"):
        CFGAN(zr_ratio=1.5).fit(block_matrix())


def test_learning_rate_halves_every_half_life_of_steps() -> None:
    # 12 shoppers in batches of 4: 3 steps an epoch. The record keeps each epoch's last rate.
    decayed = CFGAN(**{**TINY, "learning_rate_half_life": 3}).fit(block_matrix())
    np.testing.assert_allclose([r["learning_rate"] for r in decayed.history_],
                               [2.6e-3 * 0.5 ** (last / 3) for last in (2, 5, 8)], rtol=1e-6)
    constant = CFGAN(**{**TINY, "learning_rate_half_life": None}).fit(block_matrix())
    assert [r["learning_rate"] for r in constant.history_] == [2.6e-3] * 3
    # The optimisers really took the smaller steps: the networks differ from a constant
    # rate, and a half-life far beyond the run trains what the constant rate trains.
    assert not np.allclose(decayed.score(block_matrix()), constant.score(block_matrix()),
                           rtol=1e-3, atol=1e-4)
    slow = CFGAN(**{**TINY, "learning_rate_half_life": 10**9}).fit(block_matrix())
    np.testing.assert_allclose(slow.score(block_matrix()), constant.score(block_matrix()),
                               rtol=1e-4, atol=1e-5)
    # No epoch starts once the rate is under 1% of the first (log2(100) = 6.64 half-lives,
    # 19.9 steps here): epoch 6 starts at step 18, epoch 7 would start at step 21.
    capped = CFGAN(**{**TINY, "epochs": 50, "learning_rate_half_life": 3}).fit(block_matrix())
    assert len(capped.history_) == 7
    assert len(CFGAN(**{**TINY, "epochs": 50, "learning_rate_half_life": None}).fit(
        block_matrix()).history_) == 50
    # A recipe or bundle saved before the schedule existed keeps its constant rate.
    assert CFGAN.current_params({"epochs": 7})["learning_rate_half_life"] is None
    assert CFGAN.current_params({})["history_weights"] is False
    with pytest.raises(ModelFitError, match="learning_rate_half_life must be at least 1"):
        CFGAN(learning_rate_half_life=0).fit(block_matrix())


def test_a_shorter_run_replays_the_start_of_a_longer_one() -> None:
    """The refit trains the epochs early stopping kept: the schedule must not depend on how
    many epochs the run is allowed, so its epochs are the longer run's first ones."""
    longer = CFGAN(**{**TINY, "epochs": 5, "learning_rate_half_life": 3}).fit(block_matrix())
    shorter = CFGAN(**{**TINY, "epochs": 3, "learning_rate_half_life": 3}).fit(block_matrix())
    assert shorter.history_ == longer.history_[:3]


def test_training_is_deterministic_given_the_seed() -> None:
    first = CFGAN(**TINY).fit(block_matrix()).score(block_matrix())
    second = CFGAN(**TINY).fit(block_matrix()).score(block_matrix())
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)
    other = CFGAN(**{**TINY, "seed": 9}).fit(block_matrix()).score(block_matrix())
    assert not np.allclose(first, other)


def test_cfgan_scores_the_whole_catalogue_from_a_vocabulary(tmp_path) -> None:
    rows = block_matrix()
    model = CFGAN(**{**TINY, "vocabulary": 6}).fit(rows)
    scores = model.score(rows)
    assert scores.shape == rows.shape and np.isinf(scores).sum(axis=1).tolist() == [
        rows.shape[1] - 6] * rows.shape[0]
    model.save(tmp_path / "cfgan")
    np.testing.assert_allclose(CFGAN.load(tmp_path / "cfgan").score(rows), scores,
                               rtol=1e-5, atol=1e-6)
