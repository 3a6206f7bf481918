"""The hyperparameter search stage's core: seeded, budgeted, validation only."""

from __future__ import annotations

import dataclasses
import time

import pytest

from shoprec.config import CandidateParams, SplitConfig, TrainingConfig, WeightingConfig
from shoprec.data.splits import split_interactions
from shoprec.features import encode_split
from shoprec.features.encoding import EncodedSplit
from shoprec.training import model_params
from shoprec.tuning.search import (
    SPACES,
    Choice,
    FamilySearch,
    Integer,
    Real,
    run_trial,
    search,
)
from tests.code.test_protocol import planted


@pytest.fixture(scope="module")
def encoded() -> EncodedSplit:
    split = split_interactions(planted(), SplitConfig(method="temporal", test_days=30,
                                                      validation_days=30))
    return encode_split(split, WeightingConfig())


@pytest.fixture(scope="module")
def blind(encoded: EncodedSplit) -> EncodedSplit:
    """The same split with its test part unreadable: a search that read it would fail."""
    return dataclasses.replace(encoded, test=None, test_history=None, test_ratings=None)


def test_every_space_lies_inside_its_family_s_declared_ranges() -> None:
    for candidate, space in SPACES.items():
        schema = CandidateParams.schema_of(candidate)
        for name, dimension in space.items():
            assert name in schema.model_fields, (candidate, name)
            values = (dimension.values if isinstance(dimension, Choice)
                      else (dimension.low, dimension.high))
            for value in values:
                value = (value,) if name.endswith("_hidden") else value
                schema.model_validate({name: value})  # raises outside the range
            assert isinstance(dimension, (Real, Integer, Choice))


def test_the_networks_configured_values_join_their_study() -> None:
    """Trial 0 (the configured values) is told to the sampler only when every value lies in
    the space; the networks' defaults must, or their searches start blind."""
    from shoprec.tuning.search import _distribution, _inside, space_value

    for candidate in ("vae", "dae", "cfgan"):
        configured = CandidateParams().of(candidate)
        for name, dimension in SPACES[candidate].items():
            value = space_value(name, configured[name])
            assert _inside(_distribution(dimension), value), (candidate, name, value)
    assert not _inside(_distribution(SPACES["ease"]["regularization"]), None)


def test_the_search_is_seeded_budgeted_and_never_reads_test(blind: EncodedSplit) -> None:
    base = model_params("mf", TrainingConfig(), threads=1)
    first = search("mf", base, blind, None, "ndcg@10", trials=5, seconds=None, seed=7,
                   parallel=2)
    again = search("mf", base, blind, None, "ndcg@10", trials=5, seconds=None, seed=7,
                   parallel=2)
    assert len(first.trials) == 5 and [t.number for t in first.trials] == [0, 1, 2, 3, 4]
    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    assert [t.value for t in first.trials] == [t.value for t in again.trials]
    # Trial 0 is the configured values, as they are; the others are the sampler's.
    assert first.trials[0].params == base
    assert len({t.params["factors"] for t in first.trials}) > 1
    complete = [t for t in first.trials if t.state == "complete"]
    assert first.best_value == max(t.value for t in complete)
    assert first.best_value >= first.trials[0].value
    other = search("mf", base, blind, None, "ndcg@10", trials=5, seconds=None, seed=8)
    assert [t.params for t in other.trials][1:] != [t.params for t in first.trials][1:]
    # A tuner's week: new trials each day from --tune-seed, the run's seed (its split and
    # figures) kept.
    # The configured values (regularization None: the grid's) said as the fit chose them.
    configured = dataclasses.replace(first, best_params=first.trials[0].params,
                                     best_value=first.trials[0].value)
    assert configured.tuned_params()["regularization"] is None
    assert configured.fitted_params()["regularization"] == \
        first.trials[0].chosen["regularization"] > 0
    assert configured.to_dict()["best_fitted"]["regularization"] is not None
    assert TrainingConfig(seed=7).search_seed == 7
    assert TrainingConfig(seed=7, tune_seed=8).search_seed == 8


