"""The validation tuner's grid search and its log-scale refinement."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from shoprec.errors import ModelFitError
from shoprec.models.base import Recommender
from shoprec.tuning.validation import ValidationTuner

N_USERS, N_ITEMS = 40, 60
PEAK, WIDTH = 300.0, 0.7  # the best value, and how many decades away it stops helping


def _one_per_user(offset: int) -> sp.csr_matrix:
    users = np.arange(N_USERS)
    return sp.csr_matrix((np.ones(N_USERS, np.float32), (users, users + offset)),
                         shape=(N_USERS, N_ITEMS))


class Peaked(Recommender):
    """Ranks each user's next item higher the closer its value is to ``PEAK`` (log scale).

    User ``u`` has item ``u`` in history and item ``u + 1`` relevant; items past the users'
    range are decoys with graded scores, so ndcg@10 grows smoothly with the value's quality.
    """

    family = "test"
    name = "peaked"

    def __init__(self) -> None:
        self.value = 1.0

    def fit(self, interactions: sp.csr_matrix, context: object = None) -> Peaked:
        return self

    def quality(self) -> float:
        return max(0.0, 1.0 - abs(np.log10(self.value / PEAK)) / WIDTH)

    def score(self, user_rows: sp.csr_matrix) -> np.ndarray:
        shift = sp.eye(N_ITEMS, N_ITEMS, k=1, format="csr", dtype=np.float32)
        scores = (user_rows @ shift).toarray() * self.quality()
        decoys = np.zeros(N_ITEMS, np.float32)
        decoys[N_USERS + 1:] = np.linspace(0.5, 0.0, N_ITEMS - N_USERS - 1)
        return scores + decoys[None, :]

    @property
    def n_items_(self) -> int:
        return N_ITEMS

    def _save_state(self, folder: object) -> None:
        raise NotImplementedError

    def _load_state(self, folder: object) -> None:
        raise NotImplementedError


def _select(refine: int, fails: tuple[float, float] = (0.0, 0.0), margin: float = 0.0,
            grid: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0)
            ) -> tuple[float, object, list[tuple[float, float]], ValidationTuner]:
    model = Peaked()
    seen: list[tuple[float, float]] = []
    tuner = ValidationTuner(_one_per_user(0), _one_per_user(1),
                            progress=lambda value, m: seen.append(
                                (value, m["validation_ndcg_at_10_by_regularization"])))

    def apply(value: float) -> str:
        if fails[0] < value < fails[1]:
            raise ModelFitError(f"no fit at {value}")
        model.value = value
        return f"state of {value:g}"

    value, state = tuner.select(model, grid, apply, "regularization", refine=refine,
                                margin=margin)
    model.value = value
    return value, state, seen, tuner


def test_a_decade_grid_alone_keeps_its_best_point() -> None:
    value, state, seen, _ = _select(refine=0)
    assert value == 100.0 and state == "state of 100"
    assert [v for v, _ in seen] == [1.0, 10.0, 100.0, 1000.0]


def test_refinement_finds_a_peak_between_grid_points() -> None:
    grid_value, _, grid_seen, _ = _select(refine=0)
    value, state, seen, tuner = _select(refine=2)
    scores = dict(seen)
    assert value not in (1.0, 10.0, 100.0, 1000.0)
    assert abs(np.log10(value / PEAK)) < 0.1  # within a quarter decade's half-step
    assert state == f"state of {value:g}"  # the state of the value returned
    assert scores[value] == max(scores.values()) > dict(grid_seen)[grid_value]
    # Two steps: half a decade each side of 100, then a quarter decade each side of the best.
    assert len(seen) == 4 + 4
    assert sorted(v for v, _ in seen[4:6]) == [31.62, 316.2]


def test_the_first_value_stands_unless_beaten_by_the_margin() -> None:
    """100 (the first value here) ranks the next item near eighth, 300 first."""
    _, _, seen, _ = _select(refine=0, grid=(100.0, 300.0))
    scores = dict(seen)
    gain = scores[300.0] / scores[100.0] - 1
    assert gain > 1  # the figures the two margins below straddle
    value, state, _, _ = _select(refine=0, grid=(100.0, 300.0), margin=gain / 2)
    assert (value, state) == (300.0, "state of 300")
    value, state, _, _ = _select(refine=0, grid=(100.0, 300.0), margin=gain * 1.01)
    assert (value, state) == (100.0, "state of 100")  # kept, with its own state
    # Without a margin the best wins, as before.
    assert _select(refine=0, grid=(100.0, 300.0))[0] == 300.0


def test_a_refinement_value_that_does_not_fit_is_left_out() -> None:
    value, state, seen, _ = _select(refine=2, fails=(20.0, 50.0))  # 31.62 cannot be fitted
    assert abs(np.log10(value / PEAK)) < 0.1 and state == f"state of {value:g}"
    assert 31.62 not in dict(seen)  # tried, failed, not scored


def test_a_grid_value_that_does_not_fit_still_fails_the_fit() -> None:
    with pytest.raises(ModelFitError):
        _select(refine=0, fails=(5.0, 50.0))  # 10 cannot be fitted


def test_a_warm_start_is_the_nearest_value_tried() -> None:
    """On the grid each value starts from the previous one; a refinement from the best."""
    model = Peaked()
    starts: list[tuple[float, object]] = []
    tuner = ValidationTuner(_one_per_user(0), _one_per_user(1))

    def apply(value: float, start: object) -> float:
        starts.append((value, start))
        model.value = value
        return value  # the state is the value it was fitted at

    # Given out of order, the grid is fitted in increasing order, each from its neighbour.
    value, state = tuner.select(model, (100.0, 1.0, 1000.0, 10.0), apply, "regularization",
                                refine=2, warm=True)
    assert value == state and abs(np.log10(value / PEAK)) < 0.1
    assert starts[:4] == [(1.0, None), (10.0, 1.0), (100.0, 10.0), (1000.0, 100.0)]
    # Half a decade each side of 100 (the grid's best), both from 100: the last value
    # fitted, 1000, is a decade from the first of them and would be a poor start.
    assert starts[4:6] == [(31.62, 100.0), (316.2, 100.0)]
    # Then a quarter decade each side of the new best, 316.2, from it.
    assert [s for _, s in starts[6:]] == [316.2] * len(starts[6:]) and len(starts) > 6


def test_weights_chosen_without_validation_users_report_every_value_as_zero() -> None:
    """As :meth:`select` does when nothing can be scored: each value's curve point is 0."""
    from shoprec.models import Popularity

    history = sp.csr_matrix(np.eye(4, dtype=np.float32))
    reported: dict[float, float] = {}
    tuner = ValidationTuner(history, sp.csr_matrix((4, 4), dtype=np.float32),
                            progress=lambda value, m: reported.update(
                                {value: m["validation_ndcg_at_10_by_smoothing"]}))
    model = Popularity().fit(history)
    chosen = tuner.select_weights(model, lambda rows: [model.score(rows)], [(1.0,), (2.0,)],
                                  "smoothing", [0.5, 5.0])
    assert chosen == (1.0,)
    assert reported == {0.5: 0.0, 5.0: 0.0}


