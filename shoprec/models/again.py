"""Buy again: a shopper's own purchases first, for a shop of repeat purchases.

In a grocery shop most of what a shopper buys next they have bought before, and the plain
baseline of ranking each shopper's own items by how much they bought them (ndcg@10 0.98
on a reader's weekly-basket data) beat popularity (0.82) and every model (EASE, whose
diagonal is zero, never counts an item's own purchases towards it: 0.82). This family is
that baseline: the shopper's own items by their weight in the training matrix (the run's
event weighting: counts, recency), then every other item by popularity. It is trained only
where already-bought items count (``--repeat-items``): elsewhere those items are left out
of the ranking, and what remains is popularity's list.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from shoprec.errors import ModelSkippedError
from shoprec.models.base import FitContext, Recommender
from shoprec.models.popularity import Popularity

#: Every item a shopper has scores above this; every other item scores below it.
_OWN = 2.0


class BuyAgain(Popularity):
    """A shopper's own items by weight, then the rest by popularity.

    Scores: an item in the shopper's row gets ``2 + weight / (the row's largest weight)``
    plus a thousandth of its popularity share (ties among equal weights go to the more
    popular item); any other item its popularity share, below 1. A row given at serving
    time (recent items, a new shopper) is scored the same way. The popularity part, its
    state and storage are :class:`Popularity`'s (exact counts of shoppers).
    """

    family = "again"
    name = "again"

    def __init__(self) -> None:
        """No hyperparameters: the event weighting of the run orders a shopper's items."""
        super().__init__()

    # A shopper's own items explain themselves (leave-one-out), unlike popularity's.
    contributions = Recommender.contributions

    def fit(self, interactions: sp.csr_matrix, context: FitContext | None = None) -> BuyAgain:
        """Count each item's shoppers (the popularity part).

        Raises:
            ModelSkippedError: The run leaves already-bought items out of the ranking.
        """
        if context is not None and context.repeat_items is False:
            raise ModelSkippedError("again ranks a shopper's own purchases again: it is "
                                    "trained only for a shop of repeat purchases "
                                    "(--repeat-items), where those count")
        super().fit(sp.csr_matrix(interactions), context)
        return self

    def score(self, user_rows: sp.csr_matrix) -> np.ndarray:
        """Own items above 2 (by weight), the others by popularity below 1."""
        rows = sp.csr_matrix(user_rows, dtype=np.float32)
        scores = np.tile(self.item_scores_, (rows.shape[0], 1))
        if rows.nnz:
            largest = rows.max(axis=1).toarray().ravel()
            largest[largest <= 0] = 1.0
            scaled = sp.diags(1.0 / largest) @ rows
            owned = scaled.tocoo()
            positive = owned.data > 0
            scores[owned.row[positive], owned.col[positive]] = (
                _OWN + owned.data[positive]
                + scores[owned.row[positive], owned.col[positive]] / 1000.0)
        return scores.astype(np.float32, copy=False)
