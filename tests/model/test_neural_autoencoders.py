"""Mult-VAE and Mult-DAE (TensorFlow): contract, learning, loss, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from shoprec.config import DataConfig, SplitConfig
from shoprec.errors import ModelFitError
from shoprec.evaluation import evaluate
from shoprec.models import CFGAN, FitContext, MultDAE, MultVAE, Popularity
from shoprec.pipeline import prepare
from shoprec.tuning import ValidationTuner
from tests.model.contract import RecommenderContract, block_matrix

#: TensorFlow: importing it and training a network take seconds.
pytestmark = pytest.mark.slow

TINY = dict(hidden=16, latent=4, epochs=3, batch_size=4, seed=1)


class TestVAEContract(RecommenderContract):
    def make(self) -> MultVAE:
        return MultVAE(**TINY)


class TestDAEContract(RecommenderContract):
    def make(self) -> MultDAE:
        return MultDAE(**TINY)


@pytest.fixture(scope="module")
def planted(synthetic_dir):
    return prepare(DataConfig(interactions=str(synthetic_dir / "interactions.parquet")),
                   split_config=SplitConfig(test_days=20, validation_days=20)).encoded


@pytest.mark.parametrize(("model_class", "params"), [
    (MultVAE, {}), (MultDAE, {}), (MultDAE, {"learning_rate": 1e-3, "average_half_life": None})])
def test_beats_popularity_on_planted_data(planted, model_class, params) -> None:
    context = FitContext(tuner=ValidationTuner(planted.train, planted.validation))
    model = model_class(epochs=30, seed=2, **params).fit(planted.train, context)
    result = evaluate(model, planted.test_history, planted.test)
    pop = evaluate(Popularity().fit(planted.train), planted.test_history, planted.test)
    assert result["ndcg@10"] > 1.2 * pop["ndcg@10"]
    # Early stopping kept the best validation epoch, and the curves are recorded.
    scores = [r["validation_ndcg_at_10"] for r in model.history_]
    assert model.best_epoch_ == int(np.argmax(scores))
    if model_class is MultVAE:
        losses = [r["loss"] for r in model.history_]
        assert losses[-1] < losses[0]  # the training loss falls
        # vae learns at its default schedule: a rate from 0.003 that decays every step.
        rates = [r["learning_rate"] for r in model.history_]
        assert 0 < rates[-1] < rates[0] < 0.003
    else:  # dae's default rate is constant, so no rate is recorded
        assert "learning_rate" not in model.history_[0]


def test_training_is_deterministic_given_the_seed() -> None:
    first = MultVAE(**TINY).fit(block_matrix()).score(block_matrix())
    second = MultVAE(**TINY).fit(block_matrix()).score(block_matrix())
    np.testing.assert_allclose(first, second, rtol=1e-5, atol=1e-6)
    other = MultVAE(**{**TINY, "seed": 9}).fit(block_matrix()).score(block_matrix())
    assert not np.allclose(first, other)


@pytest.mark.parametrize("model_class", [MultVAE, MultDAE])
def test_learning_rate_halves_every_half_life_of_steps(model_class) -> None:
    # 12 shoppers in batches of 4: 3 steps an epoch. The record keeps each epoch's last rate.
    base = {**TINY, "learning_rate": 1e-3, "learning_rate_half_life": None}
    decayed = model_class(**{**base, "learning_rate_half_life": 3}).fit(block_matrix())
    np.testing.assert_allclose([r["learning_rate"] for r in decayed.history_],
                               [1e-3 * 0.5 ** (last / 3) for last in (2, 5, 8)], rtol=1e-6)
    constant = model_class(**base).fit(block_matrix())
    assert all("learning_rate" not in r for r in constant.history_)
    # The optimiser really took the smaller steps, and a half-life far beyond the run trains
    # what the constant rate trains.
    assert not np.allclose(decayed.score(block_matrix()), constant.score(block_matrix()),
                           rtol=1e-3, atol=1e-4)
    slow = model_class(**{**base, "learning_rate_half_life": 10**9}).fit(block_matrix())
    np.testing.assert_allclose(slow.score(block_matrix()), constant.score(block_matrix()),
                               rtol=1e-4, atol=1e-5)
    # No epoch starts once the rate is under 1% of the first (19.9 steps here).
    capped = model_class(**{**base, "epochs": 50, "learning_rate_half_life": 3}).fit(
        block_matrix())
    assert len(capped.history_) == 7
    assert len(model_class(**{**base, "epochs": 50}).fit(block_matrix()).history_) == 50
    # The refit trains the epochs early stopping kept: a shorter run replays a longer one's
    # first epochs.
    shorter = model_class(**{**base, "epochs": 2, "learning_rate_half_life": 3}).fit(
        block_matrix())
    assert shorter.history_ == decayed.history_[:2]
    # A recipe or bundle saved before the schedule existed keeps its constant rate.
    assert model_class.current_params({"epochs": 7})["learning_rate_half_life"] is None
    with pytest.raises(ModelFitError, match="learning_rate_half_life must be at least 1"):
        model_class(learning_rate_half_life=0).fit(block_matrix())



def test_bounded_training_samples_shoppers_and_keeps_a_vocabulary(planted, tmp_path) -> None:
    """At scale the networks train on a sample of shoppers over the most-interacted items;
    every shopper is still scored from their own row, and the model still learns."""
    n_users, n_items = planted.train.shape
    context = FitContext(tuner=ValidationTuner(planted.train, planted.validation))
    model = MultDAE(epochs=30, seed=2, train_users=n_users // 2,
                    vocabulary=n_items - 30).fit(planted.train, context)
    counts = np.bincount(planted.train.indices, minlength=n_items)
    assert len(model.vocabulary_) == n_items - 30
    assert counts[model.vocabulary_].min() >= np.delete(counts, model.vocabulary_).max()
    scores = model.score(planted.test_history)
    outside = np.setdiff1d(np.arange(n_items), model.vocabulary_)
    assert scores.shape == (n_users, n_items) and model.n_items_ == n_items
    assert np.all(scores[:, outside] == -np.inf)
    assert np.all(np.isfinite(scores[:, model.vocabulary_]))
    result = evaluate(model, planted.test_history, planted.test)
    pop = evaluate(Popularity().fit(planted.train), planted.test_history, planted.test)
    assert result["ndcg@10"] > 1.2 * pop["ndcg@10"]
    model.save(tmp_path / "dae")
    loaded = MultDAE.load(tmp_path / "dae")
    np.testing.assert_array_equal(loaded.vocabulary_, model.vocabulary_)
    np.testing.assert_allclose(loaded.score(planted.test_history[:20]), scores[:20],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_class", [MultVAE, MultDAE])
def test_sparse_rows_train_the_same_model(planted, model_class, monkeypatch) -> None:
    """Below SPARSE_INPUT_DENSITY the networks train on sparse rows: without dropout the
    same weights as from dense rows, and with it a model that learns as well."""
    from shoprec.models import epochs

    def train(density: float, **params: object) -> MultDAE | MultVAE:
        monkeypatch.setattr(epochs, "SPARSE_INPUT_DENSITY", density)
        context = FitContext(tuner=ValidationTuner(planted.train, planted.validation))
        return model_class(**{"epochs": 30, "seed": 2, **params}).fit(planted.train, context)

    # The planted rows are 15% dense: dense below the default threshold.
    assert not train(epochs.SPARSE_INPUT_DENSITY, epochs=1).sparse_input_
    sparse = train(1.0)
    assert sparse.sparse_input_
    result = evaluate(sparse, planted.test_history, planted.test)
    pop = evaluate(Popularity().fit(planted.train), planted.test_history, planted.test)
    assert result["ndcg@10"] > 1.2 * pop["ndcg@10"]
    if model_class is MultDAE:  # the VAE's sampling follows the dropout draws
        exact = {"dropout": 0.0, "epochs": 3}
        dense, sparse = train(0.0, **exact), train(1.0, **exact)
        assert not dense.sparse_input_ and sparse.sparse_input_
        np.testing.assert_allclose(sparse.score(planted.test_history),
                                   dense.score(planted.test_history), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model_class", [MultVAE, MultDAE, CFGAN])
def test_sparse_scored_rows_score_as_dense_ones(planted, model_class, tmp_path,
                                               monkeypatch) -> None:
    """Scored rows below SPARSE_INPUT_DENSITY go through the first layer as a sparse
    product: the same scores up to rounding, for a fitted and a loaded network, over a
    vocabulary, and for a shopper with no row."""
    import scipy.sparse as sp

    from shoprec.models import autoencoder, epochs, gan

    n_items = planted.train.shape[1]
    model = model_class(epochs=2, seed=3, vocabulary=n_items - 10).fit(planted.train)
    model.save(tmp_path / "model")
    loaded = model_class.load(tmp_path / "model")
    rows = sp.vstack([planted.test_history, sp.csr_matrix((1, n_items))], format="csr")
    products: list[object] = []
    sparse_dense = autoencoder.sparse_dense

    def counted(layer: object, batch: object) -> object:
        products.append(batch)
        return sparse_dense(layer, batch)

    for network in (model, loaded):
        monkeypatch.setattr(epochs, "SPARSE_INPUT_DENSITY", 0.0)  # every batch dense
        dense = network.score(rows)
        monkeypatch.setattr(epochs, "SPARSE_INPUT_DENSITY", 1.0)  # every batch sparse
        for module in (autoencoder, gan):
            monkeypatch.setattr(module, "sparse_dense", counted)
        products.clear()
        sparse = network.score(rows)
        monkeypatch.undo()
        assert products, "the sparse path was not taken"
        assert np.isneginf(dense).sum() == 10 * rows.shape[0]  # outside the vocabulary
        np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-5)


def test_sparse_scored_rows_normalise_weighted_rows_with_duplicates(monkeypatch) -> None:
    """Weighted rows (read at a power), out of order with an item stored twice, beside an
    empty row: the sparse tensor is the dense rows summed and L2-normalised as
    ``tf.math.l2_normalize`` does, and the caller's matrix is left as it was."""
    import scipy.sparse as sp
    import tensorflow as tf

    from shoprec.models import epochs
    from shoprec.models.autoencoder import sparse_scored_rows

    # Row 0 stores item 3 twice (0.5 + 0.25); row 1 is empty; row 2 has one weight.
    data = np.array([0.5, 2.0, 0.25, 0.125, 3.0], dtype=np.float64)
    indices = np.array([3, 1, 3, 6, 2])
    batch = sp.csr_matrix((data, indices, np.array([0, 4, 4, 5])), shape=(3, 8))
    before = (batch.data.copy(), batch.indices.copy())
    monkeypatch.setattr(epochs, "SPARSE_INPUT_DENSITY", 1.0)  # every batch sparse
    dense = np.asarray(sp.csr_matrix(batch).toarray(), dtype=np.float32)  # sums duplicates
    for normalise in (False, True):
        tensor = sparse_scored_rows(batch, normalise=normalise)
        assert tensor is not None
        got = tf.sparse.to_dense(tensor).numpy()
        expected = tf.math.l2_normalize(dense, axis=1).numpy() if normalise else dense
        assert tuple(np.asarray(tensor.dense_shape)) == batch.shape
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert np.array_equal(batch.data, before[0]) and np.array_equal(batch.indices, before[1])
    monkeypatch.setattr(epochs, "SPARSE_INPUT_DENSITY", 0.0)
    assert sparse_scored_rows(batch, normalise=True) is None  # dense rows: the dense path


