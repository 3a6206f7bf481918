"""Autoencoder family: EASE (closed form), Mult-DAE and Mult-VAE (TensorFlow).

EASE is the closed-form shallow autoencoder (Steck, WWW 2019):
``B = I - P diag(1/diag(P))`` with ``P = (XᵀX + λI)⁻¹`` and a zero diagonal; a row is
scored as ``x B``, so any interaction row, including a new shopper's, is scored directly.
Memory grows with items² and time with items³: above the limit this machine allows
(:func:`ease_item_limit`), the most-interacted items are modelled and the rest ranked after
them by popularity.
TensorFlow is imported only inside the neural models' methods.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from shoprec.errors import ModelFitError
from shoprec.linalg import invert_spd
from shoprec.models.base import FitContext, HistoryWeights, Recommender, check_finite
from shoprec.models.epochs import (
    BoundedRows,
    check_half_life,
    coo_indices,
    decayed_rate,
    scheduled_epochs,
    train_epochs,
    trains_on_sparse_rows,
)
from shoprec.models.storage import load_arrays, load_sparse, save_arrays, save_sparse
from shoprec.ranking import spread_columns, top_k

logger = logging.getLogger(__name__)


class EASE(HistoryWeights, Recommender):
    """Embarrassingly Shallow Autoencoder.

    Args:
        regularization: λ added to the diagonal of the Gram matrix; ``None`` picks the best
            of ``regularization_grid`` on the validation data given to :meth:`fit`.
        regularization_grid: Candidate values when ``regularization`` is ``None``.
        binary: Fit on 0/1 interactions instead of the weights.
        vocabulary: Most items modelled (the most interacted); ``None``: the limit of this
            machine (:func:`ease_item_limit`).
        history_weights: With ``binary``, the power a shopper's row is read at: its
            weights, each row divided by its largest, raised to it (0: as 0/1; 1: the
            weights as they are); ``None``: the best of
            :data:`~shoprec.models.base.READING_EXPONENTS` on validation (0/1 without
            validation data). See :class:`HistoryWeights`.
    """

    family = "autoencoder"
    name = "ease"

    def __init__(self, regularization: float | None = None,
                 regularization_grid: tuple[float, ...] = (50.0, 200.0, 800.0, 3200.0),
                 binary: bool = True, vocabulary: int | None = None,
                 history_weights: float | None = None) -> None:
        self.regularization = regularization
        self.regularization_grid = regularization_grid
        self.binary = binary
        self.vocabulary = vocabulary
        self.history_weights = history_weights

    def fit(self, interactions: sp.csr_matrix, context: FitContext | None = None) -> EASE:
        """Solve the closed form (once per candidate λ when choosing on validation).

        On a catalogue over :func:`ease_item_limit` (or ``vocabulary``), the most-interacted
        items that fit are modelled and the others ranked after them by popularity.
        """
        tuner = context.tuner if context is not None else None
        choosing = self.regularization is None and tuner is not None
        self.history_weights_ = None  # λ is chosen reading rows as given (None: 0/1)
        n_items = interactions.shape[1]
        # Stored entries per item, without a column-major copy of the matrix.
        counts = np.bincount(sp.csr_matrix(interactions).indices, minlength=n_items)
        # The grid's limit even for one λ: a run's trials, its refits and a search's trials
        # (several at a time) all model as many items.
        limit = self.vocabulary or ease_item_limit(len(self.regularization_grid))
        if n_items > limit:
            # Most-interacted first; ties by index, so the same data keep the same items.
            keep = np.sort(np.argsort(-counts, kind="stable")[:limit])
            logger.info("ease: %d items over its limit of %d on this machine (memory and "
                        "time); modelling the %d most-interacted, the rest ranked after "
                        "them by popularity", n_items, limit, limit)
            self.vocabulary_: np.ndarray | None = keep
        else:
            self.vocabulary_ = None
        self.catalogue_items_ = n_items
        self.popularity_ = (counts / max(1, counts.max())).astype(np.float32)
        # A copy: binarising must not touch the caller's (shared) training matrix. Binary,
        # in single precision: the Gram matrix's counts are exact in it (up to 2**24
        # shoppers). Weighted, its sums are taken in double, as the solve may be.
        matrix = sp.csr_matrix(interactions, dtype=np.float32 if self.binary else np.float64,
                               copy=True)
        if self.vocabulary_ is not None:
            matrix = matrix[:, self.vocabulary_]
        if self.binary:
            matrix.data[:] = 1.0
        gram = (matrix.T @ matrix).toarray()
        row_sum = _largest_row_sum(gram)  # once: every λ's precision is chosen from it
        if choosing and tuner is not None:
            def apply(value: float) -> np.ndarray:
                self.weights_ = self._solve(gram, value, row_sum)
                return self.weights_

            self.regularization_, self.weights_ = tuner.select(
                self, self.regularization_grid, apply, "regularization")
        else:
            self.regularization_ = float(self.regularization_grid[1]
                                         if self.regularization is None
                                         else self.regularization)
            self.weights_ = self._solve(gram, self.regularization_, row_sum)
        if self.binary:
            self._choose_history_weights(context)
        return self

    @property
    def selected_params_(self) -> dict[str, Any]:
        """Hyperparameters chosen during :meth:`fit`, to reuse when refitting.

        The vocabulary's size too when the catalogue was over the limit, so the refits
        model as many items on any machine.
        """
        chosen: dict[str, Any] = {"regularization": self.regularization_}
        if self.binary:
            chosen["history_weights"] = self._reading_exponent()
        if self.vocabulary_ is not None:
            chosen["vocabulary"] = len(self.vocabulary_)
        return chosen

    @staticmethod
    def _solve(gram: np.ndarray, regularization: float,
               row_sum: float | None = None) -> np.ndarray:
        # row_sum: the Gram matrix's largest row sum, when the caller has it already.
        # Single precision where it is exact enough: LAPACK's single-precision Cholesky
        # inverse takes half the time and memory of double's (9.1 against 17.3 s at 11,298
        # items, with a relative difference of 6e-7; benchmarks/RESULTS.md). Its error grows
        # with the condition number of G + λI, at most (‖G‖₁ + λ) / λ as G is positive
        # semidefinite: above EASE_SINGLE_PRECISION_CONDITION (a small λ on a catalogue
        # with heavy shoppers) the solve is in double precision.
        if row_sum is None:
            row_sum = _largest_row_sum(gram)
        bound = (row_sum + regularization) / regularization \
            if regularization > 0 else np.inf
        dtype: type[np.floating] = \
            np.float32 if bound <= EASE_SINGLE_PRECISION_CONDITION else np.float64
        while True:
            regularized: np.ndarray = gram.astype(dtype, order="C")  # a copy: it serves every λ
            regularized[np.diag_indices_from(regularized)] += regularization
            # The regularised Gram matrix is symmetric positive definite: its Cholesky
            # factor is inverted in place by LAPACK (potrf, then potri). Solving against an
            # identity matrix instead took twice the time and two thirds more memory at
            # 10,000 items (benchmarks/RESULTS.md). The transpose is the same matrix in the
            # column-major order LAPACK works in, so neither call copies it; and the calls
            # leave the networks training beside this fit free to run (shoprec.linalg).
            inverse, info = invert_spd(regularized.T)
            if info == 0 or dtype == np.float64:
                break
            logger.info("ease: λ %g is not positive definite in single precision; solving "
                        "in double", regularization)
            dtype = np.float64
        if info != 0:
            raise ModelFitError(f"EASE: the Gram matrix is not positive definite (LAPACK "
                                f"info {info}); raise regularization")
        del regularized
        # potri fills the lower triangle only; the inverse is symmetric. Mirrored by blocks
        # of rows, so no second n x n array is ever made.
        n = len(inverse)
        for start in range(0, n, EASE_MIRROR_ROWS):
            stop = min(n, start + EASE_MIRROR_ROWS)
            inverse[start:stop, stop:] = inverse[stop:, start:stop].T
            block, upper = inverse[start:stop, start:stop], np.triu_indices(stop - start, 1)
            block[upper] = block.T[upper]
        diagonal = np.diag(inverse).copy()
        inverse /= -diagonal[None, :]
        np.fill_diagonal(inverse, 0.0)
        # Row-major: the inverse comes back column-major, and a sparse row times a
        # column-major matrix copies the whole matrix on every call (55 ms per served
        # request at 3,000 items, against 0.07 ms).
        return np.ascontiguousarray(inverse, dtype=np.float32)

    def score(self, user_rows: sp.csr_matrix) -> np.ndarray:
        """``x B`` for each row (read as 0/1 like the training data, or weighted).

        Items outside the vocabulary score below every modelled item of the row, in order
        of popularity.
        """
        rows = self._rows(user_rows)
        vocabulary = getattr(self, "vocabulary_", None)
        if vocabulary is None:
            return check_finite(_dense(rows @ self.weights_), self.name)
        modelled = _dense(rows[:, vocabulary] @ self.weights_)
        floor = modelled.min(axis=1, keepdims=True) - 1.0
        others = np.delete(self.popularity_, vocabulary)
        scores = spread_columns(modelled, vocabulary, len(self.popularity_),
                                floor + 0.5 * others[None, :])  # below every modelled item
        return check_finite(scores, self.name)

    def _rows(self, user_rows: sp.csr_matrix) -> sp.csr_matrix:
        if self.binary:
            return self._history_rows(user_rows)
        return sp.csr_matrix(user_rows, dtype=np.float32)

    def contributions(self, user_row: sp.csr_matrix,
                      items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact contributions: history item ``h`` adds ``x_h B[h, j]`` to item ``j``.

        Item ``j``'s score is ``sum_h x_h B[h, j]``. Items outside the vocabulary are ranked
        by popularity: nothing in the history adds to them.
        """
        row = self._rows(user_row)
        history, values = row.indices, row.data.astype(np.float64)
        out = np.zeros((len(items), len(history)))
        vocabulary = getattr(self, "vocabulary_", None)
        if vocabulary is None:
            out[:] = (values[:, None] * self._block(history, items)).T
            return history, out
        # Positions in the vocabulary (-1: not modelled) of the history and of the items.
        where = np.full(self.catalogue_items_, -1)
        where[vocabulary] = np.arange(len(vocabulary))
        h, i = where[history], where[items]
        hk, ik = np.flatnonzero(h >= 0), np.flatnonzero(i >= 0)
        out[np.ix_(ik, hk)] = (values[hk, None] * self._block(h[hk], i[ik])).T
        return history, out

    def similar_items(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray] | None:
        """The items ``item`` raises most: its row of ``B``.

        ``None`` for an item outside the vocabulary.
        """
        vocabulary = getattr(self, "vocabulary_", None)
        position = item
        if vocabulary is not None:
            found = np.flatnonzero(vocabulary == item)
            if not len(found):
                return None
            position = int(found[0])
        row: Any = self.weights_[position]
        weights = np.asarray(row.toarray() if sp.issparse(row) else row,
                             dtype=np.float32).reshape(1, -1)
        scores = np.full((1, self.catalogue_items_), -np.inf, dtype=np.float32)
        targets = vocabulary if vocabulary is not None else np.arange(weights.shape[1])
        scores[0, targets] = weights[0]
        scores[0, item] = -np.inf
        # Only items it actually raises: a pruned or negative weight is no relation.
        scores[scores <= 0] = -np.inf
        indices, values = top_k(scores, k)
        keep = indices[0] >= 0
        return indices[0][keep], values[0][keep]

    def _block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``B[rows][:, cols]`` as a dense array, whether ``B`` is dense or pruned."""
        if sp.issparse(self.weights_):
            return self.weights_[rows][:, cols].toarray()
        return np.asarray(self.weights_[np.ix_(rows, cols)])

    @property
    def n_items_(self) -> int:
        """Number of items the model scores."""
        return self.catalogue_items_

    def compress(self, precision: str | None = None, prune_top: int | None = None) -> None:
        """Round the weights (see the base class) and keep ``prune_top`` per item.

        Pruning keeps, in each item's row of ``B`` (what that item adds to the others), the
        ``prune_top`` weights largest in magnitude; the matrix becomes sparse, and scoring
        a shopper costs their items' rows only.

        Raises:
            ConfigError: A bad precision, or ``prune_top`` below 1.
        """
        from shoprec.errors import ConfigError

        super().compress(precision)
        if prune_top is None:
            return
        if prune_top < 1:
            raise ConfigError(f"--prune-top must be at least 1, got {prune_top}")
        current: Any = self.weights_
        n_rows, n = current.shape
        top = min(prune_top, n)
        blocks = []
        # A block of rows at a time: the magnitudes and the partition's indices of the
        # whole matrix would be three times its size again.
        for start in range(0, n_rows, 1024):
            block = current[start:start + 1024]
            block = np.asarray(block.toarray() if sp.issparse(block) else block)
            keep = np.argpartition(-np.abs(block), top - 1, axis=1)[:, :top] if top < n \
                else np.broadcast_to(np.arange(n), block.shape)
            rows = np.repeat(np.arange(len(block)), top)
            cols = np.asarray(keep).ravel()
            blocks.append(sp.csr_matrix((block[rows, cols], (rows, cols)), shape=block.shape,
                                        dtype=np.float32))
        pruned = sp.vstack(blocks, format="csr")
        pruned.eliminate_zeros()
        pruned.sort_indices()
        self.weights_ = pruned

    def _save_state(self, folder: Path) -> None:
        extra = {} if self.vocabulary_ is None else {
            "vocabulary": self.vocabulary_, "popularity": self.popularity_}
        precision = self.storage_precision_
        if sp.issparse(self.weights_):
            save_sparse(folder / "weights_sparse.npz", self.weights_, precision)
        else:
            extra["weights"] = self.weights_
        save_arrays(folder / "state.npz", {
            "regularization": np.float64(self.regularization_),
            "catalogue_items": np.int64(self.catalogue_items_), **extra}, precision)

    def _load_state(self, folder: Path) -> None:
        state = load_arrays(folder / "state.npz")
        # Pruned weights are sparse; models saved before the row-major fix hold a
        # column-major matrix.
        sparse = folder / "weights_sparse.npz"
        self.weights_ = load_sparse(sparse) if sparse.exists() \
            else np.ascontiguousarray(state["weights"])
        self.regularization_ = float(state["regularization"])
        # Saved before the vocabulary existed: the whole catalogue was modelled.
        self.catalogue_items_ = int(state["catalogue_items"]) \
            if "catalogue_items" in state else self.weights_.shape[0]
        self.vocabulary_ = state["vocabulary"] if "vocabulary" in state else None
        if self.vocabulary_ is not None:
            self.popularity_ = state["popularity"]


#: Peak bytes per item² while EASE chose λ in double precision: the float64 Gram matrix,
#: its regularised copy (factored, inverted and mirrored in place), the float32 weights of
#: the value being solved and of the best one so far: 24, plus the scoring's batches.
#: Measured over a grid of four at 5,972 items in benchmarks/RESULTS.md; 35 leaves a margin.
#: A binary Gram matrix is now float32 (20 in double, 16 in single precision); the limit
#: is kept as it was.
EASE_BYTES_PER_ITEM2 = 35
#: Rows of the inverse mirrored at a time (their temporary copy: this many x items floats).
EASE_MIRROR_ROWS = 1024
#: Share of the machine's memory EASE may take (candidates train beside it).
EASE_MEMORY_SHARE = 0.4
#: Items³ per second one core solves (Cholesky inverse of the regularised Gram matrix;
#: 6,000 items took 3.6 s on 2 cores of the reference machine, benchmarks/RESULTS.md).
EASE_CUBE_PER_CORE_SECOND = 3.0e10
#: Seconds EASE may spend solving, all values of its grid together.
EASE_SECONDS = 120.0
#: Largest bound on the condition number of G + λI solved in single precision; above it,
#: double precision. By the usual rule of thumb (condition times 1.2e-7) the inverse's
#: relative error stays near 1e-3 or below; it was 6e-7 on the wide catalogue.
EASE_SINGLE_PRECISION_CONDITION = 1.0e4


def _largest_row_sum(matrix: np.ndarray) -> float:
    """``max_i sum_j |m_ij|``, by blocks of rows (no temporary copy of the whole matrix).

    For a symmetric matrix it is its 1-norm, a bound on its largest eigenvalue.
    """
    largest = 0.0
    for start in range(0, len(matrix), EASE_MIRROR_ROWS):
        block = np.abs(matrix[start:start + EASE_MIRROR_ROWS])
        largest = max(largest, float(block.sum(axis=1, dtype=np.float64).max()))
    return largest


def _dense(product: Any) -> np.ndarray:
    """A score block as dense float32 (a pruned, sparse ``B`` gives a sparse product)."""
    if sp.issparse(product):
        product = product.toarray()
    return np.asarray(product, dtype=np.float32)


def ease_item_limit(solves: int = 4) -> int:
    """Most items EASE models on this machine, from its memory and its cores.

    The smaller of what fits in :data:`EASE_MEMORY_SHARE` of the memory (the container's
    limit where there is one) and what ``solves`` Cholesky inverses do in
    :data:`EASE_SECONDS` on its cores, rounded down to a multiple of 500. Both come from
    the machine's size, not from a timing, so the same machine always gives the same
    limit: 12,000 items with a grid of four on 2 cores and 24 GB.
    """
    memory = int((EASE_MEMORY_SHARE * machine_memory() / EASE_BYTES_PER_ITEM2) ** 0.5)
    cores = os.cpu_count() or 1
    time = int((EASE_SECONDS * EASE_CUBE_PER_CORE_SECOND * cores / max(1, solves)) ** (1 / 3))
    return max(500, min(memory, time) // 500 * 500)


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its container's limit."""
    import psutil

    total = int(psutil.virtual_memory().total)
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def _configure_tensorflow(threads: int) -> None:
    """Cap TensorFlow's thread pools so parallel candidates share the cores.

    The pools can only be sized before TensorFlow starts its runtime; later calls keep the
    first setting (a RuntimeError from TensorFlow says so, and is ignored here).
    """
    import tensorflow as tf

    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            logger.debug("TensorFlow threads already configured")


