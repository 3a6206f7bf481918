"""Weighted user x item interaction matrices (scipy.sparse CSR, never dense)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shoprec.config import WeightingConfig
from shoprec.features.idmap import IdMap


def event_weights(interactions: pd.DataFrame, config: WeightingConfig | None = None,
                  reference: pd.Timestamp | None = None) -> np.ndarray:
    """Implicit-feedback weight of each interaction.

    Shop events weigh ``event_weights[event] * damp(quantity)`` with ``damp`` one of
    ``log2(1+q)`` (default; 1 for a single item), ``sqrt(q)``, ``q`` or 1. A rating weighs
    ``event_weights["rating"] * rating``. With a recency half-life, each weight is also
    multiplied by ``0.5 ** (age_days / half_life)``, the age counted back from ``reference``.

    Args:
        interactions: Canonical interactions.
        config: Event weights, damping and recency decay; defaults if ``None``.
        reference: The "now" of the recency decay; the latest timestamp if ``None``.

    Returns:
        float32 weights aligned with the rows.
    """
    config = config or WeightingConfig()
    events = interactions["event"].astype("string").to_numpy(dtype=object)
    values = interactions["value"].to_numpy(dtype=np.float64)
    base = pd.Series(events).map(config.event_weights).fillna(0.0).to_numpy(dtype=np.float64)
    damping = {
        "log": np.log2(1.0 + values),
        "sqrt": np.sqrt(values),
        "none": values,
        "binary": np.ones_like(values),
    }[config.quantity_damping]
    weight = np.where(events == "rating", values, damping) * base
    if config.recency_half_life_days and len(interactions):
        now = reference if reference is not None else interactions["timestamp"].max()
        age_days = ((now - interactions["timestamp"]).dt.total_seconds() / 86400).to_numpy()
        weight = weight * np.power(0.5, np.maximum(age_days, 0) / config.recency_half_life_days)
    return weight.astype(np.float32)


def interaction_matrix(interactions: pd.DataFrame, users: IdMap, items: IdMap,
                       weights: np.ndarray | None = None,
                       repeats: str = "sum") -> sp.csr_matrix:
    """Build a users x items CSR matrix, combining repeated (user, item) pairs.

    Rows whose user or item is not in the maps are left out (the caller decides what that
    means and counts it).

    Args:
        interactions: Canonical interactions.
        users: Row index.
        items: Column index.
        weights: Value per row; 1.0 each if ``None``.
        repeats: ``"sum"`` adds a pair's values; ``"max"`` keeps its largest.

    Returns:
        A float32 CSR matrix of shape ``(len(users), len(items))`` with sorted indices.
    """
    rows = users.encode(interactions["user_id"])
    cols = items.encode(interactions["item_id"])
    known = (rows >= 0) & (cols >= 0)
    data = np.ones(len(interactions), np.float32) if weights is None else weights
    return _assemble(rows[known], cols[known], data[known].astype(np.float32),
                     (len(users), len(items)), repeats)


def combine(first: sp.csr_matrix, second: sp.csr_matrix, repeats: str = "sum") -> sp.csr_matrix:
    """Two weighted matrices of one shape as one matrix of both parts' rows would be.

    Unlike ``first + second`` (or ``.maximum``), a pair stored with weight 0 in either part
    (an event weighted 0, or decayed to nothing by a long recency half-life) stays stored:
    the pair is still in the user's history, so it is left out of the ranking and of the
    relevant set, as it is in each part alone.

    Args:
        first: A users x items matrix.
        second: Another of the same shape.
        repeats: ``"sum"`` adds a pair's values; ``"max"`` keeps its largest.

    Returns:
        A float32 CSR matrix with sorted indices.
    """
    a, b = first.tocoo(), second.tocoo()
    return _assemble(np.concatenate([a.row, b.row]), np.concatenate([a.col, b.col]),
                     np.concatenate([a.data, b.data]).astype(np.float32), first.shape, repeats)


def _assemble(rows: np.ndarray, cols: np.ndarray, data: np.ndarray, shape: tuple[int, int],
              repeats: str) -> sp.csr_matrix:
    """The CSR matrix of (row, col, value) entries, a pair's repeats combined."""
    if repeats == "max" and len(rows):
        # One entry per pair, its largest value: sort by pair, then reduce each run.
        order = np.lexsort((cols, rows))
        rows, cols, data = rows[order], cols[order], data[order]
        first = np.flatnonzero(np.r_[True, (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])])
        rows, cols, data = rows[first], cols[first], np.maximum.reduceat(data, first)
    elif repeats not in ("sum", "max"):
        raise ValueError(f"repeats must be 'sum' or 'max', not {repeats!r}")
    # A pair's repeats are added in double precision, then rounded once: float32 sums in
    # the file's row order made the same rows, shuffled, a slightly different matrix.
    matrix = sp.csr_matrix((data.astype(np.float64), (rows, cols)), shape=shape,
                           dtype=np.float64)
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix.astype(np.float32)
