"""Ranking helpers: top-k selection, masking what a shopper already has, binary rows.

Shared by the models, the evaluation and the serving engine.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def binarized(rows: sp.spmatrix) -> sp.csr_matrix:
    """A float32 CSR copy of ``rows`` with every stored value set to 1.

    Always a new matrix: ``csr_matrix(x, dtype=...)`` shares ``x``'s arrays when nothing
    needs converting, so setting ``.data`` on it would rewrite the caller's matrix (the
    training matrix every other candidate reads).
    """
    rows = sp.csr_matrix(rows)
    return sp.csr_matrix((np.ones(len(rows.data), dtype=np.float32), rows.indices.copy(),
                          rows.indptr.copy()), shape=rows.shape)


def max_scaled(rows: sp.spmatrix) -> sp.csr_matrix:
    """A float32 CSR copy of ``rows`` with each row divided by its largest value.

    How a model trained on 0/1 rows reads a weighted history: the strongest (with recency
    decay, the latest) interaction counts 1 and the others their share of it.
    """
    rows = sp.csr_matrix(rows, dtype=np.float32, copy=True)
    lengths = np.diff(rows.indptr)
    if rows.nnz:
        largest = np.maximum.reduceat(rows.data, rows.indptr[:-1][lengths > 0])
        scale = np.repeat(largest, lengths[lengths > 0])
        rows.data = np.divide(rows.data, scale, out=np.ones_like(rows.data), where=scale > 0)
    return rows


def spread_columns(inside: np.ndarray, columns: np.ndarray, width: int,
                   outside: np.ndarray) -> np.ndarray:
    """Rows over a whole catalogue from the scores of some of its items.

    Args:
        inside: ``(rows, len(columns))`` scores of the items at ``columns``.
        columns: Distinct item indices below ``width``.
        width: Items in the catalogue.
        outside: The other items' scores: ``(rows, width - len(columns))``, in index order,
            or ``(rows, 1)``, one score for them all.

    Returns:
        A new float32 ``(rows, width)`` array.
    """
    rest = width - len(columns)
    if inside.shape[1] != len(columns):
        raise ValueError(f"inside has {inside.shape[1]} columns for {len(columns)} items")
    if outside.shape[1] not in (1, rest):
        raise ValueError(f"outside has {outside.shape[1]} columns; expected 1 or {rest}")
    # One gather along each row from the two parts side by side: assigning into
    # fancy-indexed columns (out[:, columns] = inside) moved each value on its own and took
    # 6 times as long (0.39 against 0.06 s for 2,048 rows over 11,062 items).
    source = np.concatenate([inside, outside], axis=1, dtype=np.float32)
    order = np.empty(width, dtype=np.intp)
    placed = np.zeros(width, dtype=bool)
    placed[columns] = True
    order[columns] = np.arange(len(columns))
    order[~placed] = len(columns) + (np.arange(rest) if outside.shape[1] == rest else 0)
    return np.take(source, order, axis=1)


def mask_seen(scores: np.ndarray, user_rows: sp.csr_matrix) -> None:
    """Set the scores of items present in each row to ``-inf``, in place."""
    rows = np.repeat(np.arange(user_rows.shape[0]), np.diff(user_rows.indptr))
    scores[rows, user_rows.indices] = -np.inf


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``k`` best entries of each row, best first.

    Exact. Wide rows go through a threshold first (see :func:`_top_k_by_threshold`), which
    touches each score about twice instead of running a selection over the whole row;
    narrow ones use ``argpartition``. Rows are processed in slices of a few hundred so the
    working set stays in cache.
    """
    n_rows, n_items = scores.shape
    k_eff = min(k, n_items)
    indices = np.empty((n_rows, k_eff), dtype=np.int64)
    values = np.empty((n_rows, k_eff), dtype=np.float32)
    wide = n_items >= _BLOCK * 4 * max(k_eff, 1)
    for start in range(0, n_rows, _ROWS_PER_SLICE):
        part = scores[start:start + _ROWS_PER_SLICE]
        pick = _top_k_by_threshold if wide else _top_k_by_partition
        indices[start:start + len(part)], values[start:start + len(part)] = pick(part, k_eff)
    indices = np.where(np.isfinite(values), indices, -1)
    if k_eff < k:
        pad = k - k_eff
        indices = np.pad(indices, ((0, 0), (0, pad)), constant_values=-1)
        values = np.pad(values, ((0, 0), (0, pad)), constant_values=-np.inf)
    return indices, values