def test_the_seconds_budget_stops_asking(blind: EncodedSplit) -> None:
    began = time.perf_counter()
    found = search("ease", {}, blind, None, "ndcg@10", trials=10_000, seconds=0.5, seed=1)
    assert 1 <= len(found.trials) < 10_000
    assert time.perf_counter() - began < 30
    assert found.to_dict()["trials"] == len(found.trials)


def test_a_family_that_does_not_apply_stops_after_its_first_trial(blind: EncodedSplit) -> None:
    found = search("mf-ratings", {}, blind, None, "ndcg@10", trials=6, seconds=None, seed=1,
                   parallel=1)
    assert [t.state for t in found.trials] == ["skipped"]
    assert "rating" in found.to_dict()["skipped"]
    assert found.best_value is None and found.tuned_params() == {}


@pytest.mark.slow  # TensorFlow
def test_a_network_trial_that_does_not_learn_is_pruned(blind: EncodedSplit) -> None:
    # The pruner compares a trial's validation curve, epoch by epoch, with the median of
    # the earlier trials'. Two trials that learn, then one that cannot (a learning rate
    # that leaves the weights where they started), whatever values the sampler asked.
    study = FamilySearch("dae", {}, trials=5, seconds=None, seed=3)
    base = dict(hidden=16, latent=4, epochs=12, patience=12, batch_size=64, seed=1)
    study.tell(*_ran(study, blind, base))  # the configured values: not the pruner's
    for rate in (3e-3, 3e-3, 1e-7):
        outcome = _ran(study, blind, {**base, "learning_rate": rate})
        study.tell(*outcome)
    states = [o.state for o in study.outcomes]
    assert states[:3] == ["complete", "complete", "complete"], study.result().frame()
    assert states[3] == "pruned", study.result().frame()
    pruned = study.outcomes[3]
    assert pruned.epochs is not None and 3 < pruned.epochs < 12
    assert "pruned after epoch" in pruned.error


def _ran(study: FamilySearch, encoded: EncodedSplit, params: dict) -> tuple:
    trial, _ = study.ask()
    return trial, run_trial("dae", trial, params, encoded, None, "ndcg@10")


def test_a_misspelt_metric_or_an_unsearchable_family_is_refused_before_any_fit(
        blind: EncodedSplit) -> None:
    """A second reader's library search: every trial fitted, then failed on KeyError
    'ndgc@10', and the result chose nothing; popularity was a bare KeyError."""
    from shoprec.errors import ConfigError
    from shoprec.tuning.search import search

    with pytest.raises(ConfigError, match="primary metric 'ndgc@10': give one of"):
        search("ease", {}, blind, None, "ndgc@10", trials=3, seconds=None, seed=1)
    with pytest.raises(ConfigError, match="popularity has no search space"):
        search("popularity", {}, blind, None, "ndcg@10", trials=3, seconds=None, seed=1)


def test_a_trial_is_never_pruned_at_the_epoch_its_fit_ends_on(
        blind: EncodedSplit, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second reader's: vae's schedule ran 17 of its configured 50 epochs, and a trial
    that had run them all was pruned at the 17th and thrown away."""
    from shoprec.models import Popularity
    from shoprec.tuning import search as module

    def fit(candidate, params, train, items, encoded, has_ratings, tuner):
        tuner.planned_epochs = 3  # as train_epochs says: the schedule cut 10 to 3
        for epoch in range(3):
            tuner.on_epoch(epoch, 0.1)
        return Popularity().fit(train), 0.0

    class Trial:
        user_attrs = {"number": 1}
        calls = 0

        def report(self, value: float, step: int) -> None:
            pass

        def should_prune(self) -> bool:
            Trial.calls += 1
            return Trial.calls == 3  # the pruner would cut the third epoch, the last

    monkeypatch.setattr(module, "fit_candidate", fit)
    outcome = module.run_trial("vae", Trial(), {"epochs": 10}, blind, None, "ndcg@10")
    assert outcome.state == "complete" and outcome.epochs == 3, outcome
