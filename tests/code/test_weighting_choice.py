"""The event weighting chosen on validation (``WeightingConfig.search``).

Real quick ``mf`` fits (implicit's ALS) on planted data: where tastes drift, a recency
half-life must win on validation; where they do not, a week's half-life must not; and
nothing of the test part may reach the choice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shoprec.config import SplitConfig, WeightingConfig, WeightingSearch
from shoprec.data.splits import Split, split_interactions
from shoprec.pipeline import PreparationSteps
from shoprec.tuning.weighting import choose_weighting

TEMPORAL = SplitConfig(method="temporal", test_days=30, validation_days=30)


def drifting(seed: int = 0, users: int = 400, groups: int = 6, per_group: int = 15
             ) -> pd.DataFrame:
    """Shoppers who move from one taste group to another.

    Each buys eight items of an old group early in the training period (days 0-40), then
    three of a new group in its last week (days 53-59), and two more of the new group in
    the validation month and in the test month. Summed over the whole history the old
    group dominates a row; the latest week says what comes next.
    """
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    rows: list[tuple[str, str, pd.Timestamp]] = []
    for user in range(users):
        old, new = rng.choice(groups, size=2, replace=False)
        old_items = rng.choice(per_group, size=8, replace=False)
        new_items = rng.permutation(per_group)[:7]
        for j in old_items:
            rows.append((f"u{user}", f"g{old}-{j}", start + pd.Timedelta(
                days=float(rng.uniform(0, 40)))))
        for j, (low, high) in zip(new_items, [(53, 59)] * 3 + [(62, 88)] * 2
                                  + [(92, 118)] * 2, strict=True):
            rows.append((f"u{user}", f"g{new}-{j}", start + pd.Timedelta(
                days=float(rng.uniform(low, high)))))
    rows.append(("u0", "g0-0", start + pd.Timedelta(days=120)))  # fixes the cut-offs
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["event"] = "purchase"
    frame["value"] = 1.0
    return frame


def steady(seed: int = 1, users: int = 400, groups: int = 6, per_group: int = 15
           ) -> pd.DataFrame:
    """Shoppers of one taste group each, buying from it at any time of the period."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    rows = []
    for user in range(users):
        group = user % groups
        for j in rng.choice(per_group, size=10, replace=False):
            rows.append((f"u{user}", f"g{group}-{j}",
                         start + pd.Timedelta(days=float(rng.uniform(0, 120)))))
    rows.append(("u0", "g0-0", start + pd.Timedelta(days=120)))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["event"] = "purchase"
    frame["value"] = 1.0
    return frame


SEARCH = WeightingConfig(search=WeightingSearch())


def test_candidates_start_with_the_configured_weighting() -> None:
    candidates = SEARCH.candidates()
    assert candidates[0] == WeightingConfig()  # the configured one, without its search
    assert [c.recency_half_life_days for c in candidates[1:]] == [None, 7.0, 30.0, 120.0]
    assert {(c.quantity_damping, c.repeats) for c in candidates[1:]} == {("binary", "max")}
    assert all(c.search is None for c in candidates)
    # A configured weighting that is one of the recency ones is not tried twice.
    same = WeightingConfig(quantity_damping="binary", repeats="max",
                           recency_half_life_days=30, search=WeightingSearch())
    assert [c.recency_half_life_days for c in same.candidates()] == [30.0, None, 7.0, 120.0]
    # Event weights are the configured ones in every candidate.
    mine = WeightingConfig(event_weights={"view": 0.5}, search=WeightingSearch())
    assert {c.event_weights["view"] for c in mine.candidates()} == {0.5}
    with pytest.raises(ValueError, match="greater than 0"):
        WeightingSearch(half_lives=[7, -1])


@pytest.fixture(scope="module")
def drift_split() -> Split:
    return split_interactions(drifting(), TEMPORAL)