def test_fused_adam_makes_keras_adams_update() -> None:
    """The fused kernel is an optimisation only: the same steps as ``keras.optimizers.Adam``."""
    import keras
    import tensorflow as tf

    from shoprec.models.autoencoder import FusedAdam

    rng = np.random.default_rng(0)
    start = [rng.normal(size=shape).astype(np.float32) for shape in ((7, 5), (5,))]
    ours = [keras.Variable(w) for w in start]
    theirs = [keras.Variable(w) for w in start]
    fused, reference = FusedAdam(ours, 0.01), keras.optimizers.Adam(0.01)
    apply = tf.function(fused.apply)
    # Tiny gradients in the last steps, where ε (1e-7, Keras') weighs on the step size; the
    # rate changed between steps (a schedule, as cfgan's) is the rate the next step takes.
    for step, scale in enumerate((1.0, 1.0, 1.0, 1e-6, 1e-6, 1e-6)):
        if step == 2:
            fused.set_learning_rate(0.003)
            reference.learning_rate = 0.003
        gradients = [tf.constant(scale * rng.normal(size=w.shape).astype(np.float32))
                     for w in start]
        apply(gradients)
        reference.apply_gradients(zip(gradients, theirs, strict=True))
    for mine, keras_own, first in zip(ours, theirs, start, strict=True):
        assert not np.allclose(np.asarray(mine), first)  # it moved
        np.testing.assert_allclose(np.asarray(mine), np.asarray(keras_own), rtol=1e-5,
                                   atol=1e-6)