def share_tensorflow_pools(networks: int, cores: int) -> tuple[int, int]:
    """Size TensorFlow's pools for ``networks`` networks training side by side on ``cores``.

    An op gets its network's share of the cores (intra-op threads: ``cores // networks``,
    at least one) and the process's cores run the networks' ops at the same time (inter-op
    threads: ``cores``). With every op sharded over all the cores, networks side by side
    split each of their many small products and wait on the pieces: on 2 cores, one
    thread per op trained Online Retail's three networks side by side in 66.7 instead of
    71.9 s, and the bundled sample's in 26.0–26.5 instead of 28.9 s, to the same figures
    (``benchmarks/RESULTS.md``, twenty-fifth session).

    The pools are fixed when TensorFlow's runtime starts, so this starts it: a network's
    own request (:func:`_configure_tensorflow`) is ignored from then on. When the runtime
    already runs (an earlier training in this process), its pools stay as they are.

    Returns:
        The intra-op and inter-op threads the process runs with.
    """
    import tensorflow as tf

    intra = max(1, cores // max(1, networks))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(cores)
    except RuntimeError:
        logger.info("TensorFlow already runs in this process; its thread pools stay as they "
                    "are")
    tf.config.list_logical_devices("CPU")  # starts the runtime with these pools
    pools = (tf.config.threading.get_intra_op_parallelism_threads(),
             tf.config.threading.get_inter_op_parallelism_threads())
    logger.info("TensorFlow: %d thread(s) an op, %d ops at a time, for %d networks side by "
                "side on %d cores", *pools, networks, cores)
    return pools


def seeded_initializers(seed: int) -> Callable[[], Any]:
    """A factory of Glorot-uniform kernel initialisers, each with its own seed from ``seed``.

    Unseeded Keras initialisers draw from one process-wide generator, so two networks built
    at the same time in two threads (candidates training side by side) would take each
    other's draws and neither would be reproducible. Integer-seeded ones are stateless.
    """
    import keras

    streams = np.random.SeedSequence(seed)

    def make() -> keras.initializers.Initializer:
        value = int(streams.spawn(1)[0].generate_state(1)[0] % (2**31 - 1))
        return keras.initializers.GlorotUniform(seed=value)

    return make


def sparse_dense(layer: Any, rows: Any) -> Any:
    """A Keras ``Dense`` layer applied to a ``tf.SparseTensor`` of rows.

    ``layer(rows)`` as one sparse product with its kernel (Dense needs the rows dense).
    """
    import tensorflow as tf

    return layer.activation(tf.sparse.sparse_dense_matmul(rows, layer.kernel) + layer.bias)


def sparse_scored_rows(batch: sp.csr_matrix, normalise: bool = False) -> Any:
    """A batch of scored rows as a ``tf.SparseTensor`` when sparse as in training, else None.

    Below :data:`~shoprec.models.epochs.SPARSE_INPUT_DENSITY` a network's first layer
    scores the rows as one sparse product. Over a 10,000-item vocabulary the dense product
    cost as much as the output layer: scoring took 18.6 of vae's 60.2 s on the wide
    catalogue (two epochs and their refit), 10.5 of 52.6 s sparse. Denser rows keep the
    dense path (``None``).

    Args:
        batch: The rows; not modified.
        normalise: Divide each row by its L2 norm (the autoencoders' input), as
            ``tf.math.l2_normalize`` does.

    Returns:
        The ``tf.SparseTensor``, or None for rows to score dense.
    """
    if not trains_on_sparse_rows(batch, np.arange(batch.shape[0])):  # training's threshold
        return None
    import tensorflow as tf

    batch = sp.csr_matrix(batch, dtype=np.float32, copy=True)
    batch.sum_duplicates()  # canonical order, as a SparseTensor expects
    indices = coo_indices(batch)
    values = batch.data
    if normalise:
        squares = np.bincount(indices[:, 0], weights=np.square(values),
                              minlength=batch.shape[0])
        values = values * (1.0 / np.sqrt(np.maximum(squares, 1e-12))).astype(
            np.float32)[indices[:, 0]]
    return tf.SparseTensor(indices, values, batch.shape)


class FusedAdam:
    """Adam over a fixed list of float32 variables, one TensorFlow kernel per variable.

    The same update as ``keras.optimizers.Adam`` (Keras' defaults: β₁ 0.9, β₂ 0.999,
    ε 1e-7; ``m += (g - m)(1 - β₁)``, ``v += (g² - v)(1 - β₂)``,
    ``w -= α m / (√v + ε)`` with ``α = lr √(1 - β₂ᵗ) / (1 - β₁ᵗ)``), done by TensorFlow's
    fused ``ResourceApplyAdam`` kernel. Keras 3 runs it as about ten separate element-wise
    operations per variable, each a pass over the weights: for a Mult-VAE over 3,541 items
    that was 20 ms of a 79 ms step on one thread, and 6.5 ms fused (benchmarks/RESULTS.md).
    The moments are created here, eagerly, so :meth:`apply` may run inside ``tf.function``.

    Args:
        variables: The trainable variables (Keras' or TensorFlow's), in gradient order.
        learning_rate: Step size (changed between steps with :meth:`set_learning_rate`).
        beta_1: Decay of the first moment.
        beta_2: Decay of the second moment.
        epsilon: Added to the second moment's root.

    Raises:
        ModelFitError: A variable is not float32 (the kernel's type here).
    """

    def __init__(self, variables: list[Any], learning_rate: float,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7) -> None:
        import tensorflow as tf

        wrong = [v.name for v in variables if v.dtype != "float32"]
        if wrong:
            raise ModelFitError(f"Adam expects float32 weights; {', '.join(wrong)} are not "
                                "(is Keras' floatx or a mixed-precision policy set?)")
        # The variables are kept so their resources live as long as the handles used here.
        self._variables = list(variables)
        self._moments = [(tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False),
                          tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False))
                         for v in variables]
        self._step = tf.Variable(0.0, trainable=False)
        # A variable, so a schedule can change it without retracing the compiled step.
        self._learning_rate = tf.Variable(learning_rate, dtype=tf.float32, trainable=False)
        self._constants = (beta_1, beta_2, epsilon)

    def set_learning_rate(self, learning_rate: float) -> None:
        """Use ``learning_rate`` from the next step on (the moments are kept)."""
        self._learning_rate.assign(learning_rate)

    def apply(self, gradients: list[Any]) -> None:
        """One Adam step.

        Args:
            gradients: One per variable, dense; ``None`` for a variable the loss does not
                reach, which is left as it is (with a warning, as Keras gives).

        Raises:
            ValueError: No variable has a gradient (the loss reaches none of them).
        """
        import tensorflow as tf

        missing = [v.name for v, g in zip(self._variables, gradients, strict=True) if g is None]
        if len(missing) == len(self._variables):
            raise ValueError("no gradients for any variable: the loss does not depend on them")
        if missing:  # checked when the step is traced, not at every step
            logger.warning("no gradient for %s; left unchanged", ", ".join(missing))
        beta_1, beta_2, epsilon = self._constants
        step = self._step.assign_add(1.0)
        beta_1_power, beta_2_power = tf.pow(beta_1, step), tf.pow(beta_2, step)
        for variable, (m, v), gradient in zip(self._variables, self._moments, gradients,
                                              strict=True):
            if gradient is None:
                continue
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power,
                beta2_power=beta_2_power, lr=self._learning_rate, beta1=beta_1, beta2=beta_2,
                epsilon=epsilon, grad=tf.convert_to_tensor(gradient))


