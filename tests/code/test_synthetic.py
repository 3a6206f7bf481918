"""The synthetic generator: exact sizes, determinism, planted structure, text signal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shoprec.data.synthetic import generate, planted_model


def test_sizes_schema_and_determinism(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", users=300, items=80, interactions=5000, seed=11)
    b = generate(tmp_path / "b", users=300, items=80, interactions=5000, seed=11)
    c = generate(tmp_path / "c", users=300, items=80, interactions=5000, seed=12)
    frame = pd.read_parquet(a.interactions_path)
    assert len(frame) == 5000
    assert frame.columns.tolist() == ["user_id", "item_id", "timestamp", "event", "value"]
    assert set(frame["event"]) == {"view", "cart", "purchase"}
    assert (frame.loc[frame["event"] != "purchase", "value"] == 1).all()
    assert (frame["value"] >= 1).all()
    pd.testing.assert_frame_equal(frame, pd.read_parquet(b.interactions_path))
    pd.testing.assert_frame_equal(pd.read_parquet(a.items_path), pd.read_parquet(b.items_path))
    assert not frame.equals(pd.read_parquet(c.interactions_path))
    items = pd.read_parquet(a.items_path)
    assert items["item_id"].is_unique and len(items) == 80
    assert set(frame["item_id"]) <= set(items["item_id"])


def test_the_files_are_the_ones_earlier_versions_wrote(tmp_path: Path) -> None:
    """Benchmarks compare figures across sessions on generated data: the same arguments
    must keep writing the same rows (hashes taken from the generator as of 5047a57)."""
    summary = generate(tmp_path, users=300, items=80, interactions=5000, seed=11)

    def digest(path: str) -> int:
        frame = pd.read_parquet(path)
        return int(pd.util.hash_pandas_object(frame, index=False).sum() % 2**63)

    assert digest(summary.interactions_path) == 2949285894539603028
    assert digest(summary.items_path) == 7224247770351213196


def test_planted_model_is_what_the_generator_draws_from(tmp_path: Path) -> None:
    """The model benchmarks/ceiling.py ranks by: each segment's rows follow its chances."""
    summary = generate(tmp_path, users=400, items=100, interactions=40_000, seed=5)
    planted = planted_model(400, 100, seed=5)
    frame = pd.read_parquet(summary.interactions_path)
    user = pd.Index(planted.user_ids).get_indexer(frame["user_id"])
    item = pd.Index(planted.item_ids).get_indexer(frame["item_id"])
    assert (user >= 0).all() and (item >= 0).all()
    np.testing.assert_allclose(planted.probabilities.sum(axis=1), 1.0)
    counts = np.zeros_like(planted.probabilities)
    np.add.at(counts, (planted.segments[user], item), 1)
    empirical = counts / counts.sum(axis=1, keepdims=True)
    checked = 0
    for segment, rows in enumerate(counts.sum(axis=1)):
        if rows < 2000:
            continue
        distance = 0.5 * np.abs(empirical[segment] - planted.probabilities).sum(axis=1)
        # Close to its own chances (sampling noise only), farther from every other segment's.
        assert distance[segment] < 0.12 and distance.argmin() == segment, distance
        checked += 1
    assert checked >= 2


def test_chunked_writing_gives_exact_counts(tmp_path: Path, monkeypatch) -> None:
    import shoprec.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "CHUNK_ROWS", 700)  # force many chunks
    summary = generate(tmp_path, users=500, items=60, interactions=9000, seed=2)
    frame = pd.read_parquet(summary.interactions_path)
    assert len(frame) == 9000
    # Every user's rows were written in one chunk: users appear in contiguous blocks.
    first = frame.groupby("user_id", sort=False).head(1).index
    assert list(first) == sorted(first)


def test_popularity_is_long_tailed(synthetic_dir: Path) -> None:
    counts = pd.read_parquet(synthetic_dir / "interactions.parquet")["item_id"].value_counts()
    top_tenth = counts.iloc[: max(1, len(counts) // 10)].sum() / counts.sum()
    assert top_tenth > 0.3  # the top 10% of items draw far more than 10% of interactions


def test_users_concentrate_on_their_segment_categories(synthetic_dir: Path) -> None:
    frame = pd.read_parquet(synthetic_dir / "interactions.parquet")
    items = pd.read_parquet(synthetic_dir / "items.parquet")
    merged = frame.merge(items[["item_id", "category"]], on="item_id")
    top_share = merged.groupby("user_id")["category"].agg(
        lambda s: s.value_counts(normalize=True).iloc[0])
    n_categories = items["category"].nunique()
    # A user's favourite category holds far more than a uniform share of their history,
    # and more than the global favourite category does.
    global_top = merged["category"].value_counts(normalize=True).iloc[0]
    assert top_share.median() > 3 / n_categories
    assert top_share.median() > global_top


def test_titles_carry_the_category(synthetic_dir: Path) -> None:
    items = pd.read_parquet(synthetic_dir / "items.parquet")
    words = items.assign(word=items["title"].str.lower().str.split().str[1:]).explode("word")
    categories_per_word = words.groupby("word")["category"].nunique()
    assert (categories_per_word == 1).all()  # category words never cross categories
    assert np.all(items["price"] > 0)
