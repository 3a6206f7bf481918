"""What a published model carries: the recommender, id maps, histories and a fallback.

A bundle is a folder of plain files (JSON, ``.npz``, Parquet, the model's own files); the
MLflow pyfunc model loads it without unpickling anything.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shoprec.features.idmap import IdMap
from shoprec.models import load_model
from shoprec.models.base import Recommender, top_k
from shoprec.models.content import ContentRecommender
from shoprec.models.popularity import Popularity

logger = logging.getLogger(__name__)

#: Default number of recommendations per request.
DEFAULT_K = 10
#: Fields of a request (DESIGN.md); every one is optional.
REQUEST_FIELDS = ("user_id", "recent_items", "query", "k")
#: Weight of an item in a request's ``recent_items`` (a view in the default weighting).
RECENT_ITEM_WEIGHT = 1.0


@dataclass
class ModelBundle:
    """A fitted recommender with everything needed to answer requests.

    Attributes:
        model: The fitted recommender.
        users: Index of users with a stored history.
        items: Item index of the model.
        history: Users x items weighted interactions (the model's training rows).
        fallback: Popularity over the same items, for shoppers with no usable history.
        meta: Free-form description (candidate, family, metrics...).
        search: Content model over the same items that answers ``query`` requests,
            whatever family won.
        titles: Item titles in index order, returned with recommendations.
    """

    model: Recommender
    users: IdMap
    items: IdMap
    history: sp.csr_matrix
    fallback: Popularity
    meta: dict[str, Any]
    search: ContentRecommender | None = None
    titles: list[str] | None = None
    _titles: np.ndarray | None = field(default=None, init=False, repr=False)

    def save(self, path: str | Path) -> Path:
        """Write the bundle into the folder ``path``."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / "model")
        self.fallback.save(folder / "fallback")
        self.users.save(folder / "users.json")
        self.items.save(folder / "items.json")
        sp.save_npz(folder / "history.npz", self.history.tocsr())
        (folder / "meta.json").write_text(json.dumps(self.meta, indent=2, default=str))
        if self.search is not None:
            self.search.save(folder / "search")
        if self.titles is not None:
            (folder / "titles.json").write_text(json.dumps(self.titles), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, path: str | Path) -> ModelBundle:
        """Read a bundle written by :meth:`save`."""
        folder = Path(path)
        meta = json.loads((folder / "meta.json").read_text())
        return cls(
            model=load_model(str(folder / "model"), meta["model"]),
            users=IdMap.load(folder / "users.json"),
            items=IdMap.load(folder / "items.json"),
            history=sp.load_npz(folder / "history.npz").tocsr(),
            fallback=Popularity.load(folder / "fallback"),
            meta=meta,
            search=ContentRecommender.load(folder / "search")
            if (folder / "search").exists() else None,
            titles=json.loads((folder / "titles.json").read_text(encoding="utf-8"))
            if (folder / "titles.json").exists() else None,
        )

    def request_rows(self, user_ids: list[Any], recent: list[Any]) -> sp.csr_matrix:
        """Interaction rows for requests: the user's stored history plus recent items.

        Unknown users and unknown item ids contribute nothing.
        """
        n = len(user_ids)
        user_index = self.users.encode([_text(u) for u in user_ids])
        known = np.flatnonzero(user_index >= 0)
        base = sp.csr_matrix((n, len(self.items)), dtype=np.float32)
        if len(known):
            selector = sp.csr_matrix((np.ones(len(known), np.float32),
                                      (known, user_index[known])),
                                     shape=(n, len(self.users)))
            base = (selector @ self.history).tocsr()
        lists = [[str(i) for i in _as_list(items)] for items in recent]
        owners = np.repeat(np.arange(n), [len(x) for x in lists])
        indices = self.items.encode([i for x in lists for i in x])
        found = indices >= 0
        # Duplicate (row, item) pairs are summed by the CSR conversion, like repeated clicks.
        clicks = sp.csr_matrix((np.full(found.sum(), RECENT_ITEM_WEIGHT, np.float32),
                                (owners[found], indices[found])), shape=base.shape)
        return (base + clicks).tocsr()

    def predict(self, requests: pd.DataFrame) -> pd.DataFrame:
        """Answer a request frame (DESIGN.md request schema).

        Args:
            requests: One row per request; optional columns ``user_id``, ``recent_items``
                (list of item ids), ``query`` (search text) and ``k``.

        Returns:
            One row per request: ``item_ids``, ``scores`` and ``titles`` lists, best first,
            and ``source``: ``search`` for a query (personalised by the shopper's history
            when there is one), ``model``, or ``popularity`` for a shopper with no usable
            history.
        """
        unknown = sorted(set(map(str, requests.columns)) - set(REQUEST_FIELDS))
        if unknown:
            raise ValueError(f"unknown request field(s) {', '.join(unknown)}; a request has "
                             f"{', '.join(REQUEST_FIELDS)} (all optional)")
        n = len(requests)
        users = requests["user_id"].tolist() if "user_id" in requests else [None] * n
        recent = requests["recent_items"].tolist() if "recent_items" in requests else [None] * n
        queries = [_text(q).strip() for q in (
            requests["query"].tolist() if "query" in requests else [None] * n)]
        ks = [_k(v) for v in (requests["k"].tolist() if "k" in requests else [None] * n)]
        rows = self.request_rows(users, recent)
        max_k = max(ks) if ks else DEFAULT_K
        has_history = np.diff(rows.indptr) > 0
        is_search = np.array([bool(q) for q in queries], dtype=bool)
        if is_search.any() and self.search is None:
            raise ValueError("this model has no search index; 'query' is not supported")
        top = np.full((n, max_k), -1, dtype=np.int64)
        values = np.full((n, max_k), -np.inf, dtype=np.float32)
        source = np.where(has_history, "model", "popularity").astype(object)
        for group in (np.flatnonzero(is_search & has_history),
                      np.flatnonzero(is_search & ~has_history)):
            if len(group):
                personal_rows = rows[group] if has_history[group[0]] else None
                top[group], values[group] = self.search.search(
                    [queries[i] for i in group], max_k, personal_rows)
                source[group] = "search"
        personal = np.flatnonzero(~is_search & has_history)
        if len(personal):
            top[personal], values[personal] = self.model.recommend(rows[personal], k=max_k)
        cold = np.flatnonzero(~is_search & ~has_history)
        if len(cold):
            top[cold], values[cold] = top_k(self.fallback.score(rows[cold]), max_k)
        ids = self.items.ids
        if self._titles is None:  # built once: requests only gather from it
            self._titles = np.array(self.titles if self.titles is not None
                                    else [""] * len(ids), dtype=object)
        titles = self._titles
        out_ids, out_scores, out_titles = [], [], []
        for r in range(n):
            chosen = top[r, : ks[r]]
            chosen = chosen[chosen >= 0]
            out_ids.append([str(x) for x in ids[chosen]])
            out_scores.append([float(x) for x in values[r, : len(chosen)]])
            out_titles.append([str(x) for x in titles[chosen]])
        return pd.DataFrame({"item_ids": out_ids, "scores": out_scores, "titles": out_titles,
                             "source": source.astype(str)})


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def _as_list(value: Any) -> list[Any]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        return [value]
    try:
        return list(value)
    except TypeError:
        raise ValueError(f"recent_items must be a list of item ids, got {value!r}") from None


#: Largest ``k`` a request may ask for (a page of results, not the catalogue).
MAX_K = 1000


def _k(value: Any) -> int:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return DEFAULT_K
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"k must be an integer, got {value!r}") from None
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
    return k
