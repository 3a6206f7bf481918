"""What the neural families share: binary training rows and epochs with early stopping.

At scale they also share a bounded training set: a seeded sample of at most ``train_users``
shoppers' rows and a vocabulary of the ``vocabulary`` most-interacted items (what the
network reads and scores). A network's cost per epoch grows with users x items, so both
bounds keep it flat as the data grows; every shopper, sampled or not, is still scored by a
forward pass of their own row (folded in), and items outside the vocabulary are never
recommended by the network (score ``-inf``). Below both bounds nothing changes.

No TensorFlow here: the models pass in their own epoch step and weight accessors.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from shoprec.errors import ModelFitError
from shoprec.models.base import FitContext, HistoryWeights, Recommender
from shoprec.ranking import binarized, spread_columns

logger = logging.getLogger(__name__)

#: The networks train on sparse rows below this share of non-zero entries (interactions
#: over the trained shoppers x items): a step of 256 shoppers over the vocabulary took 113
#: instead of 159 ms at 0.08% (10,000 items), 60 instead of 81 ms at 0.25% (1M synthetic),
#: and 60 instead of 57 ms at 1.5% (Online Retail) on one thread, for a Mult-VAE
#: (benchmarks/RESULTS.md, where cfgan's figures are too).
SPARSE_INPUT_DENSITY = 0.01
#: A decaying learning rate has run its course below this share of the first step's.
SCHEDULE_END = 0.01


def trains_on_sparse_rows(matrix: sp.csr_matrix, users: np.ndarray) -> bool:
    """Whether a network trains on the rows ``users`` of ``matrix`` as sparse tensors.

    By the density of those rows (shoppers with no interaction are never trained on).
    """
    touched = int(np.diff(matrix.indptr)[users].sum())
    return bool(touched < SPARSE_INPUT_DENSITY * len(users) * matrix.shape[1])


def coo_indices(rows: sp.csr_matrix) -> np.ndarray:
    """The (row, column) pairs of ``rows``' stored entries, int64, in storage order.

    The indices of a ``tf.SparseTensor`` whose values are ``rows.data``.
    """
    coo = rows.tocoo()
    return np.stack([coo.row, coo.col], axis=1).astype(np.int64)


def binary_rows(interactions: sp.csr_matrix, name: str) -> tuple[sp.csr_matrix, np.ndarray]:
    """The matrix as float32 0/1 rows, and the indices of the rows with an interaction.

    Raises:
        ModelFitError: No row has an interaction.
    """
    matrix = binarized(interactions)
    users = np.flatnonzero(np.diff(matrix.indptr) > 0)
    if not len(users):
        raise ModelFitError(f"{name}: no interactions to train on")
    return matrix, users


class BoundedRows(HistoryWeights):
    """Mixin of the neural families: sampled training rows and an item vocabulary.

    Expects the hyperparameters ``train_users``, ``vocabulary``, ``seed`` and
    ``history_weights`` (how a scored row is read: :class:`HistoryWeights`).
    """

    name: ClassVar[str]
    train_users: int | None
    vocabulary: int | None
    seed: int

    def _training_rows(self, interactions: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
        """Binary rows over the vocabulary, and the (sampled) rows to train on."""
        n_items = interactions.shape[1]
        self.catalogue_items_ = n_items
        self.vocabulary_ = None
        if self.vocabulary is not None and n_items > self.vocabulary:
            counts = np.bincount(interactions.indices, minlength=n_items)
            # Most-interacted first; ties by index, so the choice is deterministic.
            self.vocabulary_ = np.sort(np.argsort(-counts, kind="stable")[: self.vocabulary])
            interactions = interactions[:, self.vocabulary_]
        matrix, users = binary_rows(interactions, self.name)
        shoppers = len(users)
        if self.train_users is not None and shoppers > self.train_users:
            rng = np.random.default_rng(self.seed)
            users = np.sort(rng.choice(users, size=self.train_users, replace=False))
        if self.vocabulary_ is not None or len(users) < shoppers:
            logger.info("%s trains on %d of %d shoppers' rows over %d of %d items",
                        self.name, len(users), shoppers, matrix.shape[1], n_items)
        return matrix, users

    def _in_vocabulary(self, user_rows: sp.csr_matrix) -> sp.csr_matrix:
        """Scored rows (0/1, or weighted) restricted to the vocabulary's columns."""
        if self.vocabulary_ is not None:
            user_rows = sp.csr_matrix(user_rows)[:, self.vocabulary_]
        return self._history_rows(user_rows)

    def _to_catalogue(self, scores: np.ndarray) -> np.ndarray:
        """Vocabulary scores spread over the whole catalogue; other items get ``-inf``."""
        if self.vocabulary_ is None:
            return scores
        return spread_columns(scores, self.vocabulary_, self.catalogue_items_,
                              np.full((len(scores), 1), -np.inf, dtype=np.float32))

    def _save_vocabulary(self, folder: Path) -> None:
        if self.vocabulary_ is not None:
            np.savez(folder / "vocabulary.npz", items=self.vocabulary_,
                     catalogue_items=np.int64(self.catalogue_items_))

    def _load_vocabulary(self, folder: Path, n_outputs: int) -> None:
        self.vocabulary_, self.catalogue_items_ = None, n_outputs
        if (folder / "vocabulary.npz").exists():  # absent: the network covers every item
            with np.load(folder / "vocabulary.npz") as state:
                self.vocabulary_ = state["items"]
                self.catalogue_items_ = int(state["catalogue_items"])


