"""The serving engine: answers recommendation and search requests from a model bundle.

Request parsing (DESIGN.md request schema), the gathering of each shopper's rows from the
bundle's CSR history, and the routing of every request: a query to search (personalised
by the shopper's history), a shopper with history to the model, anyone else to
popularity. The MLflow pyfunc model, the real-time server and batch scoring all answer
through it.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shoprec.data.schema import canonical_id
from shoprec.privacy import ERASED_USER, KEY_ENV, is_pseudonym, subject
from shoprec.ranking import diversity_pool, rerank_for_novelty, top_k

if TYPE_CHECKING:
    from shoprec.registry.bundle import ModelBundle

logger = logging.getLogger(__name__)

#: Default number of recommendations per request.
DEFAULT_K = 10
#: Fields of a request (DESIGN.md); every one is optional.
REQUEST_FIELDS = ("user_id", "recent_items", "query", "k", "explain", "diversity", "item_id")
#: History items named per explained recommendation.
EXPLAIN_TOP = 3
#: Environment variable with the server's default diversity weight (``serve --diversity``).
DIVERSITY_ENV = "SHOPREC_DIVERSITY"
#: Environment variable set to 1 by ``serve --explanations``: ``explain`` is answered.
EXPLANATIONS_ENV = "SHOPREC_EXPLANATIONS"
#: The ids of products with no units left (a JSON list), from ``shoprec serve --stock``
#: for its workers: never answered. The ids, not the file: a worker started again reads
#: what the server started with.
STOCK_ENV = "SHOPREC_SERVE_HELD_BACK"
#: Whether the request being answered may see shopper data (explanations). ``shoprec
#: serve`` on a loopback address grants it per request, to those carrying its access
#: token; everywhere else (the CLI, batch, a server started with --explanations) it is on.
EXPLAIN_GRANTED: ContextVar[bool] = ContextVar("shoprec_explain_granted", default=True)


def default_diversity(value: str | None) -> float:
    """The default re-ranking weight from its environment variable's text (unset: 0).

    Raises:
        ValueError: Not a number between 0 and 1.
    """
    if value is None or not value.strip():
        return 0.0
    try:
        return _weight(float(value), 0.0)
    except ValueError:
        raise ValueError(f"{DIVERSITY_ENV} must be a number between 0 and 1, got "
                         f"{value!r}") from None
#: The ``source`` of a cross-sell answer for a product the model does not know.
UNKNOWN_ITEM = "unknown_item"
#: Weight of an item in a request's ``recent_items`` (a view in the default weighting).
RECENT_ITEM_WEIGHT = 1.0


def stored_user_ids(bundle: ModelBundle, user_ids: list[Any]) -> list[str]:
    """User ids as the model stores them: canonical text, pseudonymised when it is.

    With the key (see :attr:`ModelBundle.user_key`) a raw id becomes its pseudonym and a
    pseudonym is taken as it is; without it, ids are taken as given.
    """
    # A pseudonym typed in capitals is that pseudonym (as `shoprec forget` reads it).
    texts = [t.lower() if not is_pseudonym(t) and is_pseudonym(t.lower()) else t
             for t in (_text(u, "user_id") for u in user_ids)]
    key = bundle.user_key
    if key is not None:
        listed = bundle.erased_subjects()
        # An erasure recorded without the key holds the raw id's subject, which the model's
        # pseudonym does not match: the id as given is checked too.
        texts = [t if not t or is_pseudonym(t) else
                 ERASED_USER if listed and subject(t) in listed else
                 key.pseudonyms([t])[0] for t in texts]
    elif bundle.meta.get("pseudonym_key_id") and any(
            t and not is_pseudonym(t) for t in texts):
        # Taken as given, a raw id would be nobody (popularity, silently) and a live event
        # would store it, where the shop keeps no raw id.
        raise ValueError(f"this model's shoppers are pseudonyms and {KEY_ENV} is not set "
                         "here: send user_id as its pseudonym (p_ and 32 hex digits), or set "
                         "the training run's key (for `shoprec serve`, in its environment)")
    return texts


def request_rows(bundle: ModelBundle, user_ids: list[Any], recent: list[Any],
                 stored: list[str] | None = None) -> sp.csr_matrix:
    """Interaction rows for requests: the user's stored history plus recent items.

    Unknown users and unknown item ids contribute nothing. ``stored``: the ids as the model
    stores them, when the caller has them already (:func:`stored_user_ids`).
    """
    n = len(user_ids)
    user_index = bundle.users.encode(stored if stored is not None
                                     else stored_user_ids(bundle, user_ids))
    # An erased shopper's stored history is no longer used (what they send still is).
    erased = bundle.suppressed_rows()
    if len(erased):
        user_index = np.where(np.isin(user_index, erased), -1, user_index)
    history = bundle.history
    # Gathered from the CSR arrays directly: a served request is one row, and each
    # scipy constructor or fancy index costs tens of microseconds.
    known = user_index >= 0
    starts = np.where(known, history.indptr[np.maximum(user_index, 0)], 0)
    lengths = np.where(known, history.indptr[np.maximum(user_index, 0) + 1] - starts, 0)
    offsets = np.cumsum(lengths) - lengths
    positions = np.arange(lengths.sum()) + np.repeat(starts - offsets, lengths)
    lists = [[_text(i, "an item of recent_items") for i in _as_list(items)]
             for items in recent]
    clicked = bundle.items.encode([i for x in lists for i in x])
    owners = np.repeat(np.arange(n), [len(x) for x in lists])
    found = clicked >= 0
    rows = np.concatenate([np.repeat(np.arange(n), lengths), owners[found]])
    cols = np.concatenate([history.indices[positions], clicked[found]])
    data = np.concatenate([history.data[positions],
                           np.full(found.sum(), RECENT_ITEM_WEIGHT, np.float32)])
    # Duplicate (row, item) pairs combine as the training matrix's repeated events did
    # (summed, like repeated clicks, or the largest kept); sorted keys give canonical CSR
    # (sorted indices, no duplicates) in one pass.
    keys, inverse = np.unique(rows.astype(np.int64) * len(bundle.items) + cols,
                              return_inverse=True)
    if bundle.meta.get("repeats", "sum") == "max":
        summed = np.zeros(len(keys), np.float32)
        np.maximum.at(summed, inverse, data)
    else:
        summed = np.bincount(inverse, weights=data, minlength=len(keys)).astype(np.float32)
    key_rows, key_cols = np.divmod(keys, len(bundle.items))
    indptr = np.searchsorted(key_rows, np.arange(n + 1))
    return sp.csr_matrix((summed, key_cols.astype(np.int32), indptr),
                         shape=(n, len(bundle.items)))

def answer(bundle: ModelBundle, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answer request records without pandas (the real-time server's path).

    Args:
        bundle: The registered model's bundle.
        requests: One dict per request with the optional keys of DESIGN.md's request
            schema (``user_id``, ``recent_items``, ``query``, ``k``, ``explain``,
            ``diversity``).

    Returns:
        One dict per request with ``item_ids``, ``scores``, ``titles`` and ``source``,
        as in :func:`predict`, and ``explanations`` when the request set ``explain``.

    Raises:
        ValueError: A request is not a mapping, has a field outside the schema or a
            malformed value.
    """
    for request in requests:
        if not isinstance(request, dict):
            raise ValueError(f"a request is an object with the fields "
                             f"{', '.join(REQUEST_FIELDS)}, got {request!r}")
        _check_fields(request)
    columns = {f: [r.get(f) for r in requests] for f in REQUEST_FIELDS}
    ids, scores, titles, source, why = _rank(bundle, **columns)
    out = [{"item_ids": i, "scores": s, "titles": t, "source": c}
           for i, s, t, c in zip(ids, scores, titles, source, strict=True)]
    for response, explanation in zip(out, why, strict=True):
        if explanation is not None:
            response["explanations"] = explanation
    return out

