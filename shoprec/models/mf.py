"""Matrix factorisation: implicit-feedback ALS with confidence weighting (Hu, Koren, Volinsky).

Training uses the ``implicit`` library. Scoring folds each interaction row in by the same
weighted least squares that ALS solves for a user, so a shopper never seen in training gets
personalised scores from a handful of recent items.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp

from shoprec.errors import ModelFitError, ModelSkippedError
from shoprec.models.base import FitContext, Recommender, check_finite
from shoprec.models.storage import load_arrays, save_arrays
from shoprec.ranking import top_k
from shoprec.threads import limit_threads

logger = logging.getLogger(__name__)

#: Rows folded in together at most (:meth:`ImplicitALS.user_factors`).
FOLD_IN_ROWS = 512
#: Values (rows x longest row x factors) of one fold-in group's padded block: 4M float64,
#: 32 MB; forming the systems takes a few arrays of about its size more.
FOLD_IN_BLOCK_VALUES = 4 * 2**20


class ImplicitALS(Recommender):
    """Implicit-feedback ALS.

    The confidence of an observed (user, item) is ``alpha * weight``, with ``weight`` the
    entry of the interaction matrix, or that entry reweighted by BM25 (``weighting``);
    unobserved entries have preference 0 and confidence 1.

    Args:
        factors: Latent dimensions.
        regularization: L2 penalty on the factors; ``None`` picks it on the validation
            data given to :meth:`fit`: the best of ``regularization_grid``, then
            ``refine_steps`` log-scale refinements around it; 10 without validation data.
            The good range is narrow (on synthetic data half a decade off the best loses
            most of the gain over popularity) and moves with the data (about 100 at 50,000
            shoppers, 300 at 500,000), so a fixed decade grid can miss it entirely.
        regularization_grid: Starting penalties when ``regularization`` is ``None``.
        alpha: Scale from interaction weight to confidence.
        iterations: ALS sweeps of the fitted model.
        search_iterations: ALS sweeps of each fit made while choosing the penalty (the
            chosen one is then fitted with ``iterations``); the validation curve's peak
            is where the full fits put it, at a third of the cost. ``None``: ``iterations``.
        refine_steps: Refinements after the grid, each halving the log-step (two: a
            decade grid ends at quarter decades).
        weighting: ``"bm25"``: each entry ``x`` of a shopper's row becomes
            ``x (k1 + 1) / (k1 (1 - b + b n / n̄) + x) idf``, with ``n`` the row's sum,
            ``n̄`` its mean over the training rows and ``idf = log(1 + (N - m + 0.5) /
            (m + 0.5))`` for an item that ``m`` of ``N`` shoppers have (Lucene's, positive
            even for an item everyone has), before the confidence scaling: an entry of a
            popular item weighs less (it says little about a taste), and so does each
            entry of a shopper who bought much. ``"none"``: the entries as they are. The
            statistics come from the training rows and are kept, so a folded-in row is
            weighted the same way. An entry can end with a confidence under 1 (a long
            row's entry on a common item), below an unobserved item's: validation
            favoured it on every data set measured all the same.
        bm25_k1: BM25's saturation of an entry (large: nearly linear in ``x``). Shop
            weights run up to tens (purchases times damped quantities, summed over
            repeats), and ALS given confidences that large leans on the heavy entries: on
            Online Retail's validation 10 and above lost to no weighting, 3 tied with it
            and 1.2 beat it, while on the synthetic sets 3 and 10 did best and 1.2 fell
            back (``benchmarks/RESULTS.md``, twelfth session).
        bm25_b: BM25's length normalisation (0: none, 1: by the whole row sum).
        seed: Seed of the factor initialisation.
        threads: Threads of the ALS solver (the run gives each candidate its share of the
            cores; the factors do not depend on it).
    """

    family = "mf"
    name = "mf"
    renamed_params: ClassVar[dict[str, str]] = {"num_threads": "threads"}
    #: Saved before BM25 existed, a model read its entries as they were: so it still does.
    added_params: ClassVar[dict[str, Any]] = {"weighting": "none"}
    user_factors_: np.ndarray | None
    item_idf_: np.ndarray | None = None
    average_length_: float | None = None

    def __init__(self, factors: int = 64, regularization: float | None = None,
                 regularization_grid: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0),
                 alpha: float = 1.0, iterations: int = 15,
                 search_iterations: int | None = 5, refine_steps: int = 2,
                 weighting: Literal["bm25", "none"] = "bm25", bm25_k1: float = 3.0,
                 bm25_b: float = 0.8, seed: int = 0, threads: int = 1) -> None:
        self.factors = factors
        self.regularization = regularization
        self.regularization_grid = regularization_grid
        self.alpha = alpha
        self.iterations = iterations
        self.search_iterations = search_iterations
        self.refine_steps = refine_steps
        self.weighting = weighting
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.seed = seed
        self.threads = threads

    def fit(self, interactions: sp.csr_matrix, context: FitContext | None = None) -> ImplicitALS:
        """Run ALS on the weighted matrix, choosing the penalty on validation if asked."""
        if self.weighting not in ("none", "bm25"):
            raise ValueError(f"mf: weighting must be 'none' or 'bm25', not {self.weighting!r}")
        interactions = sp.csr_matrix(interactions)
        if self.weighting == "bm25":
            # The statistics of the rows the factors are learned from, kept for fold-ins.
            # A stored zero (an event weighted 0, a decayed weight underflowed) is no shopper.
            shoppers = np.bincount(interactions.indices[interactions.data > 0],
                                   minlength=interactions.shape[1])
            n = interactions.shape[0]
            self.item_idf_ = np.log1p((n - shoppers + 0.5) / (shoppers + 0.5))
            lengths = np.asarray(interactions.sum(axis=1), dtype=np.float64).ravel()
            self.average_length_ = float(lengths.mean()) if len(lengths) else 1.0
        interactions = self._weighted(interactions)
        # After each sweep: an early refit stops there once its candidate no longer leads
        # or the run failed.
        after_sweep = (lambda: context.check_stop(self.name)) if context is not None else None
        if self.regularization is None and context is not None and context.tuner is not None:
            sweeps = min(self.search_iterations or self.iterations, self.iterations)

            def apply(value: float, start: tuple[np.ndarray, np.ndarray] | None
                      ) -> tuple[np.ndarray, np.ndarray]:
                # Each fit starts from the factors of the nearest penalty tried (the
                # tuner's ``warm``): a few sweeps from there land near the converged
                # solution, where a few from random ones stop short of it and would favour
                # smaller penalties.
                warm = start if sweeps < self.iterations else None
                self.regularization_ = value
                self.item_factors_, self.user_factors_ = self._solve(interactions, value,
                                                                     sweeps, warm, after_sweep)
                self._prepare()
                return self.item_factors_, self.user_factors_

            self.regularization_, (self.item_factors_, self.user_factors_) = \
                context.tuner.select(self, self.regularization_grid, apply, "regularization",
                                     refine=self.refine_steps, warm=True)
            if sweeps < self.iterations:
                self.item_factors_, self.user_factors_ = self._solve(
                    interactions, self.regularization_, self.iterations, after_sweep=after_sweep)
        else:
            self.regularization_ = float(10.0 if self.regularization is None
                                         else self.regularization)
            self.item_factors_, self.user_factors_ = self._solve(
                interactions, self.regularization_, self.iterations, after_sweep=after_sweep)
        self._prepare()
        return self

    @property
    def selected_params_(self) -> dict[str, float]:
        """Hyperparameters chosen during :meth:`fit`, to reuse when refitting."""
        return {"regularization": self.regularization_}

    def _weighted(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        """``rows`` as the factors read them: BM25-weighted, or as they are."""
        rows = rows if sp.isspmatrix_csr(rows) else sp.csr_matrix(rows)
        if self.weighting != "bm25":
            return rows
        if self.item_idf_ is None or self.average_length_ is None:
            raise ModelFitError("mf: BM25 weighting without its statistics; fit the model "
                                "first, or retrain a bundle saved without them")
        k1, b = self.bm25_k1, self.bm25_b
        x = rows.data.astype(np.float64)
        lengths = np.asarray(rows.sum(axis=1), dtype=np.float64).ravel()
        norm = (1.0 - b) + b * lengths / max(self.average_length_, 1e-12)
        denominator = k1 * np.repeat(norm, np.diff(rows.indptr)) + x
        # Only a zero entry of an all-zero row with b = 1 has a zero denominator: it stays 0.
        safe = np.where(denominator > 0, denominator, 1.0)
        data = x * (k1 + 1.0) / safe * self.item_idf_[rows.indices]
        return sp.csr_matrix((data, rows.indices, rows.indptr), shape=rows.shape)

    def _solve(self, interactions: sp.csr_matrix, regularization: float, iterations: int,
               warm: tuple[np.ndarray, np.ndarray] | None = None,
               after_sweep: Callable[[], None] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """ALS's item and user factors.

        ``after_sweep`` is called after each sweep and may raise to end the fit
        (:class:`~shoprec.errors.FitStopped`).
        """
        from implicit.cpu.als import AlternatingLeastSquares

        # implicit's solver is threaded itself; BLAS threads on top would oversubscribe.
        with limit_threads(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors, regularization=regularization, alpha=self.alpha,
                iterations=iterations, random_state=self.seed,
                num_threads=self.threads, calculate_training_loss=False,
            )
            if warm is not None:  # copies: the solver updates them in place
                model.item_factors, model.user_factors = (np.array(f, np.float32)
                                                          for f in warm)
            model.fit(sp.csr_matrix(interactions, dtype=np.float32), show_progress=False,
                      callback=(lambda *_: after_sweep()) if after_sweep is not None else None)
        item_factors = np.asarray(model.item_factors, dtype=np.float32)
        if not np.all(np.isfinite(item_factors)):
            raise ModelFitError("ALS produced non-finite item factors; raise regularization")
        return item_factors, np.asarray(model.user_factors, dtype=np.float32)

    def _prepare(self) -> None:
        # One zero row after the factors: the padded slot of the fold-in's blocks (built
        # here once; a served request folds one row in).
        padded = np.zeros((self.item_factors_.shape[0] + 1, self.item_factors_.shape[1]))
        padded[:-1] = self.item_factors_
        self.item_factors_padded_ = padded
        self.item_factors64_ = padded[:-1]
        self.item_norms_ = np.linalg.norm(self.item_factors_, axis=1)
        y = self.item_factors64_
        self.gram_ = y.T @ y + self.regularization_ * np.eye(y.shape[1])
        # Symmetric positive definite (λ > 0): the fold-in of short rows works from it.
        self.gram_inverse_ = np.linalg.inv(self.gram_)

    def user_factors(self, user_rows: sp.csr_matrix) -> np.ndarray:
        """Fold rows in: the least-squares user vector ALS would give each row.

        Solves ``(YᵀY + λI + Yᵀ(C−I)Y) x = YᵀC p`` for each row, with ``C`` the row's
        confidences and ``p`` its binary preferences. An empty row gets a zero vector.

        Rows of similar length are solved together: each group's items are gathered into
        one zero-padded block (a padded slot is a zero factor, so it adds nothing), its
        systems formed by one batched product and solved by one batched call. Row by row,
        the Python loop and LAPACK's per-call cost took most of an evaluation's time (at
        1M interactions, 11 of mf's 32 s of fitting went to folding validation rows in).
        """
        rows = self._weighted(user_rows)
        y = self.item_factors64_
        dims = y.shape[1]
        out = np.zeros((rows.shape[0], dims), dtype=np.float64)
        lengths = np.diff(rows.indptr)
        active = np.flatnonzero(lengths)
        if not len(active):
            return out
        if rows.indices.max() >= y.shape[0]:
            raise ValueError(f"mf: an item index past the model's {y.shape[0]} items")
        padded = self.item_factors_padded_
        order = active[np.argsort(lengths[active], kind="stable")]
        # Rows at most half the dims long are solved through their items (_fold_short).
        split = int(np.searchsorted(lengths[order], dims // 2, side="right"))
        for part, fold in ((order[:split], self._fold_short), (order[split:], self._fold_long)):
            start = 0
            while start < len(part):
                longest = int(lengths[part[min(len(part), start + FOLD_IN_ROWS) - 1]])
                # As many rows as fit the block's memory (one long row alone, if need be).
                count = max(1, min(FOLD_IN_ROWS, FOLD_IN_BLOCK_VALUES // (longest * dims)))
                group = part[start:start + count]
                start += count
                slots = np.arange(int(lengths[group[-1]]))
                present = slots[None, :] < lengths[group][:, None]
                at = np.minimum(rows.indptr[group][:, None] + slots[None, :], rows.nnz - 1)
                factors = padded[np.where(present, rows.indices[at], y.shape[0])]
                weights = np.where(present, rows.data[at].astype(np.float64), 0.0)
                out[group] = fold(factors, self.alpha * weights)
        return out

    def _fold_long(self, factors: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """The fold-in's systems as they are: ``A = G + Fᵀ(C−I)F``, ``A x = Fᵀc``.

        ``factors`` (rows, slots, dims) and ``confidence`` (rows, slots), zero-padded.
        """
        systems = self.gram_ + np.matmul(factors.transpose(0, 2, 1),
                                         (confidence - 1.0)[:, :, None] * factors)
        targets = np.einsum("glf,gl->gf", factors, confidence)
        return np.linalg.solve(systems, targets[:, :, None])[:, :, 0]

    def _fold_short(self, factors: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """The same solution through the row's items, for rows at most half the dims long.

        ``A = G + FᵀDF`` with ``D = C − I`` is a low-rank update of ``G``, whose inverse
        ``H`` is kept: by Woodbury's identity (the form that needs no ``D⁻¹``, which a
        confidence of 1 would lack) ``A⁻¹ = H − PᵀD(I + KD)⁻¹P`` with ``P = FH`` and
        ``K = PFᵀ``, so ``x = A⁻¹Fᵀc = Pᵀ(c − Dz)`` with ``(I + KD) z = Kc``: a
        slots x slots system per row instead of dims x dims. A padded slot (zero factor)
        gives a zero row and column of ``K``, an identity row of ``I + KD``, and ``z = 0``.
        """
        rows, slots, dims = factors.shape
        projected = (factors.reshape(-1, dims) @ self.gram_inverse_).reshape(rows, slots, dims)
        kernel = np.matmul(projected, factors.transpose(0, 2, 1))
        scale = confidence - 1.0
        systems = kernel * scale[:, None, :] + np.eye(slots)
        solved = np.linalg.solve(systems, np.einsum("gij,gj->gi", kernel, confidence)[:, :, None])
        return np.einsum("glf,gl->gf", projected, confidence - scale * solved[:, :, 0])

    def contributions(self, user_row: sp.csr_matrix,
                      items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact contributions through the fold-in.

        The user vector is ``A⁻¹ sum_h c_h y_h`` (``A`` the row's system of
        :meth:`user_factors`), so history item ``h`` adds ``c_h y_j A⁻¹ y_h`` to item
        ``j``'s score (the decomposition in Hu, Koren and Volinsky's section 5).
        """
        row = self._weighted(sp.csr_matrix(user_row))
        history = row.indices
        if not len(history):
            return history, np.zeros((len(items), 0))
        y = self.item_factors64_
        confidence = self.alpha * row.data.astype(np.float64)
        factors = y[history]
        a = self.gram_ + factors.T @ ((confidence - 1.0)[:, None] * factors)
        solved = np.linalg.solve(a, factors.T)  # A⁻¹ y_h for every history item
        return history, (y[items] @ solved) * confidence[None, :]

    def similar_items(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray] | None:
        """The items whose factors point the same way as ``item``'s (cosine)."""
        factors = self.item_factors_
        norms = self.item_norms_
        if norms[item] == 0:
            return None  # nothing learned about it: the content model answers
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = ((factors @ factors[item]) / (norms * norms[item])).astype(np.float32)
        scores[~np.isfinite(scores) | (norms == 0)] = -np.inf
        scores[item] = -np.inf
        indices, values = top_k(scores[None, :], k)
        keep = indices[0] >= 0
        return indices[0][keep], values[0][keep]

    def score(self, user_rows: sp.csr_matrix) -> np.ndarray:
        """Fold each row in and score every item by the dot product."""
        factors = self.user_factors(user_rows).astype(np.float32)
        return check_finite(factors @ self.item_factors_.T, self.name)

    @property
    def n_items_(self) -> int:
        """Number of items the model scores."""
        return self.item_factors_.shape[0]

    def _save_state(self, folder: Path) -> None:
        state: dict[str, Any] = {"item_factors": self.item_factors_,
                                 "regularization": np.float64(self.regularization_)}
        if self.item_idf_ is not None:
            state["item_idf"] = self.item_idf_
            state["average_length"] = np.float64(self.average_length_)
        save_arrays(folder / "state.npz", state, self.storage_precision_)

    def _load_state(self, folder: Path) -> None:
        state = load_arrays(folder / "state.npz")
        self.item_factors_ = state["item_factors"]
        # Not kept: ALS's last user factors are a sweep behind its item factors (and
        # approximate), and batch lists from them parted from the served, fold-in ones for
        # a quarter of the sample's shoppers. A bundle saved with them ignores them.
        self.user_factors_ = None
        self.regularization_ = float(state["regularization"])
        if "item_idf" in state:
            self.item_idf_ = state["item_idf"].astype(np.float64)
            self.average_length_ = float(state["average_length"])
        elif self.weighting == "bm25":
            raise ModelFitError(f"{folder}: an mf bundle with BM25 weighting but without its "
                                "statistics (item_idf); retrain it")
        self._prepare()


class RatingsMF(Recommender):
    """Matrix factorisation of explicit ratings: ``r ≈ μ + b_u + b_i + x_uᵀ y_i``.

    Fitted by alternating ridge regressions on the observed entries only (squared error),
    for rating data (MovieLens). The matrix values are taken as the ratings (the default
    weighting gives a rating event its value). Scoring folds each row in by the same ridge
    regression, so a new user's few ratings give personalised predictions; an empty row is
    ranked by the item biases.

    Args:
        factors: Latent dimensions.
        regularization: L2 penalty on factors and biases.
        iterations: ALS sweeps.
        seed: Seed of the initialisation.
    """

    family = "mf"
    name = "mf-ratings"

    def __init__(self, factors: int = 16, regularization: float = 5.0, iterations: int = 10,
                 seed: int = 0) -> None:
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.seed = seed

    def fit(self, interactions: sp.csr_matrix, context: FitContext | None = None) -> RatingsMF:
        """Alternate ridge regressions for users and items on the observed ratings."""
        if context is not None and not context.has_ratings:
            raise ModelSkippedError("mf-ratings fits rating values and the data have no "
                                    "rating events, or the run's event weighting changes "
                                    "them (a recency half-life, a rating weight other than "
                                    "1: --fixed-weighting keeps them)")
        ratings = sp.csr_matrix(interactions, dtype=np.float64)
        if ratings.nnz == 0:
            raise ModelFitError("no ratings to fit")
        rng = np.random.default_rng(self.seed)
        n_users, n_items = ratings.shape
        self.mean_ = float(ratings.data.mean())
        users = rng.normal(0, 0.1, (n_users, self.factors))
        user_bias = np.zeros(n_users)
        self.item_factors_ = rng.normal(0, 0.1, (n_items, self.factors))
        self.item_bias_ = np.zeros(n_items)
        by_item = ratings.T.tocsr()
        for _ in range(self.iterations):
            if context is not None:
                context.check_stop(self.name)
            users, user_bias = self._ridge(ratings, self.item_factors_, self.item_bias_)
            self.item_factors_, self.item_bias_ = self._ridge(by_item, users, user_bias)
        if not (np.all(np.isfinite(self.item_factors_)) and np.all(np.isfinite(self.item_bias_))):
            raise ModelFitError("ratings MF diverged; raise regularization")
        return self

    def _ridge(self, rows: sp.csr_matrix, other: np.ndarray, other_bias: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Solve each row's factors and bias given the other side's (bias as a last column)."""
        out = np.zeros((rows.shape[0], other.shape[1] + 1))
        design_all = np.hstack([other, np.ones((other.shape[0], 1))])
        penalty = self.regularization * np.eye(design_all.shape[1])
        for r in range(rows.shape[0]):
            start, end = rows.indptr[r], rows.indptr[r + 1]
            if start == end:
                continue
            idx = rows.indices[start:end]
            design = design_all[idx]
            target = rows.data[start:end] - self.mean_ - other_bias[idx]
            out[r] = np.linalg.solve(design.T @ design + penalty, design.T @ target)
        return out[:, :-1], out[:, -1]

    def fold_in(self, user_rows: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """Factors and biases of each row's user, from that row's ratings."""
        return self._ridge(sp.csr_matrix(user_rows, dtype=np.float64), self.item_factors_,
                           self.item_bias_)

    def score(self, user_rows: sp.csr_matrix) -> np.ndarray:
        """Predicted rating of every item for each row."""
        factors, bias = self.fold_in(user_rows)
        scores = self.mean_ + bias[:, None] + self.item_bias_[None, :] + factors @ (
            self.item_factors_.T)
        return check_finite(scores.astype(np.float32), self.name)

    def predict_pairs(self, user_rows: sp.csr_matrix, rows: np.ndarray,
                      items: np.ndarray) -> np.ndarray:
        """Predicted ratings for (row, item) pairs, each row folded in from ``user_rows``."""
        factors, bias = self.fold_in(user_rows)
        return (self.mean_ + bias[rows] + self.item_bias_[items]
                + np.einsum("ij,ij->i", factors[rows], self.item_factors_[items]))

    @property
    def n_items_(self) -> int:
        """Number of items the model scores."""
        return self.item_factors_.shape[0]

    def _save_state(self, folder: Path) -> None:
        save_arrays(folder / "state.npz", {"item_factors": self.item_factors_,
                                           "item_bias": self.item_bias_,
                                           "mean": np.float64(self.mean_)},
                    self.storage_precision_)

    def _load_state(self, folder: Path) -> None:
        state = load_arrays(folder / "state.npz")
        self.item_factors_ = state["item_factors"]
        self.item_bias_ = state["item_bias"]
        self.mean_ = float(state["mean"])
