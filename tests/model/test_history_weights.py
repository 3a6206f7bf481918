"""Families trained on 0/1 rows reading a shopper's weighted history (recency decay)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from shoprec.evaluation import evaluate
from shoprec.models import CFGAN, EASE, FitContext, MultDAE
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
    assert chosen.history_weights_ is True
    assert chosen.selected_params_["history_weights"] is True
    weighted = evaluate(chosen, history, relevance)["ndcg@10"]
    zero_one = evaluate(EASE(regularization=5.0, history_weights=False).fit(history),
                        history, relevance)["ndcg@10"]
    assert weighted > 1.5 * zero_one
    # The refit is told the choice; without a tuner, None means 0/1 rows.
    assert EASE(regularization=5.0).fit(history).history_weights_ is False
    assert EASE(regularization=5.0, history_weights=True).fit(history).history_weights_


def test_weights_that_carry_nothing_keep_zero_one_rows() -> None:
    history, relevance = recency_planted()
    flat = history.copy()
    flat.data[:] = 4.0  # every event alike, no decay: the same rankings both ways (a tie)
    model = EASE(regularization=5.0).fit(flat, FitContext(tuner=ValidationTuner(flat,
                                                                                relevance)))
    assert model.history_weights_ is False


@pytest.mark.slow
@pytest.mark.parametrize("model_class", [MultDAE, CFGAN])
def test_networks_read_recent_weights_and_keep_the_choice(model_class, tmp_path) -> None:
    history, relevance = recency_planted()
    context = FitContext(tuner=ValidationTuner(history, relevance))
    model = model_class(epochs=8, seed=3, batch_size=32).fit(history, context)
    assert model.selected_params_["history_weights"] is True
    weighted = evaluate(model, history, relevance)["ndcg@10"]
    model.history_weights_ = False
    assert weighted > 1.1 * evaluate(model, history, relevance)["ndcg@10"]
    model.history_weights_ = True
    # Saved with the choice as a hyperparameter of the refit, it loads reading alike.
    refit = model_class(**{**model.get_params(), **model.selected_params_}).fit(history)
    refit.save(tmp_path / "m")
    loaded = type(refit).load(tmp_path / "m")
    assert loaded._reads_weights() is True
    np.testing.assert_allclose(loaded.score(history[:20]), refit.score(history[:20]),
                               rtol=1e-5, atol=1e-5)
