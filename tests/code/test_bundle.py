"""ModelBundle's request paths: the pandas frame (MLflow) and the records (fast server)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shoprec.features.idmap import IdMap
from shoprec.models import ImplicitALS, Popularity
from shoprec.ranking import top_k
from shoprec.registry.bundle import ModelBundle
from shoprec.serving.engine import RECENT_ITEM_WEIGHT


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    rng = np.random.default_rng(3)
    n_users, n_items = 40, 30
    dense = (rng.random((n_users, n_items)) < 0.2) * rng.integers(1, 4, (n_users, n_items))
    history = sp.csr_matrix(dense.astype(np.float32))
    model = ImplicitALS(factors=4, iterations=5, regularization=0.1, seed=1).fit(history)
    return ModelBundle(model=model, users=IdMap([f"u{i}" for i in range(n_users)]),
                       items=IdMap([f"i{i}" for i in range(n_items)]), history=history,
                       fallback=Popularity().fit(history), meta={"model": "mf"},
                       titles=[f"title {i}" for i in range(n_items)])


def test_request_rows_add_recent_items_to_the_stored_history(bundle: ModelBundle) -> None:
    seen = bundle.history[3].indices
    unseen = np.setdiff1d(np.arange(30), seen)
    recent = [f"i{seen[0]}", f"i{unseen[0]}", f"i{unseen[0]}", "no-such-item"]
    rows = bundle.request_rows(["u3", "stranger", "u7", None], [recent, [f"i{unseen[1]}"],
                                                                None, []])
    expected = np.zeros((4, 30), dtype=np.float32)
    expected[0] = bundle.history[3].toarray()[0]
    expected[0, seen[0]] += RECENT_ITEM_WEIGHT  # a click on a bought item adds to it
    expected[0, unseen[0]] += 2 * RECENT_ITEM_WEIGHT  # two clicks count twice
    expected[1, unseen[1]] = RECENT_ITEM_WEIGHT  # a stranger has only their clicks
    expected[2] = bundle.history[7].toarray()[0]
    np.testing.assert_array_equal(rows.toarray(), expected)
    assert rows.has_canonical_format  # sorted, no duplicates: what the models expect


def test_request_rows_keep_the_largest_weight_when_trained_so(bundle: ModelBundle) -> None:
    """A model trained with ``repeats="max"`` has never seen summed weights."""
    from dataclasses import replace

    keeping = replace(bundle, meta={**bundle.meta, "repeats": "max"})
    seen = bundle.history[3].indices
    unseen = np.setdiff1d(np.arange(30), seen)
    rows = keeping.request_rows(["u3"], [[f"i{seen[0]}", f"i{unseen[0]}", f"i{unseen[0]}"]])
    expected = bundle.history[3].toarray()[0]
    expected[seen[0]] = max(expected[seen[0]], RECENT_ITEM_WEIGHT)
    expected[unseen[0]] = RECENT_ITEM_WEIGHT  # two clicks: still one click's weight
    np.testing.assert_array_equal(rows.toarray()[0], expected)
    assert rows.has_canonical_format


def test_records_and_frame_paths_give_the_same_answers(bundle: ModelBundle) -> None:
    requests = [{"user_id": "u1", "k": 5},
                {"user_id": "u2", "recent_items": ["i4", "i9"], "k": 3},
                {"user_id": "stranger", "k": 4},
                {"recent_items": ["i0"]},
                {}]
    answers = bundle.answer(requests)
    frame = bundle.predict(pd.DataFrame(requests)).to_dict("records")
    assert answers == frame
    assert [len(a["item_ids"]) for a in answers] == [5, 3, 4, 10, 10]
    assert [a["source"] for a in answers] == ["model", "model", "popularity", "model",
                                              "popularity"]
    # Nothing the shopper has, or just clicked, comes back.
    assert not {"i4", "i9"} & set(answers[1]["item_ids"])
    owned = {f"i{j}" for j in bundle.history[1].indices}
    assert not owned & set(answers[0]["item_ids"])
    # A shopper with no usable history gets the popularity ranking.
    best, _ = top_k(bundle.fallback.item_scores_[None, :], 4)
    assert answers[2]["item_ids"] == [f"i{j}" for j in best[0]]
    assert answers[0]["titles"] == [f"title {i[1:]}" for i in answers[0]["item_ids"]]
    assert answers[0]["scores"] == sorted(answers[0]["scores"], reverse=True)


def test_explained_answers_name_the_shoppers_own_items(bundle: ModelBundle) -> None:
    requests = [{"user_id": "u1", "k": 4, "explain": True},
                {"user_id": "stranger", "recent_items": ["i4", "i9"], "k": 3, "explain": True},
                {"user_id": "nobody", "k": 2, "explain": True}]
    answers = bundle.answer(requests)
    assert answers == bundle.predict(pd.DataFrame(requests)).to_dict("records")
    owned = [{f"i{j}" for j in bundle.history[1].indices}, {"i4", "i9"}]
    for answer, mine in zip(answers[:2], owned, strict=True):
        assert answer["source"] == "model"
        assert len(answer["explanations"]) == len(answer["item_ids"])
        assert all(answer["explanations"]), "every ALS recommendation has a reason"
        for reasons in answer["explanations"]:
            assert {r["item_id"] for r in reasons} <= mine
            assert all(r["title"] == f"title {r['item_id'][1:]}" and 0 < r["share"] <= 1
                       for r in reasons)
    # Popularity answers do not come from the shopper's items: nothing to explain.
    assert answers[2]["source"] == "popularity" and answers[2]["explanations"] == [[], []]
    # Without the flag the answer is as before; in a frame, such rows hold None.
    plain = bundle.answer([{"user_id": "u1", "k": 4}])[0]
    assert "explanations" not in plain and plain["item_ids"] == answers[0]["item_ids"]
    mixed = bundle.predict(pd.DataFrame([{"user_id": "u1", "explain": False},
                                         {"user_id": "u1", "explain": True}]))
    assert mixed["explanations"][0] is None and len(mixed["explanations"][1]) == 10


def test_diversity_reranks_the_models_answer_towards_rarer_items(
        bundle: ModelBundle, tmp_path: Path) -> None:
    users = [{"user_id": f"u{i}", "k": 5} for i in range(20)]
    plain = bundle.answer(users)
    diverse = bundle.answer([{**r, "diversity": 1.0} for r in users])
    assert diverse == bundle.predict(pd.DataFrame([{**r, "diversity": 1.0} for r in users])
                                     ).to_dict("records")
    index = {f"i{j}": j for j in range(30)}

    def novelty(answers: list[dict]) -> float:
        return float(np.mean([bundle.novelty[index[i]] for a in answers for i in a["item_ids"]]))

    assert novelty(diverse) > novelty(plain)
    # Never an item the shopper has; the pool is the model's best items, so with k=5 of
    # 30 items something changes for at least one shopper.
    for answer, user in zip(diverse, range(20), strict=True):
        assert not {f"i{j}" for j in bundle.history[user].indices} & set(answer["item_ids"])
    assert any(d["item_ids"] != p["item_ids"] for d, p in zip(diverse, plain, strict=True))
    # In one batch, a request without diversity keeps the model's own scores and order.
    mixed = bundle.answer([{**users[0], "diversity": 1.0}, users[1]])
    assert mixed == [diverse[0], plain[1]]
    # Weight 0 is the model's own answer; the bundle's default applies when unset.
    assert bundle.answer([{**r, "diversity": 0} for r in users]) == plain
    bundle.diversity = 1.0
    try:
        assert bundle.answer(users) == diverse
    finally:
        bundle.diversity = 0.0
    # Batch scoring re-ranks the same way (stored histories, the same pool and weights).
    from shoprec.batch import write_recommendations

    write_recommendations(bundle, tmp_path, k=5, diversity=1.0)
    frame = pd.read_parquet(tmp_path)
    first = frame[frame["user_id"] == "u0"].sort_values("rank")["item_id"].tolist()
    assert first == diverse[0]["item_ids"]


@pytest.mark.parametrize(("request_", "message"), [
    ({"shopper": "u1"}, "unknown request field(s) shopper"),
    ("u1", "a request is an object"),
    ({"user_id": "u1", "k": 0}, "k must be between 1 and 1000"),
    ({"user_id": "u1", "k": "ten"}, "k must be an integer"),
    ({"user_id": "u1", "recent_items": 5}, "recent_items must be a list"),
    ({"query": "mug"}, "no search index"),
    ({"user_id": "u1", "recent_items": "i3"}, "recent_items must be a list of item ids"),
    ({"user_id": "u1", "k": float("inf")}, "k must be an integer"),
    ({"user_id": "u1", "k": 1e400}, "k must be an integer"),
    ({"user_id": "u1", "k": 2.5}, "k must be an integer"),
    ({"user_id": "u1", "k": True}, "k must be an integer"),
    ({"user_id": "u1", "explain": "yes"}, "explain must be true or false"),
    ({"user_id": "u1", "diversity": 1.5}, "diversity must be a number between 0 and 1"),
    ({"user_id": "u1", "diversity": "high"}, "diversity must be a number between 0 and 1"),
])
def test_malformed_records_are_refused_with_the_reason(bundle: ModelBundle, request_,
                                                       message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bundle.answer([request_])


def test_ids_have_one_text_form_in_requests() -> None:
    """A numeric id that went through a float column (15443.0) is the same shopper."""
    rng = np.random.default_rng(5)
    dense = (rng.random((3, 6)) < 0.5).astype(np.float32)
    dense[1, 2] = 1.0
    history = sp.csr_matrix(dense)
    model = Popularity().fit(history)
    numeric = ModelBundle(model=model, users=IdMap(["15443", "17850", "3"]),
                          items=IdMap(["22423", "85123", "7", "8", "9", "10"]), history=history,
                          fallback=model, meta={"model": "popularity"})
    for same in ("17850", "17850.0", 17850.0, " 17850 "):
        rows = numeric.request_rows([same], [["7.0"]]).toarray()[0]
        # The stored history of 17850 plus a click on item "7".
        expected = history[1].toarray()[0]
        expected[2] += RECENT_ITEM_WEIGHT
        np.testing.assert_allclose(rows, expected, err_msg=str(same))


def test_a_lazy_bundle_reads_only_the_parts_a_request_uses(tmp_path: Path) -> None:
    """What ``shoprec recommend`` loads: a recommendation never reads the search index (nor
    scikit-learn), a search never reads the model (nor TensorFlow); the answers are the
    eagerly loaded bundle's."""
    from shoprec.models import ContentRecommender
    from shoprec.models.base import FitContext

    rng = np.random.default_rng(5)
    history = sp.csr_matrix((rng.random((30, 12)) < 0.3).astype(np.float32))
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(12)],
                          "title": [f"red mug {i}" if i % 2 else f"blue lamp {i}"
                                    for i in range(12)]})
    eager = ModelBundle(
        model=ImplicitALS(factors=3, iterations=3, seed=1).fit(history),
        users=IdMap([f"u{i}" for i in range(30)]), items=IdMap(items["item_id"].tolist()),
        history=history, fallback=Popularity().fit(history), meta={"model": "mf"},
        search=ContentRecommender().fit(history, FitContext(items=items)),
        titles=items["title"].tolist())
    eager.save(tmp_path / "bundle")
    requests = [{"user_id": "u1", "k": 3}, {"query": "red mug", "k": 3}]
    expected = ModelBundle.load(tmp_path / "bundle").answer(requests)

    lazy = ModelBundle.load(tmp_path / "bundle", lazy=True)
    assert lazy.answer(requests[:1]) == expected[:1]
    assert set(lazy._pending) == {"search"}  # the model was read, the index was not
    lazy = ModelBundle.load(tmp_path / "bundle", lazy=True)
    assert lazy.answer(requests[1:]) == expected[1:]
    assert set(lazy._pending) == {"model"}
    assert lazy.answer(requests) == expected
    assert not lazy._pending
    # A part that fails to load stays pending: the next use tries again, never sees None.
    lazy = ModelBundle.load(tmp_path / "bundle", lazy=True)
    attempts = []
    read = lazy._pending["model"]

    def flaky() -> object:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("disk hiccup")
        return read()

    lazy._pending["model"] = flaky
    with pytest.raises(OSError, match="disk hiccup"):
        lazy.answer(requests[:1])
    assert lazy.answer(requests[:1]) == expected[:1] and len(attempts) == 2
    # In a fresh interpreter, a recommendation from a lazy bundle imports no scikit-learn.
    script = ("import sys; from shoprec.registry.bundle import ModelBundle; "
              f"b = ModelBundle.load({str(tmp_path / 'bundle')!r}, lazy=True); "
              "b.answer([{'user_id': 'u1'}]); print('sklearn' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"


def test_similar_items_come_from_the_model_or_from_content(bundle: ModelBundle) -> None:
    # ALS has item-item structure: its factors' cosine.
    answer = bundle.answer([{"item_id": "i3", "k": 4}])[0]
    assert answer["source"] == "similar:mf" and len(answer["item_ids"]) == 4
    assert "i3" not in answer["item_ids"]
    factors = bundle.model.item_factors_
    cosine = factors @ factors[3] / (np.linalg.norm(factors, axis=1) * np.linalg.norm(factors[3]))
    cosine[3] = -np.inf
    assert answer["item_ids"][0] == f"i{int(np.argmax(cosine))}"
    # A family without it (popularity) and no content index: refused, saying why.
    plain = ModelBundle(model=bundle.fallback, users=bundle.users, items=bundle.items,
                        history=bundle.history, fallback=bundle.fallback, meta={})
    with pytest.raises(ValueError, match="no item-item structure and no content index"):
        plain.answer([{"item_id": "i3"}])
    # A product the model does not know (added since): that record answers empty, and the
    # other records of the request are answered (one such record failed them all).
    unknown, known = bundle.answer([{"item_id": "nope", "k": 3}, {"item_id": "i3", "k": 3}])
    assert unknown["item_ids"] == [] and unknown["source"] == "unknown_item"
    assert known["source"].startswith("similar:") and len(known["item_ids"]) == 3


def test_live_sessions_count_as_recent_items(bundle: ModelBundle, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from shoprec.privacy import SUPPRESSIONS_ENV, SuppressionList
    from shoprec.serving.sessions import SessionStore

    monkeypatch.setenv(SUPPRESSIONS_ENV, str(tmp_path / "erase.jsonl"))
    store = SessionStore(tmp_path / "sessions.sqlite", max_events=3)
    bundle.sessions = store
    try:
        plain = bundle.answer([{"user_id": "u5"}])[0]
        for item in ("i1", "i2", "i7", "i8"):
            store.add("u5", item, "cart")
        # Bounded: the newest three events only.
        assert store.recent(["u5"]) == {"u5": ["i2", "i7", "i8"]}
        bundle.sessions = None
        expected = bundle.answer([{"user_id": "u5", "recent_items": ["i2", "i7", "i8"]}])
        bundle.sessions = store
        assert bundle.answer([{"user_id": "u5"}]) == expected != [plain]
        with pytest.raises(ValueError, match="event must be one of"):
            store.add_many([("u6", "i1", "view", None), ("u6", "i2", "teleport", None)])
        assert store.recent(["u6"]) == {}  # all or nothing
        # The names training reads (GA4, Segment) are read live too; "" is no name.
        store.add_many([("u9", "i1", "add_to_cart", None), ("u9", "i2", "view_item", None)])
        assert store.recent(["u9"]) == {"u9": ["i1", "i2"]}
        with pytest.raises(ValueError, match="event must be one of"):
            store.add("u9", "i3", "")
        with pytest.raises(ValueError, match="finite"):
            store.add("u6", "i1", "view", float("nan"))
        # A clock far off: the event neither expires at once nor never.
        late = store.add("u7", "i1", "view", 1e10)
        early = store.add("u7", "i2", "view", 0.0)
        with pytest.raises(ValueError, match="reads as milliseconds"):
            store.add("u7", "i3", "view", 1e12)  # Date.now(): milliseconds
        assert late["at"] <= time.time() + 61 and early["at"] >= time.time() - 5
        assert store.recent(["u7"]) == {"u7": ["i2", "i1"]}
        # Ids and event types a request can get wrong (found by a second reader: Infinity
        # was stored as the shopper "inf", 0 as a view, a list as its text).
        for user, item, event, words in ((float("inf"), "i1", "view", "user_id must be"),
                                         ("u8", ["i1"], "view", "item_id must be"),
                                         ("u8", "i1", 0, "event must be one of"),
                                         ("u8", "i1", "rating", "event must be one of"),
                                         (True, "i1", "view", "user_id must be")):
            with pytest.raises(ValueError, match=words):
                store.add(user, item, event)
        assert store.recent(["u8", "inf", "True", "1"]) == {}
        assert store.add(17850, 22423.0)["item_id"] == "22423"  # numbers are ids
        # The write-ahead log is cut back when it is checkpointed, not kept at its peak.
        db = store._connection()
        assert db.execute("PRAGMA journal_size_limit").fetchone()[0] == 16 << 20
        store._swept = 0.0  # the next write sweeps and checkpoints
        store.add("u9", "i1")
        wal = Path(f"{store.path}-wal")
        assert not wal.exists() or wal.stat().st_size == 0
        # An erased shopper's session is not used either.
        SuppressionList().add("u5")
        assert bundle.answer([{"user_id": "u5"}])[0]["source"] == "popularity"
    finally:
        bundle.sessions = None


@pytest.mark.parametrize("family", ["mf", "ease"])
def test_a_history_of_products_nobody_bought_is_answered_by_popularity(
        family: str, tmp_path: Path) -> None:
    """A new product's first clicks gave every item the score 0, and the answer was the
    catalogue's order labelled as the model's."""
    from shoprec.models import EASE

    rng = np.random.default_rng(5)
    dense = (rng.random((40, 30)) < 0.25).astype(np.float32)
    dense[:, 27:] = 0  # three products in the catalogue, bought by nobody yet
    dense[:, 26] = 0
    dense[26:, :] = 0
    dense[26:, 26] = 1  # a gift card: the best seller, but never bought with anything else
    history = sp.csr_matrix(dense)
    model = (ImplicitALS(factors=4, iterations=5, regularization=0.1, seed=1)
             if family == "mf" else EASE(regularization=10.0)).fit(history)
    shop = ModelBundle(model=model, users=IdMap([f"u{i}" for i in range(40)]),
                       items=IdMap([f"i{i}" for i in range(30)]), history=history,
                       fallback=Popularity().fit(history), meta={"model": family})
    new, mixed = shop.answer([{"recent_items": ["i28"], "k": 5},
                              {"recent_items": ["i28", "i3"], "k": 5}])
    best, _ = top_k(shop.fallback.item_scores_[None, :], 5)
    assert new["source"] == "popularity" and new["item_ids"] == [f"i{j}" for j in best[0]]
    # One known product is enough for the model to rank.
    assert mixed["source"] == "model" and any(s > 0 for s in mixed["scores"])
    assert shop.answer([{"recent_items": ["i28"], "k": 5, "diversity": 0.5}])[0][
        "source"] == "popularity"
    # A product bought only on its own ties with nothing either: popularity, without it
    # (it came back at rank 1, the shopper's own).
    if family == "ease":  # ALS gives it factors of its own; EASE a row of zeros
        others = shop.fallback.item_scores_.astype(np.float64)[None, :].copy()
        others[0, 26] = -np.inf
        best = top_k(others, 5)[0]
        for request in ({"recent_items": ["i26"], "k": 5}, {"user_id": "u35", "k": 5}):
            answer = shop.answer([request])[0]
            assert answer["source"] == "popularity" and "i26" not in answer["item_ids"]
            assert answer["item_ids"] == [f"i{j}" for j in best[0]]
        # Asked for more than is left (the list padded): still no ranking, still popularity.
        padded = shop.answer([{"user_id": "u35", "k": 30}])[0]
        assert padded["source"] == "popularity" and "i26" not in padded["item_ids"]
        # The batch answers such a shopper alike (it wrote catalogue order, scores 0).
        from shoprec.batch import write_recommendations

        write_recommendations(shop, tmp_path / "batch", k=5, model_version="1")
        lists = pd.read_parquet(tmp_path / "batch")
        mine = lists[lists["user_id"] == "u35"].sort_values("rank")
        assert mine["item_id"].tolist() == [f"i{j}" for j in best[0]]


def test_a_shopper_whose_products_only_go_with_each_other_gets_popularity_in_batch(
        tmp_path: Path) -> None:
    """A reader's: two products bought together by one shopper alone score each other, so
    the row was not all zero until they were masked, and the batch wrote catalogue order
    with scores 0 where a served answer gave popularity."""
    from shoprec.batch import write_recommendations
    from shoprec.models import EASE

    rng = np.random.default_rng(7)
    dense = (rng.random((40, 30)) < 0.25).astype(np.float32)
    dense[:, 26:] = 0
    dense[39, :] = 0
    dense[39, 27] = dense[39, 28] = 1  # bought together, by this shopper alone
    history = sp.csr_matrix(dense)
    shop = ModelBundle(model=EASE(regularization=10.0).fit(history),
                       users=IdMap([f"u{i}" for i in range(40)]),
                       items=IdMap([f"i{i}" for i in range(30)]), history=history,
                       fallback=Popularity().fit(history), meta={"model": "ease"})
    served = shop.answer([{"user_id": "u39", "k": 5}])[0]
    assert served["source"] == "popularity"
    write_recommendations(shop, tmp_path / "batch", k=5, model_version="1")
    lists = pd.read_parquet(tmp_path / "batch")
    mine = lists[lists["user_id"] == "u39"].sort_values("rank")
    assert mine["item_id"].tolist() == served["item_ids"]
    assert (mine["score"] > 0).all()
    # Everyone else is ranked by the model, as before.
    other = lists[lists["user_id"] == "u0"].sort_values("rank")
    assert other["item_id"].tolist() == shop.answer([{"user_id": "u0", "k": 5}])[0]["item_ids"]


def test_products_with_no_units_left_are_never_answered(
        bundle: ModelBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve --stock`: a discontinued product kept coming back in real time (only the batch
    could hold it back, and only with a demand forecast)."""
    from dataclasses import replace

    from shoprec.registry.served import apply_serving_environment
    from shoprec.serving.engine import STOCK_ENV

    requests = [{"user_id": "u1", "k": 5}, {"user_id": "stranger", "k": 5},
                {"user_id": "u2", "k": 5, "diversity": 0.7}, {"item_id": "i3", "k": 5},
                {"recent_items": ["i0"], "k": 5}]
    before = bundle.answer(requests)
    gone = {a["item_ids"][0] for a in before}  # every answer's first product
    stock = tmp_path / "stock.csv"
    stock.write_text("item_id,units\n" + "".join(f"{i},0\n" for i in sorted(gone))
                     + "i29,4\n")
    from shoprec.inventory import held_ids, read_stock

    monkeypatch.setenv(STOCK_ENV, json.dumps(held_ids(read_stock(stock))))
    served = replace(bundle)
    apply_serving_environment(served)
    assert served.held_back is not None and int(served.held_back.sum()) == len(gone)
    after = served.answer(requests)
    for old, new in zip(before, after, strict=True):
        assert not gone & set(new["item_ids"]) and len(new["item_ids"]) == 5
        assert new["source"] == old["source"]
        # The rest keep their order: the held-back products' places are taken from below.
        kept = [i for i in old["item_ids"] if i not in gone]
        assert new["item_ids"][:len(kept)] == kept
    assert bundle.answer(requests) == before  # the bundle as loaded is unchanged
    # Asked for more than is left to answer: the lists hold what is left, none held back.
    everything = served.answer([{"user_id": "stranger", "k": 30}])[0]["item_ids"]
    assert len(everything) == 30 - len(gone) and not gone & set(everything)