class Shrunk(Peaked):
    """A new family as the README's "Adding a model family" has it write: its
    hyperparameter chosen with ``context.tuner.select``, no ``selected_params_`` of its own."""

    name = "shrunk"

    def __init__(self, value: float | None = None, other: int = 3) -> None:
        self.value = value
        self.other = other

    def fit(self, interactions: sp.csr_matrix, context: object = None) -> Shrunk:
        tuner = getattr(context, "tuner", None)
        if self.value is None and tuner is not None:
            def apply(value: float) -> None:
                self.value = value

            self.value, _ = tuner.select(self, [1.0, 100.0, 1000.0], apply, "value")
            tuner.select(self, [1.0, 2.0], lambda v: None, "not_a_parameter")
        return self


def test_a_new_familys_choice_on_validation_reaches_its_refit() -> None:
    """The refit read the choice from ``selected_params_`` alone, which a new family did
    not know to define: its value was dropped (a toy kNN's test ndcg@10 0.0706 -> 0.0508)."""
    from shoprec.models.base import FitContext

    assert Shrunk().selected_params_ == {}  # nothing chosen before a fit
    model = Shrunk().fit(_one_per_user(0), FitContext(tuner=ValidationTuner(
        _one_per_user(0), _one_per_user(1))))
    assert model.selected_params_ == {"value": 100.0}  # its own hyperparameters only
    refit = Shrunk(**{**model.get_params(), **model.selected_params_})
    assert refit.value == 100.0 and refit.other == 3
