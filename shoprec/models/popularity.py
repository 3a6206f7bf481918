"""Popularity: the baseline, and the fallback for a shopper with no history."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from shoprec.models.base import FitContext, Recommender


class Popularity(Recommender):
    """Ranks items by how many training users interacted with them.

    Args:
        weighted: Count summed event weights instead of distinct users.
    """

    family = "popularity"
    name = "popularity"

    def __init__(self, weighted: bool = False) -> None:
        self.weighted = weighted

    def fit(self, interactions: sp.csr_matrix, context: FitContext | None = None) -> Popularity:
        """Count interactions per item."""
        if self.weighted:
            counts = np.asarray(interactions.sum(axis=0)).ravel()
        else:
            counts = np.bincount(interactions.indices, minlength=interactions.shape[1])
        # Normalise so scores are comparable across data sizes.
        total = counts.sum()
        self.item_scores_ = (counts / total if total else counts).astype(np.float32)
        return self

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
