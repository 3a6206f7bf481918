"""Rating-value matrix factorisation: contract, RMSE, and its place in the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shoprec.config import DataConfig, SplitConfig
from shoprec.evaluation import rmse
from shoprec.models import RatingsMF
from shoprec.pipeline import prepare
from shoprec.training import train_and_evaluate
from tests.model.contract import RecommenderContract


class TestRatingsMFContract(RecommenderContract):
    def make(self) -> RatingsMF:
        return RatingsMF(factors=2, iterations=3)


@pytest.fixture(scope="module")
def ratings_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MovieLens-layout ratings from a rank-2 taste model plus noise, 30% observed."""
    rng = np.random.default_rng(5)
    users, items = 300, 120
    taste = rng.normal(0, 1, (users, 2)) @ rng.normal(0, 1, (2, items))
    quality = rng.normal(0, 0.5, items)
    true = np.clip(3.2 + 0.6 * taste + quality, 1, 5)
    observed = np.argwhere(rng.random((users, items)) < 0.3)
    noisy = np.clip(np.round(true[observed[:, 0], observed[:, 1]]
                             + rng.normal(0, 0.3, len(observed)) * 2) / 2, 0.5, 5)
    folder = tmp_path_factory.mktemp("ratings")
    pd.DataFrame({"userId": observed[:, 0] + 1, "movieId": observed[:, 1] + 1,
                  "rating": noisy, "timestamp": rng.integers(9e8, 9.5e8, len(observed))}
                 ).to_csv(folder / "ratings.csv", index=False)
    pd.DataFrame({"movieId": np.arange(items) + 1, "title": [f"Film {i}" for i in range(items)],
                  "genres": "Drama"}).to_csv(folder / "movies.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def prepared(ratings_dir: Path):
    return prepare(DataConfig(interactions=str(ratings_dir / "ratings.csv")),
                   split_config=SplitConfig(method="random", seed=1))


def test_rmse_beats_the_mean_and_item_baselines(prepared) -> None:
    encoded = prepared.encoded
    assert encoded.has_ratings and encoded.test_ratings is not None
    model = RatingsMF(factors=4, regularization=2.0, iterations=15).fit(encoded.train)
    fitted = rmse(model, encoded.test_history, encoded.test_ratings)
    truth = encoded.test_ratings.data
    mean_only = float(np.sqrt(((truth - encoded.train.data.mean()) ** 2).mean()))
    items_only = rmse(RatingsMF(factors=1, regularization=1e6, iterations=5).fit(encoded.train),
                      encoded.test_history, encoded.test_ratings)
    assert fitted < 0.8 * mean_only
    assert fitted < items_only


def test_leaderboard_shows_rmse_for_rating_data(prepared) -> None:
    result, _ = train_and_evaluate("mf-ratings", {"factors": 4, "regularization": 2.0},
                                   prepared.encoded, None, [10])
    assert result.test["rmse"] > 0 and result.validation["rmse"] > 0
    assert result.test["ndcg@10"] >= 0


def test_mf_ratings_is_skipped_on_shop_events(synthetic_dir: Path) -> None:
    from shoprec.errors import ModelSkippedError

    shop = prepare(DataConfig(interactions=str(synthetic_dir / "interactions.parquet")),
                   split_config=SplitConfig(method="random"))
    with pytest.raises(ModelSkippedError, match="no rating events"):
        train_and_evaluate("mf-ratings", {}, shop.encoded, None, [10])
