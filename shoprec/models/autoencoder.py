"""Autoencoder family. EASE: the closed-form shallow autoencoder (Steck, WWW 2019).

``B = I - P diag(1/diag(P))`` with ``P = (XᵀX + λI)⁻¹`` and a zero diagonal; a row is
scored as ``x B``, so any interaction row, including a new shopper's, is scored directly.
Memory grows with items², hence a declared item limit above which the pipeline skips it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.linalg import LinAlgError, cho_factor, cho_solve

from shoprec.errors import ModelFitError
from shoprec.models.base import FitContext, Recommender, check_finite

logger = logging.getLogger(__name__)


class EASE(Recommender):
    """Embarrassingly Shallow Autoencoder.

    Args:
        regularization: λ added to the diagonal of the Gram matrix; ``None`` picks the best
            of ``regularization_grid`` on the validation data given to :meth:`fit`.
        regularization_grid: Candidate values when ``regularization`` is ``None``.
        binary: Fit on 0/1 interactions instead of the weights.
    """

    family = "autoencoder"
    name = "ease"
    #: items² float32 for B plus a float64 Gram matrix: about 2.4 GB at 15,000 items.
    max_items = 15_000

    def __init__(self, regularization: float | None = None,
                 regularization_grid: tuple[float, ...] = (50.0, 200.0, 800.0, 3200.0),
                 binary: bool = True) -> None:
        self.regularization = regularization
        self.regularization_grid = regularization_grid
        self.binary = binary

    def fit(self, interactions: sp.csr_matrix, context: FitContext | None = None) -> EASE:
        """Solve the closed form (once per candidate λ when choosing on validation)."""
        matrix = sp.csr_matrix(interactions, dtype=np.float64)
        if self.binary:
            matrix.data[:] = 1.0
        gram = (matrix.T @ matrix).toarray()
        if self.regularization is not None:
            self.regularization_ = float(self.regularization)
            self.weights_ = self._solve(gram, self.regularization_)
        elif context is not None and context.validation_relevance is not None:
            self.regularization_, self.weights_ = self._select(gram, context)
        else:
            self.regularization_ = float(self.regularization_grid[1])
            self.weights_ = self._solve(gram, self.regularization_)
        return self

    @property
    def selected_params_(self) -> dict[str, float]:
        """Hyperparameters chosen during :meth:`fit`, to reuse when refitting."""
        return {"regularization": self.regularization_}

    def _select(self, gram: np.ndarray, context: FitContext) -> tuple[float, np.ndarray]:
        from shoprec.evaluation.evaluate import evaluate

        best = (-1.0, 0.0, None)
        for value in self.regularization_grid:
            self.weights_ = self._solve(gram, float(value))
            score = evaluate(self, context.validation_history, context.validation_relevance,
                             ks=(10,))["ndcg@10"]
            logger.info("ease regularization %g: validation ndcg@10 %.4f", value, score)
            if score > best[0]:
                best = (score, float(value), self.weights_)
        return best[1], best[2]

    @staticmethod
    def _solve(gram: np.ndarray, regularization: float) -> np.ndarray:
        regularized = gram.copy()
        regularized[np.diag_indices_from(regularized)] += regularization
        try:
            # The regularised Gram matrix is symmetric positive definite: Cholesky is the
            # cheapest stable inverse.
            inverse = cho_solve(cho_factor(regularized, lower=True, check_finite=False),
                                np.eye(len(regularized)), check_finite=False)
        except LinAlgError as exc:
            raise ModelFitError(f"EASE: the Gram matrix is not positive definite ({exc}); "
                                "raise regularization") from exc
        weights = -inverse / np.diag(inverse)[None, :]
        np.fill_diagonal(weights, 0.0)
        return weights.astype(np.float32)

    def score(self, user_rows: sp.csr_matrix) -> np.ndarray:
        """``x B`` for each row (binarised like the training data)."""
        rows = sp.csr_matrix(user_rows, dtype=np.float32)
        if self.binary:
            rows.data[:] = 1.0
        return check_finite(np.asarray(rows @ self.weights_, dtype=np.float32), self.name)

    @property
    def n_items_(self) -> int:
        """Number of items the model scores."""
        return self.weights_.shape[0]

    def _save_state(self, folder: Path) -> None:
        np.savez(folder / "state.npz", weights=self.weights_,
                 regularization=np.float64(self.regularization_))

    def _load_state(self, folder: Path) -> None:
        with np.load(folder / "state.npz") as state:
            self.weights_ = state["weights"]
            self.regularization_ = float(state["regularization"])
