"""What a published model carries: the recommender, id maps, histories and a fallback.

A bundle is a folder of plain files (JSON, ``.npz``, Parquet, the model's own files); the
MLflow pyfunc model loads it without unpickling anything.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shoprec.features.idmap import IdMap
from shoprec.models import load_model
from shoprec.models.base import Recommender, top_k
from shoprec.models.popularity import Popularity

logger = logging.getLogger(__name__)

#: Default number of recommendations per request.
DEFAULT_K = 10
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
    """

    model: Recommender
    users: IdMap
    items: IdMap
    history: sp.csr_matrix
    fallback: Popularity
    meta: dict[str, Any]

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
        )

    def request_rows(self, user_ids: list[Any], recent: list[Any]) -> sp.csr_matrix:
        """Interaction rows for requests: the user's stored history plus recent items.

        Unknown users and unknown item ids contribute nothing.
        """
        n = len(user_ids)
        user_index = self.users.encode([_text(u) for u in user_ids])
        rows = sp.lil_matrix((n, len(self.items)), dtype=np.float32)
        known = np.flatnonzero(user_index >= 0)
        base = sp.csr_matrix((n, len(self.items)), dtype=np.float32)
        if len(known):
            selector = sp.csr_matrix((np.ones(len(known), np.float32),
                                      (known, user_index[known])),
                                     shape=(n, len(self.users)))
            base = (selector @ self.history).tocsr()
        for r, items in enumerate(recent):
            for index in self.items.encode([str(i) for i in _as_list(items)]):
                if index >= 0:
                    rows[r, index] += RECENT_ITEM_WEIGHT
        return (base + rows.tocsr()).tocsr()

    def predict(self, requests: pd.DataFrame) -> pd.DataFrame:
        """Answer a request frame (DESIGN.md request schema).

        Args:
            requests: One row per request; optional columns ``user_id``, ``recent_items``
                (list of item ids) and ``k``.

        Returns:
            One row per request: ``item_ids`` and ``scores`` lists, best first, and
            ``source`` (``model`` or ``popularity`` for shoppers with no usable history).
        """
        n = len(requests)
        users = requests["user_id"].tolist() if "user_id" in requests else [None] * n
        recent = requests["recent_items"].tolist() if "recent_items" in requests else [None] * n
        ks = [_k(v) for v in (requests["k"].tolist() if "k" in requests else [None] * n)]
        rows = self.request_rows(users, recent)
        max_k = max(ks) if ks else DEFAULT_K
        has_history = np.diff(rows.indptr) > 0
        top = np.full((n, max_k), -1, dtype=np.int64)
        values = np.full((n, max_k), -np.inf, dtype=np.float32)
        personal = np.flatnonzero(has_history)
        if len(personal):
            top[personal], values[personal] = self.model.recommend(rows[personal], k=max_k)
        cold = np.flatnonzero(~has_history)
        if len(cold):
            top[cold], values[cold] = top_k(self.fallback.score(rows[cold]), max_k)
        ids = self.items.ids
        out_ids, out_scores = [], []
        for r in range(n):
            keep = top[r, : ks[r]] >= 0
            out_ids.append([str(x) for x in ids[top[r, : ks[r]][keep]]])
            out_scores.append([float(x) for x in values[r, : ks[r]][keep]])
        return pd.DataFrame({"item_ids": out_ids, "scores": out_scores,
                             "source": np.where(has_history, "model", "popularity")})


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return str(value)


def _as_list(value: Any) -> list[Any]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _k(value: Any) -> int:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return DEFAULT_K
    k = int(value)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return k