class WeightAverage:
    """An exponential moving average of a network's weights over its training steps.

    Polyak averaging: after each step the average moves towards the weights; a step's
    weights count half as much as those of the step ``half_life`` steps later. The average
    starts at zero and is read bias-corrected (as Adam's moments are), so after a few
    steps it is already a mean of the weights so far, not of zeros. Scored in place of the
    last step's weights, it smooths the noise of small batches out of the kept model.

    Args:
        variables: The trainable variables.
        half_life: Steps over which a step's weight in the average halves (at least 1).
    """

    def __init__(self, variables: list[Any], half_life: int) -> None:
        import tensorflow as tf

        self._variables = list(variables)
        self._averages = [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False)
                          for v in self._variables]
        # The trained weights while the average stands in for them (see swap_in).
        self._trained = [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False)
                         for v in self._variables]
        self._decay = 0.5 ** (1.0 / half_life)
        # decay ** steps, the bias. Float64: over a half-life of millions of steps float32
        # rounds the decay far enough to put the bias correction off by up to ~16%.
        self._kept = tf.Variable(1.0, dtype=tf.float64, trainable=False)
        self.swapped = False

    def update(self) -> None:
        """Move the average towards the weights (after a step; may run in ``tf.function``)."""
        self._kept.assign(self._kept * self._decay)
        for average, variable in zip(self._averages, self._variables, strict=True):
            average.assign_sub((average - variable) * (1.0 - self._decay))

    def swap_in(self) -> None:
        """Put the (bias-corrected) average in the variables, keeping the trained weights."""
        if self.swapped:
            return
        kept = float(self._kept.numpy())
        if kept >= 1.0:  # no step yet: nothing to average
            return
        scale = 1.0 / (1.0 - kept)
        for average, trained, variable in zip(self._averages, self._trained,
                                              self._variables, strict=True):
            trained.assign(variable)
            variable.assign(average * scale)
        self.swapped = True

    def swap_out(self) -> None:
        """Put the trained weights back, to train on."""
        if not self.swapped:
            return
        for trained, variable in zip(self._trained, self._variables, strict=True):
            variable.assign(trained)
        self.swapped = False


