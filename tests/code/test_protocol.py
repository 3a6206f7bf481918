"""The evaluation protocol: choices on validation only, test figures from a refit.

DESIGN.md: validation is for early stopping and model selection, and only validation; the
test figures come from each candidate refit on training + validation with what validation
chose.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shoprec.config import SplitConfig, TrainingConfig, WeightingConfig
from shoprec.data.splits import split_interactions
from shoprec.evaluation import evaluate
from shoprec.features import encode_split
from shoprec.features.encoding import EncodedSplit
from shoprec.models import EASE
from shoprec.training import select_winner, train_and_evaluate, train_candidate_row


def planted(seed: int = 0, users: int = 300, groups: int = 5, per_group: int = 12,
            hits: int = 4) -> pd.DataFrame:
    """Shoppers whose validation month and test month disagree on what matters.

    Each shopper belongs to a taste group and buys six of its twelve items and one of four
    best-sellers in the training period; in the validation month each buys another
    best-seller (popularity's strength), in the test month one more item of their own
    group (a personalised model's). So validation prefers popularity and test prefers a
    model that learnt the groups: a selection that peeked at test would choose otherwise.
    """
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    rows: list[tuple[str, str, pd.Timestamp]] = []

    def buy(user: int, item: str, low: float, high: float) -> None:
        rows.append((f"u{user}", item, start + pd.Timedelta(days=float(rng.uniform(low, high)))))

    for user in range(users):
        own = [f"g{user % groups}-{j}" for j in rng.permutation(per_group)]
        best = [f"h{j}" for j in rng.permutation(hits)]
        for item in own[:6]:
            buy(user, item, 0, 58)
        buy(user, best[0], 0, 58)
        buy(user, best[1], 62, 88)  # validation month
        buy(user, own[6], 92, 118)  # test month
    # The last event fixes the cut-offs at days 60 and 90 (the split counts back from it).
    buy(0, "g0-anchor", 120, 120)
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["event"] = "purchase"
    frame["value"] = 1.0  # one unit each
    return frame


@pytest.fixture(scope="module")
def encoded() -> EncodedSplit:
    split = split_interactions(planted(), SplitConfig(method="temporal", test_days=30,
                                                      validation_days=30))
    assert split.summary()["validation"]["rows"] == 300
    assert split.summary()["test"]["rows"] == 301
    return encode_split(split, WeightingConfig())


def test_selection_never_looks_at_test(encoded: EncodedSplit) -> None:
    results = [train_candidate_row(name, {}, encoded, None, [10])
               for name in ("popularity", "ease")]
    by_name = {r.model: r for r in results}
    popularity, ease = by_name["popularity"], by_name["ease"]
    # The plant works: each part prefers another candidate, by far.
    assert popularity.validation["ndcg@10"] > 1.5 * ease.validation["ndcg@10"]
    assert ease.test["ndcg@10"] > 3 * popularity.test["ndcg@10"]
    # Validation decides, whatever test says.
    primary = TrainingConfig().primary_metric
    assert select_winner(results, primary).model == "popularity"


def test_test_figures_come_from_a_refit_on_training_and_validation(
        encoded: EncodedSplit) -> None:
    result, refit = train_and_evaluate("ease", {}, encoded, None, [10])
    chosen = result.params["regularization"]
    assert chosen in result.params["regularization_grid"]
    # The refit: the chosen value, nothing chosen again, on training + validation.
    assert isinstance(refit, EASE) and refit.regularization_ == chosen
    again = EASE(regularization=chosen).fit(encoded.test_history)
    expected = evaluate(again, encoded.test_history, encoded.test, [10], beyond_accuracy=True)
    assert result.test == pytest.approx(expected, abs=1e-9)
    # ... which is not what the model fitted on training alone scores on test.
    alone = EASE(regularization=chosen).fit(encoded.train)
    before = evaluate(alone, encoded.test_history, encoded.test, [10])
    assert result.test["ndcg@10"] != pytest.approx(before["ndcg@10"], abs=1e-6)


def test_the_novelty_curve_is_at_the_asked_k(encoded: EncodedSplit, tmp_path) -> None:
    """``--k 5,20 --primary-metric ndcg@20``: the --diversity curve is at K 20, the chart
    too (it was always at 10, a K nobody asked for)."""
    from shoprec.registry import runs

    result = train_candidate_row("ease", {}, encoded, None, [5, 20], curve_k=20)
    assert result.diversity[0]["weight"] == 0.0
    figures = set(result.diversity[0]) - {"weight", "users"}
    assert figures and all(key.endswith("@20") for key in figures), figures
    assert result.diversity[0]["ndcg@20"] == pytest.approx(result.test["ndcg@20"])
    assert "ndcg@10" not in result.diversity[0]
    # The champion's recipe, retrained beside the candidates, is at the same K: logged
    # with them, a row at another K stopped the run (KeyError) and nothing was published.
    from shoprec.registry.recipe import Recipe
    from shoprec.training import retrain_recipe

    champion = retrain_recipe(Recipe("ease", {"regularization": 50.0}), encoded, None,
                              [5, 20], curve_k=20)
    assert champion.status == "ok" and "ndcg@20" in champion.diversity[0]
    runs._tradeoff_files([result, champion], tmp_path)
    assert (tmp_path / "diversity.png").stat().st_size > 0
    assert "ndcg@20" in (tmp_path / "diversity.csv").read_text().splitlines()[0]
    other = train_candidate_row("ease", {}, encoded, None, [5, 20], curve_k=5)
    runs._tradeoff_files([result, other], tmp_path)  # another K: left out of the chart


@pytest.mark.slow  # TensorFlow
def test_a_network_is_refit_for_the_epochs_early_stopping_kept(encoded: EncodedSplit) -> None:
    params = dict(hidden=16, latent=4, epochs=8, patience=2, batch_size=32, seed=1)
    result, refit = train_and_evaluate("vae", params, encoded, None, [10])
    kept = result.params["epochs"]
    assert 1 <= kept <= 8
    assert len(result.curves["validation_ndcg_at_10"]) >= kept  # epochs of the first fit
    # The refit trains exactly that many epochs, with no early stopping to watch.
    assert len(refit.history_) == kept
    assert "validation_ndcg_at_10" not in refit.history_[0]
    assert result.refit_seconds > 0


def test_repeat_items_keeps_the_history_in_the_ranking_it_evaluates() -> None:
    """With ``repeat_items`` an item the shopper had is relevant again, so the ranking that
    is scored must be able to hold it: masking it made a repeat purchase a miss for sure."""
    rows = []
    for n in range(12):
        user = f"u{n}"
        # Everyone buys a in training and again in validation and test; b and c are filler.
        rows += [(user, "a", "2024-01-02"), (user, "b" if n % 2 else "c", "2024-01-03"),
                 (user, "a", "2024-02-05"), (user, "a", "2024-03-05")]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(
        timestamp=lambda f: pd.to_datetime(f["timestamp"], utc=True), event="purchase",
        value=1.0)
    figures = {}
    for repeat in (False, True):
        split = split_interactions(frame, SplitConfig(test_days=10, validation_days=20,
                                                      repeat_items=repeat))
        encoded = encode_split(split)
        result, _ = train_and_evaluate("popularity", {}, encoded, None, [1])
        figures[repeat] = (result.validation.get("hit_rate@1"), result.test.get("hit_rate@1"))
    assert figures[True] == (1.0, 1.0)
    assert figures[False] == (0.0, 0.0)  # nothing relevant is left: every user is left out


def test_a_cutoff_holding_the_whole_catalogue_is_warned_about(caplog) -> None:
    """At K >= the training catalogue every model's recall, hit rate and coverage are 1."""
    from shoprec.training import warn_cutoffs_past_catalogue

    with caplog.at_level("WARNING", logger="shoprec.training"):
        assert warn_cutoffs_past_catalogue([10, 40, 60], 40) == [40, 60]
        assert warn_cutoffs_past_catalogue([10, 20], 40) == []
    assert [r.getMessage() for r in caplog.records] == [
        "--k 40,60: at least the 40 items trained on, so every top K holds the whole "
        "catalogue and every model scores alike there; use a K under 40"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="shoprec.training"):
        assert warn_cutoffs_past_catalogue([10], 1) == [10]
    # No K under 1 exists, so the advice is another one.
    assert [r.getMessage() for r in caplog.records] == [
        "the training part holds 1 item: every model recommends it and no figure can tell "
        "two models apart; train on more products"]


def test_mf_ratings_is_skipped_when_the_weighting_changes_the_stars() -> None:
    """A reader's: under a recency half-life mf-ratings fitted decayed stars (test RMSE 3.1
    on random stars, where the stars themselves gave 2.2)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user_id": [f"u{n % 40}" for n in range(600)],
                          "item_id": [f"i{n % 23}" for n in range(600)],
                          "timestamp": pd.Timestamp("2024-01-01", tz="UTC")
                          + pd.to_timedelta(rng.integers(0, 90 * 86400, 600), unit="s"),
                          "event": "rating", "value": rng.integers(1, 6, 600).astype(float)})
    split = split_interactions(frame, SplitConfig(test_days=10, validation_days=10))
    assert encode_split(split, WeightingConfig()).has_ratings
    decayed = encode_split(split, WeightingConfig(recency_half_life_days=7.0))
    assert not decayed.has_ratings
    result = train_candidate_row("mf-ratings", {}, decayed, None, [10])
    assert result.status == "skipped" and "weighting changes them" in (result.error or "")


def test_a_part_that_scores_nobody_is_refused_before_any_training() -> None:
    """A reader's ten-shopper, three-product shop: validation and test had rows, every one
    a repeat of an item the shopper had, so every candidate scored 0 and popularity, first
    of the tie, was registered."""
    from shoprec.errors import ConfigError
    from shoprec.features.encoding import check_evaluable

    rows = [(f"u{n}", item, day) for n in range(10) for item, day in
            (("a", "2024-01-02"), ("b", "2024-01-03"), ("a", "2024-02-05"),
             ("b", "2024-03-05"))]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(
        timestamp=lambda f: pd.to_datetime(f["timestamp"], utc=True), event="purchase",
        value=1.0)
    config = SplitConfig(test_days=10, validation_days=20)
    encoded = encode_split(split_interactions(frame, config))
    with pytest.raises(ConfigError, match=r"the validation part has no shopper with an item "
                       r"to score \(left out: 10 seen before\).*split.repeat_items"):
        check_evaluable(encoded, config)
    repeat = config.model_copy(update={"repeat_items": True})
    check_evaluable(encode_split(split_interactions(frame, repeat)), repeat)


def test_a_network_with_a_vocabulary_under_the_catalogue_is_not_failed(
        encoded: EncodedSplit) -> None:
    """A second reader's: holding every candidate's scores to the interface refused the
    networks' -inf (products outside their vocabulary, never recommended), so vae, dae and
    cfgan failed on every catalogue over 10,000 products."""
    result = train_candidate_row("dae", {"vocabulary": 5, "epochs": 1, "patience": 1},
                                 encoded, None, [10])
    assert encoded.shape[1] > 5
    assert result.status == "ok", result.error
