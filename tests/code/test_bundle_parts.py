"""The winner's refit into parts built beforehand (the flow builds them beside the candidates)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shoprec.config import DataConfig, SplitConfig, WeightingConfig
from shoprec.pipeline import prepare
from shoprec.training import bundle_parts, refit_bundle


@pytest.fixture(scope="module")
def prepared(synthetic_dir: Path):
    return prepare(DataConfig(interactions=str(synthetic_dir / "interactions.parquet"),
                              items=str(synthetic_dir / "items.parquet")),
                   split_config=SplitConfig(method="temporal", test_days=20,
                                            validation_days=20))


def test_a_refit_into_parts_built_beforehand_is_the_refit_that_builds_them(prepared) -> None:
    weighting, fallback = WeightingConfig(), {"max_items_per_user": 7}
    params = {"factors": 8, "regularization": 10.0, "iterations": 3, "threads": 1}
    parts = bundle_parts(prepared.data, weighting, fallback)
    ahead = refit_bundle("mf", params, prepared.data, weighting, {}, fallback, parts=parts)
    inside = refit_bundle("mf", params, prepared.data, weighting, {}, fallback)
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


def test_a_content_winner_answers_search_itself(prepared) -> None:
    weighting = WeightingConfig()
    parts = bundle_parts(prepared.data, weighting)
    ahead = refit_bundle("content", {}, prepared.data, weighting, {}, parts=parts)
    inside = refit_bundle("content", {}, prepared.data, weighting, {})
    assert ahead.search is ahead.model and inside.search is inside.model
    assert parts.search is not None and parts.search is not ahead.model
    assert bundle_parts(prepared.data, weighting, with_search=False).search is None
