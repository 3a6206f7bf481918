"""Encoding a split: id maps from training, weighted training matrix, relevance matrices."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shoprec.config import SplitConfig, WeightingConfig
from shoprec.data.splits import Split
from shoprec.features.idmap import IdMap
from shoprec.features.matrix import combine, event_weights, interaction_matrix

logger = logging.getLogger(__name__)


@dataclass
class EncodedSplit:
    """A split in matrix form, ready for training and evaluation.

    Users and items are indexed from the training part only: interactions of users or items
    unseen in training cannot be scored and are left out of evaluation (counted in
    ``dropped``). Unless ``repeat_items``, an item is not relevant for a user who already
    had it in the history the model sees (train for validation; train and validation for
    test).

    Attributes:
        users: User index (training users).
        items: Item index (training items).
        train: Weighted training matrix, users x items.
        validation: Binary relevance of the validation part.
        test_history: Weighted train + validation matrix: what a model knows of each user
            when it is scored for the test part.
        test: Binary relevance of the test part.
        dropped: Evaluation rows left out, by part and reason.
        has_ratings: Whether the training part holds rating events.
        validation_ratings: Rating values of the validation part (known users and items),
            for RMSE; ``None`` without rating events.
        test_ratings: The same for the test part.
        evaluation_users: Per part, users with a relevant item and how many of them are
            evaluated (``SplitConfig.evaluation_users``), e.g. ``{"validation": [12000,
            12000], "test": [80000, 50000]}``.
        repeat_items: Items already in the history stay relevant, and so stay in the
            ranking that is evaluated (``SplitConfig.repeat_items``).
    """

    users: IdMap
    items: IdMap
    train: sp.csr_matrix
    validation: sp.csr_matrix
    test_history: sp.csr_matrix
    test: sp.csr_matrix
    dropped: dict[str, int] = field(default_factory=dict)
    has_ratings: bool = False
    validation_ratings: sp.csr_matrix | None = None
    test_ratings: sp.csr_matrix | None = None
    evaluation_users: dict[str, list[int]] = field(default_factory=dict)
    repeat_items: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """``(users, items)``."""
        return self.train.shape


def encode_split(split: Split, weighting: WeightingConfig | None = None,
                 repeat_items: bool | None = None) -> EncodedSplit:
    """Encode ``split`` into sparse matrices under the evaluation rules of DESIGN.md.

    Args:
        split: The split to encode.
        weighting: Event weights for the training matrices.
        repeat_items: Keep already-seen items relevant; defaults to the split's setting.

    Returns:
        The encoded split.
    """
    weighting = weighting or WeightingConfig()
    repeat = split.config.repeat_items if repeat_items is None else repeat_items
    users = IdMap.from_values(split.train["user_id"])
    items = IdMap.from_values(split.train["item_id"])
    # Recency decay counts back from the end of the training part for training rows (what
    # validation is scored from) and from the end of validation for the test history.
    train_end = split.train["timestamp"].max()
    history_end = max(train_end, split.validation["timestamp"].max()) \
        if len(split.validation) else train_end
    train = training_matrix(split.train, users, items, weighting, train_end)
    validation_weighted = training_matrix(split.validation, users, items, weighting,
                                          history_end)
    train_for_test = training_matrix(split.train, users, items, weighting, history_end) \
        if weighting.recency_half_life_days else train
    # The test history combines the two parts as one matrix of both would, pairs weighted 0
    # included (scipy's sum drops them, which let a purchase decayed to nothing count as a
    # new item in test while it was masked, and not relevant, in validation).
    history = combine(train_for_test, validation_weighted, weighting.repeats)
    dropped: dict[str, int] = {}
    validation = _relevance(split.validation, users, items, train, repeat, "validation", dropped)
    test = _relevance(split.test, users, items, history, repeat, "test", dropped)
    limit = split.config.evaluation_users
    rng = np.random.default_rng(split.config.seed)
    sampled = {}
    validation, sampled["validation"] = sample_users(validation, limit, rng)
    test, sampled["test"] = sample_users(test, limit, rng)
    logger.info("encoded %d users x %d items; left out of evaluation: %s; users evaluated "
                "(of those with a relevant item): %s", len(users), len(items), dropped, sampled)
    return EncodedSplit(users, items, train, validation, history, test, dropped,
                        has_ratings=bool((split.train["event"] == "rating").any())
                        and weighting.keeps_ratings(),
                        validation_ratings=_ratings(split.validation, users, items),
                        test_ratings=_ratings(split.test, users, items),
                        evaluation_users=sampled, repeat_items=repeat)


def check_evaluable(encoded: EncodedSplit, config: SplitConfig) -> None:
    """Refuse a split whose validation (when asked for) or test part scores nobody.

    The part has rows, but none is an item a training shopper did not have already: every
    candidate then scored 0 there, and the first of the tie was published (a ten-shopper
    shop of three products, every purchase a repeat).

    Raises:
        ConfigError: Naming what was left out of the part, and what to do.
    """
    from shoprec.data.splits import validation_asked
    from shoprec.errors import ConfigError

    for part, relevance, wanted in (("validation", encoded.validation,
                                     validation_asked(config)), ("test", encoded.test, True)):
        left = {k.removeprefix(f"{part}_"): v for k, v in encoded.dropped.items()
                if k.startswith(f"{part}_") and v}
        if not wanted:
            continue
        seen = left.get("seen_before", 0)
        if relevance.nnz:
            if seen > relevance.nnz + sum(left.values()) - seen:
                # 94% of a grocery's test rows were reorders, left out without a word: the
                # figures measured "a product new to the shopper", and popularity tied.
                logger.warning(
                    "%s of the %s part's items are ones the shopper already had, left out of "
                    "its figures (%s kept): they measure products new to a shopper. For a "
                    "shop of repeat purchases, train with --repeat-items "
                    "(split.repeat_items)", f"{seen:,}", part, f"{relevance.nnz:,}")
            continue
        said = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in left.items()) or "none"
        repeat = seen >= max(left.values(), default=0) > 0
        more = "" if seen == sum(left.values()) else ", or give more history"
        raise ConfigError(
            f"the {part} part has no shopper with an item to score (left out: {said}), so "
            "every candidate would score 0 there and the first of the tie would be "
            "published; " + ("most are items the shopper already had: for a shop of repeat "
                             "purchases train with --repeat-items (split.repeat_items in "
                             f"the Prefect form){more}" if repeat else
                             "give the data more shoppers and items, or longer parts"))


def relevance_matrix(part: pd.DataFrame, users: IdMap, items: IdMap, seen: sp.csr_matrix,
                     repeat: bool) -> sp.csr_matrix:
    """Binary relevance of ``part`` as :func:`encode_split` builds it, without sampling.

    Args:
        part: Interactions of the part (validation or test).
        users: Row index; rows of other users are left out.
        items: Column index; rows of other items are left out.
        seen: What the model sees of each user; its items are left out unless ``repeat``.
        repeat: Keep already-seen items relevant.

    Returns:
        A users x items CSR matrix of ones.
    """
    return _relevance(part, users, items, seen, repeat, "part", {})


def training_matrix(part: pd.DataFrame, users: IdMap, items: IdMap,
                    weighting: WeightingConfig, end: pd.Timestamp) -> sp.csr_matrix:
    """The weighted matrix of ``part``'s interactions, as the training matrix is built.

    Args:
        part: Interactions (the training part, or some users' rows of it).
        users: Row index.
        items: Column index.
        weighting: Event weights.
        end: Where recency decay counts back from (the training part's last event).

    Returns:
        A users x items CSR matrix of weights.
    """
    return interaction_matrix(part, users, items, event_weights(part, weighting, end),
                              weighting.repeats)


def sample_users(relevance: sp.csr_matrix, limit: int | None,
                 rng: np.random.Generator) -> tuple[sp.csr_matrix, list[int]]:
    """Keep the relevance rows of at most ``limit`` users, drawn at random.

    Rows of users left out become empty, so the matrix keeps its shape and the evaluation
    skips them.

    Returns:
        The relevance matrix and ``[users with a relevant item, users kept]``.
    """
    users = np.flatnonzero(np.diff(relevance.indptr) > 0)
    if limit is None or len(users) <= limit:
        return relevance, [len(users), len(users)]
    keep = np.zeros(relevance.shape[0], dtype=np.float32)
    keep[rng.choice(users, size=limit, replace=False)] = 1.0
    sampled = (sp.diags(keep) @ relevance).tocsr()
    sampled.eliminate_zeros()
    return sampled, [len(users), limit]


def _ratings(part: pd.DataFrame, users: IdMap, items: IdMap) -> sp.csr_matrix | None:
    """Mean rating per known (user, item) of a part, or ``None`` if it has no ratings."""
    rated = part[part["event"] == "rating"]
    if rated.empty:
        return None
    rows = users.encode(rated["user_id"])
    cols = items.encode(rated["item_id"])
    known = (rows >= 0) & (cols >= 0)
    frame = pd.DataFrame({"r": rows[known], "c": cols[known],
                          "v": rated["value"].to_numpy()[known]})
    mean = frame.groupby(["r", "c"], as_index=False)["v"].mean()
    return sp.csr_matrix((mean["v"].to_numpy(np.float32), (mean["r"], mean["c"])),
                         shape=(len(users), len(items)), dtype=np.float32)


def _relevance(part: pd.DataFrame, users: IdMap, items: IdMap, seen: sp.csr_matrix,
               repeat: bool, name: str, dropped: dict[str, int]) -> sp.csr_matrix:
    rows = users.encode(part["user_id"])
    cols = items.encode(part["item_id"])
    dropped[f"{name}_unseen_user"] = int((rows < 0).sum())
    dropped[f"{name}_unseen_item"] = int(((rows >= 0) & (cols < 0)).sum())
    known = (rows >= 0) & (cols >= 0)
    rows, cols = rows[known], cols[known]
    if not repeat and len(rows):
        # Stored, whatever its weight: an event weighted 0 is still in the history, and the
        # ranking leaves out every stored item (mask_seen).
        pattern = sp.csr_matrix((np.ones(len(seen.data), np.float32), seen.indices,
                                 seen.indptr), shape=seen.shape)  # its index arrays shared
        already = np.asarray(pattern[rows, cols]).ravel() > 0
        dropped[f"{name}_seen_before"] = int(already.sum())
        rows, cols = rows[~already], cols[~already]
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                           shape=(len(users), len(items)), dtype=np.float32)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    matrix.sort_indices()
    return matrix
