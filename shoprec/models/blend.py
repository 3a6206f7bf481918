"""A blend of other candidates: a weighted sum of their normalised scores.

The members are candidates with the values their own runs chose (λ, epochs...); the blend
fits each of them on the matrix it is given, choosing nothing again, and its only choice
is the weights, made on validation over a grid of the simplex. Each member's scores are
standardised per shopper (mean 0, standard deviation 1 over the catalogue) before they are
summed, so that a member with larger raw scores does not outweigh the others; an item a
member cannot score (outside a network's vocabulary) takes that shopper's lowest score
from it, and the other members can still rank it.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from shoprec.errors import ModelFitError
from shoprec.models.base import FitContext, Recommender

logger = logging.getLogger(__name__)


def simplex_grid(members: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector of ``members`` non-negative multiples of ``step`` summing to 1.

    The first is all the weight on the first member (the best one: a tie keeps it), then
    weight moves towards the later members.
    """
    parts = round(1 / step)

    def compositions(total: int, slots: int) -> list[tuple[int, ...]]:
        if slots == 1:
            return [(total,)]
        return [(first, *rest) for first in range(total, -1, -1)
                for rest in compositions(total - first, slots - 1)]

    return [tuple(c / parts for c in combo) for combo in compositions(parts, members)]


def standardised(scores: np.ndarray) -> np.ndarray:
    """Each row's scores as z-scores over its finite ones; the others take the row's lowest."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    finite = np.isfinite(scores)
    if finite.all():
        mean = scores.mean(axis=1, keepdims=True)
        spread = scores.std(axis=1, keepdims=True)
    else:
        masked = np.where(finite, scores, np.nan)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a row with no finite score
            mean = np.nan_to_num(np.nanmean(masked, axis=1, keepdims=True))
            spread = np.nan_to_num(np.nanstd(masked, axis=1, keepdims=True))
    spread[spread == 0] = 1.0
    out = (scores - mean) / spread
    if not finite.all():
        lowest = np.where(finite, out, np.inf).min(axis=1, keepdims=True)
        lowest[~np.isfinite(lowest)] = 0.0
        out = np.where(finite, out, lowest)
    return out


class Blend(Recommender):
    """A weighted sum of member candidates' standardised scores.

    Args:
        members: ``[{"name": candidate, "params": hyperparameters}, ...]``: at least two
            when the weights are chosen, at least one when they are given.
        weights: One per member, summing to 1; ``None``: chosen on validation when the
            fit's context has a tuner, else equal (a warning says so).
        weight_step: Step of the simplex grid the weights are chosen from.
    """

    family = "blend"
    name = "blend"
    slow_to_train: ClassVar[bool] = True
    # A member may be a network, whose thread pools are the process's.
    threads_per_process: ClassVar[bool] = True

    def __init__(self, members: list[dict[str, Any]] | None = None,
                 weights: list[float] | None = None, weight_step: float = 0.1) -> None:
        self.members = [dict(m) for m in (members or [])]
        self.weights = None if weights is None else [float(w) for w in weights]
        self.weight_step = weight_step

    def fit(self, interactions: sp.csr_matrix, context: FitContext | None = None) -> Blend:
        """Fit every member with its own values, then choose the weights on validation."""
        from shoprec.models import make_model

        # Weights are chosen among two or more; chosen, they may leave one member (the
        # others earned no weight on validation), and its refit is that member alone.
        if not self.members:
            raise ModelFitError("blend needs members")
        if self.weights is None and len(self.members) < 2:
            raise ModelFitError("blend needs at least two members to choose weights for")
        if self.weights is not None and len(self.weights) != len(self.members):
            raise ModelFitError("blend: one weight per member")
        # The members choose nothing again: no tuner reaches them.
        plain = FitContext(items=context.items if context else None,
                           has_ratings=context.has_ratings if context else True)
        self.members_ = [dict(m) for m in self.members]
        self.models_ = []
        for member in self.members_:
            model = make_model(member["name"], member.get("params") or {})
            self.models_.append(model.fit(interactions, plain))
        if self.weights is None and context is not None and context.tuner is not None:
            self.weights_ = list(context.tuner.select_weights(
                self, self._parts, simplex_grid(len(self.members), self.weight_step)))
            # A member without weight is not kept: not refit, saved or required.
            kept = [i for i, weight in enumerate(self.weights_) if weight > 0]
            self.members_ = [self.members_[i] for i in kept]
            self.models_ = [self.models_[i] for i in kept]
            self.weights_ = [self.weights_[i] for i in kept]
        else:
            if self.weights is None:
                logger.warning("blend: no weights given and no validation to choose them "
                               "on (a fit without a tuner): the members weigh equally")
            given = self.weights or [1.0 / len(self.members)] * len(self.members)
            self.weights_ = [float(w) for w in given]
        logger.info("blend of %s with weights %s", [m["name"] for m in self.members_],
                    self.weights_)
        return self

    @property
    def selected_params_(self) -> dict[str, Any]:
        """The members kept and their weights, for the refits."""
        return {"members": [dict(m) for m in self.members_], "weights": list(self.weights_)}

    def _parts(self, user_rows: sp.csr_matrix) -> list[np.ndarray]:
        return [standardised(model.score(user_rows)) for model in self.models_]

    def score(self, user_rows: sp.csr_matrix) -> np.ndarray:
        """The weighted sum of the members' standardised scores."""
        total: np.ndarray | None = None
        for weight, model in zip(self.weights_, self.models_, strict=True):
            if weight == 0:
                continue
            part = weight * standardised(model.score(user_rows))
            total = part if total is None else total + part
        if total is None:
            raise ModelFitError("blend: every weight is zero")
        return total.astype(np.float32, copy=False)

    def compress(self, precision: str | None = None, prune_top: int | None = None) -> None:
        """Compress every member (pruning reaches an ease member only)."""
        super().compress(precision)
        for model in self.models_:
            model.compress(precision, prune_top if model.name == "ease" else None)

    def _save_state(self, folder: Path) -> None:
        (folder / "blend.json").write_text(json.dumps(
            {"members": self.members_, "weights": self.weights_}, default=str),
            encoding="utf-8")
        for position, model in enumerate(self.models_):
            model.save(folder / f"member-{position}")

    def _load_state(self, folder: Path) -> None:
        from shoprec.models import load_model

        state = json.loads((folder / "blend.json").read_text(encoding="utf-8"))
        self.members_, self.weights_ = state["members"], state["weights"]
        self.models_ = [load_model(str(folder / f"member-{position}"), member["name"])
                        for position, member in enumerate(self.members_)]

    @property
    def n_items_(self) -> int:
        """Items scored (the members share the index)."""
        return self.models_[0].n_items_
