"""again (buy again): contract, learning a shop of repeat purchases, skipped elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shoprec.config import DataConfig, SplitConfig, WeightingConfig
from shoprec.errors import ModelSkippedError
from shoprec.evaluation import evaluate
from shoprec.models import EASE, BuyAgain, Popularity
from shoprec.pipeline import prepare
from shoprec.training import fit_candidate
from tests.model.contract import RecommenderContract, block_matrix


class TestBuyAgainContract(RecommenderContract):
    def make(self) -> BuyAgain:
        return BuyAgain()


def grocery(folder: Path, seed: int = 3) -> Path:
    """Weekly baskets: three staples most shoppers buy, and each shopper's own regulars."""
    rng = np.random.default_rng(seed)
    rows = []
    start = pd.Timestamp("2024-01-01", tz="UTC")
    for user in range(300):
        regulars = rng.choice(np.arange(3, 120), size=6, replace=False)
        for week in range(12):
            day = start + pd.Timedelta(days=7 * week + int(rng.integers(0, 3)))
            basket = [i for i in (0, 1, 2) if rng.random() < 0.5]
            basket += list(rng.choice(regulars, size=3, replace=False))
            if rng.random() < 0.3:
                basket.append(int(rng.integers(3, 120)))
            rows += [(f"u{user}", f"i{item}", day, "purchase", 1) for item in set(basket)]
    path = folder / "grocery.csv"
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event", "value"]).to_csv(
        path, index=False)
    return path


def test_own_items_come_first_by_weight_then_popularity() -> None:
    model = BuyAgain().fit(block_matrix())
    row = sp.csr_matrix(np.array([[0, 3, 0, 0, 0, 0, 0, 0, 1, 0]], dtype=np.float32))
    top, _ = model.recommend(row, k=4, exclude_seen=False)
    assert top[0][:2].tolist() == [1, 8]
    popular = np.argsort(-model.item_scores_, kind="stable")
    assert top[0][2] == [i for i in popular if i not in (1, 8)][0]


def test_again_beats_popularity_and_ease_on_a_shop_of_repeat_purchases(
        tmp_path: Path) -> None:
    prepared = prepare(DataConfig(interactions=str(grocery(tmp_path))),
                       split_config=SplitConfig(test_days=14, validation_days=14,
                                                repeat_items=True),
                       weighting=WeightingConfig())
    encoded = prepared.encoded
    model, _ = fit_candidate("again", {}, encoded.test_history, None)
    scored = {name: evaluate(m, encoded.test_history, encoded.test,
                             exclude_seen=False)["ndcg@10"]
              for name, m in (("again", model),
                              ("popularity", Popularity().fit(encoded.test_history)),
                              ("ease", EASE(regularization=10.0).fit(encoded.test_history)))}
    assert scored["again"] > 1.2 * scored["popularity"], scored
    assert scored["again"] > scored["ease"], scored


def test_it_is_skipped_where_bought_items_are_left_out(tmp_path: Path) -> None:
    prepared = prepare(DataConfig(interactions=str(grocery(tmp_path))),
                       split_config=SplitConfig(test_days=14, validation_days=14))
    with pytest.raises(ModelSkippedError, match="--repeat-items"):
        fit_candidate("again", {}, prepared.encoded.train, None, prepared.encoded)


def test_a_repeat_items_version_serves_own_items_and_another_does_not() -> None:
    """A grocery reader's: the version's figures counted reorders, its served lists left
    every one of them out."""
    from shoprec.features.idmap import IdMap
    from shoprec.registry.bundle import ModelBundle

    history = block_matrix()
    owned = set(history[0].indices.tolist())
    for repeat in (True, False):
        model = BuyAgain().fit(history) if repeat else Popularity().fit(history)
        bundle = ModelBundle(model=model, users=IdMap([f"u{i}" for i in range(history.shape[0])]),
                             items=IdMap([f"i{i}" for i in range(10)]), history=history,
                             fallback=Popularity().fit(history),
                             meta={"model": model.name, "repeat_items": repeat})
        answer = bundle.answer([{"user_id": "u0", "k": len(owned)}])[0]
        served = {int(i[1:]) for i in answer["item_ids"]}
        assert (served == owned) if repeat else not served & owned, (repeat, served, owned)


def test_a_shop_of_reorders_is_told_about_repeat_items(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """94% of a grocery's test rows were left out as reorders, and nothing said so."""
    from shoprec.features.encoding import check_evaluable

    split = SplitConfig(test_days=14, validation_days=14)
    prepared = prepare(DataConfig(interactions=str(grocery(tmp_path))), split_config=split)
    check_evaluable(prepared.encoded, split)
    assert "of the test part's items are ones the shopper already had" in caplog.text
    assert "--repeat-items" in caplog.text


def test_one_line_per_unit_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An export of one line per unit lost 40% of its rows as duplicates, quantities and
    all, without a word below the rejection threshold."""
    from shoprec.data.adapters import load
    from shoprec.data.cleaning import clean

    frame = pd.read_csv(grocery(tmp_path))
    units = pd.concat([frame, frame[frame["item_id"].isin(["i0", "i1", "i2"])]])
    path = tmp_path / "units.csv"
    units.to_csv(path, index=False)
    data = clean(load(DataConfig(interactions=str(path))))
    assert data.report.quarantined_by_reason["duplicate"] == len(units) - len(frame)
    assert "repeat another row exactly" in caplog.text and "sum them per shopper" in caplog.text
