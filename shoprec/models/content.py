"""Content-based recommender and personalised product search.

Items are represented by their content features (:class:`shoprec.features.text.ItemFeatures`:
TF-IDF words and character n-grams, category, brand, price bucket). A shopper's profile is
the weighted mean of the vectors of the items in their interaction row; items are scored by
cosine similarity to it, weighted by a smoothed popularity prior. Items nobody has touched
yet keep the smoothing share of their similarity, so new products are recommendable.

The cosine to the profile is a sum over the shopper's items of their cosines to the
candidate (divided by the profile's length). Raising each of those item-item cosines to a
``similarity_exponent`` above 1 before summing sharpens it: a near-copy of a bought item (a
colour variant) outweighs many items that share a word or a category with the history.
"""

from __future__ import annotations

import logging
import time
import weakref
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from shoprec.errors import ModelFitError, ModelSkippedError
from shoprec.features.text import ItemFeatures, item_texts, l2_rows
from shoprec.models.base import FitContext, Recommender, check_finite
from shoprec.models.storage import load_arrays, load_sparse, save_arrays, save_sparse
from shoprec.ranking import top_k

logger = logging.getLogger(__name__)


class ContentRecommender(Recommender):
    """Profiles from item content; also answers search queries.

    Args:
        popularity_smoothing: Scores are ``max(similarity, 0) * (smoothing + popularity)``
            with popularity scaled to [0, 1]: a small value trusts popularity among similar
            items, a large one ranks by similarity alone. ``None`` picks the best of
            ``smoothing_grid`` on the validation data given to :meth:`fit` (0.1 without).
        smoothing_grid: Candidate values when ``popularity_smoothing`` is ``None``.
        word_weight: Weight of word TF-IDF in the item vectors.
        char_weight: Weight of character n-gram TF-IDF.
        category_weight: Weight of the category one-hot block.
        brand_weight: Weight of the brand one-hot block.
        price_weight: Weight of the price-bucket block.
        personalisation_weight: In search, weight of the shopper's profile similarity added
            to text relevance when the page of best text matches is re-ordered.
        embedding_dims: Above ``dense_similarity_items`` items, the dimensions of the
            item embeddings cosines are computed in.
        similarity_exponent: Power of each item-item cosine in the score (1: the cosine to
            the profile). ``None`` picks the best of ``exponent_grid`` on validation (1
            without). Above ``dense_similarity_items`` items it is always 1: the embedding
            path never forms item-item cosines.
        exponent_grid: Candidate exponents when ``similarity_exponent`` is ``None``.
    """

    family = "content"
    name = "content"
    #: Up to this many items, scores are exact cosines: item-item similarities are kept as
    #: a dense matrix (float32: 1.6 GB at the limit) and scoring is one sparse x dense
    #: product per batch. Above it both the items² matrix and the exact sparse products
    #: (16 s per 2,048 shoppers at 50,000 items) are out of reach, so the item vectors are
    #: projected on their ``embedding_dims`` leading singular directions (truncated SVD,
    #: the LSA of the item texts) and cosines are taken there: one dense product per batch.
    dense_similarity_items: ClassVar[int] = 20_000
    #: Batches smaller than this (a served request) take the sparse path: building the
    #: dense matrix costs seconds, so it is built on the first large batch, not at load.
    dense_batch_rows: ClassVar[int] = 64
    #: The items x items similarities (cosines, raised to the exponent), once built.
    similarity_: np.ndarray | None
    #: Recipes and bundles from before the exponent existed scored by the profile's cosine.
    added_params: ClassVar[dict[str, Any]] = {"similarity_exponent": 1.0}

    def __init__(self, popularity_smoothing: float | None = None,
                 smoothing_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0),
                 word_weight: float = 1.0,
                 char_weight: float = 0.5, category_weight: float = 0.5,
                 brand_weight: float = 0.3, price_weight: float = 0.2,
                 personalisation_weight: float = 0.3, embedding_dims: int = 256,
                 similarity_exponent: float | None = None,
                 exponent_grid: tuple[float, ...] = (1.0, 2.0, 3.0)) -> None:
        self.popularity_smoothing = popularity_smoothing
        self.similarity_exponent = similarity_exponent
        self.exponent_grid = exponent_grid
        self.smoothing_grid = smoothing_grid
        self.word_weight = word_weight
        self.char_weight = char_weight
        self.category_weight = category_weight
        self.brand_weight = brand_weight
        self.price_weight = price_weight
        self.personalisation_weight = personalisation_weight
        self.embedding_dims = embedding_dims

    def fit(self, interactions: sp.csr_matrix,
            context: FitContext | None = None) -> ContentRecommender:
        """Build item vectors from ``context.items`` and the popularity prior.

        Raises:
            ModelFitError: No item frame was given, or it does not match the matrix.
        """
        items = context.items if context is not None else None
        if items is None:
            raise ModelFitError("content needs the item frame (titles, categories); none given")
        if len(items) != interactions.shape[1]:
            raise ModelFitError(f"content: {len(items)} items in the frame but "
                                f"{interactions.shape[1]} columns in the matrix")
        if not any(item_texts(items)):
            # Interactions without an items file: nothing describes the products, which
            # is a property of the data, not a failure.
            raise ModelSkippedError("content needs item text (title, description, category "
                                    "or brand) and the items have none; pass --items with "
                                    "a title column to use it")
        reused = context.item_state if context is not None else None
        if reused and reused.get("items") is items and reused.get("key") == self._item_key():
            # The same frame, block weights and embedding: the same features and
            # embeddings (the SVD is seeded), so a refit does not derive them again.
            self.features_ = reused["features"]
            self.item_vectors_, self.text_vectors_ = reused["vectors"], reused["text"]
            self.embeddings_ = reused["embeddings"]
        else:
            self.features_ = ItemFeatures(*self._weights())
            self.item_vectors_, self.text_vectors_ = self.features_.fit_transform(items)
            self.embeddings_ = self._embed(self.item_vectors_)
        # Weakly: the frame is the caller's, and a model kept (the refit, the bundle's
        # search model) need not keep it alive.
        self._items = weakref.ref(items)
        self._prepare()
        counts = np.bincount(interactions.indices, minlength=interactions.shape[1])
        self.popularity_ = (counts / counts.max() if counts.max() else counts).astype(np.float32)
        if not self.item_vectors_.nnz:
            raise ModelFitError("content: the items have no text, category or brand to use")
        tuner = context.tuner if context is not None else None
        self.smoothing_ = float(0.1 if self.popularity_smoothing is None
                                else self.popularity_smoothing)
        self.exponent_ = float(1.0 if self.similarity_exponent is None
                               else self.similarity_exponent)
        if self.embeddings_ is not None and self.exponent_ != 1.0:
            logger.info("content: similarity_exponent %g left at 1 above %d items (embedded "
                        "cosines)", self.exponent_, self.dense_similarity_items)
            self.exponent_ = 1.0
        if self.similarity_exponent is None and self.embeddings_ is None and tuner is not None:
            # The exponent first, at the configured (or default) smoothing; one items² matrix
            # of cosines serves every value, and at most one sharpened copy lives beside it.
            base = self._cosines()

            def sharpen(value: float) -> float:
                self.exponent_ = value
                self.similarity_ = None
                self.similarity_ = base if value == 1.0 else _power(base.copy(), value)
                return value

            best, _ = tuner.select(self, self.exponent_grid, sharpen, "similarity_exponent")
            if best != self.exponent_:  # the last value tried was not the best
                sharpen(best)
            del base
        if self.popularity_smoothing is None and tuner is not None:
            # The score is ``s * max(cosine, 0) + max(cosine, 0) * popularity``: a weighted
            # sum of two parts, so the cosines are computed once for every smoothing (the
            # sum is rounded apart from score()'s product: a near-tie may rank otherwise).
            grid = [float(value) for value in self.smoothing_grid]

            def parts(rows: sp.csr_matrix) -> list[np.ndarray]:
                similarity = np.maximum(self.cosine(rows), 0.0)
                return [similarity, similarity * self.popularity_[None, :]]

            chosen = tuner.select_weights(self, parts, [(value, 1.0) for value in grid],
                                          "popularity_smoothing", grid)
            self.smoothing_ = float(chosen[0])
        return self

    def item_state(self) -> dict[str, Any]:
        """The item features, vectors and embeddings, with the frame they came from."""
        reference = getattr(self, "_items", None)
        items = reference() if reference is not None else None
        if items is None:  # loaded from a bundle, or the frame is gone: nothing to match
            return {}
        return {"items": items, "key": self._item_key(), "features": self.features_,
                "vectors": self.item_vectors_, "text": self.text_vectors_,
                "embeddings": self.embeddings_}

    def __getstate__(self) -> dict[str, Any]:
        # A weak reference does not pickle; a copy of the model has no frame to match.
        state = dict(self.__dict__)
        state.pop("_items", None)
        return state

    def _weights(self) -> tuple[float, float, float, float, float]:
        """The feature blocks' weights, in :class:`ItemFeatures`' order."""
        return (self.word_weight, self.char_weight, self.category_weight, self.brand_weight,
                self.price_weight)

    def _item_key(self) -> tuple[Any, ...]:
        """What the item features and embeddings depend on besides the frame."""
        return (*self._weights(), self.embedding_dims, self.dense_similarity_items)

    @property
    def selected_params_(self) -> dict[str, float]:
        """Hyperparameters chosen during :meth:`fit`, to reuse when refitting."""
        return {"popularity_smoothing": self.smoothing_, "similarity_exponent": self.exponent_}

    def _prepare(self) -> None:
        self.similarity_ = None  # built by the first large batch (see cosine)

    def _cosines(self) -> np.ndarray:
        """The items x items cosines of the item vectors (dense float32)."""
        return (self.item_vectors_ @ self.item_vectors_.T).toarray()

    def _embed(self, vectors: sp.csr_matrix) -> np.ndarray | None:
        """Unit-length low-rank item embeddings for large catalogues, else ``None``."""
        n_items, n_features = vectors.shape
        if n_items <= self.dense_similarity_items:
            return None
        from sklearn.decomposition import TruncatedSVD

        dims = max(1, min(self.embedding_dims, n_features - 1, n_items))
        began = time.perf_counter()
        embedded = TruncatedSVD(dims, random_state=0).fit_transform(vectors)
        logger.info("content: %d items embedded in %d dimensions (truncated SVD) in %.1f s",
                    n_items, dims, time.perf_counter() - began)
        return l2_rows(embedded, norm="l2").astype(np.float32)

    def profiles(self, user_rows: sp.csr_matrix) -> sp.csr_matrix:
        """Weighted mean of the item vectors in each row, L2-normalised."""
        return l2_rows(sp.csr_matrix(user_rows, dtype=np.float32) @ self.item_vectors_,
                         norm="l2", copy=False)

    def cosine(self, user_rows: sp.csr_matrix) -> np.ndarray:
        """Each row's similarity to every item (dense, batch x items).

        With exponent 1 the cosine of the row's profile to the item: ``sum_h r_h c_hj / |p|``
        over the row's items ``h``, ``c`` the item-item cosines and ``|p|`` the profile's
        length. With exponent ``e``: ``sum_h r_h c_hj^e / |p|``.
        """
        rows = sp.csr_matrix(user_rows, dtype=np.float32)
        if self.embeddings_ is not None:
            profiles = l2_rows(np.asarray(rows @ self.embeddings_), norm="l2")
            return profiles @ self.embeddings_.T
        exponent = self.exponent_
        if (rows.shape[0] < self.dense_batch_rows
                or self.item_vectors_.shape[0] > self.dense_similarity_items):
            if exponent == 1.0:
                return (self.profiles(rows) @ self.item_vectors_.T).toarray()
            if self.similarity_ is not None:  # built already: one row of it per item
                return self._per_profile(np.asarray(rows @ self.similarity_), rows)
            # A served request: the cosines of the row's own items only.
            touched = np.unique(rows.indices)
            cosines = (self.item_vectors_[touched] @ self.item_vectors_.T).tocsr()
            np.maximum(cosines.data, 0.0, out=cosines.data)
            raw = (rows[:, touched] @ cosines.power(exponent)).toarray()
            return self._per_profile(raw, rows)
        if self.similarity_ is None:
            self.similarity_ = self._cosines()
            if exponent != 1.0:
                _power(self.similarity_, exponent)
        raw = np.asarray(rows @ self.similarity_)
        if exponent != 1.0:
            return self._per_profile(raw, rows)
        # profile = r V, so profile . v_i = (r S)_i with S = V V^T, and |profile|^2 = r S r^T.
        norms = np.sqrt(np.maximum(np.asarray(rows.multiply(raw).sum(axis=1)).ravel(), 0))
        return np.divide(raw, norms[:, None], out=np.zeros_like(raw),
                         where=norms[:, None] > 0)

    def _per_profile(self, raw: np.ndarray, rows: sp.csr_matrix) -> np.ndarray:
        """``raw`` divided by each row's profile length (0 for an empty profile)."""
        profiles = sp.csr_matrix(rows @ self.item_vectors_)
        norms = np.sqrt(np.asarray(profiles.multiply(profiles).sum(axis=1)).ravel()
                        ).astype(np.float32)
        return np.divide(raw, norms[:, None], out=np.zeros_like(raw),
                         where=norms[:, None] > 0)

    def score(self, user_rows: sp.csr_matrix) -> np.ndarray:
        """Each row's similarity to every item (:meth:`cosine`), times the smoothed popularity."""
        similarity = self.cosine(user_rows)
        scores = np.maximum(similarity, 0.0) * (self.smoothing_ + self.popularity_[None, :])
        return check_finite(scores.astype(np.float32), self.name)

    def contributions(self, user_row: sp.csr_matrix,
                      items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact contributions of each history item to the score.

        The similarity is ``sum_h r_h (v_h . v_j)^e / |p|`` (:meth:`cosine`; ``e`` the
        exponent, 1 in the embedding), so history item ``h`` adds ``r_h (v_h . v_j)^e / |p|``
        to it, times the item's smoothed popularity; an item whose similarity is not
        positive scores 0 and has no contributions.
        """
        row = sp.csr_matrix(user_row, dtype=np.float32)
        history, values = row.indices, row.data.astype(np.float64)
        vectors = self.embeddings_ if self.embeddings_ is not None else self.item_vectors_
        own, targets = vectors[history], vectors[items]
        dots = own @ targets.T
        dots = np.asarray(dots.toarray() if sp.issparse(dots) else dots, dtype=np.float64)
        exponent = self.exponent_ if self.embeddings_ is None else 1.0
        if exponent != 1.0:
            dots = np.power(np.maximum(dots, 0.0), exponent)
        profile = values @ (own.toarray() if sp.issparse(own) else own)
        norm = float(np.linalg.norm(profile))
        out = np.zeros((len(items), len(history)))
        if norm > 0:
            raw = values[:, None] * dots / norm  # (history, items)
            positive = raw.sum(axis=0) > 0
            weight = self.smoothing_ + self.popularity_[items]
            out[positive] = (raw[:, positive] * weight[positive]).T
        return history, out

    def similar_items(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Items most similar in content to ``item`` ("customers also looked at")."""
        similarity = (self.item_vectors_[item] @ self.item_vectors_.T).toarray()
        similarity[0, item] = -np.inf
        similarity[similarity <= 0] = -np.inf  # nothing in common is no recommendation
        indices, scores = top_k(similarity, k)
        keep = indices[0] >= 0
        return indices[0][keep], scores[0][keep]

    def search(self, queries: list[str], k: int = 10,
               user_rows: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rank products by text relevance to each query, optionally personalised.

        Args:
            queries: Search texts.
            k: Results per query.
            user_rows: One interaction row per query, or ``None``. With a row, the ``k``
                best text matches are re-ordered by relevance plus
                ``personalisation_weight`` x similarity to the shopper's profile: the
                shopper's taste decides the order among relevant products, and never swaps
                a relevant product for a weaker match.

        Returns:
            ``(indices, scores)`` of shape ``(len(queries), k)``; items with no text match
            are never returned (index -1, score ``-inf``).
        """
        relevance = (self.features_.query_vectors(list(queries)) @ self.text_vectors_.T
                     ).toarray()
        relevance[relevance <= 0] = -np.inf
        if user_rows is None or self.personalisation_weight == 0:
            return top_k(relevance, k)
        page, _ = top_k(relevance, k)
        profiles = self.profiles(user_rows)
        scores = np.full_like(relevance, -np.inf)
        for r in range(len(queries)):
            found = page[r][page[r] >= 0]
            personal = (profiles[r] @ self.item_vectors_[found].T).toarray().ravel()
            scores[r, found] = relevance[r, found] + self.personalisation_weight * personal
        return top_k(scores, k)

    @property
    def n_items_(self) -> int:
        """Number of items the model scores."""
        return self.item_vectors_.shape[0]

    def _save_state(self, folder: Path) -> None:
        self.features_.save(folder / "features")
        precision = self.storage_precision_
        save_sparse(folder / "item_vectors.npz", self.item_vectors_, precision)
        save_sparse(folder / "text_vectors.npz", self.text_vectors_, precision)
        np.save(folder / "popularity.npy", self.popularity_)
        np.save(folder / "smoothing.npy", np.float64(self.smoothing_))
        np.save(folder / "exponent.npy", np.float64(self.exponent_))
        if self.embeddings_ is not None:
            save_arrays(folder / "embeddings.npz", {"embeddings": self.embeddings_}, precision)

    def _load_state(self, folder: Path) -> None:
        self.features_ = ItemFeatures.load(folder / "features")
        self.item_vectors_ = load_sparse(folder / "item_vectors.npz")
        self.text_vectors_ = load_sparse(folder / "text_vectors.npz")
        self._prepare()
        self.popularity_ = np.load(folder / "popularity.npy")
        self.smoothing_ = float(np.load(folder / "smoothing.npy"))
        # Saved before the exponent existed: the cosine to the profile.
        self.exponent_ = float(np.load(folder / "exponent.npy")) \
            if (folder / "exponent.npy").exists() else 1.0
        # Saved as .npy before compression existed, as .npz since.
        self.embeddings_ = load_arrays(folder / "embeddings.npz")["embeddings"] \
            if (folder / "embeddings.npz").exists() else np.load(folder / "embeddings.npy") \
            if (folder / "embeddings.npy").exists() else None


def _power(cosines: np.ndarray, exponent: float) -> np.ndarray:
    """``max(cosines, 0) ** exponent``, in place."""
    np.maximum(cosines, 0.0, out=cosines)
    return np.power(cosines, exponent, out=cosines)
