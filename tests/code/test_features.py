"""Features: id maps, event weights, the CSR matrix, the item frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shoprec.config import WeightingConfig
from shoprec.features import IdMap, event_weights, interaction_matrix, item_frame


def frame(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event", "value"]).astype(
        {"user_id": "string", "item_id": "string", "event": "string"})


def test_idmap_round_trip(tmp_path) -> None:
    ids = IdMap.from_values(pd.Series(["b", "a", "c", "a"]))
    assert list(ids.ids) == ["a", "b", "c"]
    assert list(ids.encode(["c", "zz", "a"])) == [2, -1, 0]
    assert list(ids.decode(np.array([1, 0]))) == ["b", "a"]
    ids.save(tmp_path / "ids.json")
    assert list(IdMap.load(tmp_path / "ids.json").ids) == ["a", "b", "c"]


def test_purchase_outweighs_cart_outweighs_view() -> None:
    weights = event_weights(frame([("u", "i", "view", 1), ("u", "i", "cart", 1),
                                   ("u", "i", "purchase", 1), ("u", "i", "rating", 4.5)]))
    assert weights[2] > weights[1] > weights[0] > 0
    assert weights[3] == pytest.approx(4.5)


@pytest.mark.parametrize(("damping", "expected"),
                         [("log", 4 * np.log2(9)), ("sqrt", 4 * np.sqrt(8)), ("none", 32.0),
                          ("binary", 4.0)])
def test_quantity_damping(damping: str, expected: float) -> None:
    weights = event_weights(frame([("u", "i", "purchase", 8)]),
                            WeightingConfig(quantity_damping=damping))
    assert weights[0] == pytest.approx(expected, rel=1e-6)


def test_unknown_event_weight_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="unknown event types"):
        WeightingConfig(event_weights={"like": 1.0})


def test_matrix_sums_repeats_and_leaves_out_unknown_ids() -> None:
    data = frame([("a", "x", "purchase", 1), ("a", "x", "purchase", 1), ("b", "y", "view", 1),
                  ("zz", "x", "view", 1)])
    users, items = IdMap(["a", "b"]), IdMap(["x", "y"])
    matrix = interaction_matrix(data, users, items, np.array([1, 2, 3, 4], np.float32))
    assert matrix.shape == (2, 2) and matrix.format == "csr"
    assert matrix.toarray().tolist() == [[3.0, 0.0], [0.0, 3.0]]


def test_item_frame_is_aligned_with_the_index() -> None:
    catalogue = pd.DataFrame({"item_id": ["x", "y"], "title": ["Red Mug", "Tea Pot"],
                              "category": ["kitchen", pd.NA]}).astype("string")
    out = item_frame(catalogue, IdMap(["y", "new", "x"]))
    assert out["item_id"].tolist() == ["y", "new", "x"]
    assert out["text"].tolist() == ["Tea Pot", "", "Red Mug kitchen"]


def test_default_models_are_every_candidate() -> None:
    from shoprec.config import DEFAULT_MODELS, TrainingConfig
    from shoprec.models import CANDIDATES

    # Every candidate trains by default; the blend is built from them when asked for.
    assert set(DEFAULT_MODELS) | {"blend"} == set(CANDIDATES)
    assert TrainingConfig().models == list(DEFAULT_MODELS)


def test_recency_decay_halves_per_half_life() -> None:
    data = frame([("u", "i", "purchase", 1), ("u", "j", "purchase", 1)])
    data["timestamp"] = pd.to_datetime(["2024-01-01", "2024-01-15"], utc=True)
    plain = event_weights(data)
    decayed = event_weights(data, WeightingConfig(recency_half_life_days=14))
    assert decayed[1] == pytest.approx(plain[1])  # the latest event keeps its weight
    assert decayed[0] == pytest.approx(plain[0] / 2)  # two weeks older: half
    later = event_weights(data, WeightingConfig(recency_half_life_days=14),
                          reference=pd.Timestamp("2024-01-29", tz="UTC"))
    assert later[1] == pytest.approx(plain[1] / 2)


def test_id_map_pickles_without_its_caches_and_reads_older_pickles() -> None:
    import pickle

    from shoprec.features import IdMap

    ids = IdMap(["b", "a", "c"])
    assert ids.encode(["a", "zz"]).tolist() == [1, -1]  # builds the lookup
    copy = pickle.loads(pickle.dumps(ids))
    assert copy.__dict__.keys() == ids.__dict__.keys() and copy._lookup is None
    assert copy.encode(["c"]).tolist() == [2] and copy.ids.tolist() == ["b", "a", "c"]
    # A map pickled by an older version held only its index.
    old = IdMap.__new__(IdMap)
    old.__dict__["_index"] = ids._index
    revived = pickle.loads(pickle.dumps(old))
    assert revived.decode([0, 2]).tolist() == ["b", "c"]


def test_matrix_keeps_the_largest_of_repeats_when_asked() -> None:
    data = frame([("a", "x", "purchase", 1), ("a", "x", "view", 1), ("b", "y", "view", 1),
                  ("a", "y", "cart", 1), ("b", "y", "purchase", 1)])
    users, items = IdMap(["a", "b"]), IdMap(["x", "y"])
    weights = np.array([4, 1, 1, 2, 0.5], np.float32)
    matrix = interaction_matrix(data, users, items, weights, repeats="max")
    assert matrix.toarray().tolist() == [[4.0, 2.0], [0.0, 1.0]]
    assert matrix.has_canonical_format
    with pytest.raises(ValueError, match="repeats"):
        interaction_matrix(data, users, items, weights, repeats="mean")


def test_repeats_max_with_decay_keeps_about_the_latest_event_across_parts() -> None:
    from shoprec.config import SplitConfig
    from shoprec.data.splits import split_interactions
    from shoprec.features import encode_split

    days = pd.to_datetime(["2024-01-01", "2024-01-10", "2024-01-20", "2024-01-30",
                           "2024-02-10", "2024-02-20"], utc=True)
    data = frame([("u", "i", "purchase", 3), ("u", "j", "purchase", 1),
                  ("u", "i", "purchase", 1), ("v", "i", "purchase", 1),
                  ("u", "j", "purchase", 1), ("u", "k", "purchase", 1)])
    data["timestamp"] = days
    parts = split_interactions(data, SplitConfig(method="temporal", test_days=5,
                                                 validation_days=15))
    weighting = WeightingConfig(recency_half_life_days=10, repeats="max",
                                quantity_damping="binary")
    encoded = encode_split(parts, weighting)
    i, j = encoded.items.encode(["i", "j"])
    u = encoded.users.encode(["u"])[0]
    # Training ends on 30 Jan: i's latest purchase (20 Jan) is one half-life old.
    assert encoded.train[u, i] == pytest.approx(4 * 0.5)
    # The test history ends on 10 Feb: j's validation purchase that day counts in full,
    # not added to its older one.
    assert encoded.test_history[u, j] == pytest.approx(4.0)
    assert encoded.test_history[u, i] == pytest.approx(4 * 0.5 ** 2.1)


@pytest.mark.parametrize("weighting", [
    WeightingConfig(recency_half_life_days=1.0),  # a year old: decayed to 0.0 in float32
    WeightingConfig(event_weights={"view": 0.0, "cart": 2.0, "purchase": 4.0, "rating": 1.0}),
], ids=["decayed", "weighted-0"])
def test_an_item_weighted_0_is_still_seen_in_validation_and_in_test(
        weighting: WeightingConfig) -> None:
    """A pair stored with weight 0 is masked in the ranking (mask_seen), so it must not be
    relevant either: it was unreachable in validation, and counted as new in test."""
    from shoprec.config import SplitConfig
    from shoprec.data.splits import split_interactions
    from shoprec.evaluation import evaluate
    from shoprec.features import encode_split
    from shoprec.models import Popularity

    old = "view" if weighting.recency_half_life_days is None else "purchase"
    # u had i and m long ago (or only viewed them); i again in validation, m in test.
    data = frame([("u", "i", old, 1), ("u", "m", old, 1), ("v", "j", "purchase", 1),
                  ("v", "i", "purchase", 1), ("v", "m", "purchase", 1),
                  ("u", "j", "purchase", 1), ("u", "i", "purchase", 1),
                  ("u", "m", "purchase", 1), ("u", "k", "purchase", 1)])
    data["timestamp"] = pd.to_datetime(["2023-01-01", "2023-01-01", "2024-01-01",
                                        "2024-01-02", "2024-01-02", "2024-01-03",
                                        "2024-01-20", "2024-02-10", "2024-02-11"], utc=True)
    parts = split_interactions(data, SplitConfig(test_days=5, validation_days=25))
    encoded = encode_split(parts, weighting)
    u = encoded.users.encode(["u"])[0]
    i, m = encoded.items.encode(["i", "m"])
    assert encoded.train[u, m] == 0.0 and m in encoded.train[u].indices
    assert m in encoded.test_history[u].indices  # still stored after combining the parts
    assert encoded.validation[u].nnz == 0 and encoded.test[u].nnz == 0
    assert encoded.dropped["validation_seen_before"] == 1
    assert encoded.dropped["test_seen_before"] == 1
    model = Popularity().fit(encoded.train)
    assert evaluate(model, encoded.train, encoded.validation)["users"] == 0.0


def test_item_features_fitted_in_one_pass_equal_fit_then_transform() -> None:
    """``fit_transform`` analyses each text once and gives the three-pass figures exactly."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from shoprec.features.text import (
        _CHAR,
        _WORD,
        ItemFeatures,
        _clean_char_text,
        item_texts,
    )

    items = pd.DataFrame({
        "item_id": ["a", "b", "c", "d", "e"],
        "title": ["RED HEART T-LIGHT holder", "red heart tlight", "Blue mug mug mug",
                  "Zebra pen, blue ink", ""],
        "category": ["home", "home", "kitchen", None, "office"],
        "brand": ["x", None, "y", "y", None],
        "price": [2.5, 3.0, np.nan, 1.25, 9.0],
    })
    one_pass = ItemFeatures(char_weight=0.5)
    rows, text_rows = one_pass.fit_transform(items)
    three_pass = ItemFeatures(char_weight=0.5).fit(items)
    for got, want in ((rows, three_pass.transform(items)),
                      (text_rows, three_pass.query_vectors(item_texts(items)))):
        assert got.shape == want.shape and got.dtype == want.dtype == np.float32
        for part in ("indptr", "indices", "data"):  # the same arrays, in the same order
            np.testing.assert_array_equal(getattr(got, part), getattr(want, part))
    # The fitted vocabularies and idf are scikit-learn's TF-IDF's on the same texts.
    for fitted, settings, texts in ((one_pass.word_, _WORD, item_texts(items)),
                                    (one_pass.char_, _CHAR,
                                     _clean_char_text(item_texts(items)))):
        reference = TfidfVectorizer(sublinear_tf=True, **settings).fit(texts)
        assert fitted.vocabulary == reference.vocabulary_
        np.testing.assert_array_equal(fitted.idf, reference.idf_.astype(np.float32))
    query = one_pass.query_vectors(["heart t-light"])
    assert query.nnz and (query @ text_rows.T).toarray().argmax() in (0, 1)