def test_drifting_tastes_choose_a_recency_half_life(drift_split: Split) -> None:
    choice = choose_weighting(drift_split, SEARCH)
    scores = {c.describe(): score for c, score in choice.scores}
    assert len(scores) == 5
    assert choice.chosen.recency_half_life_days is not None, scores
    assert choice.chosen.search is None
    # By a margin the plant makes: the recent week says what comes next.
    assert scores[choice.chosen.describe()] > 1.2 * scores["log, sum, no decay"], scores
    assert choice.users == drift_split.train["user_id"].nunique()


def test_steady_tastes_do_not_choose_a_weeks_half_life() -> None:
    choice = choose_weighting(split_interactions(steady(), TEMPORAL), SEARCH)
    scores = {c.describe(): score for c, score in choice.scores}
    assert choice.chosen.recency_half_life_days != 7.0, scores
    assert scores["binary, max, no decay"] > scores["binary, max, half-life 7 days"], scores


class _Sealed(Split):
    """A split whose test part cannot be read."""

    def __getattribute__(self, name: str) -> object:
        if name == "test":
            raise AssertionError("the choice read the test part")
        return super().__getattribute__(name)


def test_the_test_part_never_reaches_the_choice(drift_split: Split) -> None:
    sealed = _Sealed(drift_split.train, drift_split.validation, drift_split.test,
                     drift_split.config)
    with pytest.raises(AssertionError, match="read the test part"):
        sealed.test  # noqa: B018 - the double works
    assert choose_weighting(sealed, SEARCH).chosen == choose_weighting(drift_split,
                                                                        SEARCH).chosen


def test_a_sample_of_users_bounds_the_choice_and_is_seeded(drift_split: Split) -> None:
    from shoprec.tuning.weighting import _sample_users

    sampled = WeightingConfig(search=WeightingSearch(users=150, half_lives=[7]))
    first, second = (choose_weighting(drift_split, sampled) for _ in range(2))
    assert first.users == 150
    assert first.scores == second.scores and first.chosen == second.chosen
    # Users with validation rows come first (they are the ones scored), in a seeded draw.
    validated = set(drift_split.validation["user_id"])
    some = Split(drift_split.train, drift_split.validation[
        drift_split.validation["user_id"].isin(sorted(validated)[:100])], drift_split.test,
        drift_split.config)
    users = _sample_users(some, 150)
    assert len(users) == 150 and set(sorted(validated)[:100]) <= set(users)
    assert list(users) == list(_sample_users(some, 150))


def test_weightings_scored_side_by_side_score_as_one_at_a_time(drift_split: Split) -> None:
    from threadpoolctl import threadpool_info

    def blas() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas()
    if not before or min(before) < 2:
        pytest.skip("BLAS runs one thread here: a limit left behind would not show")
    alone = choose_weighting(drift_split, SEARCH, threads=1)
    together = choose_weighting(drift_split, SEARCH, threads=3)
    more = choose_weighting(drift_split, SEARCH, threads=12)  # two cores a weighting
    # The same scores in the same order (each quick fit is seeded on its own), so the same
    # choice, whatever the threads.
    assert together.scores == alone.scores == more.scores and len(alone.scores) == 5
    assert together.chosen == alone.chosen == more.chosen
    # The process's BLAS threads are as they were (the pool held them to one meanwhile).
    assert blas() == before


def test_the_configured_weighting_stays_within_the_margin() -> None:
    from shoprec.tuning.weighting import _best

    configured, other = WeightingConfig(), WeightingConfig(recency_half_life_days=7)
    assert _best([(configured, 0.100), (other, 0.1019)], configured, 0.02) == configured
    assert _best([(configured, 0.100), (other, 0.1030)], configured, 0.02) == other
    assert _best([(configured, 0.100), (other, 0.1001)], configured, 0.0) == other
    assert _best([(other, 0.05)], configured, 0.02) == other  # the configured one failed
    assert _best([], configured, 0.02) == configured


