"""What a published model carries: the recommender, id maps, histories and a fallback.

A bundle is a folder of plain files (JSON, ``.npz``, Parquet, the model's own files); the
MLflow pyfunc model loads it without unpickling anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shoprec.errors import ModelFilesError, ShopRecError, UnreadableModelError
from shoprec.features.idmap import IdMap
from shoprec.models.base import Recommender
from shoprec.models.popularity import Popularity

if TYPE_CHECKING:
    from shoprec.models.content import ContentRecommender

logger = logging.getLogger(__name__)
#: Serialises lazy loads (rare; one lock for every bundle keeps bundles picklable).
_LOADING = threading.Lock()
#: Serialises re-reading the suppression list (rare: when its file changed).
_SUPPRESSIONS = threading.Lock()

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
        diversity: Weight of the novelty re-ranking for requests that do not set one
            (0: the model's order; ``shoprec serve --diversity`` sets it).
        explanations: Whether ``explain`` requests are answered (an explanation names the
            shopper's past purchases; a server answers them only when started with
            ``--explanations``).
        sessions: Live sessions (:class:`shoprec.serving.sessions.SessionStore`) whose
            events count as each shopper's recent items, or ``None``.
        held_back: Per item, whether it is never answered (no units left, ``serve
            --stock``), or ``None``.
    """

    model: Recommender
    users: IdMap
    items: IdMap
    history: sp.csr_matrix
    fallback: Recommender
    meta: dict[str, Any]
    search: ContentRecommender | None = None
    titles: list[str] | None = None
    diversity: float = 0.0
    explanations: bool = True
    sessions: Any = None
    held_back: np.ndarray | None = None
    _titles: np.ndarray | None = field(default=None, init=False, repr=False)
    _novelty: np.ndarray | None = field(default=None, init=False, repr=False)
    _user_key: Any = field(default=None, init=False, repr=False)
    _suppressed: tuple[Any, np.ndarray, frozenset[str]] | None = field(default=None, init=False,
                                                                     repr=False)
    _subjects: dict[str, int] | None = field(default=None, init=False, repr=False)
    _sorted_users: np.ndarray | None = field(default=None, init=False, repr=False)
    _pending: dict[str, Callable[[], Any]] = field(default_factory=dict, init=False, repr=False)

    def __getattribute__(self, name: str) -> Any:
        # A part loaded lazily (load(lazy=True)) is read from disk on first use, once, and
        # stays pending if reading it fails (the next use raises the same error again).
        if name in ("model", "search") and object.__getattribute__(self, "_pending"):
            with _LOADING:
                pending = object.__getattribute__(self, "_pending")
                if name in pending:
                    object.__setattr__(self, name, pending[name]())
                    del pending[name]
        return object.__getattribute__(self, name)

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
    def load(cls, path: str | Path, lazy: bool = False) -> ModelBundle:
        """Read a bundle written by :meth:`save`.

        Args:
            path: The bundle's folder.
            lazy: Read the model and the search index when first used rather than now: a
                single search needs no network (nor TensorFlow), a single recommendation no
                search index.
        """
        folder = Path(path)

        def model() -> Recommender:
            from shoprec.models import CANDIDATES, load_model

            family = meta.get("model")
            with _model_files(folder), _readable_here(meta):
                if family not in CANDIDATES:
                    raise UnreadableModelError(
                        f"its model is {family!r}, which this shoprec does not know (it knows "
                        f"{', '.join(CANDIDATES)})" if family else
                        "its meta.json names no model")
                return load_model(str(folder / "model"), family)

        def search() -> ContentRecommender | None:
            if not (folder / "search").exists():
                return None
            from shoprec.models.content import ContentRecommender

            with _model_files(folder):
                return cast(ContentRecommender, ContentRecommender.load(folder / "search"))

        with _model_files(folder):
            meta = json.loads((folder / "meta.json").read_text())
            bundle = cls(
                model=cast(Recommender, None) if lazy else model(),
                users=IdMap.load(folder / "users.json"),
                items=IdMap.load(folder / "items.json"),
                history=sp.load_npz(folder / "history.npz").tocsr(),
                fallback=Popularity.load(folder / "fallback"),
                meta=meta,
                search=None if lazy else search(),
                titles=json.loads((folder / "titles.json").read_text(encoding="utf-8"))
                if (folder / "titles.json").exists() else None,
            )
        if lazy:
            bundle._pending.update(model=model, search=search)
        return bundle

    @property
    def keeps_seen(self) -> bool:
        """Whether answers keep the shopper's own items (trained with ``--repeat-items``).

        A version evaluated with already-bought items relevant (a grocery's weekly
        reorders) served lists without them: its figures described lists never served.
        """
        return bool(self.meta.get("repeat_items"))

    @property
    def title_array(self) -> np.ndarray:
        """Item titles in index order as an array (built once; requests gather from it)."""
        if self._titles is None:
            self._titles = np.array(self.titles if self.titles is not None
                                    else [""] * len(self.items.ids), dtype=object)
        return self._titles

    @property
    def novelty(self) -> np.ndarray:
        """Each item's novelty in [0, 1] from its popularity (built once).

        See :func:`shoprec.ranking.novelty_scale`.
        """
        if self._novelty is None:
            from shoprec.ranking import novelty_scale

            self._novelty = novelty_scale(cast(Popularity, self.fallback).item_scores_)
        return self._novelty

    @property
    def user_key(self) -> Any:
        """The key that turns raw user ids of requests into this model's pseudonyms.

        ``None`` when the model's ids are not pseudonyms, or when this process has no key
        (:data:`shoprec.privacy.KEY_ENV`): requests must then carry pseudonyms.

        Raises:
            ConfigError: The process's key is not the one the model was trained with.
        """
        if self._user_key is None:
            from shoprec.errors import ConfigError
            from shoprec.privacy import KEY_ENV, key_from_environment

            wanted = self.meta.get("pseudonym_key_id")
            key = key_from_environment() if wanted else None
            if key is not None and key.id != wanted:
                raise ConfigError(f"{KEY_ENV} is not the key this model's user ids were "
                                  f"pseudonymised with (fingerprint {key.id}, the model's "
                                  f"{wanted}); set the training run's key")
            self._user_key = (key,)
        return self._user_key[0]

    def suppressed_rows(self) -> np.ndarray:
        """The stored users on the suppression list (sorted row numbers).

        The list's file is looked at (one ``stat``) on every call, so an erasure request
        reaches the next answer; it is read again only when it changed, and every stored
        user's subject is hashed once per bundle, the first time the list is not empty.

        Raises:
            ServingUnavailableError: The list exists but cannot be read (a server fault,
                not a bad request).
        """
        return self._suppression()[1]

    def erased(self, stored_ids: list[str]) -> list[bool]:
        """Which of these ids (as stored: see ``stored_user_ids``) were erased."""
        subjects = self._suppression()[2]
        if not subjects:
            return [False] * len(stored_ids)
        from shoprec.privacy import ERASED_USER, subject

        return [bool(i) and (i == ERASED_USER or subject(i) in subjects) for i in stored_ids]

    def erased_subjects(self) -> frozenset[str]:
        """The suppression list's subjects (the list re-read when its file changed)."""
        return self._suppression()[2]

    def _suppression(self) -> tuple[Any, np.ndarray, frozenset[str]]:
        from shoprec.errors import ConfigError, ServingUnavailableError
        from shoprec.privacy import SUPPRESSIONS_FLOOR_ENV, SuppressionList

        suppressions = SuppressionList()
        stamp = (str(suppressions.path), suppressions.stamp())
        cached = self._suppressed
        if cached is not None and cached[0] == stamp:
            return cached
        with _SUPPRESSIONS:
            cached = self._suppressed
            if cached is not None and cached[0] == stamp:
                return cached
            try:
                subjects = suppressions.subjects() if stamp[1] is not None else frozenset()
            except ConfigError as exc:
                raise ServingUnavailableError(
                    f"the suppression list cannot be read: {exc}") from None
            floor = int(os.environ.get(SUPPRESSIONS_FLOOR_ENV) or 0)
            seen = cached[2] if cached is not None and cached[0][0] == stamp[0] else None
            if (seen is not None and not subjects >= seen) or len(subjects) < floor:
                # The list only grows: one moved, emptied or put back from an older copy
                # read as "nobody erased", and served erased shoppers' histories again
                # with every health check green (a worker started again after a crash
                # has the server's count at start). Not cached: mended, it is read again.
                lost = len(seen - subjects) if seen is not None else floor - len(subjects)
                raise ServingUnavailableError(
                    f"the erasure list {suppressions.path} "
                    + ("is gone" if stamp[1] is None else f"lost records ({lost:,} subject "
                       "hash" + ("" if lost == 1 else "es") + ")")
                    + " since this server read it (moved, emptied or replaced by an older "
                    "copy), and an erasure list only grows: put it back; if records were "
                    "removed on purpose, restart the server")
            rows = np.empty(0, dtype=np.int64)
            if subjects:
                index = self._subject_index()
                rows = np.array(sorted(index[s] for s in subjects if s in index),
                                dtype=np.int64)
            self._suppressed = (stamp, rows, subjects)
            return self._suppressed

    def sorted_user_ids(self) -> np.ndarray:
        """The stored user ids in sorted order (built once), for prefix lookups."""
        if self._sorted_users is None:
            self._sorted_users = np.sort(np.asarray(self.users.ids, dtype=str))
        return self._sorted_users

    def _subject_index(self) -> dict[str, int]:
        if self._subjects is None:
            from shoprec.privacy import subjects_of

            hashed = subjects_of(pd.Series(self.users.ids, dtype="string"))
            self._subjects = {str(h): row for row, h in enumerate(hashed)}
        return self._subjects

    def request_rows(self, user_ids: list[Any], recent: list[Any]) -> sp.csr_matrix:
        """Interaction rows for requests (see :func:`shoprec.serving.engine.request_rows`)."""
        from shoprec.serving import engine

        return engine.request_rows(self, user_ids, recent)

    def answer(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Answer request records (see :func:`shoprec.serving.engine.answer`)."""
        from shoprec.serving import engine

        return engine.answer(self, requests)

    def predict(self, requests: pd.DataFrame) -> pd.DataFrame:
        """Answer a request frame (see :func:`shoprec.serving.engine.predict`)."""
        from shoprec.serving import engine

        return engine.predict(self, requests)


@contextlib.contextmanager
def _readable_here(meta: dict[str, Any]) -> Iterator[None]:
    """Reading a bundle's model, with what to do when this shoprec cannot read it."""
    try:
        yield
    except UnreadableModelError as exc:
        run = meta.get("flow_run_id")
        raise UnreadableModelError(
            f"this version cannot be read by the installed shoprec: {exc}"
            + (f" (trained by flow run {run})" if run else "") + ". Train a new version "
            "(shoprec train), or point the alias at a version this shoprec reads (shoprec "
            "rollback, shoprec promote --version N)") from exc


@contextlib.contextmanager
def _model_files(folder: Path) -> Iterator[None]:
    """Reading the bundle in ``folder``, with its file errors said plainly.

    A missing or damaged file becomes a :class:`~shoprec.errors.ModelFilesError`.
    shoprec's own errors (a parameter no longer understood) pass as they are, and so do
    other ValueErrors and KeyErrors: a model of a kind or version this shoprec does not
    know is not a damaged file.
    """
    try:
        yield
    except ShopRecError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError,
            UnicodeDecodeError) as exc:
        raise ModelFilesError(
            f"the model files in {folder} are missing or damaged "
            f"({type(exc).__name__}: {str(exc)[:300]}); register a new version "
            "(shoprec train) or point the alias at another one (shoprec rollback, "
            "shoprec promote --version N)") from exc
