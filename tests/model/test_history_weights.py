"""Families trained on 0/1 rows reading a shopper's weighted history (recency decay)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from shoprec.config import AutoencoderParams, EASEParams
from shoprec.evaluation import evaluate
from shoprec.models import CFGAN, EASE, FitContext, MultDAE
from shoprec.models.base import READING_EXPONENTS, READING_MARGIN
from shoprec.ranking import max_scaled
from shoprec.tuning import ValidationTuner


def recency_planted(seed: int = 0, users: int = 400, groups: int = 8,
                    size: int = 10) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Each shopper bought five items of one group long ago (weight 0.1) and two of
    another lately (weight 1); the next purchase is from the recent group.

    0/1 rows point at the old group (five items against two); the weights point at the
    recent one.
    """
    rng = np.random.default_rng(seed)
    rows, cols, data, next_items = [], [], [], []
    for user in range(users):
        old, recent = rng.choice(groups, size=2, replace=False)
        bought_old = old * size + rng.choice(size, 5, replace=False)
        bought_recent = recent * size + rng.choice(size, 3, replace=False)
        for item, weight in [(i, 0.1) for i in bought_old] + [(i, 1.0)
                                                               for i in bought_recent[:2]]:
            rows.append(user)
            cols.append(item)
            data.append(weight)
        next_items.append(bought_recent[2])
    shape = (users, groups * size)
    history = sp.csr_matrix((np.array(data, np.float32), (rows, cols)), shape=shape)
    relevance = sp.csr_matrix((np.ones(users, np.float32), (np.arange(users), next_items)),
                              shape=shape)
    return history, relevance


def test_max_scaled_divides_each_row_by_its_largest_and_copies() -> None:
    rows = sp.csr_matrix(np.array([[0, 2, 4], [0, 0, 0], [0.5, 0, 0]], np.float32))
    out = max_scaled(rows)
    np.testing.assert_allclose(out.toarray(), [[0, 0.5, 1], [0, 0, 0], [1, 0, 0]])
    assert rows[0, 2] == 4  # the caller's matrix is untouched
    assert out.dtype == np.float32


def test_ease_reads_recent_weights_when_validation_says_so() -> None:
    history, relevance = recency_planted()
    context = FitContext(tuner=ValidationTuner(history, relevance))
    chosen = EASE(regularization=5.0).fit(history, context)
    assert chosen.history_weights_ > 0
    assert chosen.selected_params_["history_weights"] == chosen.history_weights_
    weighted = evaluate(chosen, history, relevance)["ndcg@10"]
    zero_one = evaluate(EASE(regularization=5.0, history_weights=False).fit(history),
                        history, relevance)["ndcg@10"]
    assert weighted > 1.5 * zero_one
    # The refit is told the choice; without a tuner, None means 0/1 rows.
    assert EASE(regularization=5.0).fit(history).history_weights_ == 0
    assert EASE(regularization=5.0, history_weights=True).fit(history).history_weights_ == 1


def test_a_power_reads_the_scaled_weights_raised_to_it() -> None:
    rows = sp.csr_matrix(np.array([[0, 0.25, 1], [0, 0, 0], [0.5, 0, 2]], np.float32))
    model = EASE(history_weights=0.5)
    np.testing.assert_allclose(model._history_rows(rows).toarray(),
                               np.sqrt(max_scaled(rows).toarray()), rtol=1e-6)
    # True and False, as recipes saved before the power existed hold them: 1 and 0.
    np.testing.assert_allclose(EASE(history_weights=True)._history_rows(rows).toarray(),
                               max_scaled(rows).toarray())
    assert EASE(history_weights=False)._history_rows(rows).toarray().tolist() == \
        (rows.toarray() > 0).astype(float).tolist()
    assert rows[0, 1] == np.float32(0.25)  # the caller's matrix is untouched