def predict(bundle: ModelBundle, requests: pd.DataFrame) -> pd.DataFrame:
    """Answer a request frame (DESIGN.md request schema).

    Args:
        bundle: The registered model's bundle.
        requests: One row per request; optional columns ``user_id``, ``recent_items``
            (list of item ids), ``query`` (search text), ``k``, ``explain`` (bool) and
            ``diversity`` (weight in [0, 1] of the novelty re-ranking of the model's
            answers, :func:`~shoprec.ranking.rerank_for_novelty`; default: the bundle's
            ``diversity``, 0 unless the server was started with ``--diversity``). With a
            weight above 0, ``scores`` are the re-ranked blend, not the model's scores.

    Returns:
        One row per request: ``item_ids``, ``scores`` and ``titles`` lists, best first,
        and ``source``: ``search`` for a query (personalised by the shopper's history
        when there is one), ``model``, or ``popularity`` for a shopper with no usable
        history. When a request sets ``explain``, an ``explanations`` column too: for
        each recommended item, the history items behind it (see :func:`_explanations`).
    """
    _check_fields(requests.columns)
    n = len(requests)
    columns = {f: requests[f].tolist() if f in requests else [None] * n
               for f in REQUEST_FIELDS}
    ids, scores, titles, source, why = _rank(bundle, **columns)
    frame = pd.DataFrame({"item_ids": ids, "scores": scores, "titles": titles,
                          "source": source})
    if any(w is not None for w in why):
        frame["explanations"] = why
    return frame