#: Rows per slice of :func:`top_k`, and the block width of its threshold.
_ROWS_PER_SLICE, _BLOCK = 256, 64


def _top_k_by_partition(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` from each row's k-th largest score, ties by index.

    ``argpartition`` kept an arbitrary few of the items tied at the k-th place, and another
    few for another ``k``: popularity's test figures and its diversity curve at weight 0
    (the same ranking, cut from a pool of 50) differed in the fourth decimal.
    """
    # The k-th smallest of the negated scores: as fast as the k-th largest on dense rows,
    # and not 13 times slower on a sparse model's (ties at 0), as np.partition is there.
    threshold = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    return _at_least(scores, threshold, k)


def _top_k_by_threshold(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` via a lower bound on each row's k-th largest score.

    The items are split into disjoint groups; the maxima of ``k`` groups are ``k``
    distinct entries, so the k-th largest group maximum is at most the row's k-th largest
    score: every top-k entry is at least that threshold, and usually only a handful of
    entries are. Those candidates alone are sorted. A group is every ``groups``-th item
    (a strided view: the maxima come from one vectorised pass).
    """
    n_rows, n_items = scores.shape
    groups = n_items // _BLOCK
    maxima = scores[:, : groups * _BLOCK].reshape(n_rows, _BLOCK, groups).max(axis=1)
    if groups * _BLOCK < n_items:
        maxima = np.concatenate([maxima, scores[:, groups * _BLOCK:].max(axis=1,
                                                                          keepdims=True)], 1)
    threshold = np.partition(maxima, maxima.shape[1] - k, axis=1)[:, maxima.shape[1] - k]
    return _at_least(scores, threshold, k)


def _at_least(scores: np.ndarray, threshold: np.ndarray, k: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of each row, given a ``threshold`` at most its k-th largest score.

    The scores at or above the threshold are usually a handful, and are sorted, ties by
    index. A row where many tie at the threshold (a sparse model's: a few non-zero scores
    and thousands of zeros) sorts only those above it and takes the tied ones in index
    order from the row's start: sorting every tied score made such rows 20 times slower.
    """
    n_rows, n_items = scores.shape
    limit = threshold[:, None]
    above = scores >= limit
    crowded = np.count_nonzero(above, axis=1) > _CROWDED * k
    if crowded.all():
        above = scores > limit
    elif crowded.any():
        above[crowded] = scores[crowded] > limit[crowded]
    flat = np.flatnonzero(above)
    rows, cols = np.divmod(flat, n_items)
    found = scores[rows, cols]
    order = np.lexsort((cols, -found, rows))  # by row, best first, ties by index
    rows, cols, found = rows[order], cols[order], found[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    keep = rank < k
    indices = np.full((n_rows, k), -1, dtype=np.int64)
    values = np.full((n_rows, k), -np.inf, dtype=np.float32)
    indices[rows[keep], rank[keep]] = cols[keep]
    values[rows[keep], rank[keep]] = found[keep]
    if crowded.any():
        taken = np.minimum(np.bincount(rows, minlength=n_rows), k)
        _fill_ties(scores, threshold, np.flatnonzero(crowded & (taken < k)), taken, indices,
                   values)
    return indices, values


def _fill_ties(scores: np.ndarray, threshold: np.ndarray, pending: np.ndarray,
               taken: np.ndarray, indices: np.ndarray, values: np.ndarray) -> None:
    """Fill each pending row's places after ``taken`` with its ties, in index order.

    The ties are many (the row is crowded), so the first ones lie near the row's start: a
    window of the row is searched, widened only for the rows it does not fill.
    """
    k, n_items = indices.shape[1], scores.shape[1]
    width = min(n_items, 4 * k + 64)
    while len(pending):
        need = k - taken[pending]
        window = scores[pending, :width] == threshold[pending, None]
        position = np.cumsum(window, axis=1, dtype=np.int64)
        done = (position[:, -1] >= need) | (width == n_items)
        pick = window & (position <= need[:, None]) & done[:, None]
        at, col = np.nonzero(pick)
        row = pending[at]
        slot = taken[row] + position[at, col] - 1
        indices[row, slot] = col
        values[row, slot] = threshold[row]
        pending = pending[~done]
        width = min(n_items, width * 4)


#: A row with more than this many times ``k`` scores at or above its threshold is crowded
#: with ties (see :func:`_at_least`).
_CROWDED = 4


#: Candidates re-ranked per row for diversity: this many times ``k``, at least
#: :data:`DIVERSITY_MIN_POOL`.
DIVERSITY_POOL_FACTOR, DIVERSITY_MIN_POOL = 5, 50


def diversity_pool(k: int) -> int:
    """How many of the model's best items a diversity re-ranking chooses ``k`` from."""
    return max(DIVERSITY_POOL_FACTOR * k, DIVERSITY_MIN_POOL)


def novelty_scale(popularity: np.ndarray) -> np.ndarray:
    """Each item's self-information ``-log p(i)``, scaled to [0, 1] over the catalogue.

    ``popularity`` is any non-negative per-item count or share; items never seen get the
    information of half the rarest seen item's share. 1 is the rarest item, 0 the most
    popular.
    """
    values = np.asarray(popularity, dtype=np.float64)
    total = values.sum()
    if total <= 0:
        return np.zeros(len(values))
    share = values / total
    floor = share[share > 0].min() / 2
    information = -np.log(share + floor)
    low, high = information.min(), information.max()
    return (information - low) / (high - low) if high > low else np.zeros(len(values))


def rerank_for_novelty(indices: np.ndarray, scores: np.ndarray, novelty: np.ndarray,
                       k: int, weight: float | np.ndarray,
                       availability: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Trade accuracy for novelty: re-rank each row's candidates, keep the best ``k``.

    A candidate's new score is ``(1 - weight) * relevance + weight * novelty``, where
    relevance is its model score scaled to [0, 1] among the row's candidates and novelty
    comes from :func:`novelty_scale`. ``weight`` 0 keeps the model's order; 1 ranks the
    candidates by rarity alone. It is a popularity penalty applied to a pool of the
    model's best items (:func:`diversity_pool`), so nothing from outside that pool is
    promoted. With ``availability`` (per item, in [0, 1]: the share of its forecast demand
    the stock covers, :mod:`shoprec.inventory`) the new score is also multiplied by it,
    and items with none left are dropped.

    Args:
        indices: ``(rows, pool)`` candidate item indices, best first (``-1``: padding).
        scores: Their model scores.
        novelty: Per-item novelty in [0, 1] (:func:`novelty_scale`).
        k: How many to keep per row.
        weight: In [0, 1]; one per row, or one for all.
        availability: Per-item factor in [0, 1], or ``None``.

    Returns:
        ``(indices, scores)`` of shape ``(rows, k)``, the scores being the blended ones.
    """
    valid = indices >= 0
    safe = np.where(valid, scores, np.nan).astype(np.float64)
    with np.errstate(all="ignore"):
        low = np.nanmin(np.where(valid, safe, np.inf), axis=1, keepdims=True)
        high = np.nanmax(np.where(valid, safe, -np.inf), axis=1, keepdims=True)
        spread = np.where(high > low, high - low, 1.0)
        relevance = np.where(high > low, (safe - low) / spread, 1.0)
    w = np.asarray(weight, dtype=np.float64).reshape(-1, 1) if np.ndim(weight) else weight
    blended = (1 - w) * relevance + w * novelty[np.where(valid, indices, 0)]
    if availability is not None:
        # An item with no units left is not recommended at all.
        share = availability[np.where(valid, indices, 0)]
        blended = np.where(share > 0, blended * share, -np.inf)
    blended = np.where(valid, blended, -np.inf)
    # Ties keep the model's order (stable sort on the candidates, which are best first).
    order = np.argsort(-blended, axis=1, kind="stable")[:, :k]
    picked = np.take_along_axis(indices, order, axis=1)
    values = np.take_along_axis(blended, order, axis=1).astype(np.float32)
    if picked.shape[1] < k:
        pad = k - picked.shape[1]
        picked = np.pad(picked, ((0, 0), (0, pad)), constant_values=-1)
        values = np.pad(values, ((0, 0), (0, pad)), constant_values=-np.inf)
    return np.where(np.isfinite(values), picked, -1), values