def returning(share: float, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Old purchases weighted 0.05 against recent 1, and ``share`` of the shoppers go back
    to their old group next: read as 0/1 the old group leads for everyone, read at the
    weights' full power it is lost; a quarter power ranks both."""
    history, relevance = recency_planted(seed=2)
    history.data[history.data < 1] = 0.05
    rng = np.random.default_rng(seed)
    relevance = relevance.tolil()
    for user in range(history.shape[0]):
        if rng.random() < share:
            row = history[user]
            group = row.indices[row.data < 1][0] // 10
            unbought = sorted(set(range(group * 10, group * 10 + 10)) - set(row.indices))
            relevance.rows[user], relevance.data[user] = [unbought[0]], [1.0]
    return history, sp.csr_matrix(relevance)


def _figures(model: EASE, history: sp.csr_matrix,
             relevance: sp.csr_matrix) -> dict[float, float]:
    figures = {}
    for power in READING_EXPONENTS:
        model.history_weights_ = power
        figures[power] = evaluate(model, history, relevance)["ndcg@10"]
    return figures


def test_the_power_chosen_is_the_best_of_the_grid_on_validation() -> None:
    history, relevance = returning(0.3, seed=5)
    model = EASE(regularization=5.0).fit(history, FitContext(
        tuner=ValidationTuner(history, relevance)))
    chosen = model.history_weights_
    figures = _figures(model, history, relevance)
    assert chosen == 0.25
    assert figures[chosen] == max(figures.values()) > figures[0.0] > figures[1.0]
    assert figures[chosen] > (1 + READING_MARGIN) * figures[0.0]
    # The configuration's description names the powers tried.
    for described in (EASEParams, AutoencoderParams):
        text = described.model_fields["history_weights"].description
        assert "0, 0.25, 0.5 and 1" in text and READING_EXPONENTS == (0.0, 0.25, 0.5, 1.0)


def test_a_power_better_by_less_than_the_margin_keeps_zero_one_rows() -> None:
    history, relevance = returning(0.365, seed=20)
    model = EASE(regularization=5.0).fit(history, FitContext(
        tuner=ValidationTuner(history, relevance)))
    assert model.history_weights_ == 0
    figures = _figures(model, history, relevance)
    assert figures[0.0] < max(figures.values()) <= (1 + READING_MARGIN) * figures[0.0]


def test_a_model_saved_after_choosing_loads_reading_alike(tmp_path) -> None:
    history, relevance = recency_planted()
    model = EASE(regularization=5.0).fit(history, FitContext(
        tuner=ValidationTuner(history, relevance)))
    assert model.history_weights is None and model.history_weights_ > 0
    model.save(tmp_path / "ease")
    loaded = EASE.load(tmp_path / "ease")
    assert loaded.history_weights is None  # the hyperparameter as given: still "choose"
    assert loaded._reading_exponent() == model.history_weights_
    np.testing.assert_allclose(loaded.score(history[:20]), model.score(history[:20]),
                               rtol=1e-6)


def test_recipes_holding_true_or_false_validate_as_powers() -> None:
    for described in (EASEParams, AutoencoderParams):
        assert described.model_validate_json('{"history_weights": true}').history_weights == 1
        assert described.model_validate({"history_weights": False}).history_weights == 0
        assert described.model_validate({"history_weights": 0.25}).history_weights == 0.25
        with pytest.raises(ValueError, match="history_weights"):
            described.model_validate({"history_weights": -1})


def test_ease_contributions_add_up_to_the_score_at_a_fractional_power() -> None:
    history, _ = recency_planted()
    model = EASE(regularization=5.0, history_weights=0.5).fit(history)
    row = history[3]
    items = np.arange(history.shape[1])
    _, matrix = model.contributions(row, items)
    np.testing.assert_allclose(matrix.sum(axis=1), model.score(row)[0], rtol=1e-4, atol=1e-5)


def test_weights_that_carry_nothing_keep_zero_one_rows() -> None:
    history, relevance = recency_planted()
    flat = history.copy()
    flat.data[:] = 4.0  # every event alike, no decay: the same rankings both ways (a tie)
    model = EASE(regularization=5.0).fit(flat, FitContext(tuner=ValidationTuner(flat,
                                                                                relevance)))
    assert model.history_weights_ == 0


@pytest.mark.slow
@pytest.mark.parametrize("model_class", [MultDAE, CFGAN])
def test_networks_read_recent_weights_and_keep_the_choice(model_class, tmp_path) -> None:
    history, relevance = recency_planted()
    context = FitContext(tuner=ValidationTuner(history, relevance))
    model = model_class(epochs=8, seed=3, batch_size=32).fit(history, context)
    chosen = model.selected_params_["history_weights"]
    assert chosen > 0
    weighted = evaluate(model, history, relevance)["ndcg@10"]
    model.history_weights_ = 0.0
    assert weighted > 1.1 * evaluate(model, history, relevance)["ndcg@10"]
    model.history_weights_ = chosen
    # Saved right after choosing (the hyperparameter still "choose"), it loads reading alike.
    model.save(tmp_path / "chose")
    assert type(model).load(tmp_path / "chose")._reading_exponent() == chosen
    # Saved with the choice as a hyperparameter of the refit, it loads reading alike.
    refit = model_class(**{**model.get_params(), **model.selected_params_}).fit(history)
    refit.save(tmp_path / "m")
    loaded = type(refit).load(tmp_path / "m")
    assert loaded._reading_exponent() == chosen
    np.testing.assert_allclose(loaded.score(history[:20]), refit.score(history[:20]),
                               rtol=1e-5, atol=1e-5)