#: What :func:`_rank` returns per request: ids, scores, titles, source, explanations.
Ranked = tuple[list[list[str]], list[list[float]], list[list[str]], list[str],
               list[list[list[dict[str, Any]]] | None]]


def _rank(bundle: ModelBundle, user_id: list[Any], recent_items: list[Any], query: list[Any],
          k: list[Any], explain: list[Any], diversity: list[Any],
          item_id: list[Any]) -> Ranked:
    """Rank items for requests given field by field; one list entry per request."""
    n = len(user_id)
    stored = stored_user_ids(bundle, user_id)
    if bundle.sessions is not None:
        recent_items = _with_sessions(bundle, stored, recent_items)
    queries = [_text(q, "query").strip() for q in query]
    related = ["" if q else _text(i, "item_id").strip()
               for q, i in zip(queries, item_id, strict=True)]
    ks = [_k(v) for v in k]
    explains = [_flag(v, "explain") for v in explain]
    if any(explains) and not bundle.explanations:
        raise ValueError("this server does not explain recommendations (an explanation names "
                         "the shopper's past purchases to whoever asks); start it with "
                         "`shoprec serve --explanations` to allow it")
    if any(explains) and not EXPLAIN_GRANTED.get():
        raise ValueError("this server explains only requests that carry its access token "
                         "(header X-Shoprec-Token: the token in the storefront link "
                         "`shoprec serve` printed)")
    weights = np.array([_weight(v, bundle.diversity) for v in diversity])
    rows = request_rows(bundle, user_id, recent_items, stored)
    max_k = max(ks) if ks else DEFAULT_K
    held = bundle.held_back
    # Products with no units left (`serve --stock`) are never answered: each path is asked
    # for as many more as there are such products, and they are dropped at the end.
    fetch = max_k if held is None else max(1, min(len(held), max_k + int(held.sum())))
    has_history = np.diff(rows.indptr) > 0
    is_search = np.array([bool(q) for q in queries], dtype=bool)
    # Read only when asked: a bundle loaded lazily then never loads its search index.
    search = bundle.search if is_search.any() else None
    if is_search.any() and search is None:
        raise ValueError("this model has no search index (its items had no title, "
                         "description, category or brand; train with --items to add "
                         "them), so 'query' is not supported")
    top = np.full((n, fetch), -1, dtype=np.int64)
    values = np.full((n, fetch), -np.inf, dtype=np.float32)
    source = ["model" if h else "popularity" for h in has_history]
    for group in (np.flatnonzero(is_search & has_history),
                  np.flatnonzero(is_search & ~has_history)):
        if len(group):
            personal_rows = rows[group] if has_history[group[0]] else None
            assert search is not None  # refused above when a query has no index
            top[group], values[group] = search.search(
                [queries[i] for i in group], fetch, personal_rows)
            for i in group:
                source[i] = "search"
    is_similar = np.array([bool(i) for i in related], dtype=bool)
    for asked_row in np.flatnonzero(is_similar):
        top[asked_row], values[asked_row], source[asked_row] = _similar(
            bundle, related[asked_row], fetch)
    is_search = is_search | is_similar  # neither is a recommendation for the shopper
    personal = np.flatnonzero(~is_search & has_history)
    keeps_seen = bundle.keeps_seen
    if len(personal):
        subset = rows if len(personal) == n else rows[personal]
        asked = weights[personal] > 0
        if asked.any():
            # The model's best items; rows that asked for diversity are re-ranked with
            # rarity, the others keep the model's own order and scores.
            pool, pool_values = bundle.model.recommend(subset, k=diversity_pool(fetch),
                                                        exclude_seen=not keeps_seen)
            top[personal], values[personal] = pool[:, :fetch], pool_values[:, :fetch]
            blank = _blank(personal, values)
            mixed = personal[asked]
            top[mixed], values[mixed] = rerank_for_novelty(
                pool[asked], pool_values[asked], bundle.novelty, fetch,
                weights[personal][asked])
        else:
            top[personal], values[personal] = bundle.model.recommend(
                subset, k=fetch, exclude_seen=not keeps_seen)
            blank = _blank(personal, values)
        if len(blank):
            # Popularity, less what the shopper has or just touched (a product bought, but
            # never with anything else, also scores every item 0, and is in the history).
            top[blank], values[blank] = bundle.fallback.recommend(rows[blank], k=fetch,
                                                                  exclude_seen=not keeps_seen)
            for r in blank:
                source[r] = "popularity"
    cold = np.flatnonzero(~is_search & ~has_history)
    if len(cold):
        top[cold], values[cold] = _popular(bundle, rows[cold], fetch)
    if held is not None:
        top, values = _without(top, values, held, max_k)
    ids = bundle.items.ids
    titles = bundle.title_array
    out_ids, out_scores, out_titles = [], [], []
    why: list[list[list[dict[str, Any]]] | None] = []
    for r in range(n):
        chosen = top[r, : ks[r]]
        chosen = chosen[chosen >= 0]
        out_ids.append(ids[chosen].tolist())
        out_scores.append(values[r, : len(chosen)].tolist())
        out_titles.append(titles[chosen].tolist())
        why.append(None if not explains[r] else
                   _explanations(bundle, rows[r], chosen) if source[r] == "model" else
                   [[] for _ in chosen])
    return out_ids, out_scores, out_titles, source, why