@pytest.mark.parametrize("dtype", ["str", "string", object])
def test_is_in_answers_as_pandas_isin(dtype: object) -> None:
    """The hash-index membership test gives ``isin``'s answer, missing values included."""
    from shoprec.data.schema import is_in

    values = pd.Series(["a", "b", None, "c", "a", "15443", "", np.nan], dtype=dtype)
    for allowed in (pd.Series(["a", "15443", "a"], dtype=dtype),
                    pd.Series(["b", None], dtype=dtype), pd.Series(["b", np.nan], dtype=dtype),
                    pd.Series([], dtype=dtype)):
        got = is_in(values, allowed)
        assert got.dtype == bool
        np.testing.assert_array_equal(got, values.isin(allowed).to_numpy(dtype=bool))
        np.testing.assert_array_equal(is_in(pd.Index(values), allowed),
                                      pd.Index(values).isin(allowed))


def test_the_same_rows_in_another_order_make_the_same_matrix() -> None:
    """Repeats were summed in float32 in the file's order: a shuffled export of the same
    rows gave entries differing in their last bits (399 of 60,069 on the bundled sample)."""
    rng = np.random.default_rng(11)
    n = 20_000
    data = pd.DataFrame({"user_id": rng.integers(0, 20, n).astype(str),
                         "item_id": rng.integers(0, 10, n).astype(str)})
    weights = rng.lognormal(0, 2, n).astype(np.float32)
    users, items = IdMap(sorted(set(data["user_id"]))), IdMap(sorted(set(data["item_id"])))
    order = rng.permutation(n)
    first = interaction_matrix(data, users, items, weights)
    shuffled = interaction_matrix(data.iloc[order].reset_index(drop=True), users, items,
                                  weights[order])
    assert first.dtype == np.float32 and first.has_sorted_indices
    np.testing.assert_array_equal(first.toarray(), shuffled.toarray())
