"""What the neural families share: binary training rows and epochs with early stopping.

No TensorFlow here: the models pass in their own epoch step and weight accessors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from shoprec.errors import ModelFitError
from shoprec.models.base import FitContext, Recommender

logger = logging.getLogger(__name__)


def binary_rows(interactions: sp.csr_matrix, name: str) -> tuple[sp.csr_matrix, np.ndarray]:
    """The matrix as float32 0/1 rows, and the indices of the rows with an interaction.

    Raises:
        ModelFitError: No row has an interaction.
    """
    matrix = sp.csr_matrix(interactions, dtype=np.float32)
    matrix.data[:] = 1.0
    users = np.flatnonzero(np.diff(matrix.indptr) > 0)
    if not len(users):
        raise ModelFitError(f"{name}: no interactions to train on")
    return matrix, users


def train_epochs(model: Recommender, epochs: int, patience: int,
                 run_epoch: Callable[[int], dict[str, float]],
                 get_weights: Callable[[], Any], set_weights: Callable[[Any], None],
                 context: FitContext | None) -> tuple[list[dict[str, float]], int]:
    """Run up to ``epochs`` epochs, stopping early on validation ndcg@10.

    ``run_epoch(epoch)`` trains one epoch and returns its record (losses; it raises
    :class:`ModelFitError` on divergence). With validation data in ``context``, each epoch
    is scored, the best epoch's weights are kept (``get_weights`` must return a copy) and
    restored at the end, and training stops after ``patience`` epochs without improvement.

    Returns:
        The per-epoch records (``epoch``, losses, ``validation_ndcg_at_10``) and the epoch
        whose weights the model ends with.
    """
    from shoprec.evaluation.evaluate import evaluate

    validate = context is not None and context.validation_relevance is not None
    best_score, best_weights, waited = -1.0, None, 0
    history: list[dict[str, float]] = []
    for epoch in range(epochs):
        record = {"epoch": float(epoch), **run_epoch(epoch)}
        if validate:
            score = evaluate(model, context.validation_history, context.validation_relevance,
                             ks=(10,))["ndcg@10"]
            record["validation_ndcg_at_10"] = score
            if score > best_score:
                best_score, waited, best_weights = score, 0, get_weights()
            else:
                waited += 1
        history.append(record)
        if context is not None and context.progress is not None:
            context.progress(epoch, record)
        logger.info("%s epoch %d: %s", model.name, epoch, record)
        if validate and waited >= patience:
            break
    if best_weights is not None:
        set_weights(best_weights)
    best = int(np.argmax([r.get("validation_ndcg_at_10", -1) for r in history])) \
        if validate else len(history) - 1
    return history, best