def decayed_rate(learning_rate: float, half_life: int | None, steps: int) -> float:
    """The learning rate after ``steps`` steps: halved every ``half_life`` steps, smoothly.

    ``half_life`` ``None``: constant. Counted in steps rather than epochs because an epoch is
    18 steps on one shop and 313 on another.
    """
    if half_life is None:
        return learning_rate
    return learning_rate * 0.5 ** (steps / half_life)


def scheduled_epochs(name: str, epochs: int, half_life: int | None, shoppers: int,
                     batch_size: int) -> int:
    """``epochs``, or fewer: no epoch starts once the rate is under :data:`SCHEDULE_END`.

    By then the network barely moves, and early stopping would wait ``patience`` epochs on
    gains in the fourth decimal. Logged when it cuts ``epochs``.
    """
    if half_life is None:
        return epochs
    steps_per_epoch = -(-shoppers // batch_size)
    last_step = math.log2(1 / SCHEDULE_END) * half_life
    scheduled = max(1, math.ceil(last_step / steps_per_epoch))
    if scheduled < epochs:
        logger.info("%s trains at most %d of its %d epochs: its learning rate is under %g of "
                    "the first after %d steps (%d an epoch)", name, scheduled, epochs,
                    SCHEDULE_END, math.ceil(last_step), steps_per_epoch)
    return min(epochs, scheduled)


def check_half_life(name: str, half_life: int | None,
                    param: str = "learning_rate_half_life",
                    null: str = "a constant rate") -> None:
    """Raise :class:`ModelFitError` unless ``half_life`` is ``None`` or at least one step.

    The message names ``param`` and what ``null`` means for it.
    """
    if half_life is not None and half_life < 1:
        raise ModelFitError(f"{name}: {param} must be at least 1 step (null for {null}), "
                            f"got {half_life}")


def train_epochs(model: Recommender, epochs: int, patience: int,
                 run_epoch: Callable[[int], dict[str, float]],
                 get_weights: Callable[[], Any], set_weights: Callable[[Any], None],
                 context: FitContext | None) -> tuple[list[dict[str, float]], int]:
    """Run up to ``epochs`` epochs, stopping early when the context's tuner says so.

    Before each epoch the context's ``stop`` is asked whether the fit is still wanted
    (:meth:`FitContext.check_stop`, which raises :class:`~shoprec.errors.FitStopped`).

    ``run_epoch(epoch)`` trains one epoch and returns its record (losses; it raises
    :class:`ModelFitError` on divergence). With a tuner in ``context``, its early-stopping
    callback looks at each epoch (``get_weights`` must return a copy), the best epoch's
    weights are restored at the end, and training stops after ``patience`` epochs without
    improvement; without one, every epoch runs.

    Returns:
        The per-epoch records (``epoch``, losses, and the tuner's figures such as
        ``validation_ndcg_at_10``) and the epoch whose weights the model ends with.
    """
    stopper = context.tuner.early_stopping(patience) \
        if context is not None and context.tuner is not None else None
    if context is not None and context.tuner is not None:
        # A search's pruner never cuts the last epoch (the schedule may have shortened
        # the configured count).
        context.tuner.planned_epochs = epochs
    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        if context is not None:
            context.check_stop(model.name)
        record = {"epoch": float(epoch), **run_epoch(epoch)}
        stop = stopper is not None and stopper.after_epoch(model, epoch, record, get_weights)
        history.append(record)
        logger.info("%s epoch %d: %s", model.name, epoch, record)
        if stop:
            break
    if stopper is not None and stopper.best_weights is not None:
        set_weights(stopper.best_weights)
        return history, stopper.best_epoch
    return history, len(history) - 1
