"""The winner's refit into parts built beforehand (the flow builds them beside the candidates)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from shoprec.config import WeightingConfig
from shoprec.training import bundle_parts, refit_bundle


def test_a_refit_into_parts_built_beforehand_is_the_refit_that_builds_them(
        synthetic_prepared) -> None:
    weighting, fallback = WeightingConfig(), {"max_items_per_user": 7}
    params = {"factors": 8, "regularization": 10.0, "iterations": 3, "threads": 1}
    parts = bundle_parts(synthetic_prepared.data, weighting, fallback)
    ahead = refit_bundle("mf", params, synthetic_prepared.data, weighting, {}, fallback,
                         parts=parts)
    inside = refit_bundle("mf", params, synthetic_prepared.data, weighting, {}, fallback)
    assert list(ahead.users.ids) == list(inside.users.ids)
    assert list(ahead.items.ids) == list(inside.items.ids)  # the whole catalogue
    assert (ahead.history != inside.history).nnz == 0
    rows = ahead.history[:20]
    np.testing.assert_allclose(ahead.model.score(rows), inside.model.score(rows), atol=1e-6)
    np.testing.assert_array_equal(ahead.fallback.score(rows), inside.fallback.score(rows))
    assert ahead.fallback.max_items_per_user == 7  # the fallback's hyperparameters reach it
    assert ahead.search is not None and inside.search is not None
    title = next(t for t in ahead.titles if t)
    for one, other in zip(ahead.search.search([title]), inside.search.search([title]),
                          strict=True):
        np.testing.assert_array_equal(one, other)
    assert ahead.titles == inside.titles


def test_a_content_winner_answers_search_itself(synthetic_prepared) -> None:
    weighting = WeightingConfig()
    parts = bundle_parts(synthetic_prepared.data, weighting)
    ahead = refit_bundle("content", {}, synthetic_prepared.data, weighting, {}, parts=parts)
    inside = refit_bundle("content", {}, synthetic_prepared.data, weighting, {})
    assert ahead.search is ahead.model and inside.search is inside.model
    assert parts.search is not None and parts.search is not ahead.model
    assert bundle_parts(synthetic_prepared.data, weighting, with_search=False).search is None


def test_parts_built_with_another_weighting_are_refused(synthetic_prepared) -> None:
    parts = bundle_parts(synthetic_prepared.data, WeightingConfig())
    with pytest.raises(ValueError, match="another weighting or fallback"):
        refit_bundle("popularity", {}, synthetic_prepared.data, WeightingConfig(repeats="max"), {},
                     parts=parts)
    with pytest.raises(ValueError, match="another weighting or fallback"):
        refit_bundle("popularity", {}, synthetic_prepared.data, WeightingConfig(), {},
                     {"max_items_per_user": 3}, parts=parts)


class _Done:
    """A finished task's future, as ``ready_parts`` reads it."""

    def __init__(self, value: object) -> None:
        self.value = value

    def result(self, raise_on_failure: bool = True) -> object:
        assert raise_on_failure is False  # a failure must come back, not be raised
        return self.value


def test_the_refit_builds_the_parts_itself_when_building_them_beside_failed(
        synthetic_prepared) -> None:
    from shoprec_flows.training import ready_parts

    parts = bundle_parts(synthetic_prepared.data, WeightingConfig())
    assert ready_parts(_Done(parts)) is parts
    # Prefect's logging setup stops these records before pytest's capture: read them here.
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("shoprec_flows.training")
    logger.addHandler(handler)
    try:
        assert ready_parts(_Done(MemoryError("no room for the matrix"))) is None
    finally:
        logger.removeHandler(handler)
    text = " ".join(record.getMessage() for record in records)
    assert "the winner's refit builds them" in text and "MemoryError" in text