def test_a_weighting_the_quick_fit_cannot_take_is_left_out(drift_split: Split, monkeypatch,
                                                           caplog) -> None:
    from shoprec.errors import ModelFitError
    from shoprec.models import ImplicitALS

    fit = ImplicitALS.fit

    def failing(self, interactions, context=None):
        # The 7-day candidate is the only one whose rows hold weights below 1/2.
        if 0 < interactions.data.min() < 0.5:
            raise ModelFitError("mf: factors are not finite")
        return fit(self, interactions, context)

    monkeypatch.setattr(ImplicitALS, "fit", failing)
    only_seven = WeightingConfig(search=WeightingSearch(half_lives=[7]))
    choice = choose_weighting(drift_split, only_seven)
    assert [c.describe() for c, _ in choice.scores] == ["log, sum, no decay",
                                                        "binary, max, no decay"]
    assert choice.chosen.recency_half_life_days is None
    assert "half-life 7 days left out of the choice: mf: factors are not finite" in caplog.text


def test_without_a_search_or_validation_the_configured_weighting_stays(
        drift_split: Split) -> None:
    plain = WeightingConfig(recency_half_life_days=3)
    choice = choose_weighting(drift_split, plain)
    assert choice.chosen == plain and choice.scores == []
    empty = Split(drift_split.train, drift_split.validation.iloc[:0], drift_split.test,
                  drift_split.config)
    choice = choose_weighting(empty, SEARCH)
    assert choice.chosen == WeightingConfig() and choice.scores == []
    # A grocery reader's 17 validation shoppers chose a 7-day half-life on noise.
    few = Split(drift_split.train, drift_split.validation[drift_split.validation["user_id"]
                                                          .isin(sorted(set(drift_split.validation
                                                                           ["user_id"]))[:30])],
                drift_split.test, drift_split.config)
    choice = choose_weighting(few, SEARCH)
    assert choice.chosen == WeightingConfig() and choice.scores == []


def test_prepare_builds_the_matrices_with_the_chosen_weighting(tmp_path: Path) -> None:
    from shoprec.config import DataConfig
    from shoprec.features import encode_split
    from shoprec.pipeline import prepare

    path = tmp_path / "drift.csv"
    data = drifting()
    data.assign(timestamp=data["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S%z")).to_csv(
        path, index=False)
    prepared = prepare(DataConfig(interactions=str(path)), split_config=TEMPORAL,
                       weighting=SEARCH, steps=PreparationSteps())
    assert prepared.weighting_choice is not None
    assert prepared.weighting == prepared.weighting_choice.chosen
    assert prepared.weighting.recency_half_life_days is not None
    again = encode_split(prepared.split, prepared.weighting)
    assert (prepared.encoded.train != again.train).nnz == 0
    summary = prepared.summary()["weighting"]
    assert summary["description"] == prepared.weighting.describe()
    assert len(summary["choice"]["candidates"]) == 5
    # Configured, nothing is chosen.
    fixed = prepare(DataConfig(interactions=str(path)), split_config=TEMPORAL,
                    weighting=WeightingConfig(), steps=PreparationSteps())
    assert fixed.weighting_choice is None and fixed.weighting == WeightingConfig()


def test_a_weightings_score_is_what_scoring_its_quick_fit_gives(drift_split: Split) -> None:
    """The score kept from the quick fit's penalty search (not computed twice) is the
    fitted proxy's own validation figure."""
    from shoprec.features.encoding import relevance_matrix, training_matrix
    from shoprec.features.idmap import IdMap
    from shoprec.models import make_model
    from shoprec.models.base import FitContext
    from shoprec.tuning.validation import SELECTION_USERS, ValidationTuner
    from shoprec.tuning.weighting import PROXY_PARAMS

    train = drift_split.train
    users, items = IdMap.from_values(train["user_id"]), IdMap.from_values(train["item_id"])
    configured = SEARCH.candidates()[0]
    rows = training_matrix(train, users, items, configured, train["timestamp"].max())
    relevance = relevance_matrix(drift_split.validation, users, items, rows,
                                 drift_split.config.repeat_items)
    tuner = ValidationTuner(rows, relevance)
    model = make_model("mf", {**PROXY_PARAMS, "threads": 1}).fit(rows, FitContext(tuner=tuner))
    fresh = tuner.score(model, SELECTION_USERS)
    assert tuner.selected_score == fresh
    assert choose_weighting(drift_split, SEARCH).scores[0] == (configured, fresh)
