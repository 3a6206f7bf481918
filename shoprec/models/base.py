"""The Recommender interface, documented once; every model family implements it.

Conventions (scikit-learn style): hyperparameters are keyword arguments of ``__init__`` and
stored as given, with no logic there; learned state ends in ``_``; :meth:`Recommender.fit`
returns ``self``. Models score from *interaction rows*, not user ids: any shopper, including
one who arrived a minute ago, gets recommendations from the items they just touched.
"""

from __future__ import annotations

import inspect
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shoprec.errors import ModelFitError

logger = logging.getLogger(__name__)


@dataclass
class FitContext:
    """Optional inputs some families use while fitting.

    Attributes:
        items: Item frame aligned with the item index (see
            :func:`shoprec.features.item_frame`), for content features.
        validation_history: Rows the model sees when scored for validation.
        validation_relevance: Binary relevance of the validation part, for early stopping.
        progress: Callback ``(step, metrics)`` for training curves (MLflow, Prefect).
        has_ratings: Whether the training data hold rating events.
    """

    items: pd.DataFrame | None = None
    has_ratings: bool = True
    validation_history: sp.csr_matrix | None = None
    validation_relevance: sp.csr_matrix | None = None
    progress: Any = None


class Recommender(ABC):
    """Base class of every model.

    Subclasses set :attr:`family` and :attr:`name`, take hyperparameters as keyword
    arguments of ``__init__`` (stored under the same names), and implement
    :meth:`fit`, :meth:`score`, :meth:`_save_state` and :meth:`_load_state`.
    """

    #: Model family: popularity, mf, content, autoencoder or gan.
    family: ClassVar[str]
    #: Candidate name used in the leaderboard, ``--models`` and MLflow runs.
    name: ClassVar[str]
    #: Largest catalogue the family can handle on one machine; ``None`` means no limit.
    max_items: ClassVar[int | None] = None
    #: Trains for many epochs; the pipeline starts such candidates first so that the run
    #: is not left waiting on one long task at the end.
    slow_to_train: ClassVar[bool] = False

    def get_params(self) -> dict[str, Any]:
        """Return the hyperparameters given to ``__init__``."""
        signature = inspect.signature(type(self).__init__)
        return {name: getattr(self, name) for name in signature.parameters if name != "self"}

    @abstractmethod
    def fit(self, interactions: sp.csr_matrix, context: FitContext | None = None) -> Recommender:
        """Learn from a users x items matrix of implicit-feedback weights.

        Args:
            interactions: Weighted training matrix (CSR, float32).
            context: Optional item features, validation data and a progress callback.

        Returns:
            ``self``.

        Raises:
            ModelFitError: Training failed numerically (NaN, divergence, collapse).
        """

    @abstractmethod
    def score(self, user_rows: sp.csr_matrix) -> np.ndarray:
        """Score every item for a batch of users given their interaction rows.

        Args:
            user_rows: CSR batch, one row per user, columns in the training item index.
                A row may belong to a user never seen in training.

        Returns:
            Dense float32 array of shape ``(batch, n_items)``; higher is better.
        """

    def score_fitted(self, users: np.ndarray, user_rows: sp.csr_matrix) -> np.ndarray:
        """Score users of the matrix given to :meth:`fit`, by their row numbers there.

        Batch scoring of known users calls this; models that learn per-user state (ALS
        user factors) answer from it, the others score ``user_rows`` (those users' rows of
        the fitted matrix) like :meth:`score`.
        """
        return self.score(user_rows)

    def recommend(self, user_rows: sp.csr_matrix, k: int = 10,
                  exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for each row, best first.

        Args:
            user_rows: CSR batch of interaction rows.
            k: How many items per row.
            exclude_seen: Leave out items that are non-zero in the row.

        Returns:
            ``(indices, scores)``, both of shape ``(batch, k)``; when fewer than ``k``
            items are eligible the tail has index -1 and score ``-inf``.
        """
        scores = self.score(user_rows)
        if exclude_seen:
            mask_seen(scores, user_rows)
        return top_k(scores, k)

    def save(self, path: str | Path) -> None:
        """Write the model to a folder: ``config.json`` plus plain state files."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"name": self.name, "family": self.family, "params": self.get_params()}
        (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        self._save_state(folder)

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Read a model written by :meth:`save` (no pickles)."""
        folder = Path(path)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        model = cls(**config["params"])
        model._load_state(folder)
        return model

    @abstractmethod
    def _save_state(self, folder: Path) -> None:
        """Write the learned state into ``folder``."""

    @abstractmethod
    def _load_state(self, folder: Path) -> None:
        """Read the learned state from ``folder``."""

    @property
    def n_items_(self) -> int:
        """Number of items the model scores."""
        raise NotImplementedError


#: Hyperparameter grids are scored on at most this many validation users (seeded sample):
#: a grid runs one evaluation per value, and ndcg@10 on 20,000 users has a standard error
#: near 0.0015, finer than the steps between grid values.
SELECTION_USERS = 20_000


def select_on_validation(model: Recommender, grid: Sequence[float],
                         apply: Callable[[float], Any], context: FitContext,
                         what: str) -> tuple[float, Any]:
    """Pick a hyperparameter value by validation ndcg@10.

    Args:
        model: The model being fitted; scored after each ``apply``.
        grid: Values to try.
        apply: Puts the model in the state of one value and returns that state.
        context: Holds the validation rows and relevance.
        what: The hyperparameter's name, for logs and the progress callback.

    Returns:
        The best value and the state ``apply`` returned for it (the caller restores it, so
        the winning value is not fitted twice).
    """
    from shoprec.evaluation.evaluate import evaluate
    from shoprec.features.encoding import sample_users

    relevance, _ = sample_users(context.validation_relevance, SELECTION_USERS,
                                np.random.default_rng(0))
    best: tuple[float, float, Any] | None = None
    for value in grid:
        state = apply(float(value))
        score = evaluate(model, context.validation_history, relevance, ks=(10,))["ndcg@10"]
        logger.info("%s %s %g: validation ndcg@10 %.4f", model.name, what, value, score)
        if context.progress is not None:
            context.progress(value, {f"validation_ndcg_at_10_by_{what}": score})
        if best is None or score > best[0]:
            best = (score, float(value), state)
    if best is None:
        raise ValueError(f"{model.name}: empty grid for {what}")
    return best[1], best[2]


def binarized(rows: sp.spmatrix) -> sp.csr_matrix:
    """A float32 CSR copy of ``rows`` with every stored value set to 1.

    Always a new matrix: ``csr_matrix(x, dtype=...)`` shares ``x``'s arrays when nothing
    needs converting, so setting ``.data`` on it would rewrite the caller's matrix (the
    training matrix every other candidate reads).
    """
    rows = sp.csr_matrix(rows)
    return sp.csr_matrix((np.ones(len(rows.data), dtype=np.float32), rows.indices.copy(),
                          rows.indptr.copy()), shape=rows.shape)


def mask_seen(scores: np.ndarray, user_rows: sp.csr_matrix) -> None:
    """Set the scores of items present in each row to ``-inf``, in place."""
    rows = np.repeat(np.arange(user_rows.shape[0]), np.diff(user_rows.indptr))
    scores[rows, user_rows.indices] = -np.inf


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` best entries of each row, best first.

    Exact. Wide rows go through a threshold first (see :func:`_top_k_by_threshold`), which
    touches each score about twice instead of running a selection over the whole row;
    narrow ones use ``argpartition``. Rows are processed in slices of a few hundred so the
    working set stays in cache.
    """
    n_rows, n_items = scores.shape
    k_eff = min(k, n_items)
    indices = np.empty((n_rows, k_eff), dtype=np.int64)
    values = np.empty((n_rows, k_eff), dtype=np.float32)
    wide = n_items >= _BLOCK * 4 * max(k_eff, 1)
    for start in range(0, n_rows, _ROWS_PER_SLICE):
        part = scores[start:start + _ROWS_PER_SLICE]
        pick = _top_k_by_threshold if wide else _top_k_by_partition
        indices[start:start + len(part)], values[start:start + len(part)] = pick(part, k_eff)
    indices = np.where(np.isfinite(values), indices, -1)
    if k_eff < k:
        pad = k - k_eff
        indices = np.pad(indices, ((0, 0), (0, pad)), constant_values=-1)
        values = np.pad(values, ((0, 0), (0, pad)), constant_values=-np.inf)
    return indices, values


#: Rows per slice of :func:`top_k`, and the block width of its threshold.
_ROWS_PER_SLICE, _BLOCK = 256, 64


def _top_k_by_partition(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return (np.take_along_axis(part, order, axis=1),
            np.take_along_axis(part_scores, order, axis=1).astype(np.float32))


def _top_k_by_threshold(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` via a lower bound on each row's k-th largest score.

    The items are split into disjoint groups; the maxima of ``k`` groups are ``k``
    distinct entries, so the k-th largest group maximum is at most the row's k-th largest
    score: every top-k entry is at least that threshold, and usually only a handful of
    entries are. Those candidates alone are sorted. A group is every ``groups``-th item
    (a strided view: the maxima come from one vectorised pass).
    """
    n_rows, n_items = scores.shape
    groups = n_items // _BLOCK
    maxima = scores[:, : groups * _BLOCK].reshape(n_rows, _BLOCK, groups).max(axis=1)
    if groups * _BLOCK < n_items:
        maxima = np.concatenate([maxima, scores[:, groups * _BLOCK:].max(axis=1,
                                                                          keepdims=True)], 1)
    threshold = np.partition(maxima, maxima.shape[1] - k, axis=1)[:, maxima.shape[1] - k]
    flat = np.flatnonzero(scores >= threshold[:, None])
    rows, cols = np.divmod(flat, n_items)
    found = scores[rows, cols]
    order = np.lexsort((cols, -found, rows))  # by row, best first, ties by index
    rows, cols, found = rows[order], cols[order], found[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    keep = rank < k
    indices = np.full((n_rows, k), -1, dtype=np.int64)
    values = np.full((n_rows, k), -np.inf, dtype=np.float32)
    indices[rows[keep], rank[keep]] = cols[keep]
    values[rows[keep], rank[keep]] = found[keep]
    return indices, values


def check_finite(scores: np.ndarray, model: str) -> np.ndarray:
    """Raise :class:`ModelFitError` if ``scores`` hold NaN or infinity."""
    if not np.all(np.isfinite(scores)):
        raise ModelFitError(f"{model} produced non-finite scores (NaN or inf); lower the "
                            "learning rate or raise regularisation")
    return scores
