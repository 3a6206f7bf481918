"""Content model and product search: contract, learning, new products, search behaviour."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shoprec.config import DataConfig, SplitConfig
from shoprec.evaluation import evaluate
from shoprec.features import item_frame
from shoprec.models import ContentRecommender, FitContext, Popularity
from shoprec.pipeline import prepare
from shoprec.tuning import ValidationTuner
from tests.model.contract import RecommenderContract, block_items, block_matrix


class TestContentContract(RecommenderContract):
    exact_explanations = True

    def make(self) -> ContentRecommender:
        return ContentRecommender(popularity_smoothing=0.5)

    def context(self) -> FitContext:
        return FitContext(items=block_items())


class TestSharpenedContentContract(TestContentContract):
    """Item-item cosines squared: still exact explanations, round trips and compression."""

    def make(self) -> ContentRecommender:
        return ContentRecommender(popularity_smoothing=0.5, similarity_exponent=2.0)


def test_content_needs_the_item_frame() -> None:
    from shoprec.errors import ModelFitError

    with pytest.raises(ModelFitError, match="item frame"):
        ContentRecommender().fit(block_matrix())


def test_profile_follows_the_block() -> None:
    model = ContentRecommender(popularity_smoothing=10).fit(block_matrix(),
                                                             FitContext(items=block_items()))
    top, _ = model.recommend(block_matrix()[[0, 11]], k=1)
    assert top[0, 0] < 5 and top[1, 0] >= 5  # kitchen shopper -> kitchen, garden -> garden
    similar, _ = model.similar_items(1, k=4)
    assert set(similar) == {0, 2, 3, 4}  # "customers also looked at" stays in the block


@pytest.fixture(scope="module")
def planted(synthetic_dir: Path):
    prepared = prepare(DataConfig(interactions=str(synthetic_dir / "interactions.parquet"),
                                  items=str(synthetic_dir / "items.parquet")),
                       split_config=SplitConfig(method="temporal", test_days=20,
                                                validation_days=20))
    return prepared, item_frame(prepared.data.items, prepared.encoded.items)


def test_content_beats_popularity_on_planted_data(planted) -> None:
    prepared, items = planted
    encoded = prepared.encoded
    context = FitContext(items=items, tuner=ValidationTuner(encoded.train, encoded.validation))
    model = ContentRecommender().fit(encoded.train, context)
    assert model.smoothing_ in model.smoothing_grid
    assert model.exponent_ in model.exponent_grid
    assert model.selected_params_ == {"popularity_smoothing": model.smoothing_,
                                      "similarity_exponent": model.exponent_}
    # The choice leaves the chosen exponent's similarities behind (whether or not it was
    # the last one tried): the batch (dense) path and a served request's path score alike.
    model = ContentRecommender(exponent_grid=(2.0, 12.0, 1.0)).fit(encoded.train, context)
    assert model.similarity_ is not None
    batch = model.score(encoded.test_history[:100])
    served = np.vstack([model.score(encoded.test_history[i:i + 5]) for i in range(0, 100, 5)])
    np.testing.assert_allclose(served, batch, rtol=1e-4, atol=1e-6)
    model.similarity_ = None
    np.testing.assert_allclose(model.score(encoded.test_history[:5]), batch[:5], rtol=1e-4,
                               atol=1e-6)
    # Recipes and bundles from before the exponent existed keep the profile's cosine.
    assert ContentRecommender.current_params({"popularity_smoothing": 0.1}) == {
        "popularity_smoothing": 0.1, "similarity_exponent": 1.0}
    content = evaluate(model, encoded.test_history, encoded.test)
    pop = evaluate(Popularity().fit(encoded.train), encoded.test_history, encoded.test)
    assert content["ndcg@10"] > 1.1 * pop["ndcg@10"]


def test_the_smoothing_is_chosen_from_one_scoring_as_from_one_per_value(planted) -> None:
    """Each smoothing's figure, from the cosines computed once, is the model's own figure.

    The choice reports every value (the run's curve) and keeps the best of them.
    """
    prepared, items = planted
    encoded = prepared.encoded
    reported: dict[float, float] = {}
    tuner = ValidationTuner(encoded.train, encoded.validation,
                            progress=lambda value, m: reported.update(
                                {value: m["validation_ndcg_at_10_by_popularity_smoothing"]}))
    grid = (0.01, 0.3, 3.0, 30.0)
    model = ContentRecommender(similarity_exponent=2.0, smoothing_grid=grid).fit(
        encoded.train, FitContext(items=items, tuner=tuner))
    assert sorted(reported) == sorted(grid)
    assert reported[model.smoothing_] == max(reported.values())
    assert len(set(np.round(list(reported.values()), 4))) > 1  # the values do differ
    for value in grid:
        model.smoothing_ = value
        assert tuner.score(model, 20_000) == pytest.approx(reported[value], abs=1e-6)


def test_a_new_product_reaches_a_matching_shopper(planted) -> None:
    prepared, items = planted
    encoded = prepared.encoded
    # Add a product nobody has touched, written in the vocabulary of one category.
    category = items["category"].value_counts().index[-1]
    same = items[items["category"] == category]
    words = " ".join(same["title"].str.split().str[1:].explode().value_counts().index[:3])
    new = pd.DataFrame({"item_id": ["NEW-1"], "title": [f"NEW {words}"],
                        "description": [same["description"].iloc[0]], "category": [category],
                        "brand": [same["brand"].iloc[0]], "price": [same["price"].median()]})
    catalogue = pd.concat([items.drop(columns=["text"]), new], ignore_index=True)
    matrix = sp.hstack([encoded.train, sp.csr_matrix((encoded.train.shape[0], 1))]).tocsr()
    model = ContentRecommender(popularity_smoothing=1.0).fit(matrix,
                                                             FitContext(items=catalogue))
    # A shopper who bought three items of that category.
    picks = np.flatnonzero(catalogue["category"].to_numpy() == category)[:3]
    row = sp.csr_matrix((np.ones(3, np.float32), (np.zeros(3, int), picks)),
                        shape=(1, len(catalogue)))
    top, _ = model.recommend(row, k=10)
    assert len(catalogue) - 1 in top[0]  # the new product's column


@pytest.fixture(scope="module")
def catalogue_model():
    titles = ["WHITE HANGING HEART T-LIGHT HOLDER", "RED HANGING HEART T-LIGHT HOLDER",
              "JUMBO BAG RED RETROSPOT", "LUNCH BAG BLACK SKULL", "REGENCY CAKESTAND 3 TIER",
              "PARTY BUNTING", "ASSORTED COLOUR BIRD ORNAMENT", "PACK OF 72 RETROSPOT CAKE CASES",
              "BLUE CERAMIC MUG", "PINK CERAMIC MUG"]
    categories = ["lights", "lights", "bags", "bags", "kitchen", "party", "decor", "baking",
                  "kitchen", "garden"]
    items = pd.DataFrame({"item_id": [f"p{i}" for i in range(10)], "title": titles,
                          "category": categories})
    matrix = sp.csr_matrix(np.eye(10, dtype=np.float32))
    return ContentRecommender(popularity_smoothing=1.0).fit(matrix, FitContext(items=items))


def test_exact_title_comes_first(catalogue_model: ContentRecommender) -> None:
    top, scores = catalogue_model.search(["REGENCY CAKESTAND 3 TIER", "party bunting"], k=3)
    assert top[0, 0] == 4 and top[1, 0] == 5
    assert scores[0, 0] > scores[0, 1]


def test_a_typo_still_finds_it(catalogue_model: ContentRecommender) -> None:
    for query, expected in [("regency cakestnad", 4), ("assorted colour brid ornament", 6),
                            ("white hanging heart tlight holder", 0)]:
        top, _ = catalogue_model.search([query], k=3)
        assert expected in top[0], query


def test_personalised_search_prefers_the_shoppers_category(
        catalogue_model: ContentRecommender) -> None:
    # "ceramic mug" matches items 8 (kitchen) and 9 (garden) equally well.
    plain, _ = catalogue_model.search(["ceramic mug"], k=2)
    assert set(plain[0]) == {8, 9}
    garden_fan = sp.csr_matrix(np.array([[0, 0, 0, 0, 0, 0, 0, 0, 0, 3]], np.float32))
    kitchen_fan = sp.csr_matrix(np.array([[0, 0, 0, 0, 4, 0, 0, 0, 0, 0]], np.float32))
    assert catalogue_model.search(["ceramic mug"], 2, garden_fan)[0][0, 0] == 9
    assert catalogue_model.search(["ceramic mug"], 2, kitchen_fan)[0][0, 0] == 8


def test_no_match_returns_nothing(catalogue_model: ContentRecommender) -> None:
    top, scores = catalogue_model.search(["zzzz qqqq"], k=3)
    assert (top == -1).all() and np.isneginf(scores).all()


def test_search_reads_every_script_and_spelling_alike(tmp_path: Path) -> None:
    """Accents (composed or not), "ß", full-width letters, Turkish "İ", Arabic presentation
    forms and a two-character Japanese word inside a title: a reader's queries that found
    nothing, or the wrong product first."""
    from shoprec.features.text import ItemFeatures

    titles = ["Café noir tasse", "Cafe\u0301 crème brûlée bol", "Straße Schild",
              "İstanbul çay bardağı", "قهوة عربية", "日本製の陶器の抹茶茶碗とティーカップ",
              "Fußball Trikot", "plain grey mug", "烤鸭 盘子", "green tea pot"]
    items = pd.DataFrame({"item_id": [f"p{i}" for i in range(10)], "title": titles})
    model = ContentRecommender(popularity_smoothing=1.0).fit(
        sp.csr_matrix(np.eye(10, dtype=np.float32)), FitContext(items=items))
    for query, expected in [("cafe", {0, 1}), ("CAFÉ", {0, 1}), ("cafe\u0301", {0, 1}),
                            ("brulee", {1}), ("strasse", {2}), ("ＳＴＲＡＳＳＥ", {2}),
                            ("istanbul", {3}), ("ISTANBUL", {3}), ("ﻗﻬﻮﺓ", {4}),
                            ("茶碗", {5}), ("茶", {5}), ("fussball", {6})]:
        top, _ = model.search([query], k=2)
        assert top[0, 0] in expected, (query, top[0])
    # Written and read back, the index reads queries the same way.
    model.features_.save(tmp_path)
    again = ItemFeatures.load(tmp_path)
    assert again.text_form == model.features_.text_form == 1
    assert (again.query_vectors(["茶碗 cafe"]) != model.features_.query_vectors(
        ["茶碗 cafe"])).nnz == 0


def test_an_index_built_before_text_forms_reads_queries_as_it_was_built(tmp_path: Path) -> None:
    """A published model's vocabulary holds the words as they were written then: its
    queries must not be folded, or "café" would no longer match it."""
    import json

    from shoprec.features.text import ItemFeatures

    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["Café noir", "plain mug"]})
    features = ItemFeatures()
    features.text_form = 0
    features.fit(items)
    features.save(tmp_path)
    state = json.loads((tmp_path / "features.json").read_text(encoding="utf-8"))
    del state["text_form"]  # as an older shoprec wrote it
    (tmp_path / "features.json").write_text(json.dumps(state), encoding="utf-8")
    old = ItemFeatures.load(tmp_path)
    assert old.text_form == 0 and "café" in old.word_.vocabulary
    assert old.query_vectors(["café"])[:, :len(old.word_.vocabulary)].nnz == 1


@pytest.mark.parametrize("exponent", [2.0, 0.5])
def test_sharpened_scores_agree_across_paths_and_bundles(
        exponent: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With an exponent the score is sum_h r_h cos(h, j)^e / |profile|, the same on the
    served (sparse) path and the batch (dense) path; a bundle saved before the exponent
    existed loads as exponent 1."""
    rows = block_matrix()
    model = ContentRecommender(popularity_smoothing=0.5, similarity_exponent=exponent).fit(
        rows, FitContext(items=block_items()))
    vectors = model.item_vectors_.toarray()
    cosines = np.maximum(vectors @ vectors.T, 0) ** exponent
    profiles = np.linalg.norm(rows.toarray() @ vectors, axis=1)
    expected = (rows.toarray() @ cosines) / profiles[:, None] * (0.5 + model.popularity_)
    sparse = model.score(rows)
    assert model.similarity_ is None
    np.testing.assert_allclose(sparse, expected, rtol=1e-4, atol=1e-6)
    monkeypatch.setattr(ContentRecommender, "dense_batch_rows", 1)
    np.testing.assert_allclose(model.score(rows), expected, rtol=1e-4, atol=1e-6)
    assert model.similarity_ is not None
    model.save(tmp_path / "sharp")
    assert ContentRecommender.load(tmp_path / "sharp").exponent_ == exponent
    (tmp_path / "sharp" / "exponent.npy").unlink()
    assert ContentRecommender.load(tmp_path / "sharp").exponent_ == 1.0


def test_dense_and_sparse_scoring_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ContentRecommender(popularity_smoothing=0.5).fit(block_matrix(),
                                                             FitContext(items=block_items()))
    # Small batches (served requests) take the sparse path and build nothing.
    sparse = model.score(block_matrix())
    assert model.similarity_ is None
    monkeypatch.setattr(ContentRecommender, "dense_batch_rows", 1)
    dense = model.score(block_matrix())
    assert model.similarity_ is not None
    np.testing.assert_allclose(dense, sparse, rtol=1e-5, atol=1e-6)
    # A model fitted above the catalogue limit scores in its item embeddings, never
    # building the items² matrix; with as many dimensions as the item vectors' rank the
    # embedding cosines are the exact ones.
    monkeypatch.setattr(ContentRecommender, "dense_similarity_items", 0)
    embedded = ContentRecommender(popularity_smoothing=0.5).fit(
        block_matrix(), FitContext(items=block_items()))
    assert embedded.embeddings_ is not None
    rank = np.linalg.matrix_rank(embedded.item_vectors_.toarray())
    assert embedded.embeddings_.shape[1] >= rank
    np.testing.assert_allclose(embedded.score(block_matrix()), sparse, atol=1e-5)
    assert embedded.similarity_ is None


def test_embedded_scoring_learns_and_round_trips(planted, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the limit (lowered here), a 16-dimensional embedding still beats popularity."""
    prepared, items = planted
    encoded = prepared.encoded
    monkeypatch.setattr(ContentRecommender, "dense_similarity_items", 10)
    model = ContentRecommender(embedding_dims=16).fit(
        encoded.train,
        FitContext(items=items, tuner=ValidationTuner(encoded.train, encoded.validation)))
    assert model.embeddings_.shape == (encoded.shape[1], 16)
    content = evaluate(model, encoded.test_history, encoded.test)
    pop = evaluate(Popularity().fit(encoded.train), encoded.test_history, encoded.test)
    assert content["ndcg@10"] > 1.1 * pop["ndcg@10"]
    model.save(tmp_path / "content")
    loaded = ContentRecommender.load(tmp_path / "content")
    np.testing.assert_allclose(loaded.score(encoded.test_history[:50]),
                               model.score(encoded.test_history[:50]), rtol=1e-5, atol=1e-6)


def test_a_refit_on_the_same_items_reuses_their_features_and_scores_the_same(
        planted, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The refit on training + validation takes the first fit's features and embeddings.

    Its scores are those of a refit that derives them again; another frame or other block
    weights are derived afresh. ``train_and_evaluate`` analyses the texts once.
    """
    from shoprec.features.text import ItemFeatures
    from shoprec.training import train_and_evaluate

    prepared, items = planted
    encoded = prepared.encoded
    monkeypatch.setattr(ContentRecommender, "dense_similarity_items", 10)  # SVD too
    calls: list[int] = []
    original = ItemFeatures.fit_transform
    monkeypatch.setattr(ItemFeatures, "fit_transform",
                        lambda self, frame: calls.append(len(frame)) or original(self, frame))

    def fitted(rows: sp.csr_matrix, frame: pd.DataFrame, state: dict | None = None,
               **params: float) -> ContentRecommender:
        settings = {"popularity_smoothing": 0.5, "embedding_dims": 16, **params}
        return ContentRecommender(**settings).fit(rows,
                                                  FitContext(items=frame, item_state=state))

    first = fitted(encoded.train, items)
    state = first.item_state()
    assert len(calls) == 1
    reused = fitted(encoded.test_history, items, state)
    assert len(calls) == 1 and reused.embeddings_ is first.embeddings_
    fresh = fitted(encoded.test_history, items)
    assert len(calls) == 2
    rows = encoded.test_history[:200]
    np.testing.assert_array_equal(reused.score(rows), fresh.score(rows))
    fitted(encoded.test_history, items, state, word_weight=2.0)
    fitted(encoded.test_history, items.copy(), state)
    assert len(calls) == 4
    first.save(tmp_path / "content")  # a loaded model has no frame to match a refit's
    assert ContentRecommender.load(tmp_path / "content").item_state() == {}
    copied = pickle.loads(pickle.dumps(first))  # nor has a copy (the frame is held weakly)
    assert copied.item_state() == {} and first.item_state()["items"] is items
    np.testing.assert_array_equal(copied.score(rows), first.score(rows))
    fitted(encoded.test_history, items, state, embedding_dims=8)  # another embedding
    assert len(calls) == 5
    calls.clear()
    train_and_evaluate("content", {"popularity_smoothing": 0.5, "embedding_dims": 16},
                       encoded, items, [10])
    assert calls == [len(items)]
