"""Popularity: the baseline, and the fallback for a shopper with no history."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from shoprec.errors import ModelFitError
from shoprec.models.base import FitContext, Recommender


class Popularity(Recommender):
    """Ranks items by how many training users interacted with them.

    With ``epsilon``, the counts are differentially private at the level of a shopper: each
    shopper counts for at most ``max_items_per_user`` items (a seeded sample of theirs when
    they have more), so adding or removing one shopper changes the counts by at most that
    much in L1, and every count gets Laplace noise of scale ``max_items_per_user /
    epsilon`` (the Laplace mechanism); negative counts become 0, which, like the ranking,
    is post-processing and costs no privacy. The noise is drawn from the operating
    system's entropy, never from ``seed``: noise anyone could regenerate from the recorded
    seed would protect nobody. So private counts are the one figure of a run that differs
    between two runs on the same data.

    Args:
        weighted: Count summed event weights instead of distinct users (not with
            ``epsilon``).
        epsilon: Privacy budget of the counts (``None``: exact counts).
        max_items_per_user: A shopper's largest contribution under ``epsilon``.
        seed: Seed of the per-shopper sampling (not of the noise).
    """

    family = "popularity"
    name = "popularity"

    def __init__(self, weighted: bool = False, epsilon: float | None = None,
                 max_items_per_user: int = 50, seed: int = 0) -> None:
        self.weighted = weighted
        self.epsilon = epsilon
        self.max_items_per_user = max_items_per_user
        self.seed = seed

    def fit(self, interactions: sp.csr_matrix, context: FitContext | None = None) -> Popularity:
        """Count interactions per item (with noise under ``epsilon``).

        Raises:
            ModelFitError: ``epsilon`` not positive, or given with ``weighted``.
        """
        if self.epsilon is not None:
            counts = self._private_counts(sp.csr_matrix(interactions))
        elif self.weighted:
            counts = np.asarray(interactions.sum(axis=0)).ravel()
        else:
            counts = np.bincount(interactions.indices, minlength=interactions.shape[1])
        # Normalise so scores are comparable across data sizes.
        total = counts.sum()
        self.item_scores_ = (counts / total if total else counts).astype(np.float32)
        return self

    def _private_counts(self, matrix: sp.csr_matrix) -> np.ndarray:
        if self.weighted or not self.epsilon or self.epsilon <= 0 \
                or self.max_items_per_user < 1:
            raise ModelFitError("popularity: epsilon must be positive, max_items_per_user at "
                                "least 1, and weighted counts cannot be made private here")
        rng = np.random.default_rng(self.seed)
        lengths = np.diff(matrix.indptr)
        keep = np.ones(matrix.nnz, dtype=bool)
        for row in np.flatnonzero(lengths > self.max_items_per_user):
            start = matrix.indptr[row]
            dropped = rng.permutation(lengths[row])[self.max_items_per_user:]
            keep[start + dropped] = False
        counts = np.bincount(matrix.indices[keep], minlength=matrix.shape[1]).astype(float)
        noise = np.random.default_rng(secrets.randbits(128))  # unpredictable on purpose
        noisy = counts + noise.laplace(0.0, self.max_items_per_user / self.epsilon, len(counts))
        return np.maximum(noisy, 0.0)

    def score(self, user_rows: sp.csr_matrix) -> np.ndarray:
        """Every row gets the same popularity scores."""
        return np.tile(self.item_scores_, (user_rows.shape[0], 1))

    def contributions(self, user_row: sp.csr_matrix,
                      items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nothing in a shopper's history changes a popularity score."""
        history = sp.csr_matrix(user_row).indices
        return history, np.zeros((len(items), len(history)))

    @property
    def n_items_(self) -> int:
        """Number of items the model scores."""
        return len(self.item_scores_)

    def _save_state(self, folder: Path) -> None:
        np.savez(folder / "state.npz", item_scores=self.item_scores_)

    def _load_state(self, folder: Path) -> None:
        with np.load(folder / "state.npz") as state:
            self.item_scores_ = state["item_scores"]
