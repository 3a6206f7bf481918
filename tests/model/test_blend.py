"""The blend: contract, weights chosen on validation, never worse there than its members."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shoprec.config import TrainingConfig
from shoprec.features import item_frame
from shoprec.models import Blend
from shoprec.models.blend import simplex_grid, standardised
from shoprec.training import blend_job, train_and_evaluate, train_candidate_row
from tests.model.contract import RecommenderContract

MEMBERS = [{"name": "popularity", "params": {}},
           {"name": "ease", "params": {"regularization": 10.0}}]


class TestBlendContract(RecommenderContract):
    def make(self) -> Blend:
        return Blend(members=MEMBERS, weights=[0.3, 0.7])


def test_the_grid_covers_the_simplex() -> None:
    grid = simplex_grid(3, 0.1)
    assert len(grid) == 66 and (1.0, 0.0, 0.0) in grid
    assert all(abs(sum(w) - 1) < 1e-9 and min(w) >= 0 for w in grid)


def test_standardised_rows_and_unscorable_items() -> None:
    scores = np.array([[1.0, 2.0, 3.0, -np.inf], [5.0, 5.0, 5.0, 5.0]], dtype=np.float32)
    out = standardised(scores)
    assert np.isfinite(out).all()
    assert out[0, 3] == out[0, 0] < out[0, 1] < out[0, 2]  # the unscorable takes the lowest
    # Standardised over the finite scores only: the unscorable item does not shift them.
    assert np.allclose(out[0, :3], [-1.2247449, 0, 1.2247449], atol=1e-6)
    assert np.allclose(out[1], 0)


def test_ties_and_no_validation_keep_the_best_member() -> None:
    grid = simplex_grid(3, 0.5)
    assert grid[0] == (1.0, 0.0, 0.0)  # all on the first (best) member first
    assert len(grid) == 6 and len(set(grid)) == 6


def test_a_blend_is_never_worse_than_its_members_on_validation(synthetic_prepared) -> None:
    encoded = synthetic_prepared.encoded
    items = item_frame(synthetic_prepared.data.items, encoded.items)
    config = TrainingConfig(blend=3)
    rows = [train_candidate_row(name, {}, encoded, items, [10])
            for name in ("popularity", "ease", "content")]
    job = blend_job(rows, config)
    assert job is not None
    # The best three on validation, with the values they chose.
    ranked = sorted(rows, key=lambda r: -r.validation["ndcg@10"])
    assert [m["name"] for m in job.params["members"]] == [r.model for r in ranked]
    assert job.params["members"][0]["params"] == ranked[0].params
    result, refit = train_and_evaluate("blend", job.params, encoded, items, [10])
    weights, kept = result.params["weights"], result.params["members"]
    # Members without weight are dropped: the refits train only the others.
    assert 1 <= len(weights) == len(kept) <= 3 and abs(sum(weights) - 1) < 1e-9
    assert all(w > 0 for w in weights)
    assert [m["name"] for m in kept] == [m["name"] for m in job.params["members"]
                                         if m["name"] in {k["name"] for k in kept}]
    # Each member alone is one point of the grid, and validation is scored on every user
    # here: the chosen weights cannot do worse than the best member.
    best_member = max(r.validation["ndcg@10"] for r in rows)
    assert result.validation["ndcg@10"] >= best_member - 1e-9
    assert result.test["ndcg@10"] > 1.2 * next(
        r.test["ndcg@10"] for r in rows if r.model == "popularity")
    # The refit keeps the weights: nothing chosen again on training + validation.
    assert refit.weights_ == weights and len(refit.models_) == len(kept)


def test_a_blend_left_with_one_member_refits_as_that_member() -> None:
    """Validation may give every other member no weight (on Online Retail with recency
    decay, mf alone); the refit is then that member, not a failure."""
    from shoprec.errors import ModelFitError
    from shoprec.models import EASE, FitContext
    from shoprec.tuning import ValidationTuner
    from tests.model.contract import block_matrix

    matrix = block_matrix()
    alone = Blend(members=[MEMBERS[1]], weights=[1.0]).fit(matrix)
    ease = EASE(regularization=10.0).fit(matrix)
    np.testing.assert_array_equal(alone.recommend(matrix, k=3)[0],
                                  ease.recommend(matrix, k=3)[0])
    with pytest.raises(ModelFitError, match="at least two members"):
        Blend(members=[MEMBERS[1]]).fit(matrix, FitContext(tuner=ValidationTuner(matrix,
                                                                                 matrix)))


def test_no_blend_without_two_members(synthetic_prepared) -> None:
    encoded = synthetic_prepared.encoded
    rows = [train_candidate_row("popularity", {}, encoded, None, [10])]
    assert blend_job(rows, TrainingConfig(blend=3)) is None
    assert blend_job(rows * 2, TrainingConfig(blend=0)) is None


def test_a_published_blend_loads_scores_and_names_its_members_requirements(
        synthetic_prepared, tmp_path: Path) -> None:
    from shoprec.config import WeightingConfig
    from shoprec.registry.bundle import ModelBundle
    from shoprec.registry.publish import bundle_requirements
    from shoprec.training import refit_bundle

    params = {"members": [{"name": "mf", "params": {"factors": 8, "regularization": 10.0,
                                                   "iterations": 3, "threads": 1}},
                          {"name": "ease", "params": {"regularization": 200.0}}],
              "weights": [0.4, 0.6]}
    bundle = refit_bundle("blend", params, synthetic_prepared.data, WeightingConfig(), {})
    folder = bundle.save(tmp_path / "bundle")
    again = ModelBundle.load(folder)
    rows = bundle.history[:5]
    assert np.allclose(again.model.score(rows), bundle.model.score(rows), atol=1e-5)
    assert again.model.weights_ == [0.4, 0.6]
    names = {line.split("==")[0].lower() for line in bundle_requirements(folder)}
    assert "implicit" in names  # the mf member's


def test_a_blend_recipe_retrains_with_this_machine_s_threads() -> None:
    from shoprec.registry.recipe import Recipe

    params = {"members": [{"name": "mf", "params": {"factors": 8, "threads": 16}},
                          {"name": "ease", "params": {"regularization": 200.0}}],
              "weights": [0.5, 0.5]}
    trained = Recipe("blend", params, {}, None, "x", "y").training_params(threads=2)
    assert trained["members"][0]["params"] == {"factors": 8, "threads": 2,
                                               "weighting": "none"}
    # Recorded before ease chose how to read rows: its member reads 0/1 rows, as it did.
    assert trained["members"][1]["params"] == {"regularization": 200.0,
                                               "history_weights": False}
    assert trained["weights"] == [0.5, 0.5]