def _explanations(bundle: ModelBundle, row: sp.csr_matrix,
                  chosen: np.ndarray) -> list[list[dict[str, Any]]]:
    """For each recommended item, the history items that raised it most, with shares.

    Only the model's answers are explained (a search or popularity answer does not come
    from the shopper's items, so its entries are empty); the model's own
    :meth:`~shoprec.models.base.Recommender.explain` decides how.
    """
    ids, titles = bundle.items.ids, bundle.title_array
    return [[{"item_id": str(ids[h]), "title": str(titles[h]), "share": round(share, 4)}
             for h, share in because]
            for because in bundle.model.explain(row, chosen, top=EXPLAIN_TOP)]

def _similar(bundle: ModelBundle, item: str, k: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Cross-sell: items related to ``item``.

    By the model's item-item structure where it has one (``source`` ``similar:<model>``),
    else by content (``similar:content``); a short list from the model (a pruned ease) is
    topped up by content (``similar:<model>+content``). A known item nothing relates to
    gets an empty list, and so does an item the model does not know (``source``
    ``unknown_item``): a product added since the model was trained is no bad request, and
    one such record failed every other record of its request.

    Raises:
        ValueError: The model has no item-item structure and there is no content index.
    """
    index = int(bundle.items.encode([item])[0])
    if index < 0:
        return np.full(k, -1, dtype=np.int64), np.full(k, -np.inf, dtype=np.float32), \
            UNKNOWN_ITEM
    found = bundle.model.similar_items(index, k)
    name = bundle.model.name
    chosen: list[int] = list(found[0]) if found is not None else []
    values: list[float] = list(found[1]) if found is not None else []
    if found is None and bundle.search is None:
        raise ValueError("this model has no item-item structure and no content index "
                         "(train with --items), so 'item_id' is not supported")
    source = f"similar:{name}" if found is not None else "similar:content"
    if len(chosen) < k and bundle.search is not None:
        extra, extra_values = bundle.search.similar_items(index, k)
        added = [(int(i), float(v)) for i, v in zip(extra, extra_values, strict=True)
                 if int(i) not in set(chosen)][: k - len(chosen)]
        if added and found is not None and chosen:
            source = f"similar:{name}+content"
        elif added and not chosen:
            source = "similar:content"
        chosen += [i for i, _ in added]
        values += [v for _, v in added]
    indices = np.full(k, -1, dtype=np.int64)
    scores = np.full(k, -np.inf, dtype=np.float32)
    indices[: len(chosen)] = chosen[:k]
    scores[: len(chosen)] = values[:k]
    return indices, scores, source


def _with_sessions(bundle: ModelBundle, stored: list[str], recent: list[Any]) -> list[Any]:
    """Each request's recent items plus what its shopper did in their live session.

    A session store that cannot be read (locked, gone) is logged and left out: the answer
    comes from the stored history and the request alone.
    """
    import sqlite3

    assert bundle.sessions is not None
    # An erased shopper's live session is not used either.
    asking = [u if u and not gone else "" for u, gone in zip(stored, bundle.erased(stored),
                                                            strict=True)]
    try:
        sessions = bundle.sessions.recent([u for u in asking if u])
    except sqlite3.Error as exc:
        logger.warning("live sessions left out of an answer: %s", exc)
        return recent
    if not sessions:
        return recent
    return [[*_as_list(items), *sessions.get(user, [])] if user in sessions else items
            for user, items in zip(asking, recent, strict=True)]


def _without(top: np.ndarray, values: np.ndarray, held: np.ndarray,
             k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's first ``k`` items that are not held back, in their order."""
    keep = (top >= 0) & ~held[np.where(top >= 0, top, 0)]
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(keep, order, axis=1)
    return (np.where(kept, np.take_along_axis(top, order, axis=1), -1),
            np.where(kept, np.take_along_axis(values, order, axis=1), -np.inf))


def _blank(personal: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The rows of ``personal`` whose model scores are all 0: no ranking at all.

    A history of products nobody had bought when the model was trained (a new product's
    first clicks), or bought only on their own, gives every item the same score, 0, and
    its "ranking" would be catalogue order; such a shopper is answered by popularity.
    """
    # Padding (-inf: fewer items eligible than asked for) is no score either.
    scored = values[personal]
    return personal[np.all((scored == 0.0) | ~np.isfinite(scored), axis=1)]


def _popular(bundle: ModelBundle, rows: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` by popularity; every cold row gets the same answer, ranked once."""
    top, values = top_k(bundle.fallback.score(rows[:1]), k)
    return np.repeat(top, rows.shape[0], axis=0), np.repeat(values, rows.shape[0], axis=0)



def _check_fields(fields: Any) -> None:
    unknown = sorted(set(map(str, fields)) - set(REQUEST_FIELDS))
    if unknown:
        # Cut: a 300 KB field name came back whole in the error.
        named = ", ".join(name[:80] for name in unknown[:10])
        raise ValueError(f"unknown request field(s) {named}; a request has "
                         f"{', '.join(REQUEST_FIELDS)} (all optional)")


def _text(value: Any, name: str = "an id") -> str:
    """The canonical text of an id or query sent in a request.

    Text or a number only: a list or an object would be searched or looked up as its
    printed form.
    """
    if value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (str, int, float, np.integer, np.floating, type(None))):
        raise ValueError(f"{name} must be text or a number, got {type(value).__name__} "
                         f"{str(value)[:80]!r}")
    if isinstance(value, (float, np.floating)) and np.isinf(value):
        # JSON's Infinity or 1e400: no shop's id (NaN stays "absent": pandas' missing).
        raise ValueError(f"{name} must be text or a finite number, got {value!r}")
    return canonical_id(value)


def _as_list(value: Any) -> list[Any]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, (str, bytes, dict)):
        raise ValueError(f"recent_items must be a list of item ids, e.g. [\"22423\"], "
                         f"got {type(value).__name__} {str(value)[:80]!r}")
    try:
        return list(value)
    except TypeError:
        raise ValueError("recent_items must be a list of item ids, got "
                         f"{str(value)[:80]!r}") from None


def _weight(value: Any, default: float) -> float:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return default
    try:
        number = float(value) if isinstance(value, (int, float, np.number)) \
            and not isinstance(value, (bool, np.bool_)) else None
    except OverflowError:  # an integer of hundreds of digits
        number = None
    if number is None or not 0.0 <= number <= 1.0:
        raise ValueError(f"diversity must be a number between 0 and 1 (0: the model's "
                         f"order), got {str(value)[:80]}")
    return number


def _flag(value: Any, name: str) -> bool:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return False
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{name} must be true or false, got {value!r}")


#: Largest ``k`` a request may ask for (a page of results, not the catalogue).
MAX_K = 1000


def _k(value: Any) -> int:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return DEFAULT_K
    # NaN is a record without k among records with one (pandas' missing value); text is
    # refused as the README says, not read ("5" worked, and taught a client nothing).
    if isinstance(value, (bool, str, bytes)) or (isinstance(value, float)
                                                 and not value.is_integer()):
        raise ValueError(f"k must be an integer, got {value!r}")
    try:
        k = int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: k = 1e400 or Infinity
        raise ValueError(f"k must be an integer, got {value!r}") from None
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
    return k