def test_weight_average_is_the_decayed_mean_of_the_steps_weights() -> None:
    import keras
    import tensorflow as tf

    from shoprec.models.autoencoder import WeightAverage

    variable = keras.Variable(np.zeros(3, np.float32))
    average = WeightAverage([variable], half_life=2)
    average.swap_in()  # before any step there is nothing to average: nothing changes
    assert not average.swapped
    update = tf.function(average.update)
    steps = [np.array([1.0, -2.0, 4.0]), np.array([3.0, 0.0, 1.0]), np.array([5.0, 2.0, -1.0])]
    for weights in steps:
        variable.assign(weights.astype(np.float32))
        update()
    # Step s of t weighs decay^(t-s), decay = 0.5^(1/2): normalised, a mean of the steps.
    decay = 0.5 ** 0.5
    shares = np.array([decay ** (len(steps) - 1 - s) for s in range(len(steps))])
    expected = shares @ np.stack(steps) / shares.sum()
    average.swap_in()
    np.testing.assert_allclose(np.asarray(variable), expected, rtol=1e-6)
    average.swap_in()  # twice is once: the trained weights are not overwritten by the mean
    average.swap_out()
    np.testing.assert_allclose(np.asarray(variable), steps[-1], rtol=1e-6)
    # Over a half-life far beyond the run every step weighs the same: the plain mean.
    long = WeightAverage([variable], half_life=10_000_000)
    for weights in steps:
        variable.assign(weights.astype(np.float32))
        tf.function(long.update)()
    long.swap_in()
    np.testing.assert_allclose(np.asarray(variable), np.mean(steps, axis=0), rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("model_class", [MultVAE, MultDAE])
def test_the_average_is_scored_while_training_goes_on_from_the_trained_weights(
        model_class) -> None:
    plain = model_class(**TINY, average_half_life=None).fit(block_matrix())
    averaged = model_class(**TINY, average_half_life=2).fit(block_matrix())
    # The same steps from the same weights (each epoch's losses are the trained weights'),
    assert [r["loss"] for r in averaged.history_] == pytest.approx(
        [r["loss"] for r in plain.history_], rel=1e-5)
    # but the kept model is their average.
    assert not np.allclose(averaged.score(block_matrix()), plain.score(block_matrix()),
                           rtol=1e-3, atol=1e-4)


def test_early_stopping_scores_and_keeps_the_average(planted) -> None:
    from shoprec.tuning.validation import EARLY_STOPPING_USERS

    def fit(half_life: int | None) -> tuple[MultDAE, ValidationTuner]:
        tuner = ValidationTuner(planted.train, planted.validation)
        model = MultDAE(hidden=32, latent=8, epochs=4, batch_size=64, patience=10, seed=1,
                        history_weights=0, average_half_life=half_life)
        return model.fit(planted.train, FitContext(tuner=tuner)), tuner

    (plain, _), (averaged, tuner) = fit(None), fit(20)
    # The same training, but each epoch's check scored the average, not the last step,
    assert [r["loss"] for r in averaged.history_] == pytest.approx(
        [r["loss"] for r in plain.history_], rel=1e-5)
    curve = [r["validation_ndcg_at_10"] for r in averaged.history_]
    assert curve != [r["validation_ndcg_at_10"] for r in plain.history_]
    # and the model kept is the average early stopping scored best.
    assert averaged.best_epoch_ == int(np.argmax(curve))
    assert tuner.score(averaged, EARLY_STOPPING_USERS) == pytest.approx(max(curve), abs=1e-6)


def test_dae_averages_by_default_vae_does_not_and_older_recipes_train_without_it() -> None:
    assert (MultDAE().average_half_life, MultDAE().learning_rate) == (50, 2e-3)
    assert MultVAE().average_half_life is None
    # (test_lifecycle checks that the configuration's defaults are the models' own.)
    # A recipe registered before the average existed trained without one: so it retrains.
    for model_class in (MultVAE, MultDAE):
        assert model_class.current_params({"epochs": 7})["average_half_life"] is None
    with pytest.raises(ModelFitError, match="average_half_life must be at least 1"):
        MultDAE(**TINY, average_half_life=0).fit(block_matrix())