class _MultAutoencoder(BoundedRows, Recommender):
    """Mult-DAE / Mult-VAE (Liang et al., WWW 2018) in Keras 3 on TensorFlow.

    The input is a user's L2-normalised binary interaction row with dropout; a dense tanh
    encoder and decoder map it to logits over all items, trained with the multinomial
    log-likelihood (plus, for the VAE, a KL term annealed up to ``beta_cap``). Batches are
    built from CSR rows. With validation data, training stops early on validation
    ndcg@10 and keeps the best epoch's weights.

    Args:
        hidden: Width of the hidden layers.
        latent: Width of the code.
        dropout: Dropout rate on the input.
        epochs: Maximum epochs.
        batch_size: Users per batch.
        learning_rate: Adam learning rate (the first step's, with a half-life).
        learning_rate_half_life: Steps over which the learning rate halves (exponential
            decay; ``None``: constant). No epoch starts once the rate is under 1% of the
            first. The refit follows the same schedule in steps (its epochs, over training
            + validation, may hold more steps each).
        beta_cap: VAE: largest weight of the KL term.
        anneal_steps: VAE: batches over which the KL weight grows from 0 to ``beta_cap``.
        weight_decay: L2 penalty on the weights.
        patience: Epochs without validation improvement before stopping.
        seed: Seed of initialisation, dropout, sampling and batch order.
        threads: TensorFlow threads (0: TensorFlow's default).
        train_users: Train on a seeded sample of at most this many shoppers' rows (``None``:
            all); every shopper is still scored from their own row.
        vocabulary: The network reads and scores this many most-interacted items
            (``None``: all); others are never recommended by it.
        history_weights: The power a shopper's row is read at: its weights, each row
            divided by its largest, raised to it (0: as 0/1; 1: the weights as they are);
            ``None``: the best of :data:`~shoprec.models.base.READING_EXPONENTS` on
            validation (0/1 without validation data). See
            :class:`~shoprec.models.base.HistoryWeights`.
        average_half_life: Score and keep an exponential moving average of the weights
            over the training steps, a step's weights counting half as much as those
            ``average_half_life`` steps later (:class:`WeightAverage`); ``None``: the last
            step's weights. Early stopping scores the average, so the epoch it keeps is
            the average's best, and the refit keeps its own average.
    """

    family = "autoencoder"
    slow_to_train = True
    threads_per_process = True
    variational: ClassVar[bool] = False
    #: Recipes from before the schedule and the weight average existed trained at a constant
    #: rate of 0.001 on the last step's weights: so they still do (one made by hand without
    #: them means that too, never a setting no version was trained with).
    added_params: ClassVar[dict[str, Any]] = {**BoundedRows.added_params,
                                              "learning_rate": 1e-3,
                                              "learning_rate_half_life": None,
                                              "average_half_life": None}

    # dae's defaults (shoprec.config.AutoencoderParams says why); vae spells out its own.
    def __init__(self, hidden: int = 600, latent: int = 200, dropout: float = 0.5,
                 epochs: int = 50, batch_size: int = 256, learning_rate: float = 2e-3,
                 learning_rate_half_life: int | None = None, beta_cap: float = 0.2,
                 anneal_steps: int = 2000, weight_decay: float = 0.0,
                 patience: int = 5, seed: int = 0, threads: int = 0,
                 train_users: int | None = 20_000, vocabulary: int | None = 10_000,
                 history_weights: float | None = None,
                 average_half_life: int | None = 50) -> None:
        self.history_weights = history_weights
        self.average_half_life = average_half_life
        self.hidden = hidden
        self.latent = latent
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_half_life = learning_rate_half_life
        self.beta_cap = beta_cap
        self.anneal_steps = anneal_steps
        self.weight_decay = weight_decay
        self.patience = patience
        self.seed = seed
        self.threads = threads
        self.train_users = train_users
        self.vocabulary = vocabulary

    def _build(self, n_items: int) -> None:
        import keras

        regularizer = keras.regularizers.L2(self.weight_decay) if self.weight_decay else None
        initializer = seeded_initializers(self.seed)

        def dense(width: int, activation: str | None = None) -> keras.layers.Dense:
            return keras.layers.Dense(width, activation=activation,
                                      kernel_initializer=initializer(),
                                      kernel_regularizer=regularizer)

        # Layers are made in a fixed order: each takes the next seeded initialiser.
        first = dense(self.hidden, "tanh")
        heads = [dense(self.latent), dense(self.latent)] if self.variational \
            else [dense(self.latent, "tanh")]
        inputs = keras.Input((n_items,))
        hidden = first(inputs)
        outputs = [head(hidden) for head in heads] if self.variational else heads[0](hidden)
        self.encoder_ = keras.Model(inputs, outputs, name="encoder")
        # Training on sparse rows calls the layers directly (see fit).
        self._encoder_layers = (first, heads)
        code = keras.Input((self.latent,))
        hidden = dense(self.hidden, "tanh")(code)
        self.decoder_ = keras.Model(code, dense(n_items)(hidden), name="decoder")

    def fit(self, interactions: sp.csr_matrix,
            context: FitContext | None = None) -> _MultAutoencoder:
        """Train with Adam on batches of rows; early-stop on validation ndcg@10."""
        check_half_life(self.name, self.learning_rate_half_life)
        check_half_life(self.name, self.average_half_life, "average_half_life",
                        "the last step's weights")
        _configure_tensorflow(self.threads)
        import tensorflow as tf

        self.history_weights_ = None  # early stopping scores 0/1 rows (unless told)
        matrix, users = self._training_rows(interactions)
        self._build(matrix.shape[1])
        variables = self.encoder_.trainable_variables + self.decoder_.trainable_variables
        optimizer = FusedAdam(variables, self.learning_rate)
        average = WeightAverage(variables, self.average_half_life) \
            if self.average_half_life is not None else None
        variational = self.variational
        keep = 1.0 - float(self.dropout)
        # The model's own random stream for dropout and the VAE's sampling: TensorFlow's
        # global one is shared by every model training in the process.
        sampler = tf.random.Generator.from_seed(self.seed)

        # Sparse rows skip the batch x items input: the first layer becomes a sparse
        # product and dropout is drawn at the row's items only. The same model (dropout
        # keeps each of a row's items with the same chance), another random stream.
        self.sparse_input_ = trains_on_sparse_rows(matrix, users)
        first, heads = self._encoder_layers

        def encode(noisy: Any) -> Any:
            if isinstance(noisy, tf.SparseTensor):
                hidden = sparse_dense(first, noisy)
                return [head(hidden) for head in heads] if variational else heads[0](hidden)
            return self.encoder_(noisy, training=True)

        def objective(noisy: Any, likelihood: Callable[[tf.Tensor], tf.Tensor],
                      beta: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            """The loss and the NLL; ``likelihood(log_softmax)``: the rows' mean log-likelihood."""
            if variational:
                mean, log_var = encode(noisy)
                code = mean + tf.exp(0.5 * log_var) * sampler.normal(tf.shape(mean))
                kl = tf.reduce_mean(tf.reduce_sum(
                    0.5 * (tf.exp(log_var) + tf.square(mean) - 1.0 - log_var), axis=1))
            else:
                code = encode(noisy)
                kl = tf.constant(0.0)
            logits = self.decoder_(code, training=True)
            nll = -likelihood(tf.nn.log_softmax(logits))
            loss = nll + beta * kl + tf.add_n(
                [0.0, *self.encoder_.losses, *self.decoder_.losses])
            return loss, nll

        # A signature with any batch size: traced once per fit, not again for an epoch's
        # last, shorter batch (each trace took most of a second). No autograph: the steps
        # branch on Python values only, and autograph writes each converted step to a
        # temporary file that a process ending without teardown (the CLI's) leaves behind.
        @tf.function(autograph=False, input_signature=[
            tf.TensorSpec([None, matrix.shape[1]], tf.float32), tf.TensorSpec([], tf.float32)])
        def train_step(batch: tf.Tensor, beta: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                mask = tf.cast(sampler.uniform(tf.shape(batch)) < keep, tf.float32)
                noisy = tf.math.l2_normalize(batch, axis=1) * mask / keep
                loss, nll = objective(
                    noisy, lambda log_p: tf.reduce_mean(tf.reduce_sum(log_p * batch, axis=1)),
                    beta)
            optimizer.apply(tape.gradient(loss, variables))
            if average is not None:
                average.update()
            return loss, nll

        @tf.function(autograph=False, input_signature=[
            tf.TensorSpec([None, 2], tf.int64), tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([2], tf.int64), tf.TensorSpec([], tf.float32)])
        def sparse_step(indices: tf.Tensor, values: tf.Tensor, shape: tf.Tensor,
                        beta: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            rows = indices[:, 0]
            norms = tf.math.unsorted_segment_sum(tf.square(values), rows, shape[0])
            normalised = values * tf.gather(tf.math.rsqrt(tf.maximum(norms, 1e-12)), rows)
            mask = tf.cast(sampler.uniform(tf.shape(values)) < keep, tf.float32)
            noisy = tf.SparseTensor(indices, normalised * mask / keep, shape)
            with tf.GradientTape() as tape:
                loss, nll = objective(
                    noisy, lambda log_p: tf.reduce_sum(tf.gather_nd(log_p, indices) * values)
                    / tf.cast(shape[0], tf.float32), beta)
            optimizer.apply(tape.gradient(loss, variables))
            if average is not None:
                average.update()
            return loss, nll

        rng = np.random.default_rng(self.seed)
        step = 0

        def run_epoch(epoch: int) -> dict[str, float]:
            nonlocal step
            if average is not None:
                average.swap_out()
            order = rng.permutation(users)
            losses = []
            for start in range(0, len(order), self.batch_size):
                rows = matrix[order[start:start + self.batch_size]]
                beta = tf.constant(min(self.beta_cap, step / max(self.anneal_steps, 1))
                                   if variational else 0, tf.float32)
                rate = decayed_rate(self.learning_rate, self.learning_rate_half_life, step)
                if self.learning_rate_half_life is not None:
                    optimizer.set_learning_rate(rate)
                if self.sparse_input_:
                    loss, _ = sparse_step(tf.constant(coo_indices(rows)),
                                          tf.constant(rows.data),
                                          tf.constant(rows.shape, tf.int64), beta)
                else:
                    loss, _ = train_step(tf.constant(rows.toarray()), beta)
                losses.append(float(loss))
                step += 1
            loss = float(np.mean(losses))
            if not np.isfinite(loss):
                raise ModelFitError(f"{self.name}: the training loss became {loss} "
                                    f"at epoch {epoch}; lower learning_rate")
            record = {"loss": loss}
            if self.learning_rate_half_life is not None:
                record["learning_rate"] = rate
            if average is not None:
                average.swap_in()  # the average is what is scored and kept
            return record

        def restore(weights: tuple[list, list]) -> None:
            self.encoder_.set_weights(weights[0])
            self.decoder_.set_weights(weights[1])

        epochs = scheduled_epochs(self.name, self.epochs, self.learning_rate_half_life,
                                  len(users), self.batch_size)
        self.history_, self.best_epoch_ = train_epochs(
            self, epochs, self.patience, run_epoch,
            lambda: ([w.copy() for w in self.encoder_.get_weights()],
                     [w.copy() for w in self.decoder_.get_weights()]),
            restore, context)
        self._choose_history_weights(context)
        return self

    @property
    def selected_params_(self) -> dict[str, Any]:
        """The refit trains as many epochs as early stopping kept, reading rows alike."""
        return {"epochs": self.best_epoch_ + 1, "history_weights": self._reading_exponent()}

    def score(self, user_rows: sp.csr_matrix) -> np.ndarray:
        """Logits over all items from each row (the code's mean for the VAE; no dropout)."""
        import tensorflow as tf

        rows = self._in_vocabulary(user_rows)
        out = np.empty(rows.shape, dtype=np.float32)
        # The encoder's dense layers in Keras' graph order (a loaded model keeps it): the
        # first, then the head of its first output (for the VAE, the mean's).
        first, head = [layer for layer in self.encoder_.layers if hasattr(layer, "kernel")][:2]
        for start in range(0, rows.shape[0], 1024):
            part = rows[start:start + 1024]
            sparse = sparse_scored_rows(part, normalise=True)
            if sparse is not None:
                code = head(sparse_dense(first, sparse), training=False)
            else:
                batch = tf.math.l2_normalize(tf.constant(part.toarray()), axis=1)
                code = self.encoder_(batch, training=False)
                if self.variational:
                    code = code[0]
            out[start:start + 1024] = np.asarray(self.decoder_(code, training=False))
        return self._to_catalogue(check_finite(out, self.name))

    @property
    def n_items_(self) -> int:
        """Number of items the model scores."""
        return self.catalogue_items_

    def _save_state(self, folder: Path) -> None:
        self._save_vocabulary(folder)
        if self.storage_precision_ is None:
            self.encoder_.save(folder / "encoder.keras")
            self.decoder_.save(folder / "decoder.keras")
        else:
            # Compressed: the weights alone, rounded; the networks are rebuilt at load.
            for part, network in (("encoder", self.encoder_), ("decoder", self.decoder_)):
                save_arrays(folder / f"{part}.npz", {f"w{i:03d}": w for i, w in
                                                     enumerate(network.get_weights())},
                            self.storage_precision_)
        (folder / "history.json").write_text(json.dumps({"history": self.history_,
                                                         "best_epoch": self.best_epoch_}))

    def _load_state(self, folder: Path) -> None:
        import keras

        if (folder / "encoder.npz").exists():
            parts = {part: load_arrays(folder / f"{part}.npz") for part in ("encoder", "decoder")}
            weights = {part: [state[k] for k in sorted(state)] for part, state in parts.items()}
            self._build(int(weights["encoder"][0].shape[0]))
            self.encoder_.set_weights(weights["encoder"])
            self.decoder_.set_weights(weights["decoder"])
        else:
            self.encoder_ = keras.models.load_model(folder / "encoder.keras", compile=False)
            self.decoder_ = keras.models.load_model(folder / "decoder.keras", compile=False)
        self._load_vocabulary(folder, int(self.decoder_.output_shape[-1]))
        state = json.loads((folder / "history.json").read_text())
        self.history_, self.best_epoch_ = state["history"], state["best_epoch"]


class MultVAE(_MultAutoencoder):
    """Mult-VAE: the variational autoencoder of Liang et al. (candidate ``vae``)."""

    name = "vae"
    variational = True

    # The same arguments as dae's, but a rate that halves every 100 steps and no average
    # by default (shoprec.config.VAEParams says why); spelt out so that get_params and the
    # declared hyperparameters see vae's own defaults.
    def __init__(self, hidden: int = 600, latent: int = 200, dropout: float = 0.5,
                 epochs: int = 50, batch_size: int = 256, learning_rate: float = 3e-3,
                 learning_rate_half_life: int | None = 100, beta_cap: float = 0.2,
                 anneal_steps: int = 2000, weight_decay: float = 0.0,
                 patience: int = 5, seed: int = 0, threads: int = 0,
                 train_users: int | None = 20_000, vocabulary: int | None = 10_000,
                 history_weights: float | None = None,
                 average_half_life: int | None = None) -> None:
        super().__init__(hidden=hidden, latent=latent, dropout=dropout, epochs=epochs,
                         batch_size=batch_size, learning_rate=learning_rate,
                         learning_rate_half_life=learning_rate_half_life, beta_cap=beta_cap,
                         anneal_steps=anneal_steps, weight_decay=weight_decay,
                         patience=patience, seed=seed, threads=threads,
                         train_users=train_users, vocabulary=vocabulary,
                         history_weights=history_weights,
                         average_half_life=average_half_life)


class MultDAE(_MultAutoencoder):
    """Mult-DAE: the denoising autoencoder of Liang et al. (candidate ``dae``)."""

    name = "dae"
    variational = False
